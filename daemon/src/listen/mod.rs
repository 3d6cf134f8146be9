//! The accept loop of every listener: plain TCP or TLS, HTTP/1.1, a header-read timeout,
//! and a graceful drain.
//!
//! Our own loop rather than `axum::serve` (which exposes neither TLS nor hyper's timeouts)
//! or `axum-server` (which would own the drain we need to bound): about eighty lines over
//! hyper's connection builder, tokio-rustls and hyper-util's `GracefulShutdown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

mod places;

use latchkey_admin::{ListenerMetrics, Shed};
use places::{Peers, Place, Waiting};

/// How one listener serves.
#[derive(Clone)]
pub(crate) struct Listener {
    /// The routes.
    pub(crate) app: Router,
    /// HTTPS when set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The longest a connection may take to send a request's headers: from when it opens
    /// (after a TLS handshake, which has this bound of its own), and from the end of the
    /// previous response on a kept-alive connection, so it is also the idle keep-alive
    /// timeout.
    pub(crate) header_read_timeout: Duration,
    /// The most connections open at once ([`MAX_CONNECTIONS`]). One accepted beyond it
    /// takes the place of the oldest that has sent no request yet, which is closed; when
    /// every one has, it is closed at once, before anything is read from it.
    pub(crate) max_connections: usize,
    /// The most of them one client address holds before their first request has come
    /// ([`MAX_CONNECTIONS_PER_PEER`]), beyond which its next is closed at once, as past
    /// `max_connections`.
    pub(crate) max_per_peer: usize,
    /// Its series in `/metrics`: connections open, shed, failed handshakes.
    pub(crate) metrics: ListenerMetrics,
}

/// How many connections one listener keeps open at once. Each holds at most
/// [`MAX_HEAD_BYTES`] of an unfinished request head and a task, for at most the header
/// timeout: this bounds what slow clients can hold.
pub(crate) const MAX_CONNECTIONS: usize = 4096;

/// How many of them one client address may hold before their first request's headers
/// have come (an IPv6 client: its /64), so that one client trickling its headers cannot
/// hold them all and shut everyone else out for as long as it keeps at it (hostile hunt
/// M1: 4,200 slow connections from one address kept 228 of 249 verifications out). Once a
/// connection's first request has come it no longer counts: a proxy's pool or the event
/// streams of many apps behind one NAT address are not held to it (review s49 M2).
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 512;

/// How long a connection that has sent no request yet keeps its place against newer
/// ones in a full listener: time for a real client's request, or TLS handshake, to come.
pub(crate) const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// The largest request head (request line and headers): past it, 431. Also what a
/// connection buffers (hyper's default would be about 400 KiB).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

impl Listener {
    /// Accepts connections until `stop` turns true, then stops accepting and waits for the
    /// open connections to finish (idle ones close at once; the caller bounds the wait).
    /// The connections' tasks belong to this future: dropped or aborted, it ends them all,
    /// and with them their handles on the store.
    pub(crate) async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES);
        let open = Arc::new(Semaphore::new(self.max_connections));
        let peers = Peers::default();
        let waiting = Waiting::default();
        let tls = self.tls.clone().map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Some(peer_slot) = peers.take(peer.ip(), self.max_per_peer) else {
                            self.metrics.shed(Shed::PerAddress);
                            // At DEBUG, as the cap below.
                            tracing::debug!(%peer, "too many open connections from one address: one closed at once");
                            continue;
                        };
                        let slot = match Arc::clone(&open).try_acquire_owned() {
                            Ok(slot) => slot,
                            Err(_) => match waiting.oldest_out(EVICTABLE_AFTER) {
                                Some(slot) => {
                                    self.metrics.shed(Shed::Evicted);
                                    slot
                                }
                                None => {
                                    self.metrics.shed(Shed::Full);
                                    // Dropped: closed at once. At DEBUG: a flood is no news
                                    // to log.
                                    tracing::debug!(%peer, "too many open connections: one closed at once");
                                    continue;
                                }
                            },
                        };
                        let _ = tcp.set_nodelay(true);
                        let (place, evicted) = waiting.enter(slot, peer_slot);
                        let connection = Connection {
                            app: self.app.clone(),
                            peer,
                            place: Arc::new(place),
                            http: http.clone(),
                            watcher: graceful.watcher(),
                            header_read_timeout: self.header_read_timeout,
                            metrics: self.metrics.clone(),
                        };
                        let tls = tls.clone();
                        let open = self.metrics.opened();
                        connections.spawn(async move {
                            let _open = open;
                            tokio::select! {
                                () = connection.run(tcp, tls) => {}
                                () = evicted.notified() => {
                                    tracing::debug!(%peer, "closed before its first request: a newer connection took its place");
                                }
                            }
                        });
                    }
                    // Out of file descriptors and the like: the socket stays usable, so
                    // wait a little instead of spinning, as `axum::serve` does.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reaps the finished ones (a disabled branch while there are none).
                Some(_) = connections.join_next() => {}
                () = &mut stopped => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
        // The graceful shutdown waited for every connection hyper serves (a TLS handshake
        // included): what is left is just ending.
        connections.shutdown().await;
    }
}

/// One accepted connection.
struct Connection {
    app: Router,
    /// The peer, for keys with `allowed_ips` (as `ConnectInfo`, like `axum::serve` gives).
    peer: SocketAddr,
    /// Its place among the open connections.
    place: Arc<Place>,
    http: http1::Builder,
    watcher: Watcher,
    header_read_timeout: Duration,
    metrics: ListenerMetrics,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(tcp).await,
            Some(acceptor) => {
                // A client that opens a socket and never completes the handshake is
                // closed like one that never sends its headers.
                match tokio::time::timeout(self.header_read_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(e)) => {
                        // Only what TLS refused (an alert, a protocol error): not a
                        // connection closed or reset midway, as a load balancer's TCP probe
                        // does (re-check s53 L1), or the count would never rest.
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            self.metrics.handshake_failed();
                        }
                        tracing::debug!(error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.metrics.handshake_failed();
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = ConnectInfo(self.peer);
        let place = self.place;
        let app = self.app;
        let app = tower::service_fn(move |mut request: Request<Incoming>| {
            let kept = place.first_request();
            request.extensions_mut().insert(peer);
            let app = app.clone();
            async move {
                let mut response = if !kept {
                    // Closed for a newer connection as this request came: not served (its
                    // task ends at its next turn, most likely before this is written).
                    let close = [(http::header::CONNECTION, "close")];
                    (http::StatusCode::SERVICE_UNAVAILABLE, close).into_response()
                } else if !names_one_host(&request) {
                    // Its body unread: the connection closes after the answer, and says so
                    // (see `unread_body`).
                    let mut refused = latchkey_admin::host_refused_response();
                    refused.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    refused
                } else {
                    app.oneshot(request).await?
                };
                response
                    .headers_mut()
                    .insert(http::header::DATE, crate::date::now());
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let service = TowerToHyperService::new(app);
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        // Header-read timeouts, resets and malformed requests end here; each concerns one
        // client only.
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(error = %e, "connection closed");
        }
    }
}

/// Whether a request names its host as RFC 9112 §3.2 requires: an HTTP/1.1 request in
/// exactly one `Host` header (HTTP/1.0 needs none; HTTP/2 has `:authority`, not served).
fn names_one_host<B>(request: &Request<B>) -> bool {
    request.version() != http::Version::HTTP_11
        || request.headers().get_all(http::header::HOST).iter().count() == 1
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A listener of at most two connections, serving `ok` on every path.
    async fn two_at_most() -> (SocketAddr, watch::Sender<bool>) {
        at_most(2, 2).await
    }

    /// A listener of at most `connections`, `per_peer` of one address, serving `ok`.
    async fn at_most(connections: usize, per_peer: usize) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Listener {
            app: Router::new().fallback(|| async { "ok" }),
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            max_connections: connections,
            max_per_peer: per_peer,
            metrics: ListenerMetrics::of("test"),
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serving.serve(listener, stopped));
        (addr, stop)
    }

    /// Reads a blocking socket to its end (bounded by a read timeout): what the server sent
    /// before it closed.
    fn read_to_close(mut socket: std::net::TcpStream) -> String {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Sends a request on `socket` that asks to close it, and reads what the server sent
    /// before it closed (nothing for a connection it closed at once).
    fn asked_once(mut socket: std::net::TcpStream) -> String {
        socket.set_nonblocking(false).unwrap();
        let _ = socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        read_to_close(socket)
    }

    /// Sends a request on `socket` and reads its answer, keeping the connection open.
    fn kept_alive(mut socket: std::net::TcpStream) -> std::net::TcpStream {
        socket.set_nonblocking(false).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        socket
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0; 512];
        while !answer.ends_with(b"ok") {
            let n = socket.read(&mut chunk).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        socket
    }

    /// Whether the server closed `socket` (within 10 s) without sending anything.
    fn closed_unanswered(mut socket: std::net::TcpStream) -> bool {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut chunk = [0; 64];
        match socket.read(&mut chunk) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Connections that have had an answer (kept alive) hold their places: one past the
    /// limit is closed at once, and a place freed serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_past_the_limit_is_closed_and_a_freed_slot_serves() {
        let (addr, _stop) = two_at_most().await;
        let busy = tokio::task::spawn_blocking(move || {
            (0..2)
                .map(|_| kept_alive(std::net::TcpStream::connect(addr).unwrap()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let answer = tokio::task::spawn_blocking(move || {
            asked_once(std::net::TcpStream::connect(addr).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(answer, "", "a third connection was served");
        drop(busy);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = tokio::task::spawn_blocking(move || {
            asked_once(std::net::TcpStream::connect(addr).unwrap())
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // One `Date`, the daemon's own (hyper's is off: `date.rs`).
        assert_eq!(answer.matches("\r\ndate: ").count(), 1, "{answer}");
    }

    /// Re-check s49 N3: in a full listener, a new connection takes the place of the oldest
    /// that has sent nothing for `EVICTABLE_AFTER`, which is closed; the others waiting
    /// are kept and served (review s50 L1: younger ones are never closed for a newer one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_connection_takes_the_oldest_waiting_ones_place() {
        // One client address, not held to a share of its own here.
        let (addr, _stop) = at_most(2, 4).await;
        let oldest = std::net::TcpStream::connect(addr).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = std::net::TcpStream::connect(addr).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Both younger than `EVICTABLE_AFTER`: the newcomer is closed, they are kept.
        let early = tokio::task::spawn_blocking(move || {
            asked_once(std::net::TcpStream::connect(addr).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(
            early, "",
            "a young waiting connection was closed for a newer one"
        );
        tokio::time::sleep(EVICTABLE_AFTER).await;
        let (third, oldest_closed) = tokio::task::spawn_blocking(move || {
            let third = asked_once(std::net::TcpStream::connect(addr).unwrap());
            (third, closed_unanswered(oldest))
        })
        .await
        .unwrap();
        assert!(third.starts_with("HTTP/1.1 200"), "{third}");
        assert!(oldest_closed, "the oldest waiting connection was kept");
        let second = tokio::task::spawn_blocking(move || asked_once(second))
            .await
            .unwrap();
        assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    }

    /// Hostile hunt M1: one address holding its share of connections (headers never
    /// sent) keeps no other client out; its own next connection is closed at once. A
    /// connection that has sent a request is not held to the share (review s49 M2). (The
    /// second address, 127.0.0.2, is on Linux's loopback only: elsewhere the test is not
    /// built.)
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_holds_its_share_of_connections_and_no_more() {
        let (addr, _stop) = at_most(8, 3).await;
        let from = |source: &str| {
            let source: SocketAddr = format!("{source}:0").parse().unwrap();
            async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(source).unwrap();
                socket.connect(addr).await.unwrap().into_std().unwrap()
            }
        };
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(from("127.0.0.1").await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let same = from("127.0.0.1").await;
        let other = from("127.0.0.2").await;
        let (same, other) =
            tokio::task::spawn_blocking(move || (asked_once(same), asked_once(other)))
                .await
                .unwrap();
        assert_eq!(same, "", "a fourth connection from one address was served");
        assert!(other.starts_with("HTTP/1.1 200"), "{other}");
        // A connection closed gives its address its slot back, and so does one whose
        // first request has come (kept alive here): the next is served.
        drop(idle.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kept = from("127.0.0.1").await;
        let kept = tokio::task::spawn_blocking(move || kept_alive(kept))
            .await
            .unwrap();
        let again = from("127.0.0.1").await;
        let again = tokio::task::spawn_blocking(move || asked_once(again))
            .await
            .unwrap();
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        drop(kept);
    }

    /// What a daemon does after its drain timeout: the listener's task aborted, a request
    /// still in its handler is dropped, and with it whatever the handler held (the store).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_listener_ends_its_connections_and_what_they_hold() {
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let in_handler = Arc::clone(&held);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Listener {
            app: Router::new().fallback(move || {
                let held = Arc::clone(&in_handler);
                async move {
                    held.store(true, std::sync::atomic::Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
            }),
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            max_connections: 2,
            max_per_peer: 2,
            metrics: ListenerMetrics::of("test"),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serving.serve(listener, stopped));
        let socket = tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            socket
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            socket
        })
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !held.load(std::sync::atomic::Ordering::SeqCst)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            held.load(std::sync::atomic::Ordering::SeqCst),
            "no request in the handler"
        );
        stop.send(true).unwrap();
        task.abort();
        while Arc::strong_count(&held) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "a connection outlived its listener"
        );
        let answer = tokio::task::spawn_blocking(move || read_to_close(socket))
            .await
            .unwrap();
        assert_eq!(answer, "", "the connection was answered instead of closed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_head_past_its_bound_is_refused() {
        let (addr, _stop) = two_at_most().await;
        let answer = tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            let big = "a".repeat(MAX_HEAD_BYTES + 1024);
            let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
            let _ = socket.write_all(request.as_bytes());
            read_to_close(socket)
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    /// An HTTP/1.1 request without a `Host` header, or with two, is refused (RFC 9112
    /// §3.2); one with one, or an HTTP/1.0 request without, is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http_1_1_request_names_one_host() {
        let (addr, _stop) = two_at_most().await;
        let answers = tokio::task::spawn_blocking(move || {
            let heads = [
                "GET / HTTP/1.1\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
                "GET http://a/ HTTP/1.1\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\n",
                "GET / HTTP/1.0\r\n",
            ];
            heads.map(|head| {
                let mut socket = std::net::TcpStream::connect(addr).unwrap();
                let request = format!("{head}Connection: close\r\n\r\n");
                socket.write_all(request.as_bytes()).unwrap();
                read_to_close(socket)
            })
        })
        .await
        .unwrap();
        for refused in &answers[..3] {
            assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
            assert!(refused.contains("connection: close"), "{refused}");
            assert!(refused.contains("\"invalid_request\""), "{refused}");
        }
        for served in &answers[3..] {
            assert!(
                served.contains(" 200 OK") && served.ends_with("ok"),
                "{served}"
            );
        }
    }
}
