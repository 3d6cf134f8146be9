//! The [`Verifier`] trait: from a parsed key to a [`Principal`], possibly asynchronously.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

#[cfg(doc)]
use latchkey_core::Store;
use latchkey_core::{ApiKey, Principal, VerifyError};
use tokio::task::JoinHandle;

/// Turns a presented, well-formed key into the [`Principal`] it authenticates as.
///
/// [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) parses the key first (a malformed key never reaches
/// a verifier), then calls `verify` and polls the returned future once, in place. A future
/// that is ready at once (a [`Store`]'s) completes the whole authentication inside
/// `Service::call`: no allocation, no clone of the inner service. A future that is not
/// ready (a remote verifier's network call) is moved into the response future and driven
/// from there. That is why [`Verifier::Future`] is `Unpin`: box a future that is not.
///
/// Implemented by:
/// - [`Store`](latchkey_core::Store): on sled its `verify_key` reads only memory or sled's
///   page cache and takes about a microsecond, so it runs inline: a `spawn_blocking` per
///   request would cost more than the verification. On PostgreSQL a key its verify cache
///   holds answers inline too, and a miss, a round trip to the database, runs on tokio's
///   blocking pool ([`StoreVerification`](crate::StoreVerification)).
/// - closures `Fn(&ApiKey) -> impl Future<Output = Result<Principal, VerifyError>>`, whose
///   future is boxed (tests, adapters).
///
/// A remote verifier (asking the daemon's `POST /v1/verify`) implements it with its own
/// future type: ready at once on a cache hit, a boxed request otherwise.
///
/// The layer holds its verifier in an `Arc`, so a plain value is what it needs. The trait
/// is dyn-compatible once the future type is fixed (`dyn Verifier<Future = Pin<Box<dyn
/// Future<Output = …> + Send>>>`), but `Box<dyn Verifier<…>>` is no `Verifier` itself (it
/// would overlap the closures' implementation): to choose a verifier at run time, wrap the
/// box in a type of your own whose `verify` calls the box's.
///
/// # Example
///
/// ```
/// use latchkey_tower::{ApiKey, ApiKeyAuthLayer, VerifyError};
///
/// // A closure is a verifier. Its future may not borrow the key: clone what it needs.
/// let layer = ApiKeyAuthLayer::new(|key: &ApiKey| {
///     let prefix = key.display_prefix().to_owned();
///     async move {
///         tracing::debug!(%prefix, "refusing");
///         Err(VerifyError::Invalid)
///     }
/// });
/// # let _ = layer;
/// ```
pub trait Verifier: Send + Sync + 'static {
    /// The verification in progress.
    type Future: Future<Output = Result<Principal, VerifyError>> + Send + Unpin + 'static;

    /// Verifies `key`: [`VerifyError::Unavailable`] becomes a 503, every other error a 401.
    fn verify(&self, key: &ApiKey) -> Self::Future;

    /// A shortcut for a key text this verifier has verified before: `Some` when it
    /// recognises `presented` (unparsed, no longer than the layer reads: see
    /// [`Verifier::verifies_foreign`]; ASCII, since the layer refuses any other byte
    /// before a verifier sees the text) without parsing it and the key authenticates now;
    /// `None` for anything else.
    ///
    /// The layer tries it first, for a text whose environment it accepts; on `None` it
    /// parses the text and calls [`Verifier::verify`], which must answer as this would
    /// have. The default recognises nothing. A [`Store`] recognises the texts in its verify
    /// cache by a keyed 128-bit tag: see [`Store::verify_known`].
    fn verify_known(&self, presented: &[u8]) -> Option<Principal> {
        let _ = presented;
        None
    }

    /// Whether [`Verifier::verify_from`] wants the client's address: only then does the
    /// layer work it out before verifying (default `false`: it is not needed to verify).
    fn wants_client_ip(&self) -> bool {
        false
    }

    /// [`Verifier::verify`] for a request from `client_ip` (the peer's address, or the one a
    /// trusted proxy forwarded: see `ApiKeyAuthLayer::trust_proxies`), called instead of it
    /// when [`Verifier::wants_client_ip`] says so. A remote verifier sends it to the daemon
    /// and checks it against a metered key's allowlist.
    fn verify_from(&self, key: &ApiKey, client_ip: Option<std::net::IpAddr>) -> Self::Future {
        let _ = client_ip;
        self.verify(key)
    }

    /// Verifies a presented text that is not a latchkey key: a key imported from another
    /// system (`latchkey keys import`). `None`, the default, refuses it as malformed
    /// without any lookup; a [`Store`] answers `None` unless it holds imported keys.
    fn verify_foreign(&self, text: &str) -> Option<Self::Future> {
        let _ = text;
        None
    }

    /// Whether [`Verifier::verify_foreign`] may take a text now. Only then does the layer
    /// read a presented text longer than a latchkey key
    /// ([`MAX_KEY_LEN`](latchkey_core::key::MAX_KEY_LEN)), up to the longest imported key
    /// ([`MAX_IMPORTED_KEY_LEN`](latchkey_core::limits::MAX_IMPORTED_KEY_LEN)); otherwise it
    /// refuses such a text unread. The default, `true`, suits any verifier that implements
    /// `verify_foreign`; a closure answers `false`, a [`Store`] whether it holds imported
    /// keys, a remote verifier whether it was built with `imported_keys(true)`.
    fn verifies_foreign(&self) -> bool {
        true
    }

    /// [`Verifier::verify_foreign`] for a request from `client_ip`, called instead of it
    /// when [`Verifier::wants_client_ip`] says so, as [`Verifier::verify_from`] is.
    fn verify_foreign_from(
        &self,
        text: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<Self::Future> {
        let _ = client_ip;
        self.verify_foreign(text)
    }

    /// Whether this verifier charges a route's extra cost itself
    /// ([`Verifier::charge_extra`]): only then does the layer keep, for the request's
    /// routes, the key text as presented and the client's address. Default `false`.
    fn charges_extra(&self) -> bool {
        false
    }

    /// Charges `cost` more requests to the key presented as `presented` (from
    /// `client_ip`), which this verifier authenticated, for a route that costs more than
    /// one ([`RequirePermissionLayer::cost`](crate::RequirePermissionLayer::cost)): against
    /// its rate limits and credits, all or nothing. Called by
    /// [`RequirePermission`](crate::RequirePermission) when [`Verifier::charges_extra`] says
    /// so and the principal carries no meter of its own: a
    /// [`RemoteVerifier`](crate::remote::RemoteVerifier)'s keys, whose usage control it
    /// admits from a lease of the daemon's. A principal that carries a meter (a
    /// [`Store`]'s) is charged through it instead. The default charges nothing.
    fn charge_extra(&self, presented: &str, client_ip: Option<IpAddr>, cost: u32) -> Charged {
        let _ = (presented, client_ip, cost);
        Charged::Done(Ok(()))
    }

    /// A mark of this verifier's state, read when a request's key is presented, before it
    /// is verified, for [`Verifier::give_back_credit`] to tell whether anything changed
    /// since. The default is 0.
    fn credit_mark(&self) -> u64 {
        0
    }

    /// Gives back the credit this verifier charged a request with the key presented as
    /// `presented`, which its route refused: for want of a permission (403), or because
    /// the route's extra cost was refused ([`Verifier::charge_extra`]). A refused request
    /// spends no credit. `mark` is [`Verifier::credit_mark`] as the request found it: a
    /// verifier whose state changed since (the key's credits set, its lease replaced)
    /// gives nothing, as it cannot tell the credit the request took from one it did not.
    /// Called by [`RequirePermission`](crate::RequirePermission), once a request, when
    /// [`Verifier::charges_extra`] says so and the layer charged the request nothing
    /// itself (a store's principal has its credit given back through its meter). The
    /// default gives nothing back. Called for a request not charged, it would give a
    /// credit nobody paid for: it is for that layer.
    fn give_back_credit(&self, presented: &str, mark: u64) {
        let _ = (presented, mark);
    }
}

/// What charging a route's extra cost came to; see [`Verifier::charge_extra`].
#[derive(Debug)]
pub enum Charged {
    /// The answer: admitted, or the refusal (`rate_limited`, `usage_exceeded`, ...).
    Done(Result<(), VerifyError>),
    /// The answer comes from a task on the runtime (a request to the daemon, a durable
    /// write): the request waits for it.
    Waiting(JoinHandle<Result<(), VerifyError>>),
}

/// The boxed future of a closure verifier.
type BoxVerifyFuture = Pin<Box<dyn Future<Output = Result<Principal, VerifyError>> + Send>>;

impl<F, Fut> Verifier for F
where
    F: Fn(&ApiKey) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Principal, VerifyError>> + Send + 'static,
{
    type Future = BoxVerifyFuture;

    fn verify(&self, key: &ApiKey) -> Self::Future {
        Box::pin(self(key))
    }

    /// A closure verifies latchkey keys only.
    fn verifies_foreign(&self) -> bool {
        false
    }
}
