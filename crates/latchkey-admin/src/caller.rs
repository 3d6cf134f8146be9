//! Who is calling, and whether it may call this route: the one place where the management
//! API meets authentication.
//!
//! The authentication layer in front of `/v1` puts a [`Principal`] in the request's
//! extensions (or answers 401/503 itself); [`operator_router`](crate::operator_router) puts
//! an [`Operator`] marker there instead. A handler takes a [`Caller<P>`], where `P` names
//! the route's required permission, and receives the [`Actor`] that every core write (and
//! every caller-scoped read, `Store::*_as`) takes, bound to the caller's tenant and
//! organization when its user has them. Core enforces no-escalation, the delegation cap and
//! the tenant boundary with that actor; nothing here repeats them.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use latchkey_core::Actor;
use latchkey_tower::Principal;

use crate::error::AppError;

/// The permission a route requires, as a type, so each handler's signature states it.
pub(crate) trait Required {
    /// The permission the route requires, e.g. `latchkey:keys:write` (the crate docs list
    /// each route's).
    const PERMISSION: &'static str;
}

macro_rules! permissions {
    ($($(#[$doc:meta])* $name:ident = $text:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub(crate) struct $name;
            impl Required for $name {
                const PERMISSION: &'static str = $text;
            }
        )*
    };
}

/// The permissions of the management API, one marker type each.
pub(crate) mod perm {
    use super::Required;

    permissions! {
        /// List and read keys.
        KeysRead = "latchkey:keys:read";
        /// Create, change, revoke, rotate and delete keys.
        KeysWrite = "latchkey:keys:write";
        /// List and read users.
        UsersRead = "latchkey:users:read";
        /// Create, change and delete users.
        UsersWrite = "latchkey:users:write";
        /// List and read groups.
        GroupsRead = "latchkey:groups:read";
        /// Create, change and delete groups.
        GroupsWrite = "latchkey:groups:write";
        /// Read and check the audit trail.
        AuditRead = "latchkey:audit:read";
        /// Verify keys for remote services (`POST /v1/verify`).
        Verify = "latchkey:verify";
        /// Read `/metrics` when the daemon keeps it behind a key (`--metrics-auth`).
        Metrics = "latchkey:metrics";
        /// Take a backup of the whole store (`GET /v1/backup`): every record, hashes included.
        Backup = "latchkey:backup";
    }
}

/// Marks a request of [`operator_router`](crate::operator_router): it acts as
/// [`Actor::system()`]. Private, so that nothing outside this crate can forge it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

/// The caller of a route that requires the permission `P`.
///
/// Rejects with 403 `insufficient_permission` (and `WWW-Authenticate: Bearer
/// error="insufficient_scope", scope="<permission>"`) when the caller's key lacks `P`, and
/// with 401 `missing_key` when no authentication layer ran (a router mounted without one).
#[derive(Debug)]
pub(crate) struct Caller<P> {
    /// Who acts, for the store's writes and its audit trail.
    pub(crate) actor: Actor,
    _required: PhantomData<P>,
}

impl<P> Caller<P> {
    /// Refuses a tenant-bound caller (403 `tenant_forbidden`): for the reads that cover the
    /// whole store at once (the change feed, a backup), which no tenant filter can narrow
    /// without breaking what they promise (every change in `seq` order, every record).
    pub(crate) fn ensure_global(&self) -> Result<(), AppError> {
        Ok(self
            .actor
            .ensure_global("use this: it covers every tenant's records")?)
    }
}

impl<S: Send + Sync, P: Required> FromRequestParts<S> for Caller<P> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let actor = if parts.extensions.get::<Operator>().is_some() {
            Actor::system()
        } else if let Some(principal) = parts.extensions.get::<Principal>() {
            if !principal.has(P::PERMISSION) {
                return Err(AppError::insufficient_permission(
                    P::PERMISSION,
                    format!("this endpoint requires the permission {}", P::PERMISSION),
                ));
            }
            Actor::from_principal(principal)
        } else {
            return Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "missing_key",
                "no authenticated caller: the management API must run behind the latchkey layer",
            ));
        };
        Ok(Caller {
            actor,
            _required: PhantomData,
        })
    }
}
