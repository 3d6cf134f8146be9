//! API keys done right for Tower and axum.
//!
//! [`ApiKeyAuthLayer`] authenticates every request by API key against a [`Verifier`] (a
//! [`Store`] on disk, or a remote one), puts the caller's [`Principal`] in the
//! request extensions, and answers everything else with the right status, challenge and
//! `application/problem+json` body. [`RequirePermission`] guards a route with one
//! permission; [`Principal`] is the axum extractor (feature `axum`, on by default).
//!
//! # Layout
//!
//! - [`auth`]: [`ApiKeyAuthLayer`], the service [`ApiKeyAuth`] and its response future; where a
//!   key is read from (`auth/credentials.rs`) and what is traced (`auth/trace.rs`).
//! - [`require`]: [`RequirePermissionLayer`] and the service [`RequirePermission`].
//! - `verifier.rs`: the [`Verifier`] trait, and its impl for closures.
//! - `store_verifier.rs`: a [`Store`] as the [`Verifier`]; [`StoreVerification`] runs a
//!   PostgreSQL store's cache misses on tokio's blocking pool.
//! - `rejection.rs`: [`Rejection`], every refusal as a status, a challenge and a static
//!   problem+json body.
//! - `principal.rs`: [`Principal`], the extractor and `principal.require(..)`.
//! - `remote` (feature `remote`): `RemoteVerifier`, verifying against a latchkey daemon
//!   with a cache that the daemon's change feed keeps current.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use latchkey_tower::{
//!     ApiKeyAuthLayer, Permission, Principal, Realm, RequirePermission, Store, StoreConfig,
//! };
//!
//! async fn list_orders(principal: Principal) -> String {
//!     format!("orders of {}", principal.user_name)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("./orders-data", StoreConfig::default())?;
//! let app: Router = Router::new()
//!     .route("/orders", get(list_orders))
//!     .route_layer(RequirePermission::layer(Permission::from_static("orders:read")))
//!     .layer(ApiKeyAuthLayer::new(store).realm(Realm::from_static("orders")));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # Responses
//!
//! | case | status | `WWW-Authenticate` | `code` |
//! | --- | --- | --- | --- |
//! | no key | 401 | `Bearer realm="<realm>"` | `missing_key` |
//! | the key sent more than once, or in more than one place | 400 | `Bearer realm="<realm>", error="invalid_request"` | `invalid_request` |
//! | a key that does not authenticate | 401 | `Bearer realm="<realm>", error="invalid_token"` | `invalid_key`, `key_disabled`, `key_revoked`, `key_expired`, `user_disabled` |
//! | a permission missing | 403 | `Bearer error="insufficient_scope", scope="<permission>"` | `insufficient_permission` |
//! | the client's address outside the key's `allowed_ips` | 403 | — | `ip_not_allowed` |
//! | a rate limit of the key reached | 429 | — (`Retry-After`, `RateLimit-Policy`, `RateLimit`) | `rate_limited` |
//! | the key's credits used up | 429 | — (`Retry-After` until their refill, when they have one) | `usage_exceeded` |
//! | keystore unavailable | 503 (`Retry-After: 1`) | — | `keystore_unavailable` |
//!
//! An unknown key id and a wrong secret answer the same `invalid_key`, byte for byte
//! (status, headers, body); the specific codes are told only to a caller that holds the
//! right secret. Their timing may differ: a key in active use is answered from memory, an
//! id that is not from storage at first, so an answer's time may tell whether an id is in
//! use ([`Store::verify`] tells exactly what); ids are public in display prefixes anyway.

pub mod auth;
mod macros;
mod principal;
mod rejection;
pub mod require;
mod store_verifier;
mod usage;
mod verifier;

#[cfg(feature = "axum")]
mod extract;

#[cfg(feature = "remote")]
pub mod remote;

pub use auth::{ApiKeyAuth, ApiKeyAuthLayer, Realm};
pub use principal::Principal;
pub use rejection::{ProblemCode, Rejection};
pub use require::{RequirePermission, RequirePermissionLayer, RouteCost};
pub use store_verifier::StoreVerification;
pub use usage::{ForwardedHeader, IpNet};
pub use verifier::{Charged, Verifier};

/// The core crate, for everything not re-exported below.
pub use latchkey_core;
pub use latchkey_core::{
    ApiKey, Env, Permission, PermissionSet, PrincipalInfo, Store, StoreConfig, VerifyError,
};
