//! An answer given before the request's body was read to its end closes the connection,
//! and says so.
//!
//! hyper drains a body left unread only when all of it has already arrived; otherwise it
//! closes the connection after the answer, without saying `Connection: close`. A client
//! that pools connections then sends its next request on the closed one and cannot tell
//! whether it was done (seen in a hunt: 38 of 3,600 POSTs refused with 401, from a
//! revoked or unknown key, lost the request after them). So such an answer (a refused key,
//! a body too large, a request timed out) carries `Connection: close`, and the client opens
//! another connection for its next request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http::header::CONNECTION;
use http_body::{Frame, SizeHint};

/// The middleware: see the module's docs. It leaves a [`BodyWatch`] in the request's
/// extensions for the layers inside, unless the request has no body.
pub(crate) async fn close_if_unread(mut request: Request, next: Next) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let watch = BodyWatch::default();
    request.extensions_mut().insert(watch.clone());
    let seen = watch.clone();
    let request = request.map(|inner| Body::new(Watched { inner, watch: seen }));
    let mut response = next.run(request).await;
    if !watch.0.ended.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What has become of a request's body so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyWatch(Arc<Flags>);

#[derive(Debug, Default)]
struct Flags {
    /// Read to its end.
    ended: AtomicBool,
    /// Its reader waits for bytes that have not come.
    waiting: AtomicBool,
}

impl BodyWatch {
    /// Whether the request's reader is waiting for more of its body: a handler that reads
    /// its whole body before it acts, as every handler here does, has done nothing yet.
    pub(crate) fn waiting(&self) -> bool {
        self.0.waiting.load(Ordering::Acquire)
    }
}

/// A request body that notes when it has been read to its end, and whether its reader
/// is waiting on it.
struct Watched {
    inner: Body,
    watch: BodyWatch,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.watch.0.ended.store(true, Ordering::Release);
        }
        self.watch
            .0
            .waiting
            .store(polled.is_pending(), Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
