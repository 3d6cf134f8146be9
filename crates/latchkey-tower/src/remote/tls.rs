//! TLS to the daemon: rustls on the `ring` provider, trusting the system's roots plus an
//! optional private CA.
//!
//! The config is built here and handed to reqwest, rather than installing a process-wide
//! default crypto provider: a library must not decide that for the app it lives in (an app
//! that installs its own provider later would find one already there and fail).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::error::RemoteError;

/// A reqwest client builder that speaks `http://` and `https://` (TLS 1.2 and 1.3), trusting
/// the system's roots plus the certificates of `ca_pem` (PEM, one or more), as the
/// [`RemoteVerifier`](super::RemoteVerifier) does. The CLI uses it too, so both trust the
/// same authorities.
///
/// A server whose certificate does not verify fails the request; nothing ever falls back
/// to plain HTTP or to an unverified connection.
///
/// Redirects are never followed: a 3xx is the answer. Following one would re-send the
/// request, the API key in its body included, to whatever origin the `Location` names,
/// plain `http://` as well.
///
/// # Example
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pem = std::fs::read("ca.pem")?;
/// let client = latchkey_tower::remote::https_client_builder(Some(&pem))?.build()?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`RemoteError::Client`] when `ca_pem` holds no certificate or one that cannot be
/// parsed, or the verifier cannot be set up.
pub fn https_client_builder(ca_pem: Option<&[u8]>) -> Result<reqwest::ClientBuilder, RemoteError> {
    let config = client_config(ca_pem)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none()))
}

/// `builder` with no proxy for `url` where one would see the key: a plain `http://` request
/// goes to a proxy whole, its `Authorization` header included, and a loopback address is
/// the proxy's own, not this machine's. An `https://` request to another host may use the
/// system's proxy (`HTTPS_PROXY`): tunneled, it sees nothing of the request.
///
/// # Example
///
/// ```
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = reqwest::Url::parse("http://127.0.0.1:7878")?;
/// let builder = latchkey_tower::remote::https_client_builder(None)?;
/// let client = latchkey_tower::remote::direct_unless_tunneled(builder, &url).build()?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub fn direct_unless_tunneled(
    builder: reqwest::ClientBuilder,
    url: &reqwest::Url,
) -> reqwest::ClientBuilder {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" || loopback {
        builder.no_proxy()
    } else {
        builder
    }
}

fn client_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, RemoteError> {
    let extra = match ca_pem {
        Some(pem) => certificates(pem)?,
        None => Vec::new(),
    };
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).map_err(
            |e| RemoteError::Client(format!("cannot set up certificate checks: {e}").into()),
        )?;
    let config = ClientConfig::builder_with_provider(provider)
        // TLS 1.2 and 1.3: rustls implements nothing older.
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::Client(e.into()))?
        .dangerous()
        // "Dangerous" only in rustls' naming: this is the platform's full verifier (system
        // roots and the CA given), not a relaxation of it.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Every certificate in a PEM document; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            RemoteError::Client(format!("the CA certificate is not valid PEM: {e}").into())
        })?;
    if certs.is_empty() {
        return Err(RemoteError::Client(
            "the CA certificate file holds no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

/// Why a server's certificate did not verify, as far as that tells what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// No CA trusted here signed it: a self-signed certificate, or a private CA's not given
    /// to the client, or made again with a new key. (rustls says so as `UnknownIssuer`, as
    /// a bad signature, or, for a self-signed one, as a signature algorithm that does not
    /// suit the key of a trusted root it tried as the issuer.) Trusting its CA helps.
    UntrustedIssuer,
    /// A CA certificate (`basicConstraints` `CA:TRUE`) served as the server's own, which no
    /// client takes: what OpenSSL 3's `req -x509` makes by default. Trusting it does not
    /// help.
    CaServed,
    /// Expired, or not valid yet, by this machine's clock: renewing it (or setting the
    /// clock right) helps, trusting its CA does not.
    OutOfValidity,
    /// It does not name the host the URL names.
    OtherName,
    /// Another reason: a bad signature or encoding, a revoked certificate, a wrong purpose.
    Other,
}

impl CertificateProblem {
    /// Why the server's certificate did not verify, when that is why `error` (a request's,
    /// a connection's) failed.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<CertificateProblem> {
        use rustls::CertificateError as E;
        let problem = match invalid_certificate(error)? {
            // A bad signature: signed by another key than the trusted certificate of that
            // name holds (a self-signed certificate or a private CA made again).
            E::UnknownIssuer
            | E::BadSignature
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                CertificateProblem::UntrustedIssuer
            }
            E::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                CertificateProblem::CaServed
            }
            E::Expired
            | E::ExpiredContext { .. }
            | E::NotValidYet
            | E::NotValidYetContext { .. } => CertificateProblem::OutOfValidity,
            E::NotValidForName | E::NotValidForNameContext { .. } => CertificateProblem::OtherName,
            _ => CertificateProblem::Other,
        };
        Some(problem)
    }
}

/// Whether the TLS handshake got an answer that is no TLS at all: what a plain-HTTP
/// listener sends back to a client speaking TLS to it (an `https://` URL for an `http://`
/// server).
pub fn is_not_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(tls_error(error), Some(rustls::Error::InvalidMessage(_)))
}

/// The certificate error in `error`'s chain, if any.
fn invalid_certificate<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::CertificateError> {
    match tls_error(error) {
        Some(rustls::Error::InvalidCertificate(invalid)) => Some(invalid),
        _ => None,
    }
}

/// The TLS error in `error`'s chain, if any.
fn tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut cause = Some(error);
    // Bounded: error chains are a handful of links.
    for _ in 0..32 {
        let Some(e) = cause else { break };
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the error it wraps (tokio-rustls nests a rustls error
        // in an io::Error, and hyper that in another), so step inside it by hand.
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let err = client_config(Some(b"not a certificate")).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn no_ca_uses_the_system_roots() {
        assert!(client_config(None).is_ok());
    }
}
