//! Run with
//!
//! ```not_rust
//! LATCHKEY_URL=http://127.0.0.1:7878 LATCHKEY_SERVICE_KEY=lk_live_… \
//!     cargo run -p example-remote-orders -- [--listen 127.0.0.1:3001] [--max-staleness 5] \
//!     [--imported-keys]
//! ```
//!
//! The orders API of `examples/orders`, verifying keys against a running latchkey daemon
//! instead of an embedded store: `GET /orders` needs `orders:read`, `POST /orders` needs
//! `orders:write`, `GET /orders/summary` needs `orders:read` and costs ten requests (taken
//! from the key's lease of the daemon's limits and credits), `GET /health` needs no key. `LATCHKEY_SERVICE_KEY` is a key holding
//! `latchkey:verify`; `LATCHKEY_CA_CERT` names a PEM CA certificate to trust for an
//! `https://` daemon beside the system's roots. `--imported-keys` asks the daemon about
//! texts that are no latchkey key too (keys imported from elsewhere: `latchkey keys
//! import`), as `examples/orders` verifies them. Create a service key with
//!
//! ```not_rust
//! latchkey users add --name orders-service --permissions latchkey:verify
//! latchkey keys add --name orders --user orders-service
//! ```
//!
//! A revocation on the daemon reaches this app within milliseconds. If the daemon goes
//! away, keys already seen keep working for `--max-staleness` seconds (default 5), then
//! every request is answered 503 `keystore_unavailable` until the daemon is back; the app
//! reconnects by itself. Once bound it prints `listening on <addr>`.

use std::net::SocketAddr;
use std::time::Duration;

use latchkey_tower::remote::RemoteVerifier;
use tracing_subscriber::EnvFilter;

const USAGE: &str =
    "usage: example-remote-orders [--listen 127.0.0.1:3001] [--max-staleness SECONDS] [--imported-keys]
environment: LATCHKEY_URL (default http://127.0.0.1:7878), LATCHKEY_SERVICE_KEY (required),
LATCHKEY_CA_CERT (a PEM CA to trust for an https:// URL)";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("example-remote-orders: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colours for a terminal only: a redirected log gets no escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let url = std::env::var("LATCHKEY_URL").unwrap_or_else(|_| "http://127.0.0.1:7878".into());
    let service_key = std::env::var("LATCHKEY_SERVICE_KEY")
        .map_err(|_| format!("LATCHKEY_SERVICE_KEY is not set\n{USAGE}"))?;
    let mut builder = RemoteVerifier::builder(&url, &service_key)
        .max_staleness(args.max_staleness)
        .imported_keys(args.imported_keys);
    // A private CA for an https:// daemon, beside the system's roots.
    if let Ok(path) = std::env::var("LATCHKEY_CA_CERT") {
        let pem = std::fs::read(&path).map_err(|e| format!("LATCHKEY_CA_CERT {path}: {e}"))?;
        builder = builder.ca_certificate(pem);
    }
    let verifier = builder.build()?;

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("verifying keys against {url}");

    // With the peer's address, which the verifier sends for keys with an IP allowlist.
    let app = example_orders::app(verifier.clone());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(example_orders::shutdown_signal())
    .await?;
    // The last usage figures of cache hits, and the leased credits not spent.
    verifier.flush_usage().await;
    Ok(())
}

struct Args {
    listen: SocketAddr,
    max_staleness: Duration,
    imported_keys: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:3001".parse().expect("a valid address"),
        max_staleness: Duration::from_secs(5),
        imported_keys: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || {
            argv.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => {
                args.listen = value()?
                    .parse()
                    .map_err(|e| format!("--listen: {e}\n{USAGE}"))?
            }
            "--max-staleness" => {
                let text = value()?;
                args.max_staleness = text
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        format!("--max-staleness: {text:?} is not a number of seconds\n{USAGE}")
                    })?;
            }
            "--imported-keys" => args.imported_keys = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}
