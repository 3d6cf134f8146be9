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
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How one listener serves.
#[derive(Clone)]
pub(crate) struct Listener {
    /// The routes.
    pub(crate) app: Router,
    /// HTTPS when set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The longest a connection may take to send a request's headers: from when it opens
    /// (the TLS handshake included), and from the end of the previous response on a
    /// kept-alive connection, so it is also the idle keep-alive timeout.
    pub(crate) header_read_timeout: Duration,
}

impl Listener {
    /// Accepts connections until `stop` turns true, then stops accepting and waits for the
    /// open connections to finish (idle ones close at once; the caller bounds the wait).
    pub(crate) async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let tls = self.tls.clone().map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let connection = Connection {
                            app: self.app.clone(),
                            peer,
                            http: http.clone(),
                            watcher: graceful.watcher(),
                            header_read_timeout: self.header_read_timeout,
                        };
                        tokio::spawn(connection.run(tcp, tls.clone()));
                    }
                    // Out of file descriptors and the like: the socket stays usable, so
                    // wait a little instead of spinning, as `axum::serve` does.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stopped => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
    }
}

/// One accepted connection.
struct Connection {
    app: Router,
    /// The peer, for keys with `allowed_ips` (as `ConnectInfo`, like `axum::serve` gives).
    peer: SocketAddr,
    http: http1::Builder,
    watcher: Watcher,
    header_read_timeout: Duration,
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
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = ConnectInfo(self.peer);
        let app = self.app.map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(peer);
            request
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
