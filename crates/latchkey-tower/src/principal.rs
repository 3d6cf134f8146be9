//! [`Principal`]: the authenticated caller, as a handler takes it.

use std::ops::Deref;

use latchkey_core::Permission;

use crate::rejection::Rejection;

/// The caller a request authenticated as: what [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) puts in
/// the request extensions, and the axum extractor (feature `axum`) that takes it out.
///
/// It is the one principal type to name: `Principal` as an extractor,
/// `Extension<Principal>`, and `request.extensions().get::<Principal>()` (plain tower) all
/// find the same value. It wraps the [`latchkey_core::Principal`] a [`Verifier`](crate::Verifier)
/// returns and dereferences to it, and through it to [`PrincipalInfo`](crate::PrincipalInfo):
/// `principal.user_name`, `principal.has("…")`.
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
