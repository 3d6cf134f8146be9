//! The benchmark program of `bench/layer.sh`: one axum route served four ways, a seeding
//! step for the 100,000-key store, and a client that sends an exact number of requests.
//!
//! ```text
//! bench-server seed  DIR [--keys 100000] [--engine sled|redb]
//!                                            create DIR (once) and write DIR.valid, DIR.invalid,
//!                                            DIR.limited, DIR.credits
//! bench-server serve VARIANT DIR ADDR [route|service]
//!                                            none | bearer | latchkey; prints "listening ADDR"
//! bench-server drive ADDR N KEY STATUS       N keep-alive requests, each must answer STATUS
//! ```
//!
//! The server runs a current-thread runtime, so every instruction spent on a request runs
//! on the main thread: `valgrind --tool=callgrind --separate-threads=yes` then counts them
//! apart from sled's and the usage flusher's background threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::convert::Infallible;

use axum::Router;
use axum::ServiceExt;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::get;
use tower::{Layer, Service};
// The peer's types are deprecated upstream (see `static_bearer`).
use latchkey_tower::latchkey_core::key::checksum;
use latchkey_tower::latchkey_core::{Actor, Credits, Engine, NewKey, NewUser, RateLimit};
use latchkey_tower::{ApiKey, ApiKeyAuthLayer, Env, PermissionSet, Store, StoreConfig};
#[allow(deprecated)]
use tower_http::auth::require_authorization::Bearer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["seed", dir] => seed(Path::new(dir), 100_000, Engine::Sled),
        ["seed", dir, "--keys", n] => seed(Path::new(dir), n.parse()?, Engine::Sled),
        ["seed", dir, "--keys", n, "--engine", engine] => {
            seed(Path::new(dir), n.parse()?, engine_named(engine)?)
        }
        ["serve", variant, dir, addr] => serve(variant, Path::new(dir), addr, "route"),
        ["serve", variant, dir, addr, layering] => serve(variant, Path::new(dir), addr, layering),
        ["drive", addr, n, key, status] => drive(addr, n.parse()?, key, status.parse()?),
        _ => Err("usage: see the module docs of examples/bench_server.rs".into()),
    }
}

/// The embedded engine named on the command line.
fn engine_named(name: &str) -> Result<Engine, Error> {
    match name {
        "sled" => Ok(Engine::Sled),
        "redb" => Ok(Engine::Redb),
        other => Err(format!("unknown engine {other:?}: sled or redb").into()),
    }
}

/// The one route every variant serves.
async fn root() -> &'static str {
    "ok"
}

/// Serves the variant with its layer applied `route`: with `Router::layer`, around each
/// route (the usual axum way; axum then boxes and clones the layered service per request),
/// or `service`: around the whole router, as `ServiceBuilder` would.
fn serve(variant: &str, dir: &Path, addr: &str, layering: &str) -> Result<(), Error> {
    // Every variant runs with a second thread, idle. Once a process has one, glibc's
    // blocking calls (recv, writev, epoll_wait) take their multi-threaded path, about 140
    // more instructions a request on this server. A real server always has it (tokio's
    // multi-thread runtime, sled's threads), and latchkey's variant has it anyway (the
    // store's threads): without this thread `none` alone would be spared it.
    std::thread::spawn(|| {
        loop {
            std::thread::park();
        }
    });
    let valid = std::fs::read_to_string(key_file(dir, "valid"))?;
    let routes = Router::new().route("/", get(root));
    // Opened (and closed, see the end) outside the runtime, so that callgrind, counting only
    // inside `Runtime::block_on`, sees requests and not sled's start-up and shutdown. Opened,
    // and the three keys verified once, on a thread of its own, as a server opens its store
    // before its runtime's workers serve: the request thread then never reads sled, and its
    // glibc arena holds only what the requests allocate. Opened on the request thread (with
    // the first request's full verification there too), sled's allocations left that arena
    // fragmented in a way that changed from one process to the next (sled's own threads free
    // some of them when they get to it), and the one allocation a request makes that misses
    // glibc's thread cache was carved from it at a cost that moved by up to ~250
    // instructions a request between runs of the same binary, all inside `_int_malloc`
    // (bench/README.md).
    let store = match variant {
        "latchkey" => {
            let dir = dir.to_owned();
            let opening = std::thread::spawn(move || -> Result<Store, String> {
                let store = Store::open(&dir, StoreConfig::default()).map_err(|e| e.to_string())?;
                for which in ["valid", "invalid", "limited", "credits"] {
                    let key = std::fs::read_to_string(key_file(&dir, which))
                        .map_err(|e| e.to_string())?;
                    // The invalid key is refused; the others are now in the verify cache.
                    let _ = store.verify(key.trim());
                }
                Ok(store)
            });
            Some(opening.join().map_err(|_| "opening the store panicked")??)
        }
        _ => None,
    };
    match (variant, &store, layering) {
        ("none", _, _) => run(addr, routes)?,
        ("bearer", _, "route") => run(addr, routes.layer(static_bearer(valid.trim())))?,
        ("bearer", _, "service") => run(addr, static_bearer(valid.trim()).layer(routes))?,
        ("latchkey", Some(store), "route") => {
            run(addr, routes.layer(ApiKeyAuthLayer::new(store.clone())))?
        }
        ("latchkey", Some(store), "service") => {
            run(addr, ApiKeyAuthLayer::new(store.clone()).layer(routes))?
        }
        (other, _, layering) => {
            return Err(format!("unknown variant {other:?} or layering {layering:?}").into());
        }
    }
    drop(store);
    Ok(())
}

/// Serves `app` on a current-thread runtime until SIGINT or SIGTERM.
fn run<S>(addr: &str, app: S) -> Result<(), Error>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
            .with_graceful_shutdown(shutdown())
            .await?;
        Ok::<_, Error>(())
    })
}

/// The simplest peer: one static token compared per request, the same text as the valid
/// key, so every variant parses the same request bytes.
// Deprecated upstream as "too basic to be useful in real applications": exactly why it is
// the floor to compare against.
#[allow(deprecated)]
fn static_bearer(token: &str) -> ValidateRequestHeaderLayer<Bearer<Body>> {
    ValidateRequestHeaderLayer::bearer(token)
}

/// SIGINT or SIGTERM: a clean exit, so callgrind writes its counts.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn key_file(dir: &Path, which: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{which}"));
    PathBuf::from(name)
}

/// Creates the store once, on `engine`: one user and `keys` keys, in transactions of
/// 10,000 keys (one flush each; `create_key` flushes per key, which would take minutes). A
/// store seeded before keeps its engine.
fn seed(dir: &Path, keys: usize, engine: Engine) -> Result<(), Error> {
    if key_file(dir, "valid").exists() {
        println!("reusing {} ({} keys were seeded)", dir.display(), keys);
        return variant_keys(dir);
    }
    if dir.exists() {
        return Err(format!("{} exists without its key files; remove it", dir.display()).into());
    }
    let started = Instant::now();
    let store = Store::create_empty(dir, "lk", StoreConfig::default().engine(engine))?;
    let system = Actor::system();
    let user = store.create_user(
        &system,
        NewUser {
            name: "bench".into(),
            permissions: PermissionSet::parse(["bench:read"])?,
            ..NewUser::default()
        },
    )?;
    let mut last = None;
    for batch in 0..keys.div_ceil(10_000) {
        let count = (keys - batch * 10_000).min(10_000);
        let new: Vec<NewKey> = (0..count)
            .map(|i| NewKey {
                name: format!("bench {}", batch * 10_000 + i),
                user_id: user.id,
                env: Env::Live,
                ..NewKey::default()
            })
            .collect();
        last = store.create_keys(&system, &new)?.pop();
    }
    store.flush()?;
    let valid = last.ok_or("no key was created")?.secret;
    // A bench fixture, never a real credential: the store lives under bench/out.
    std::fs::write(key_file(dir, "valid"), valid.expose())?;
    std::fs::write(key_file(dir, "invalid"), wrong_secret(&valid))?;
    println!(
        "seeded {} keys into {} in {:.1?}",
        keys,
        dir.display(),
        started.elapsed()
    );
    drop(store);
    variant_keys(dir)
}

/// The keys of the variants beyond a plain valid key, each added to a store seeded before
/// its variant existed too: `latchkey-limited`, one rate limit it never reaches (a billion
/// a second), what a limit costs a request that passes it; `latchkey-credits`, credits it
/// never runs out of (10^15), what a metered balance costs (the credit taken, and what
/// `RequirePermission` needs to give it back on a 403).
fn variant_keys(dir: &Path) -> Result<(), Error> {
    let limited = NewKey {
        rate_limits: vec![RateLimit {
            name: "default".into(),
            limit: 1_000_000_000,
            window_seconds: 1,
        }],
        ..NewKey::default()
    };
    let credits = NewKey {
        credits: Some(Credits {
            remaining: latchkey_tower::latchkey_core::limits::MAX_CREDITS,
            refill: None,
        }),
        ..NewKey::default()
    };
    let missing: Vec<_> = [("limited", limited), ("credits", credits)]
        .into_iter()
        .filter(|(which, _)| !key_file(dir, which).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let store = Store::open(dir, StoreConfig::default())?;
    let user = store.user("bench")?;
    for (which, key) in missing {
        let key = NewKey {
            name: format!("bench {which}"),
            user_id: user.id,
            env: Env::Live,
            ..key
        };
        let created = store.create_key(&Actor::system(), key)?;
        std::fs::write(key_file(dir, which), created.secret.expose())?;
    }
    Ok(())
}

/// The key with one secret character changed and a valid checksum: it is well-formed and
/// its id exists, so it costs a full verification (hash, lookup, constant-time compare).
fn wrong_secret(key: &ApiKey) -> String {
    let text = key.expose();
    let mut body = text.as_bytes()[..text.len() - 6].to_vec();
    let last = body.len() - 1;
    body[last] = if body[last] == b'A' { b'B' } else { b'A' };
    let sum = checksum(&body);
    body.extend_from_slice(&sum);
    String::from_utf8(body).expect("ASCII")
}

/// Sends `n` requests one after the other on one keep-alive connection.
fn drive(addr: &str, n: usize, key: &str, status: u16) -> Result<(), Error> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n");
    let expected = format!("HTTP/1.1 {status} ");
    let started = Instant::now();
    let mut line = String::new();
    let mut body = Vec::new();
    for i in 0..n {
        writer.write_all(request.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with(&expected) {
            return Err(format!("request {i}: expected {status}, got {line:?}").into());
        }
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    eprintln!("{n} requests in {:.2?}", started.elapsed());
    Ok(())
}
