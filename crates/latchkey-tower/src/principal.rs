//! [`Principal`]: the authenticated caller, as a handler takes it.

use std::ops::Deref;

use latchkey_core::Permission;

use crate::rejection::Rejection;

/// The caller a request authenticated as: the axum extractor (feature `axum`) over the
/// [`latchkey_core::Principal`] that [`ApiKeyLayer`](crate::ApiKeyLayer) puts in the request
/// extensions.
///
/// It dereferences to the core principal, and through it to
/// [`PrincipalInfo`](crate::PrincipalInfo): `principal.user_name`, `principal.has("…")`.
/// Without axum, read the core type from the extensions:
/// `request.extensions().get::<latchkey_core::Principal>()` (this wrapper is never stored
/// there).
///
/// # Example
///
/// ```
/// use latchkey_tower::{Principal, Rejection};
///
/// async fn create_order(principal: Principal) -> Result<String, Rejection> {
///     principal.require("orders:write")?;
///     Ok(format!("created by {}", principal.user_name))
/// }
/// # let _ = create_order;
/// ```
///
/// # Rejections
///
/// As an extractor, when no layer authenticated the request: 401 `missing_key` with
/// `WWW-Authenticate: Bearer realm="api"`, never a 500. Take `Option<Principal>` on routes
/// where a key is optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub latchkey_core::Principal);

impl Principal {
    /// `Ok(())` when the effective permissions cover `permission`; otherwise the 403
    /// `insufficient_permission` rejection naming it, for `?` in a handler.
    ///
    /// A string that is not a valid permission is covered by nothing, and is answered
    /// 403 without a `scope`.
    pub fn require(&self, permission: &str) -> Result<(), Rejection> {
        if self.0.has(permission) {
            return Ok(());
        }
        Err(match Permission::parse(permission) {
            Ok(permission) => Rejection::insufficient_permission(&permission),
            Err(_) => Rejection::insufficient_permission_unnamed(),
        })
    }

    /// The core principal.
    pub fn into_inner(self) -> latchkey_core::Principal {
        self.0
    }
}

impl Deref for Principal {
    type Target = latchkey_core::Principal;

    fn deref(&self) -> &latchkey_core::Principal {
        &self.0
    }
}

impl From<latchkey_core::Principal> for Principal {
    fn from(principal: latchkey_core::Principal) -> Self {
        Principal(principal)
    }
}
