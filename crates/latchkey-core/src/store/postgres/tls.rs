//! TLS to PostgreSQL: rustls on ring, with the platform's verifier (system roots).
//!
//! Used when the URL asks for it (`sslmode=require`, or libpq's `verify-full` and `verify-ca`,
//! see `url.rs`) or the server offers it (`prefer`, the default); `sslmode=disable` connects
//! in plain text.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;

use crate::error::StoreError;

pub(super) fn client_config() -> Result<ClientConfig, StoreError> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| StoreError::Storage(Box::new(e)))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Storage(Box::new(e)))?
        .dangerous()
        // The platform's full verifier, not a relaxation ("dangerous" is rustls' naming).
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}
