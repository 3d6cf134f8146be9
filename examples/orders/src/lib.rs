//! The orders API of latchkey's examples, as a library so that `examples/remote-orders`
//! serves the very same routes over a remote verifier.
//!
//! - [`app`]: the routes, over any [`latchkey_tower::Verifier`].
//! - [`demo`]: the demo user and keys of a first start.
//! - [`shutdown_signal`]: when to stop serving.

mod app;
pub mod demo;

pub use app::{SUMMARY_COST, app};

/// Ctrl-C or SIGTERM (what a service manager sends): both apps stop serving, then save
/// what they buffered (usage figures).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
