//! `latchkey serve`: the management API over HTTP, with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use http_body_util::BodyExt;
use latchkey_admin::MetricsAccess;
use latchkey_console::TimedOut;
use latchkey_core::{Store, StoreError};
use tokio::net::TcpListener;
use tower_http::timeout::{DeadlineBody, TimeoutError};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::listen::Listener;
use crate::unread_body::BodyWatch;

/// What the daemon serves, and how.
pub struct ServeConfig {
    /// The open store.
    pub store: Store,
    /// How long a request may run before it is answered 503 `request_timeout`.
    pub request_timeout: Duration,
    /// After the shutdown signal, how long open connections get to finish before the
    /// daemon stops anyway (a long-lived stream must not hold a shutdown forever).
    pub drain_timeout: Duration,
    /// How long a connection may take to send a request's headers, from when it opens
    /// (TLS handshake included) or from the previous response: slow-header and idle
    /// keep-alive connections are closed after it. Applies to every listener.
    pub header_read_timeout: Duration,
    /// HTTPS on every listener when set; plain HTTP otherwise.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where `/metrics` is served.
    pub metrics: MetricsServing,
    /// Serve the web console at `/ui` (`--no-ui` turns it off).
    pub ui: bool,
    /// Browsers reach the console over HTTPS through a TLS-terminating proxy in front
    /// (`--console-https`): its cookies are `Secure` and `__Host-` prefixed, and HSTS is
    /// sent, as they are when `tls` is set.
    pub console_https: bool,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The TLS config holds the private key: say whether there is one, nothing more.
        f.debug_struct("ServeConfig")
            .field("store", &self.store)
            .field("request_timeout", &self.request_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("tls", &self.tls.is_some())
            .field("metrics", &self.metrics)
            .field("ui", &self.ui)
            .field("console_https", &self.console_https)
            .finish()
    }
}

/// Where the daemon serves `/metrics`.
#[derive(Debug, Default)]
pub enum MetricsServing {
    /// On the API listener, without a key.
    #[default]
    Public,
    /// On the API listener, behind a key holding `latchkey:metrics` (`--metrics-auth`).
    Keyed,
    /// On this listener only, without a key (`--metrics-listen`); 404 on the API one.
    Listener(TcpListener),
}

impl ServeConfig {
    /// Defaults: 30 s per request, 7 s to drain, 10 s to send headers, plain HTTP,
    /// `/metrics` public on the API listener, the console at `/ui`.
    pub fn new(store: Store) -> ServeConfig {
        ServeConfig {
            store,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            // Under a container engine's default 10 s between SIGTERM and SIGKILL, with time
            // left to persist the usage figures and flush the store after the drain.
            drain_timeout: Duration::from_secs(7),
            header_read_timeout: crate::config::DEFAULT_HEADER_READ_TIMEOUT,
            tls: None,
            metrics: MetricsServing::Public,
            ui: true,
            console_https: false,
        }
    }
}

/// The daemon's HTTP application: the admin router, traced, with a request timeout.
///
/// The trace layer logs method, path, status and latency at DEBUG; never headers, so the
/// `Authorization` header (a key) stays out of the logs, and never a path segment or query
/// value that could be a key (`request_log.rs`).
pub fn app(store: Store, request_timeout: Duration) -> Router {
    let timing = Timing {
        limit: request_timeout,
        tls: false,
    };
    layered(latchkey_admin::router(store), timing)
}

/// The request timeout, and whether browsers use HTTPS (the daemon's TLS or a proxy's:
/// for the console's headers on what the timeout answers under `/ui`).
#[derive(Debug, Clone, Copy)]
struct Timing {
    limit: Duration,
    tls: bool,
}

/// The request timeout and the request log around a router, and `Connection: close` on an
/// answer that leaves the request's body unread (`unread_body`). Request logs are DEBUG:
/// one INFO line per request would make the log grow with traffic (and with attacks).
fn layered(router: Router, timing: Timing) -> Router {
    router
        .layer(middleware::from_fn_with_state(timing, timed))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::request_log::span)
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // A 5xx is per request too: its cause is logged where it is known (a
                // keystore failure is a WARN), not again as a context-free ERROR.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(middleware::from_fn(crate::unread_body::close_if_unread))
}

/// The request timeout: past it, a request is answered 503 `request_timeout`. Its future is
/// dropped, but the blocking work it started keeps running, so a write may still be made:
/// the answer says the outcome is unknown, not that nothing happened; unless the handler
/// was still waiting for the request's body, which every handler reads whole before it
/// acts: then 408 `body_timeout`, nothing was done. Not for
/// `GET /v1/backup`, whose answer waits for a copy of the whole store (minutes, at a
/// million keys), nor, once its body is read, for a request whose answer is a new key's
/// secret ([`mints_a_secret`]): cut, it could make a key whose secret no one ever sees. Its
/// body still has the timeout to arrive (nothing is made before it has), so that no caller
/// holds a connection open by sending it slowly. The change feed's stream is not
/// concerned, its answer starts at once. (`tower_http`'s `TimeoutLayer` times every request
/// alike.)
/// Under `/ui` the answers are the console's pages, with its headers.
async fn timed(State(timing): State<Timing>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/v1/backup" {
        return next.run(request).await;
    }
    let console = (path == "/ui" || path.starts_with("/ui/")).then_some(timing.tls);
    let cut_short = |what| match console {
        Some(tls) => latchkey_console::timed_out_page(what, tls),
        None if what == TimedOut::Body => latchkey_admin::body_timeout_response(),
        None => latchkey_admin::request_timeout_response(),
    };
    if mints_a_secret(request.method(), path) {
        let response = body_timed(timing.limit, request, next).await;
        return response.unwrap_or_else(|| cut_short(TimedOut::Body));
    }
    let body = request.extensions().get::<BodyWatch>().cloned();
    match tokio::time::timeout(timing.limit, next.run(request)).await {
        Ok(response) => response,
        // Cut while its handler waited for the rest of its body: nothing was done.
        Err(_) if body.is_some_and(|body| body.waiting()) => cut_short(TimedOut::Body),
        Err(_) => cut_short(TimedOut::Request),
    }
}

/// Runs a request whose body only is timed: past `limit` before the body has arrived, the
/// answer is `None`, for a 408 `body_timeout` (the handler reads the whole body before it
/// does anything, so it did nothing); once the body has arrived, the request runs to its
/// answer.
async fn body_timed(limit: Duration, request: Request, next: Next) -> Option<Response> {
    let late = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&late);
    let request = request.map(|body| {
        let body = DeadlineBody::new(limit, body).map_err(move |e| {
            if e.is::<TimeoutError>() {
                seen.store(true, Ordering::Relaxed);
            }
            e
        });
        axum::body::Body::new(body)
    });
    let response = next.run(request).await;
    (!late.load(Ordering::Relaxed)).then_some(response)
}

/// Whether a request (`method`, `path` without its query) creates or rotates a key, whose
/// answer (API or console) is the only one ever to hold the new key's secret: the daemon's
/// request timeout spares it, and the CLI waits longer for it.
pub(crate) fn mints_a_secret(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST
        && (matches!(path, "/v1/keys" | "/ui/keys")
            || ((path.starts_with("/v1/keys/") || path.starts_with("/ui/keys/"))
                && path.ends_with("/rotate")))
}

/// Serves until `shutdown` completes, lets open requests finish (up to the drain timeout,
/// then ends those still open), persists usage figures, flushes the store and closes it:
/// `config.store` should be the caller's last handle, as `run` waits up to 2 s for the
/// store to close (and warns if it did not).
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
    let (access, metrics_listener) = match config.metrics {
        MetricsServing::Public => (MetricsAccess::Public, None),
        MetricsServing::Keyed => (MetricsAccess::Keyed, None),
        MetricsServing::Listener(listener) => (MetricsAccess::Separate, Some(listener)),
    };
    let mut routers = latchkey_admin::routers(config.store.clone(), access);
    if config.ui {
        // The console calls the same API router in process, with the session's key.
        let console = latchkey_console::router(
            config.store.clone(),
            routers.api.clone(),
            latchkey_console::ConsoleConfig::new(config.tls.is_some() || config.console_https),
        );
        routers.api = routers.api.merge(console);
    }
    // Every path the daemon does not serve answers as an unknown `/v1` path does: the
    // admin router leaves its fallback to the app that serves it.
    let not_found = || async { latchkey_admin::not_found_response() };
    routers.api = routers.api.fallback(not_found);
    routers.metrics = routers.metrics.fallback(not_found);
    let serving = |app: Router, name: &str| Listener {
        app: layered(
            app,
            Timing {
                limit: config.request_timeout,
                tls: config.tls.is_some() || config.console_https,
            },
        ),
        tls: config.tls.clone(),
        header_read_timeout: config.header_read_timeout,
        max_connections: crate::listen::MAX_CONNECTIONS,
        max_per_peer: crate::listen::MAX_CONNECTIONS_PER_PEER,
        metrics: latchkey_admin::ListenerMetrics::of(name),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let api = tokio::spawn(serving(routers.api, "api").serve(listener, stop_rx.clone()));
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(serving(routers.metrics, "metrics").serve(listener, stop_rx.clone()))
    });
    let store = config.store.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing open requests");
        // Event streams never finish by themselves; their clients reconnect and resume.
        latchkey_admin::close_event_streams(&store);
        let _ = stop.send(true);
    });
    // Aborted after the drain timeout: a listener's connections end with it, and with them
    // their handles on the store, which can then close.
    let listeners: Vec<_> = std::iter::once(api.abort_handle())
        .chain(metrics.as_ref().map(|m| m.abort_handle()))
        .collect();
    let drained = async {
        api.await?;
        if let Some(metrics) = metrics {
            metrics.await?;
        }
        anyhow::Ok(())
    };
    let drain = config.drain_timeout;
    let mut stopping = stop_rx;
    tokio::select! {
        drained = drained => drained?,
        () = async {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(?drain, "connections still open after the drain timeout; closing them");
            listeners.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
    let store = config.store;
    match store.flush() {
        Ok(()) => tracing::info!("store flushed; bye"),
        // What a flush adds to acknowledged writes (durable before they were acknowledged)
        // is best effort: a database away is no reason to fail a stop, as a full disk is not.
        Err(e @ StoreError::Unavailable(_)) => tracing::warn!(
            error = %e,
            "the keystore is unavailable: usage figures since the last flush are not persisted (no acknowledged write is lost); bye"
        ),
        Err(e) => return Err(e.into()),
    }
    // Within a container engine's 10 s with the 7 s drain: work still running on a
    // blocking thread past the drain (a database away) may hold the store longer.
    tokio::task::spawn_blocking(move || close_store(store, Duration::from_secs(2))).await?;
    Ok(())
}

/// Drops the process's last handle on its store and waits, at most `bound`, until the
/// store has closed. A process that exited while a background thread of the store still
/// held it would, on PostgreSQL, stay counted among the followers, and every other
/// process's writes would wait for it up to the staleness bound (5 s).
pub(crate) fn close_store(store: Store, bound: Duration) {
    if !store.close(bound) {
        tracing::warn!("the store did not close within {bound:?}; exiting all the same");
    }
}

/// [`close_store`] for a command that opened the store itself (`init`, `backup --db`,
/// `restore`, a direct command), as it exits: within 5 s.
pub(crate) fn close_before_exit(store: Store) {
    close_store(store, Duration::from_secs(5));
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
///
/// On Unix the handlers are installed when this is called, not when the future is first
/// polled: call it before announcing the daemon (`latchkey serve` does, before `listening
/// on`), so that a signal sent from then on stops it gracefully rather than by the
/// signal's default action. Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = [
            ("Ctrl-C", signal(SignalKind::interrupt())),
            ("SIGTERM", signal(SignalKind::terminate())),
        ];
        let [interrupt, terminate] = streams.map(|(name, stream)| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        });
        async move {
            tokio::select! {
                () = interrupt => {},
                () = terminate => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;

    /// A request still running at the drain timeout: `run` ends it, and returns only once
    /// the store has closed (here: another open of it in this process succeeds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_closes_the_store_even_past_the_drain_timeout() {
        use std::io::Write;

        use latchkey_core::{Location, StoreConfig};

        let dir = tempfile::tempdir().unwrap();
        let location = Location::Dir(dir.path().join("store"));
        let (store, admin) =
            Store::create_with_admin_at(&location, "lk", StoreConfig::default()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServeConfig {
            drain_timeout: Duration::from_millis(200),
            ..ServeConfig::new(store)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run(config, listener, async move {
            let _ = stopped.await;
        }));
        // A request whose body never comes: it outlasts the drain.
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            admin.secret.expose()
        );
        socket.write_all(head.as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("run returns")
            .unwrap()
            .unwrap();
        let reopened = tokio::task::spawn_blocking(move || {
            latchkey_core::Store::open_at(&location, StoreConfig::default())
        })
        .await
        .unwrap();
        assert!(reopened.is_ok(), "{reopened:?}");
    }

    /// Routes that each answer after a minute, on a paused clock (time jumps to the next
    /// timer whenever nothing else is to be done): only the backup's and those that make a
    /// key (whose answer alone holds its secret) are not cut at 30 s.
    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_spares_the_backup_and_new_secrets_only() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "done"
        };
        let router = Router::new()
            .route("/v1/backup", get(slow))
            .route("/v1/users", get(slow).post(slow))
            .route("/v1/keys", axum::routing::post(slow))
            .route("/v1/keys/{id}/rotate", axum::routing::post(slow))
            .route("/v1/keys/{id}/revoke", axum::routing::post(slow))
            .route("/ui/keys", axum::routing::post(slow))
            .route("/ui/keys/{id}/rotate", axum::routing::post(slow))
            .route("/ui/users", axum::routing::post(slow));
        let post = |path: &str| Request::post(path).body(Body::empty()).unwrap();
        let timed_out = |path: &'static str| {
            let app = layered(router.clone(), THIRTY);
            async move { app.oneshot(post(path)).await.unwrap().status() }
        };
        for path in [
            "/v1/keys",
            "/v1/keys/k/rotate",
            "/ui/keys",
            "/ui/keys/k/rotate",
        ] {
            assert_eq!(timed_out(path).await, StatusCode::OK, "{path}");
        }
        for path in ["/v1/users", "/v1/keys/k/revoke"] {
            assert_eq!(
                timed_out(path).await,
                StatusCode::SERVICE_UNAVAILABLE,
                "{path}"
            );
        }
        let app = layered(router.clone(), THIRTY);
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let users = app.clone().oneshot(get("/v1/users")).await.unwrap();
        assert_eq!(users.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            users.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(problem_code(users).await, "request_timeout");
        let backup = app.oneshot(get("/v1/backup")).await.unwrap();
        assert_eq!(backup.status(), StatusCode::OK);
        // Under `/ui`, the console's page with the console's headers (HSTS under TLS).
        for tls in [false, true] {
            let app = layered(router.clone(), Timing { tls, ..THIRTY });
            let page = app.oneshot(post("/ui/users")).await.unwrap();
            assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(page_says(page, tls, "may still have been done").await);
        }
    }

    const THIRTY: Timing = Timing {
        limit: Duration::from_secs(30),
        tls: false,
    };

    /// The `code` of a problem+json answer.
    async fn problem_code(answer: Response) -> String {
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let problem: latchkey_admin::Problem = serde_json::from_slice(&body).unwrap();
        problem.code
    }

    /// Whether `answer` is a console page saying `words`, with the console's headers (and
    /// HSTS only under TLS).
    async fn page_says(answer: Response, tls: bool, words: &str) -> bool {
        let headers = answer.headers().clone();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        let html = String::from_utf8_lossy(&body);
        let header = |name: http::header::HeaderName| headers.get(name).map(|v| v.to_owned());
        headers[http::header::CONTENT_TYPE] == "text/html; charset=utf-8"
            && html.contains(words)
            && header(http::header::CONTENT_SECURITY_POLICY).is_some()
            && header(http::header::X_FRAME_OPTIONS).is_some_and(|v| v == "DENY")
            && header(http::header::CACHE_CONTROL).is_some_and(|v| v == "no-store")
            && header(http::header::STRICT_TRANSPORT_SECURITY).is_some() == tls
    }

    /// A request that makes a key gets the timeout to send its body: one that never ends is
    /// answered 408 `body_timeout`, and its handler never runs; one whose body is whole
    /// runs to its answer past the timeout.
    #[tokio::test(start_paused = true)]
    async fn a_key_s_creation_has_the_timeout_to_send_its_body() {
        let made = Arc::new(AtomicBool::new(false));
        let handler = {
            let made = Arc::clone(&made);
            move |_: axum::body::Bytes| async move {
                made.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(60)).await;
                "made"
            }
        };
        let router = Router::new()
            .route("/v1/keys", axum::routing::post(handler.clone()))
            .route("/ui/keys/{id}/rotate", axum::routing::post(handler));
        let app = layered(router, THIRTY);
        let request = Request::post("/v1/keys").body(Body::new(Endless)).unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(problem_code(answer).await, "body_timeout");
        // The console's form: its own page.
        let request = Request::post("/ui/keys/k/rotate")
            .body(Body::new(Endless))
            .unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(page_says(answer, false, "nothing was done").await);
        assert!(!made.load(Ordering::Relaxed), "no handler ran");
        // A whole body is read, and the handler runs past the timeout as before.
        let request = Request::post("/v1/keys").body(Body::from("{}")).unwrap();
        let answer = app.oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(made.load(Ordering::Relaxed));
    }

    /// Any other request cut by the timeout while its handler waited for the rest of its
    /// body is answered 408 `body_timeout` (nothing was done: RFC hunt L2), not 503
    /// `request_timeout`; one whose handler was past reading it, or never read it, 503.
    #[tokio::test(start_paused = true)]
    async fn a_request_cut_while_its_body_was_awaited_did_nothing() {
        let reads = |_: axum::body::Bytes| async { "read" };
        let ignores = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "slow"
        };
        let router = Router::new()
            .route("/v1/groups", axum::routing::post(reads))
            .route("/ui/users", axum::routing::post(reads))
            .route("/v1/keys/k/revoke", axum::routing::post(ignores));
        let app = layered(router, THIRTY);
        let endless = |path: &str| Request::post(path).body(Body::new(Endless)).unwrap();
        let answer = app.clone().oneshot(endless("/v1/groups")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(problem_code(answer).await, "body_timeout");
        let page = app.clone().oneshot(endless("/ui/users")).await.unwrap();
        assert_eq!(page.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(page_says(page, false, "nothing was done").await);
        // Its handler never read the body: whatever it did, it may have done.
        let answer = app.oneshot(endless("/v1/keys/k/revoke")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem_code(answer).await, "request_timeout");
    }

    /// A body whose bytes never come.
    struct Endless;

    impl hyper::body::Body for Endless {
        type Data = bytes::Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>>
        {
            std::task::Poll::Pending
        }
    }

    /// A 5xx answer adds no ERROR line of the request log: the handler logged its cause.
    #[tokio::test]
    async fn a_failed_request_logs_no_error() {
        use std::sync::Mutex;
        use tracing_subscriber::layer::SubscriberExt;

        /// Counts the ERROR events it sees.
        struct Errors(Arc<Mutex<usize>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *event.metadata().level() == Level::ERROR {
                    *self.0.lock().unwrap() += 1;
                }
            }
        }
        let errors = Arc::new(Mutex::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(Errors(errors.clone()))
            .with(tracing_subscriber::filter::LevelFilter::TRACE);
        let _guard = tracing::subscriber::set_default(subscriber);
        let router = Router::new().route(
            "/v1/users",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        );
        let app = layered(router, THIRTY);
        let request = Request::get("/v1/users").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(*errors.lock().unwrap(), 0);
    }
}
