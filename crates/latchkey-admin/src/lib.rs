//! latchkey's management API as an axum [`Router`](axum::Router) that any app can mount
//! over its own [`Store`].
//!
//! `latchkey serve` serves exactly this router; an app that embeds a store can merge it
//! into its own and manage its keys over HTTP without a daemon.
//!
//! # Example
//!
//! ```no_run
//! use latchkey_core::{Store, StoreConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("./latchkey-data", StoreConfig::default())?;
//! let app = axum::Router::new()
//!     // ... the app's own routes ...
//!     .merge(latchkey_admin::router(store.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! axum::serve(listener, app).await?;
//! store.flush()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Endpoints
//!
//! | Method and path | Permission |
//! |---|---|
//! | `POST /v1/groups`, `PATCH /v1/groups/{id}`, `DELETE /v1/groups/{id}` | `latchkey:groups:write` |
//! | `GET /v1/groups`, `GET /v1/groups/{id}` | `latchkey:groups:read` |
//! | `POST /v1/users`, `PATCH /v1/users/{id}`, `DELETE /v1/users/{id}` | `latchkey:users:write` |
//! | `GET /v1/users` (also `?ids=` for up to 100 at once), `GET /v1/users/{id}` | `latchkey:users:read` |
//! | `POST /v1/users/{id}/revoke-keys` (every key of the user) | `latchkey:keys:write` |
//! | `POST /v1/keys`, `PATCH /v1/keys/{id}`, `DELETE /v1/keys/{id}`, `POST /v1/keys/{id}/revoke`, `POST /v1/keys/{id}/rotate` | `latchkey:keys:write` |
//! | `GET /v1/keys`, `GET /v1/keys/{id}` | `latchkey:keys:read` |
//! | `POST /v1/verify`, `GET /v1/events` (server-sent events of every change) | `latchkey:verify` |
//! | `POST /v1/usage` (a remote verifier's uses), `POST /v1/leases`, `POST /v1/leases/return` (its slices of rate limits and credits) | `latchkey:verify` |
//! | `GET /v1/audit`, `GET /v1/audit/verify` | `latchkey:audit:read` |
//! | `GET /v1/backup` (the whole store, as `latchkey restore` reads it) | `latchkey:backup` |
//! | `POST /v1/keys/import` (keys issued elsewhere, ≤ 1,000 per request) | `latchkey:keys:write` |
//! | `GET /healthz`, `GET /openapi.json` | none |
//! | `GET /metrics` | none, or `latchkey:metrics` with [`MetricsAccess::Keyed`] |
//!
//! Groups and users are referred to by UUID or unique name, keys by UUID or display
//! prefix. Writes are also bound by **no escalation**: core refuses (403
//! `insufficient_permission`) any change that would grant something outside the caller's
//! own effective permissions, or that touches a user, group or key holding such a thing.
//!
//! # Errors
//!
//! Every error is `application/problem+json` ([`Problem`]) with a stable `code`: 400
//! `invalid_json` or `invalid_field` (with `field` naming the body member or query
//! parameter) or `invalid_request` (several credentials), 401 `missing_key` /
//! `invalid_key` / `key_revoked` / …, 403 `insufficient_permission` / `tenant_forbidden` /
//! `ip_not_allowed`, 404 `not_found` (also for another tenant's records), 405
//! `method_not_allowed`, 409 `name_taken` / `key_not_revoked` / `key_revoked` /
//! `key_rotated` / `key_expired` / `last_admin_key`, 413 `payload_too_large` (bodies over 64 KiB), 415
//! `unsupported_media_type`, 429 `rate_limited` / `usage_exceeded` / `too_many_streams` /
//! `backup_in_progress`,
//! 503 `keystore_unavailable`, 507 `storage_full`, 500 `internal` (detail in the server log
//! only). Bounds on input: `latchkey_core::limits`.
//!
//! # Layout
//!
//! - `router`: every route; [`router`] and [`operator_router`].
//! - `auth`: the authentication in front of `/v1`; `caller`: the `Caller<P>` extractor
//!   that turns it into core's `Actor` and checks the route's permission, the one seam
//!   between HTTP and authorization.
//! - `handlers/`: one file per resource.
//! - [`api`]: the request and response bodies; `error`: [`Problem`] and the `AppError`
//!   every handler returns; `extract`: body, query and path extractors whose rejections
//!   are problem+json.
//! - `metrics`: Prometheus text; `openapi`: the generated document.

pub mod api;
mod auth;
mod caller;
mod error;
mod extract;
mod handlers;
mod idempotency;
mod lease_ledger;
mod metrics;
mod openapi;
mod router;
mod state;

pub use error::{
    Problem, body_timeout_response, host_refused_response, not_found_response,
    request_timeout_response,
};
pub use handlers::events::close_event_streams;
pub use metrics::SignIn;
pub use metrics::live::{ListenerMetrics, OpenConnection, Shed, set_console_sessions};
pub use openapi::openapi;

use latchkey_core::Store;

/// The management API over `store`, `/v1` authenticated by API key.
///
/// Every `/v1` request needs `Authorization: Bearer <key>`: without one, 401 `missing_key`
/// with `WWW-Authenticate: Bearer realm="latchkey"`; with one that does not authenticate,
/// 401 with `error="invalid_token"` and the key's code; when the keystore cannot be read,
/// 503. A route then requires its `latchkey:*` permission (see the crate docs), else 403
/// `insufficient_permission` with `WWW-Authenticate: Bearer error="insufficient_scope",
/// scope="<permission>"`. `/healthz`, `/metrics` and `/openapi.json` need no key.
///
/// The router has no fallback of its own outside `/v1`, so it can be merged into an app
/// that has one.
///
/// # Example
///
/// ```
/// use latchkey_core::{Store, StoreConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let (store, _admin_key) = Store::create_with_admin(dir.path(), "lk", StoreConfig::default()).unwrap();
/// let app: axum::Router = latchkey_admin::router(store);
/// # let _ = app;
/// ```
pub fn router(store: Store) -> axum::Router {
    router::authenticated(store, MetricsAccess::Public).0
}

/// Where [`routers`] serves `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsAccess {
    /// On the API router, without a key (as [`router`] does).
    #[default]
    Public,
    /// On the API router, behind the authentication layer: the caller's key needs
    /// `latchkey:metrics` (401 without a key, 403 without the permission).
    Keyed,
    /// Not on the API router (404 there): only on the separate metrics router, for a
    /// listener of its own.
    Separate,
}

/// The management API and its metrics, as two routers over one state.
#[derive(Debug)]
pub struct Routers {
    /// The management API, with `/metrics` as [`MetricsAccess`] says.
    pub api: axum::Router,
    /// `/metrics` alone, unauthenticated, counting the same requests and verifications as
    /// `api`: for a separate listener (`latchkey serve --metrics-listen`).
    pub metrics: axum::Router,
}

/// [`router`], with `/metrics` served as `access` says, and the metrics alone for a
/// listener of their own.
///
/// # Example
///
/// ```
/// use latchkey_admin::{MetricsAccess, routers};
/// use latchkey_core::{Store, StoreConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let (store, _admin_key) = Store::create_with_admin(dir.path(), "lk", StoreConfig::default()).unwrap();
/// let routers = routers(store, MetricsAccess::Separate);
/// // Serve `routers.api` on the public address, `routers.metrics` on an internal one.
/// # let _ = routers;
/// ```
pub fn routers(store: Store, access: MetricsAccess) -> Routers {
    let (api, metrics) = router::authenticated(store, access);
    Routers { api, metrics }
}

/// The same routes as [`router`], where **every request acts as the operator**
/// ([`Actor::system()`](latchkey_core::Actor::system), which holds `*`) **without any
/// key**.
///
/// # Never bind this router to a socket
///
/// It performs no authentication at all: anyone who can reach it can do anything to the
/// store. It exists so that the CLI's `--db` mode (working on a store directly, with
/// the operator's authority) runs exactly the handler code the daemon runs, by calling
/// it in-process with `tower::ServiceExt::oneshot`. Use [`router`] for anything that
/// listens.
///
/// # Example
///
/// ```
/// use latchkey_core::{Store, StoreConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
/// // In-process only: driven with `tower::ServiceExt::oneshot`, never served.
/// let operator = latchkey_admin::operator_router(store);
/// # let _ = operator;
/// ```
pub fn operator_router(store: Store) -> axum::Router {
    router::operator(store)
}
