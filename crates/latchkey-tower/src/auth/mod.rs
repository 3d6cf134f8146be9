//! Authenticating every request by API key: [`ApiKeyAuthLayer`], the service [`ApiKeyAuth`] and
//! its [`ResponseFuture`].
//!
//! # Where the key is read
//!
//! - `Authorization: Bearer <key>` (RFC 6750 §2.1; the scheme is case-insensitive).
//! - One more header when configured ([`ApiKeyAuthLayer::header`], e.g. `X-API-Key: <key>`).
//! - A query parameter only when enabled ([`ApiKeyAuthLayer::allow_query_param`]): URLs end up
//!   in logs and browser histories, so it is off by default. The value is taken as is: keys
//!   are `[A-Za-z0-9_]`, which needs no percent-encoding. A success answer to such a
//!   request is marked `Cache-Control: private` (RFC 6750 §2.3): a shared cache keys what
//!   it keeps by URL, and this one holds the key.
//!
//! A key sent twice (two `Authorization` headers, a query parameter repeated) or in two
//! places is refused 400 `invalid_request`, with `WWW-Authenticate: Bearer realm="<realm>",
//! error="invalid_request"` (RFC 6750 §2: one method per request; §3.1: such a request is
//! `invalid_request`, answered 400). A value that is not ASCII (no key is) and one longer
//! than any key are 401 `invalid_key`: longer than a latchkey key (65 characters), or than
//! an imported key (512) when the verifier takes those
//! ([`Verifier::verifies_foreign`](crate::Verifier::verifies_foreign)). Never a panic or a
//! 500. An `Authorization` header with another scheme (`Basic …`) counts as no key.
//!
//! # What the inner service sees
//!
//! On success the request carries a [`Principal`](crate::Principal) in its extensions (the
//! extractor, `Extension<Principal>` and `extensions().get::<Principal>()` all read it), and with
//! [`ApiKeyAuthLayer::hide_credentials`] the key is removed from the request first. A refused
//! request never reaches the inner service: it is answered `Ok(response)` with 400, 401, 403
//! (a key used from an address it does not allow), 429 (a key's rate limit or credits) or
//! 503, so the service's error type stays `S::Error` and the client always gets an answer.
//!
//! # Placement
//!
//! With axum, `Router::layer(ApiKeyAuthLayer::new(..))` covers the routes added before it;
//! routes added after it (`/health`) stay public, and
//! [`RequirePermission`](crate::RequirePermission) goes on routes with `route_layer`. Put a CORS layer outside
//! (after) this one, so that preflight `OPTIONS` requests, which carry no key, are answered
//! before authentication. Put layers that hand out a scarce turn at `poll_ready`
//! (`ConcurrencyLimit`, `Buffer`) outside it too: the inner service is made ready before
//! the key is checked, so a turn taken inside would be held while a verification waits for
//! a remote daemon or a database.
//!
//! # Tracing
//!
//! Each authentication opens a DEBUG span `api_key` with the fields `prefix` (the key's
//! display prefix), `key_id`, `user_id` and `outcome` (`ok` or the rejection code); the
//! inner service runs inside it, so a handler's logs name the key. An event closes the
//! authentication: DEBUG when accepted, when no key was sent and when a key was refused (so
//! that bad requests never make one INFO line each), WARN when the keystore is unavailable.
//! The secret is never recorded. With DEBUG disabled nothing is formatted.

mod config;
mod credentials;
mod extensions;
mod future;
mod layer;
mod private;
mod realm;
mod service;
mod trace;

pub use future::ResponseFuture;
pub use layer::ApiKeyAuthLayer;
pub use realm::{InvalidRealm, Realm};
pub use service::ApiKeyAuth;
