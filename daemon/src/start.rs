//! `latchkey serve`'s start-up: everything that can fail is checked and bound before the
//! store is opened or created, so a start that fails (a bad flag, unreadable TLS files, a
//! port taken, plain HTTP off loopback) creates nothing and prints no key.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::engine::Named;
use crate::init;
use crate::output::Printed;
use crate::server::{MetricsServing, ServeConfig};

/// Checks the settings, binds, opens (or initialises) the store, announces, and serves
/// until SIGINT or SIGTERM.
///
/// Prints `metrics listening on ADDR` (with `--metrics-listen`), then `listening on ADDR`
/// (with `--json`, the lines `{"metrics_listening":"ADDR"}` and `{"listening":"ADDR"}`):
/// scripts and tests read the ports from these lines when they pass port 0.
pub async fn serve(settings: &Settings, args: &ServeArgs) -> anyhow::Result<()> {
    let location = settings.store_location();
    let addr = settings.listen(args)?;
    let metrics_addr = settings.metrics_listen(args)?;
    if let Some(metrics) = metrics_addr.filter(|m| *m == addr && m.port() != 0) {
        anyhow::bail!(
            "--metrics-listen {metrics} is --listen's address: give /metrics a port of its own, \
             or leave --metrics-listen out to serve it beside the API"
        );
    }
    let request_timeout = settings.request_timeout(args)?;
    let store_config = settings.store_config(args)?;
    let header_read_timeout = settings.header_read_timeout(args)?;
    let prefix = settings.prefix(args.prefix.as_deref())?;
    let cert_files = match settings.tls_files(args)? {
        Some((cert, key)) => Some(crate::tls::CertFiles::load(&cert, &key)?),
        None => None,
    };
    let tls = cert_files
        .as_ref()
        .map(crate::tls::CertFiles::server_config)
        .transpose()?;
    // Before the store opens, which may take a while: a reload sent meanwhile (systemd
    // deems a `Type=exec` unit started at once) must not end the daemon, and a SIGTERM or
    // Ctrl-C must not kill it between a new store's commit and its first admin key handed
    // out: it is kept, and stops the daemon gracefully once it serves.
    handle_hangups(cert_files);
    let shutdown = crate::shutdown_signal();
    let addrs = std::iter::once(addr).chain(metrics_addr);
    if tls.is_none() {
        if args.insecure_http {
            for addr in addrs.filter(|a| !a.ip().is_loopback()) {
                tracing::warn!(%addr, "plain HTTP off loopback (--insecure-http): keep a TLS-terminating proxy in front");
            }
        } else {
            for addr in addrs {
                ensure_loopback(addr)?;
            }
        }
    }
    let listener = bind(addr).await?;
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    // Off the runtime's workers: opening a PostgreSQL store connects, migrates and loads,
    // blocking as the store's synchronous API does.
    let (store, created) = {
        let location = location.clone();
        let key_file = args.admin_key_file.clone();
        tokio::task::spawn_blocking(move || {
            init::open_or_init(&location, &prefix, store_config, key_file.as_deref())
        })
        .await
        .context("opening the store")??
    };
    let asked = settings.asked_prefix(args.prefix.as_deref());
    if let Some(asked) = asked.filter(|p| created.is_none() && *p != store.prefix().as_str()) {
        tracing::warn!(
            asked,
            prefix = store.prefix().as_str(),
            "the store exists: its keys keep the prefix it was created with, and the prefix \
             asked (--prefix or the file's `prefix`) applies only to a store \
             `serve` or `init` creates"
        );
    }
    match created {
        Some((admin, key_file)) => {
            init::announce(&store, &admin, Printed::stream(settings.json), key_file)?
        }
        None if args.admin_key_file.is_some() => {
            tracing::info!("the store already exists: no admin key to write");
        }
        None => {}
    }
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    let metrics = match metrics_listener {
        Some(metrics) => {
            let at = metrics
                .local_addr()
                .context("reading the metrics address")?;
            announce(settings.json, "metrics_listening", at);
            MetricsServing::Listener(metrics)
        }
        None if args.metrics_auth => MetricsServing::Keyed,
        None => MetricsServing::Public,
    };
    announce(settings.json, "listening", local);
    std::io::stdout().flush().context("writing to stdout")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // A URL's password never reaches the log: `Location` displays it as `***`.
    let engine = Named(store.engine());
    tracing::info!(%local, scheme, store = %location, %engine, "latchkey daemon started");
    let config = ServeConfig {
        request_timeout,
        header_read_timeout,
        tls,
        metrics,
        ui: !args.no_ui,
        console_https: args.console_https,
        ..ServeConfig::new(store)
    };
    crate::run(config, listener, shutdown).await
}

/// SIGHUP (a certificate renewal hook's `kill -HUP`, or a terminal closing) would end the
/// daemon at once by its default action, and a unit with `Restart=on-failure` would not
/// start it again. Instead it reads the TLS files again, when the daemon serves HTTPS;
/// other settings are read at start only, which the log says.
fn handle_hangups(cert_files: Option<std::sync::Arc<crate::tls::CertFiles>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        match &cert_files {
                            Some(files) => reload(files.clone()).await,
                            None => tracing::warn!(
                                "SIGHUP ignored: no TLS files to read again, and settings are read at start; restart the daemon to apply new ones"
                            ),
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(cert_files);
}

/// Reads the TLS files again, off the async workers, and logs what came of it.
#[cfg(unix)]
async fn reload(files: std::sync::Arc<crate::tls::CertFiles>) {
    let read = tokio::task::spawn_blocking(move || files.reload()).await;
    match read {
        Ok(Ok(serving)) => tracing::info!(
            %serving,
            "SIGHUP: TLS certificate read again; new connections get it (other settings are read at start only)"
        ),
        Ok(Err(e)) => {
            let error = format!("{e:#}");
            tracing::error!(
                %error,
                "SIGHUP: the TLS files were not taken; still serving the previous certificate"
            );
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: reading the TLS files failed"),
    }
}

/// Tells where a listener is, on a line of its own: `listening on ADDR` (the field's words),
/// or with `--json` a compact object, so that `--json` output is JSON throughout.
fn announce(json: bool, field: &str, addr: SocketAddr) {
    if json {
        println!("{}", serde_json::json!({ field: addr.to_string() }));
    } else {
        println!("{} on {addr}", field.replace('_', " "));
    }
}

/// Plain HTTP is for loopback: keys and admin keys would cross the network in clear.
fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing plain HTTP on {addr}, which is not a loopback address: keys would cross \
         the network in clear; give --tls-cert and --tls-key, or --insecure-http when a \
         TLS-terminating proxy is in front"
    );
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in ["127.0.0.1:7878", "[::1]:0", "127.0.0.2:1"] {
            assert!(ensure_loopback(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:7878", "[::]:7878", "10.0.0.1:80"] {
            let err = ensure_loopback(refused.parse().unwrap()).unwrap_err();
            assert!(
                err.to_string().contains("--insecure-http"),
                "{refused}: {err}"
            );
        }
    }
}
