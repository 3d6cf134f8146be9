//! Run with
//!
//! ```not_rust
//! cargo run -p example-orders -- [--db PATH|postgres://…] [--listen 127.0.0.1:3000]
//! ```
//!
//! `--db` may come from `LATCHKEY_DB` instead, as for `latchkey`: the place for a
//! PostgreSQL URL with a password, which a command line shows to every local user.
//!
//! An orders API on an embedded latchkey store: `GET /orders` needs `orders:read`,
//! `POST /orders` needs `orders:write`, `GET /orders/summary` needs `orders:read` and costs
//! ten requests against a key's rate limits and credits, `GET /health` needs no key. On a path that holds no
//! store yet (default `./orders-data`) it creates one with a demo user and two keys, prints
//! the keys once, and the curl lines that show a 200, a 401 and a 403.

use example_orders::{app, demo};
use latchkey_tower::latchkey_core::Location;
use latchkey_tower::{Store, StoreConfig};
use std::net::SocketAddr;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: example-orders [--db PATH|postgres://…] [--listen 127.0.0.1:3000]
environment: LATCHKEY_DB (the --db when it is not given)";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("example-orders: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (db, listen) = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colours for a terminal only: a redirected log gets no escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    // A directory (the embedded sled store) or a PostgreSQL database: the same layer.
    let store = match Store::open_at(&db, StoreConfig::default()) {
        Ok(store) => store,
        Err(latchkey_tower::latchkey_core::StoreError::NotInitialized { .. }) => {
            Store::create_empty_at(&db, "lk", StoreConfig::default())?
        }
        Err(e) => return Err(e.into()),
    };
    let created = demo::seed_if_empty(&store)?;

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    demo::print_welcome(&db, addr, created.as_ref());

    // With the peer's address: a key with an IP allowlist is refused without one.
    axum::serve(
        listener,
        app(store.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(example_orders::shutdown_signal())
    .await?;
    // Persist the buffered usage figures (last_used_at, counts).
    store.flush()?;
    Ok(())
}

fn parse_args() -> Result<(Location, SocketAddr), String> {
    let mut db = match std::env::var("LATCHKEY_DB") {
        Ok(db) if !db.is_empty() => Location::parse(&db),
        _ => Location::parse("./orders-data"),
    };
    let mut listen: SocketAddr = "127.0.0.1:3000".parse().expect("a valid address");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--db" => db = Location::parse(&value()?),
            "--listen" => {
                listen = value()?
                    .parse()
                    .map_err(|e| format!("--listen: {e}\n{USAGE}"))?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok((db, listen))
}
