//! `serve --tls-cert/--tls-key`: the server's rustls configuration, on the `ring` provider
//! (see the root manifest for why ring), TLS 1.2 and 1.3, with a certificate that SIGHUP
//! reads again (a renewal hook's `kill -HUP`), so that a renewed certificate needs no restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server's certificate chain and key, from two PEM files: read at start, and again
/// by [`CertFiles::reload`]. Connections opened after a reload get the new certificate;
/// open ones keep theirs.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertFiles {
    /// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    ///
    /// One line naming the file and the cause: unreadable, no PEM certificate or key in it,
    /// or a key that does not match the certificate.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertFiles>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read(cert, key, &provider)?;
        Ok(Arc::new(CertFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads both files again and, when they hold a certificate and a key that fit, serves
    /// them to new connections from now on. When they do not (a renewal half written, a
    /// wrong file), the certificate served so far stays, and the error says why.
    ///
    /// # Errors
    ///
    /// As [`CertFiles::load`]; nothing changes then.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The daemon's TLS configuration, serving whatever these files held at their last
    /// (re)load.
    ///
    /// # Errors
    ///
    /// When rustls cannot set up TLS 1.2 and 1.3 on the provider (never with ring).
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            // TLS 1.2 and 1.3: rustls implements nothing older.
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // The daemon speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The files' paths only: the private key never reaches a log.
impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "cannot read the TLS certificate {}: no PEM certificate in it",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the TLS key {}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "the TLS key {} does not fit the certificate {}",
            key.display(),
            cert.display()
        )
    })
}

/// Reads a CA certificate file for the CLI's `--ca-cert`.
pub fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))
}
