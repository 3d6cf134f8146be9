//! [`RequirePermission`]: the service that checks the principal's permission.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::Permission;
use tower::Service;

use super::future::ResponseFuture;
use super::layer::RequirePermissionLayer;
use crate::principal::Principal;
use crate::rejection::Rejection;

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
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The check is synchronous, so the inner service made ready by `poll_ready` is called
        // right here: no clone is needed.
        match request.extensions().get::<Principal>() {
            Some(principal) if principal.allows(self.layer.permission()) => {
                let extra = self.layer.extra_cost();
                if extra > 0
                    && let Some(meter) = &principal.meter
                    && let Err(e) = meter.charge(extra)
                {
                    return ResponseFuture::rejected(crate::usage::rejection(&e));
                }
                ResponseFuture::calling(self.inner.call(request))
            }
            Some(_) => ResponseFuture::rejected(self.layer.forbidden()),
            None => ResponseFuture::rejected(Rejection::missing_key()),
        }
    }
}
