//! Verifying keys against a latchkey daemon (feature `remote`): [`RemoteVerifier`].
//!
//! An app that does not hold the keystore plugs a [`RemoteVerifier`] into the same
//! [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) an embedded store uses. The verifier asks the daemon
//! (`POST /v1/verify`, with a service key holding `latchkey:verify`) about each key it has
//! not seen, caches the answer, and follows the daemon's change feed (`GET /v1/events`,
//! server-sent events) to drop cached answers the moment a change makes them stale. A
//! cached answer costs no I/O: a keyed hash and a map lookup.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use latchkey_tower::ApiKeyAuthLayer;
//! use latchkey_tower::remote::RemoteVerifier;
//!
//! # async fn run() -> Result<(), latchkey_tower::remote::RemoteError> {
//! let verifier = RemoteVerifier::builder("http://127.0.0.1:7878", "lk_live_…")
//!     .max_staleness(Duration::from_secs(5))
//!     .build()?;
//! let layer = ApiKeyAuthLayer::new(verifier).realm(latchkey_tower::Realm::from_static("orders"));
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # Transport
//!
//! `http://` or `https://` (TLS 1.2+, rustls on the `ring` provider, so the build needs no
//! tool beyond cargo and a C compiler). Certificates are checked against the system's
//! roots plus any [`ca_certificate`](RemoteVerifierBuilder::ca_certificate); one that does
//! not verify makes every miss answer 503 `keystore_unavailable` (logged), never a
//! downgrade to plain HTTP.
//!
//! # Cache and invalidation
//!
//! - Entries are keyed by BLAKE3 of the presented key, keyed with a random per-process
//!   key: the cache never holds a key.
//! - A change event drops what it may affect: a key's event (`key.revoke`, `key.update`,
//!   `key.rotate`, `key.delete`) that key's entry; a user's event every key of that user;
//!   a group's event, or an action this version does not know, everything. A creation
//!   (`key.create`, `user.create`, `group.create`) drops no valid answer. A change that
//!   may admit a key refused before (any but a revocation, a deletion, or a new user or
//!   group; a new key may be an imported text) also drops the cached refusals.
//! - Refusals (`invalid_key`, `key_disabled`, …) are cached for `negative_ttl` (default
//!   1 s), so a client retrying a bad key does not reach the daemon on each request.
//! - A key's `expires_at` ends its entry on time (expiry sends no event), and `cache_ttl`
//!   (default 5 min) bounds every entry as a safety net.
//! - Concurrent misses for the same key make one request to the daemon; the others wait
//!   for its answer. The request runs in its own task: a client that disconnects does not
//!   cancel it for the others.
//! - An answer the daemon gave before a change is never cached after the change's event
//!   was applied (a generation check), so an in-flight miss cannot resurrect a revoked key.
//!
//! # Propagation bound
//!
//! The daemon broadcasts a change before the request that made it returns, and the
//! verifier applies it as soon as the event arrives. Measured on loopback
//! (`bench/remote.sh`, 100 revocations, two apps): from the revoke call's return to the
//! first 401, p50 0.41 ms, p99 0.56 ms, and the first request sent after the call returned
//! was already refused every time. While the stream is healthy, heartbeats (every second by
//! default) prove that nothing was missed; whatever fails, the bound is `max_staleness`
//! (below).
//!
//! # Failure modes
//!
//! | situation | answer |
//! |---|---|
//! | event stream up, key cached | the cached answer, no I/O |
//! | key not cached (or cache not trusted), daemon answers | the daemon's answer (200 / 401) |
//! | stream down for less than `max_staleness` since the last event or heartbeat | cached answers still served |
//! | stream down for longer | cached answers are not used: each key goes to the daemon; 503 `keystore_unavailable` while it cannot answer |
//! | `max_concurrent_misses` (default 64) requests to the daemon already in flight | the miss waits for one to end, up to 1 s while the daemon answers (within 2 s it answered about a real key, not `invalid_key`, or streamed a change that dropped cached answers), 100 ms otherwise, then 503 `keystore_unavailable` |
//! | daemon unreachable, times out (`request_timeout`, default 2 s), answers 5xx or an answer it cannot use (a rate limit name outside core's `[A-Za-z0-9_.-]`, `user:` before a user's), or refuses the service key | 503 `keystore_unavailable`, never 401 |
//! | stream back | resumes after the last applied sequence number (`Last-Event-ID`); replayed changes invalidate as live ones do |
//! | the daemon answers `reset` (its feed is behind the verifier's position), its change at that position has another hash (another store, a diverged backup), or the feed has a gap | the whole cache is dropped |
//!
//! So a key that may be valid is never refused with a 401 because the daemon is
//! unreachable, and a key revoked on the daemon is accepted here for at most
//! `max_staleness` (default 5 s) after the verifier last heard from the daemon, whatever
//! fails. The stream counts as dead after three missed heartbeats and reconnects with
//! exponential backoff (100 ms doubling to 2 s, with jitter).
//!
//! # Usage figures
//!
//! The daemon counts the verifications it answers. Cache hits are counted here and sent
//! every `usage_interval` (default 5 s) with `POST /v1/usage`; call
//! [`RemoteVerifier::flush_usage`] at shutdown. A daemon without that endpoint gets no
//! figures for cache hits (logged once). `flush_usage` also gives back the credits the
//! verifier leased of metered keys and did not spend (`POST /v1/leases/return`); what the
//! daemon cannot take back stays counted as spent.
//!
//! # Layout
//!
//! - `verifier.rs`: [`RemoteVerifier`], the hit and miss paths, [`RemoteFuture`].
//! - `config.rs`: [`RemoteVerifierBuilder`] and the defaults.
//! - `cache.rs`: entries, indexes by key and user, the generation rule.
//! - `feed.rs`: the event stream, reconnection and backoff; `sse.rs`: its events, parsed by
//!   `eventsource-stream` behind a bound on the line length.
//! - `client.rs`: the daemon's HTTP endpoints; `usage.rs`: batched usage figures.
//! - `tls.rs`: `https://` (rustls on ring; the system's roots plus
//!   [`ca_certificate`](RemoteVerifierBuilder::ca_certificate)).

mod cache;
mod client;
mod config;
mod error;
mod extra_cost;
mod feed;
mod lease;
mod sse;
mod tls;
mod usage;
mod verifier;

pub use config::RemoteVerifierBuilder;
pub use error::RemoteError;
pub use tls::{CertificateProblem, direct_unless_tunneled, https_client_builder, is_not_tls};
pub use verifier::{RemoteFuture, RemoteStatus, RemoteVerifier};
