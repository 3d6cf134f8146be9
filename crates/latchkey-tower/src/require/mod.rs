//! Guarding routes with a permission: [`RequirePermissionLayer`], the service
//! [`RequirePermission`] and its [`ResponseFuture`].
//!
//! Put it under [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer), per route: in axum with
//! `route_layer`, so an unknown path still answers 404 rather than 403.
//!
//! | the request | answer |
//! | --- | --- |
//! | authenticated, permission covered (wildcards included) | the inner service |
//! | authenticated, permission not covered | 403 `insufficient_permission`, `WWW-Authenticate: Bearer error="insufficient_scope", scope="<permission>"` |
//! | not authenticated (no layer ran, or a public path) | 401 `missing_key`, `WWW-Authenticate: Bearer realm="api"` |
//!
//! The check is made on every request against the principal the layer just verified, so a
//! permission removed from a user or a group is refused on the very next request.

mod cost;
pub(crate) mod extra;
mod future;
mod layer;
mod service;

pub use cost::RouteCost;
pub use future::ResponseFuture;
pub use layer::RequirePermissionLayer;
pub use service::RequirePermission;
