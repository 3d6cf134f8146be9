//! [`ResponseFuture`]: the inner service's response, or the rejection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::{Principal, VerifyError};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::Span;

use super::config::Config;
use super::service::decide;
use crate::rejection::Rejection;

pin_project! {
    /// The response future of [`ApiKeyAuth`](super::ApiKeyAuth).
    ///
    /// Runs the inner service's future inside the authentication's tracing span.
    pub struct ResponseFuture<S, ReqBody, VF>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, VF>,
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, VF>
    where
        S: Service<Request<ReqBody>>,
    {
        // The verifier has not answered yet; `pending` is taken when it does. Boxed: only an
        // asynchronous verifier (a network call) gets here, and the future stays small for
        // the synchronous path, which moves it a few times per request.
        Verifying {
            verify: VF,
            pending: Option<Box<Pending<S, ReqBody>>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Rejected {
            rejection: Option<Rejection>,
        },
    }
}

/// What the inner call needs once the verifier has answered.
struct Pending<S, ReqBody> {
    request: Request<ReqBody>,
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, VF> ResponseFuture<S, ReqBody, VF>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn calling(future: S::Future, span: Span) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            span,
        }
    }

    pub(super) fn rejected(rejection: Rejection, span: Span) -> Self {
        ResponseFuture {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            span,
        }
    }

    pub(super) fn verifying(
        verify: VF,
        request: Request<ReqBody>,
        inner: S,
        config: Arc<Config>,
        span: Span,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                pending: Some(Box::new(Pending {
                    request,
                    inner,
                    config,
                })),
            },
            span,
        }
    }
}

impl<S, ReqBody, ResBody, VF> Future for ResponseFuture<S, ReqBody, VF>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
    VF: Future<Output = Result<Principal, VerifyError>> + Unpin,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Verifying { verify, pending } => {
                    let result = ready!(Pin::new(verify).poll(cx));
                    let Pending {
                        mut request,
                        mut inner,
                        config,
                    } = *pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match decide(result, this.span, &config) {
                        Ok(principal) => {
                            request
                                .extensions_mut()
                                .insert(crate::Principal::from(principal));
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(rejection) => return Poll::Ready(Ok(rejection.into_http_response())),
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(rejection.into_http_response()));
                }
            }
        }
    }
}

impl<S, ReqBody, VF> std::fmt::Debug for ResponseFuture<S, ReqBody, VF>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Verifying { .. } => "verifying",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
