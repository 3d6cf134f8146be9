//! A session's key, checked as the management API's layer checks it but without counting a
//! use of the key: the session's check at each page is not a request made with the key (the
//! page's API calls are, and the layer counts each). [`Store::authenticate`] gives every
//! answer [`Store::verify`] gives (revoked, expired, disabled, unknown, a key imported in
//! another product's format), leaving `usage_count` and `last_used_at` alone.
//!
//! On sled it answers inline, from the verify cache or sled's page cache. On PostgreSQL
//! ([`Store::reads_over_network`]) a key the cache does not hold is a round trip, so the
//! check runs on tokio's blocking pool ([`StoreVerification::blocking`]) and no async worker
//! waits for it.

use std::net::IpAddr;

use latchkey_core::{Principal, Store, VerifyError};
use latchkey_tower::StoreVerification;

/// The principal `text` authenticates as now, its use not counted.
pub(crate) async fn key(store: &Store, text: &str) -> Result<Principal, VerifyError> {
    if !store.reads_over_network() {
        return store.authenticate(text);
    }
    let (store, text) = (store.clone(), text.to_owned());
    StoreVerification::blocking(move || store.authenticate(&text)).await
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
