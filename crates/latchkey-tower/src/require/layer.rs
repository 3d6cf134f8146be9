//! [`RequirePermissionLayer`]: one permission, and its 403 built once.

use latchkey_core::Permission;
use tower::Layer;

use super::cost::RouteCost;
use super::service::RequirePermission;
use crate::rejection::Rejection;

/// Requires one permission of the authenticated principal: a [`tower::Layer`] that makes
/// [`RequirePermission`] services.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use latchkey_tower::{Permission, RequirePermission};
///
/// let orders: Router = Router::new()
///     .route("/orders", get(|| async { "[]" }))
///     .route_layer(RequirePermission::layer(Permission::from_static("orders:read")));
/// # let _ = orders;
/// ```
///
/// # Rejections
///
/// 403 `insufficient_permission` when the principal lacks it; 401 `missing_key` when no
/// principal is there. See the [module docs](crate::require).
#[derive(Clone, Debug)]
pub struct RequirePermissionLayer {
    permission: Permission,
    forbidden: Rejection,
    cost: RouteCost,
}

impl RequirePermissionLayer {
    /// Requires `permission`: [`Permission::from_static`] for a literal such as
    /// `orders:write`, [`Permission::parse`] for one read at run time.
    pub fn new(permission: Permission) -> Self {
        let forbidden = Rejection::insufficient_permission(&permission);
        RequirePermissionLayer {
            permission,
            forbidden,
            cost: RouteCost::ONE,
        }
    }

    /// The permission required.
    pub fn permission(&self) -> &Permission {
        &self.permission
    }

    /// What a request to this route costs against the key's rate limits and credits
    /// (default 1, the cost the authentication layer already charged): the layer charges
    /// the rest, `cost - 1`, once the permission is checked, from the key's store or,
    /// through a remote verifier, from the daemon. A cost above what a key's limit or
    /// credits could ever allow refuses every request (429).
    ///
    /// ```
    /// use latchkey_tower::{Permission, RequirePermission, RouteCost};
    ///
    /// const REPORT_COST: RouteCost = RouteCost::new(5).unwrap();
    /// let expensive =
    ///     RequirePermission::layer(Permission::from_static("reports:run")).cost(REPORT_COST);
    /// # let _ = expensive;
    /// ```
    pub fn cost(mut self, cost: RouteCost) -> Self {
        self.cost = cost;
        self
    }

    pub(super) fn extra_cost(&self) -> u32 {
        self.cost.get() - 1
    }

    pub(super) fn forbidden(&self) -> Rejection {
        self.forbidden.clone()
    }
}

impl<S> Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission::from_parts(inner, self.clone())
    }
}
