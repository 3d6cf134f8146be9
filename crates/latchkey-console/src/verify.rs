//! A session's key, verified as the management API's layer verifies it: a latchkey key
//! through the store's [`Verifier`] (inline on sled and from the verify cache; a PostgreSQL
//! miss, a round trip, on tokio's blocking pool, so no async worker waits for it), a key
//! imported in another product's format through [`Verifier::verify_foreign`].

use std::net::IpAddr;

use latchkey_core::{ApiKey, Principal, Store, VerifyError};
use latchkey_tower::Verifier;

/// The principal `text` authenticates as now.
pub(crate) async fn key(store: &Store, text: &str) -> Result<Principal, VerifyError> {
    match ApiKey::parse(text) {
        Ok(key) => Verifier::verify(store, &key).await,
        Err(malformed) => match Verifier::verify_foreign(store, text) {
            Some(verification) => verification.await,
            None => Err(VerifyError::Malformed(malformed)),
        },
    }
}

/// The principal `text` authenticates as now, from `client`: refused with
/// [`VerifyError::IpNotAllowed`] as the API's layer refuses it (403 `ip_not_allowed`) when
/// the key's `allowed_ips` leave the client out.
pub(crate) async fn key_from(
    store: &Store,
    text: &str,
    client: Option<IpAddr>,
) -> Result<Principal, VerifyError> {
    let principal = key(store, text).await?;
    if let Some(meter) = &principal.meter {
        meter.check_ip(client)?;
    }
    Ok(principal)
}
