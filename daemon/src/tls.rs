//! `serve --tls-cert/--tls-key`: the server's rustls configuration, on the `ring` provider
//! (see the root manifest for why ring), TLS 1.2 and 1.3, with a certificate that SIGHUP
//! reads again (a renewal hook's `kill -HUP`), so that a renewed certificate needs no restart.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
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
        // Served all the same: there is no other to serve, and some clients may not check.
        if let Some(why) = current
            .leaf
            .refused_by_clients(time::OffsetDateTime::now_utc())
        {
            tracing::warn!(
                certificate = %cert.display(),
                subject = %current.leaf.subject,
                "the TLS certificate will be refused by clients: {why}"
            );
        }
        Ok(Arc::new(CertFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current.certified)),
        }))
    }

    /// Reads both files again and, when they hold a certificate and a key that fit, serves
    /// them to new connections from now on; returns what the new certificate says of itself
    /// (its subject and end), for the log. When they do not (a renewal half written, a
    /// wrong file), or hold a certificate that has expired or is not valid for more than
    /// [`AHEAD`] yet (which every client refuses, so the one served so far is the better),
    /// the certificate served so far stays, and the error says why.
    ///
    /// # Errors
    ///
    /// As [`CertFiles::load`], and the certificate out of its dates; nothing changes then.
    pub fn reload(&self) -> anyhow::Result<String> {
        let fresh = read(&self.cert, &self.key, &self.provider)?;
        let leaf = &fresh.leaf;
        let now = time::OffsetDateTime::now_utc();
        // One a little ahead of this clock is taken, with a warning, and so is a CA's
        // certificate: rustls and browsers refuse it, but curl, Python, Go and libpq take
        // one they trust directly, and those may be all the daemon's clients.
        if now > leaf.not_after || leaf.not_before > now + AHEAD {
            let why = leaf.refused_by_clients(now).unwrap_or_default();
            anyhow::bail!(
                "the TLS certificate {} will be refused by clients: {why}",
                self.cert.display()
            );
        }
        if let Some(why) = leaf.refused_by_clients(now) {
            tracing::warn!(
                certificate = %self.cert.display(),
                subject = %leaf.subject,
                "the TLS certificate will be refused by clients: {why}"
            );
        }
        let said = format!("{}, valid until {}", leaf.subject, rfc3339(leaf.not_after));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh.certified);
        Ok(said)
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

/// The most a TLS file may hold: a chain of a few certificates is a few KiB. A larger
/// file (`/dev/zero` named by mistake) is refused rather than read without end.
const MAX_FILE: u64 = 1024 * 1024;

/// A file's text, refused past [`MAX_FILE`].
fn read_bounded(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let cannot = || format!("cannot read the TLS {what} {}", path.display());
    let file = std::fs::File::open(path).with_context(cannot)?;
    let mut text = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .with_context(cannot)?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_FILE,
        "cannot read the TLS {what} {}: larger than {} KiB, no PEM file is",
        path.display(),
        MAX_FILE / 1024
    );
    Ok(text)
}

/// A PEM file's error in words: the crate says a missing end line as a byte array, and an
/// encrypted key as no key at all or a base64 error.
fn pem_problem(error: &pem::Error, text: &[u8]) -> String {
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        return "the key is encrypted: give it decrypted (`openssl pkey -in KEY -out PLAIN`), \
                readable by the daemon's user only"
            .to_owned();
    }
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM section has no END line (a file half written?)".to_owned()
        }
        pem::Error::NoItemsFound => "no PEM item of that kind in it".to_owned(),
        other => other.to_string(),
    }
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<Served> {
    let cert_text = read_bounded(cert, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the TLS certificate {}: {}",
                cert.display(),
                pem_problem(&e, &cert_text)
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "cannot read the TLS certificate {}: no PEM certificate in it",
        cert.display()
    );
    let leaf = Leaf::of(&chain[0]).with_context(|| {
        format!(
            "the TLS certificate {} is damaged: its first certificate does not parse",
            cert.display()
        )
    })?;
    let key_text = read_bounded(key, "key")?;
    let private = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the TLS key {}: {}",
            key.display(),
            pem_problem(&e, &key_text)
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| {
            anyhow::anyhow!(
                "the TLS key {} is damaged or of a kind the daemon cannot serve (ECDSA P-256 \
                 or P-384, Ed25519, or RSA of 2,048 bits or more): {e}",
                key.display()
            )
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(Served { certified, leaf }),
        Err(e) => {
            // The key fits another certificate of the file: the chain is out of order.
            let public = certified.key.public_key();
            let fits_another = certified.cert[1..].iter().any(|other| {
                public.as_ref().is_some_and(|public| {
                    Leaf::public_key_of(other).is_some_and(|spki| spki == public.as_ref())
                })
            });
            if fits_another {
                anyhow::bail!(
                    "the TLS certificate {} does not start with the certificate of the key {}: \
                     put the server's own certificate first, then the CAs' that signed it",
                    cert.display(),
                    key.display()
                );
            }
            Err(anyhow::Error::new(e).context(format!(
                "the TLS key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )))
        }
    }
}

/// How far ahead of this machine's clock a renewed certificate may start and still be
/// taken by SIGHUP: a certificate issued on a machine whose clock is a little ahead.
const AHEAD: time::Duration = time::Duration::hours(1);

/// What was read: the chain and key to serve, and what its first certificate says.
struct Served {
    certified: CertifiedKey,
    leaf: Leaf,
}

/// What the served certificate says of itself, for the log and for the checks that spare
/// a renewal hook a certificate no client takes.
#[derive(Debug)]
pub(crate) struct Leaf {
    subject: String,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    is_ca: bool,
}

impl Leaf {
    fn of(der: &CertificateDer<'_>) -> anyhow::Result<Leaf> {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let validity = parsed.validity();
        Ok(Leaf {
            subject: parsed.subject().to_string(),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            is_ca: parsed.is_ca(),
        })
    }

    /// The DER of a certificate's subjectPublicKeyInfo, as rustls's `SigningKey::public_key`
    /// gives a key's.
    fn public_key_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
        let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(parsed.public_key().raw.to_vec())
    }

    /// Why no client would take it as a server's certificate now, if so.
    pub(crate) fn refused_by_clients(&self, now: time::OffsetDateTime) -> Option<String> {
        if now > self.not_after {
            Some(format!("it expired on {}", rfc3339(self.not_after)))
        } else if now < self.not_before {
            Some(format!(
                "it is not valid before {}",
                rfc3339(self.not_before)
            ))
        } else if self.is_ca {
            Some(
                "it is a CA certificate (CA:TRUE), which rustls clients (latchkey's CLI and \
                 remote verifiers) and browsers refuse as a server's own"
                    .to_owned(),
            )
        } else {
            None
        }
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// Reads a CA certificate file for the CLI's `--ca-cert`.
pub fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    /// A file no PEM file is as large as (`/dev/zero` named by mistake) is refused, not
    /// read without end.
    #[test]
    fn a_file_past_the_bound_is_refused_before_it_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        let err = read(&big, &big, &provider()).err().unwrap().to_string();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        #[cfg(target_os = "linux")]
        {
            let zero = Path::new("/dev/zero");
            let err = read(zero, zero, &provider()).err().unwrap().to_string();
            assert!(err.contains("larger than"), "{err}");
        }
    }

    /// An encrypted key is said to be one (the PEM crate finds no key in it, or a base64
    /// error in its headers), and a half-written file to lack its end line (the crate gives
    /// the line as a byte array).
    #[test]
    fn pem_problems_are_said_in_words() {
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let said = pem_problem(&pem::Error::NoItemsFound, encrypted);
        assert!(said.starts_with("the key is encrypted"), "{said}");
        let half = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let error = CertificateDer::pem_slice_iter(half)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        let said = pem_problem(&error, half);
        assert_eq!(said, "a PEM section has no END line (a file half written?)");
    }
}
