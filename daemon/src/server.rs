//! `latchkey serve`: the management API over HTTP, with graceful shutdown.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use latchkey_core::Store;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// What the daemon serves, and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The open store.
    pub store: Store,
    /// How long a request may run before it is answered 408.
    pub request_timeout: Duration,
    /// After the shutdown signal, how long open connections get to finish before the
    /// daemon stops anyway (a long-lived stream must not hold a shutdown forever).
    pub drain_timeout: Duration,
}

impl ServeConfig {
    /// Defaults: 30 s per request, 10 s to drain.
    pub fn new(store: Store) -> ServeConfig {
        ServeConfig {
            store,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The daemon's HTTP application: the admin router, traced, with a request timeout.
///
/// The trace layer logs method, path, status and latency; never headers, so the
/// `Authorization` header (a key) stays out of the logs.
pub fn app(store: Store, request_timeout: Duration) -> Router {
    latchkey_admin::router(store)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// Serves until `shutdown` completes, lets open requests finish (up to the drain timeout),
/// then persists usage figures and flushes the store.
///
/// # Example
///
/// ```no_run
/// # async fn example(store: latchkey_core::Store) -> anyhow::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let config = latchkey_daemon::ServeConfig::new(store);
/// latchkey_daemon::run(config, listener, latchkey_daemon::shutdown_signal()).await
/// # }
/// ```
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = app(config.store.clone(), config.request_timeout);
    let (stopping, mut stopping_rx) = tokio::sync::watch::channel(false);
    let store = config.store.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing open requests");
        // Event streams never finish by themselves; their clients reconnect and resume.
        latchkey_admin::close_event_streams(&store);
        let _ = stopping.send(true);
    });
    let drain = config.drain_timeout;
    tokio::select! {
        served = server.into_future() => served?,
        () = async {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(drain).await;
        } => tracing::warn!(?drain, "connections still open after the drain timeout; closing them"),
    }
    config.store.flush()?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
