//! Authentication in front of `/v1`: latchkey-tower's `ApiKeyAuthLayer`, over the router's
//! store through a verifier that feeds the metrics.
//!
//! The layer reads `Authorization: Bearer <key>` (scheme case-insensitive), answers 401
//! `missing_key` with `WWW-Authenticate: Bearer realm="latchkey"` without one, 401 with
//! `error="invalid_token"` and the key's code for a key that does not authenticate, 503
//! `keystore_unavailable` when the store cannot be read, and otherwise puts the
//! [`Principal`](latchkey_core::Principal) in the request's extensions, where
//! [`Caller`](crate::caller::Caller) finds it. This module and `caller` are the whole seam
//! between HTTP and authorization.

use latchkey_core::ApiKey;
use latchkey_tower::{ApiKeyAuthLayer, StoreVerification, Verifier};

use crate::state::{AppState, Metered};

/// The realm named in `WWW-Authenticate` challenges.
pub(crate) const REALM: &str = "latchkey";

/// The layer that authenticates every `/v1` request.
pub(crate) fn layer(state: AppState) -> ApiKeyAuthLayer<MeteredStore> {
    ApiKeyAuthLayer::new(MeteredStore(state)).realm(latchkey_tower::Realm::from_static(REALM))
}

/// The router's store as a [`Verifier`]: latchkey-tower's `Store` verifier, counting and
/// timing each verification for `/metrics` ([`AppState::verification`]).
#[derive(Debug, Clone)]
pub(crate) struct MeteredStore(AppState);

impl Verifier for MeteredStore {
    type Future = Metered<StoreVerification>;

    fn verify(&self, key: &ApiKey) -> Self::Future {
        self.0.verification(key)
    }

    fn verifies_foreign(&self) -> bool {
        self.0.store.holds_imported_keys()
    }

    fn verify_foreign(&self, text: &str) -> Option<Self::Future> {
        self.0.foreign_verification(text)
    }
}
