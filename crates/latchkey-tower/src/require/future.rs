//! [`ResponseFuture`]: the inner service's response, or the rejection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::VerifyError;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower::Service;

use super::extra::refuse_extra;
use crate::rejection::Rejection;
use crate::usage;

pin_project! {
    /// The response future of [`RequirePermission`](super::RequirePermission).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // The route's extra cost could not be taken at once (a credit reservation, or a
        // request to the daemon for a remote verifier's lease): the request and the ready
        // service wait here for its answer.
        Reserving {
            reserving: usage::Reserving<(Request<ReqBody>, S)>,
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

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn calling(future: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Calling { future },
        }
    }

    pub(super) fn rejected(rejection: Rejection) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
        }
    }

    pub(super) fn reserving(
        task: JoinHandle<Result<(), VerifyError>>,
        request: Request<ReqBody>,
        inner: S,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Reserving {
                reserving: usage::Reserving::new(task, (request, inner)),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Reserving { reserving } => {
                    let (answer, (request, mut inner)) = ready!(reserving.poll_answer(cx));
                    if let Err(error) = answer {
                        let rejection = refuse_extra(&error, &request);
                        return Poll::Ready(Ok(rejection.into_http_response()));
                    }
                    let future = inner.call(request);
                    this.kind.set(Kind::Calling { future });
                }
                KindProj::Calling { future } => return future.poll(cx),
                KindProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(rejection.into_http_response()));
                }
            }
        }
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Reserving { .. } => "reserving",
            Kind::Calling { .. } => "calling",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
