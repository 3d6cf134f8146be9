//! [`RequirePermission`]: the service that checks the principal's permission.

use std::mem;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::Permission;
use tower::Service;

use super::extra::{ExtraCharger, give_back_base, refuse_extra};
use super::future::ResponseFuture;
use super::layer::RequirePermissionLayer;
use crate::principal::Principal;
use crate::rejection::Rejection;
use crate::usage;
use crate::verifier::Charged;

/// Passes a request on only when its principal holds the permission; made by
/// [`RequirePermissionLayer`].
///
/// # Example
///
/// ```
/// use latchkey_tower::{Permission, RequirePermission};
/// use tower::service_fn;
///
/// let service = RequirePermission::new(
///     service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
///     }),
///     Permission::from_static("orders:write"),
/// );
/// # let _ = service;
/// ```
///
/// # Rejections
///
/// `Ok(response)`: 403 `insufficient_permission`, or 401 `missing_key` without a
/// principal. See the [module docs](crate::require).
///
/// # Credits
///
/// A route's extra cost ([`RequirePermissionLayer::cost`]) is taken from the key's rate
/// limits and credits: from its meter, or, for a key its verifier keeps the usage control of
/// (a remote verifier), by the verifier ([`Verifier::charge_extra`](crate::Verifier::charge_extra)).
/// When the key's reserved slice is short, the reservation (a durable write, or a request to
/// the daemon) runs off the async workers and the inner service, cloned as tower advises, is
/// called once it admits the request.
#[derive(Clone, Debug)]
pub struct RequirePermission<S> {
    inner: S,
    layer: RequirePermissionLayer,
}

impl<S> RequirePermission<S> {
    /// Wraps `inner`, requiring `permission`.
    pub fn new(inner: S, permission: Permission) -> Self {
        Self::from_parts(inner, RequirePermissionLayer::new(permission))
    }

    pub(super) fn from_parts(inner: S, layer: RequirePermissionLayer) -> Self {
        RequirePermission { inner, layer }
    }

    crate::macros::define_inner_service_accessors!();
}

// In its own impl so that `RequirePermission::layer(..)` infers the service type, as
// `HashMap::new` infers its hasher.
impl RequirePermission<()> {
    /// The layer requiring `permission`: the same as [`RequirePermissionLayer::new`].
    pub fn layer(permission: Permission) -> RequirePermissionLayer {
        RequirePermissionLayer::new(permission)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequirePermission<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The check is synchronous, so the inner service made ready by `poll_ready` is called
        // right here: no clone is needed, unless a credit reservation must be waited for.
        let principal = match request.extensions().get::<Principal>() {
            Some(principal) if principal.allows(self.layer.permission()) => principal,
            Some(_) => {
                // Refused before it was served: the credit the layer charged it goes back
                // (usage hunt s56 M2: a key spent its credits on 403s). Its 1 stays with
                // the rate limits, as for any authenticated request, so they bound a flood
                // of 403s (review s58 L6: given back too, a key with credits was never
                // throttled there, and on a shared database the unit went into a slice
                // that could lapse).
                give_back_base(&request, false);
                return ResponseFuture::rejected(self.layer.forbidden());
            }
            None => return ResponseFuture::rejected(Rejection::missing_key()),
        };
        let extra = self.layer.extra_cost();
        let charged = if extra == 0 {
            Charged::Done(Ok(()))
        } else if let Some(meter) = &principal.meter {
            usage::charged(meter.try_charge(extra))
        } else if let Some(charger) = request.extensions().get::<ExtraCharger>() {
            // The verifier keeps the key's usage control (a remote verifier's lease).
            charger.charge(extra)
        } else {
            // A key without usage control.
            Charged::Done(Ok(()))
        };
        match charged {
            Charged::Done(Ok(())) => ResponseFuture::calling(self.inner.call(request)),
            Charged::Done(Err(e)) => ResponseFuture::rejected(refuse_extra(&e, &request)),
            Charged::Waiting(task) => {
                // The ready service goes into the future; `self` keeps a clone that has not
                // been polled (see `ApiKeyAuth`).
                let mut inner = self.inner.clone();
                mem::swap(&mut self.inner, &mut inner);
                ResponseFuture::reserving(task, request, inner)
            }
        }
    }
}
