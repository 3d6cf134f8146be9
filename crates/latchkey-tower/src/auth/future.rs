//! [`ResponseFuture`]: the inner service's response, or the rejection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::{Principal, VerifyError};
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower::Service;
use tracing::Span;

use super::config::Config;
use super::private;
use super::service::{Next, decide, usage_refused};
use crate::rejection::Rejection;
use crate::usage;

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
        // The key came in the URI's query: a success answer is made `private`.
        private: bool,
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
        // The key's credit slice ran short: a reservation runs on the blocking pool, and
        // `pending` (the request, with its principal) is taken when it answers.
        Reserving {
            reserving: usage::Reserving<Box<Pending<S, ReqBody>>>,
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

/// What the inner call needs once the verifier (or a credit reservation) has answered.
pub(super) struct Pending<S, ReqBody> {
    request: Request<ReqBody>,
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody> Pending<S, ReqBody> {
    pub(super) fn boxed(request: Request<ReqBody>, inner: S, config: Arc<Config>) -> Box<Self> {
        Box::new(Pending {
            request,
            inner,
            config,
        })
    }
}

impl<S, ReqBody, VF> ResponseFuture<S, ReqBody, VF>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn calling(future: S::Future, span: Span) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            span,
            private: false,
        }
    }

    pub(super) fn rejected(rejection: Rejection, span: Span) -> Self {
        ResponseFuture {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            span,
            private: false,
        }
    }

    pub(super) fn reserving(
        task: JoinHandle<Result<(), VerifyError>>,
        pending: Box<Pending<S, ReqBody>>,
        span: Span,
    ) -> Self {
        ResponseFuture {
            state: State::Reserving {
                reserving: usage::Reserving::new(task, pending),
            },
            span,
            private: false,
        }
    }

    /// Marks a success answer `Cache-Control: private` when the key came in the URI's
    /// query (RFC 6750 §2.3).
    pub(super) fn private_if(mut self, query: bool) -> Self {
        self.private = query;
        self
    }

    pub(super) fn verifying(verify: VF, pending: Box<Pending<S, ReqBody>>, span: Span) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                pending: Some(pending),
            },
            span,
            private: false,
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
                    let reservation = match decide(result, this.span, &config, &request) {
                        Next::Pass(principal, reservation, base) => {
                            config
                                .extensions
                                .insert(&mut request, principal.into(), base);
                            reservation
                        }
                        Next::Reject(rejection) => {
                            return Poll::Ready(Ok(rejection.into_http_response()));
                        }
                    };
                    match reservation {
                        None => {
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Some(task) => {
                            let pending = Pending::boxed(request, inner, config);
                            this.state.set(State::Reserving {
                                reserving: usage::Reserving::new(task, pending),
                            });
                        }
                    }
                }
                StateProj::Reserving { reserving } => {
                    let (answer, pending) = ready!(reserving.poll_answer(cx));
                    let Pending {
                        request,
                        mut inner,
                        config,
                    } = *pending;
                    if let Err(error) = answer {
                        let rejection = usage_refused(this.span, &error, &config);
                        return Poll::Ready(Ok(rejection.into_http_response()));
                    }
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let mut answer = ready!(future.poll(cx));
                    if *this.private
                        && let Ok(response) = &mut answer
                        && response.status().is_success()
                    {
                        private::keep_private(response.headers_mut());
                    }
                    return Poll::Ready(answer);
                }
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
            State::Reserving { .. } => "reserving",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
