//! [`RequirePermissionLayer`]: one permission, and its 403 built once.

use latchkey_core::Permission;
use tower::Layer;

use super::service::RequirePermission;
use crate::rejection::Rejection;

/// Requires one permission of the authenticated principal: a [`tower::Layer`] that makes
/// [`RequirePermission`] services.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use latchkey_tower::RequirePermission;
///
/// let orders: Router = Router::new()
///     .route("/orders", get(|| async { "[]" }))
///     .route_layer(RequirePermission::layer("orders:read"));
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
    cost: u32,
}

impl RequirePermissionLayer {
    /// Requires `permission` (e.g. `orders:write`).
    ///
    /// # Panics
    ///
    /// When `permission` is not a valid permission string; use
    /// [`RequirePermissionLayer::from_permission`] with a parsed one to handle that.
    pub fn new(permission: &str) -> Self {
        match Permission::parse(permission) {
            Ok(permission) => Self::from_permission(permission),
            Err(e) => panic!("RequirePermission: {permission:?} is not a permission: {e}"),
        }
    }

    /// Requires a parsed permission.
    pub fn from_permission(permission: Permission) -> Self {
        let forbidden = Rejection::insufficient_permission(&permission);
        RequirePermissionLayer {
            permission,
            forbidden,
            cost: 1,
        }
    }

    /// The permission required.
    pub fn permission(&self) -> &Permission {
        &self.permission
    }

    /// What a request to this route costs against the key's rate limits and credits
    /// (default 1, the cost the authentication layer already charged): the layer charges
    /// the rest, `cost - 1`, once the permission is checked.
    ///
    /// # Panics
    ///
    /// When `cost` is 0 or above 1,000,000.
    ///
    /// ```
    /// use latchkey_tower::RequirePermission;
    /// let expensive = RequirePermission::layer("reports:run").cost(5);
    /// # let _ = expensive;
    /// ```
    pub fn cost(mut self, cost: u32) -> Self {
        assert!(
            (1..=latchkey_core::limits::MAX_COST).contains(&cost),
            "a route's cost is 1 to {}",
            latchkey_core::limits::MAX_COST
        );
        self.cost = cost;
        self
    }

    pub(super) fn extra_cost(&self) -> u32 {
        self.cost - 1
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
