//! The HTTP transport: requests to a running daemon.

use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use latchkey_tower::remote::CertificateProblem;

use super::{ApiRequest, ApiResponse, Transport};

/// Sends requests to a daemon at a base URL with `Authorization: Bearer <admin key>`. A
/// user and password in the URL (for a proxy in front) go as `Proxy-Authorization: Basic`:
/// `Authorization` carries the key, and a request with two credentials is refused.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// The URL without its user and password.
    base: String,
    /// `Proxy-Authorization` for the URL's user and password, if it had them.
    proxy_authorization: Option<reqwest::header::HeaderValue>,
    /// `base` as messages show it: a password in it reads `***`.
    shown: String,
    admin_key: Option<String>,
    /// Whether the daemon answered a request of this run: one over `http://` that fails
    /// after that is no sign of a TLS listener (shared by the clones of one run).
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether `--ca-cert` was given: a certificate it did not sign needs another one.
    ca_given: bool,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.shown)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How long a download (`latchkey backup`) may take in all: the daemon copies the whole
/// store before it answers, then the file crosses the network (at a million keys, some
/// 600 MB). Other requests have 60 s, but those that make a key ([`KEY_DEADLINE`]).
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(3600);
/// How long a request that makes a key may take (see [`makes_a_key`]).
const KEY_DEADLINE: Duration = Duration::from_secs(600);

/// The largest answer read: 64 KiB for each item of the longest page. A record at its
/// bounds (256 permissions of 128 bytes, some 33 KiB as JSON, 4 KiB of metadata, 64 group
/// ids, eight rate limits) takes under 40 KiB, so a page of a thousand of them fits. A
/// longer answer is not the API's, and is refused before it fills memory.
const MAX_ANSWER_BYTES: usize = latchkey_core::limits::MAX_LIST_LIMIT * (64 << 10);
/// The largest error answer read: a problem+json takes a few hundred bytes.
const MAX_PROBLEM_BYTES: usize = 64 << 10;

/// `Proxy-Authorization: Basic` for the user and password of `url`, if it has them
/// (percent-decoded, as a browser sends them; RFC 7617).
fn proxy_authorization(url: &reqwest::Url) -> anyhow::Result<Option<reqwest::header::HeaderValue>> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {encoded}"))
        .context("cannot encode the URL's user and password")?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A URL as a message shows it: its password, if any, as `***`.
fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.as_str().trim_end_matches('/').to_owned()
}

/// A URL's text as a message shows it, parsed or not: whatever stands between its scheme
/// and its last `@` (a user and a password) reads `***`. Text that is not a URL of ours
/// (`user:password@host`, with no scheme, parses as a URL of the scheme `user`) is shown
/// this way, never as parsed.
pub fn shown_text(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// The daemon's URL (`what`: the setting that gave it), parsed: http:// or https:// only.
pub fn check_url(what: &str, url: &str) -> anyhow::Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).with_context(|| {
        format!(
            "invalid {what} {:?}: expected e.g. http://127.0.0.1:7878",
            shown_text(url)
        )
    })?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "invalid {what} {:?}: expected an http:// or https:// URL",
        shown_text(url)
    );
    Ok(parsed)
}

impl HttpTransport {
    /// The transport the global flags name: `--url`, `--admin-key` and `--ca-cert`.
    pub fn for_settings(settings: &crate::config::Settings) -> anyhow::Result<HttpTransport> {
        let key = crate::config::admin_key_to_send(settings)?;
        HttpTransport::for_settings_with_key(settings, key)
    }

    /// [`HttpTransport::for_settings`] sending `admin_key` (`None`: no key at all).
    pub fn for_settings_with_key(
        settings: &crate::config::Settings,
        admin_key: Option<String>,
    ) -> anyhow::Result<HttpTransport> {
        let ca = settings
            .ca_cert
            .as_deref()
            .map(crate::tls::read_ca)
            .transpose()?;
        HttpTransport::new(&settings.url, admin_key, ca.as_deref())
    }

    /// A transport to the daemon at `url` (scheme, host, port; no path), over `http://` or
    /// `https://`, trusting the system's roots plus the PEM certificates of `ca_pem`.
    pub fn new(
        url: &str,
        admin_key: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<HttpTransport> {
        let parsed = check_url("--url", url)?;
        let client =
            latchkey_tower::remote::https_client_builder(ca_pem).context("invalid --ca-cert")?;
        // No proxy where it would see the admin key (plain HTTP) or not reach the daemon.
        let client = latchkey_tower::remote::direct_unless_tunneled(client, &parsed)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        let proxy_authorization = proxy_authorization(&parsed)?;
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Ok(HttpTransport {
            client,
            base: base.as_str().trim_end_matches('/').to_owned(),
            proxy_authorization,
            shown: shown(&parsed),
            admin_key,
            answered: std::sync::Arc::default(),
            ca_given: ca_pem.is_some(),
        })
    }
}

impl HttpTransport {
    /// Sends a request and returns the response before its body is read; `deadline`
    /// replaces the client's 60 s for the whole exchange, body included.
    async fn start(
        &self,
        request: &ApiRequest,
        deadline: Option<Duration>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{}", self.base, request.path);
        let mut builder = self.client.request(request.method.clone(), &url);
        if let Some(deadline) = deadline {
            builder = builder.timeout(deadline);
        }
        if let Some(key) = &self.admin_key {
            builder = builder.bearer_auth(key);
        }
        if let Some(credentials) = &self.proxy_authorization {
            builder = builder.header(reqwest::header::PROXY_AUTHORIZATION, credentials.clone());
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let sent = builder.send().await;
        if sent.is_ok() {
            self.answered
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        sent.map_err(|e| {
            // The URL is said as `shown` (reqwest's error would repeat it, password and all).
            let e = e.without_url();
            let message = self.failure(request, &e);
            if e.is_connect() || CertificateProblem::of(&e).is_some() {
                anyhow::anyhow!(message)
            } else {
                // Past the connection and its handshake: it may have been sent.
                super::lost_answer(&request.method, message)
            }
        })
    }

    /// What a request that had no answer failed of, in words, with what to do.
    fn failure(&self, request: &ApiRequest, e: &reqwest::Error) -> String {
        if let Some(problem) = CertificateProblem::of(e) {
            let advice = match problem {
                CertificateProblem::CaServed => {
                    "the daemon serves a CA certificate (CA:TRUE) as its own, which no \
                         client takes: serve one that CA signed, or make the self-signed one \
                         with `-addext basicConstraints=critical,CA:FALSE` (README, TLS)"
                }
                CertificateProblem::UntrustedIssuer if self.ca_given => {
                    "the certificate given with --ca-cert (LATCHKEY_CA_CERT) did not sign \
                         it: give the CA that did, or a self-signed daemon's certificate as \
                         it is now (one made again is another); if the CA given is its CA, \
                         the daemon must serve the intermediate certificates between them"
                }
                CertificateProblem::UntrustedIssuer => "trust its CA with --ca-cert FILE",
                CertificateProblem::OutOfValidity => {
                    "renew the daemon's certificate (then `kill -HUP` it), or set this \
                         machine's clock right: trusting its CA does not help"
                }
                CertificateProblem::OtherName => {
                    "use a --url whose host the certificate names (its subjectAltName)"
                }
                _ => "the daemon's certificate itself must change",
            };
            format!(
                "the TLS certificate of the latchkey daemon at {} does not verify ({}): \
                     {advice}",
                self.shown,
                certificate_problem(e)
            )
        } else if e.is_connect() && latchkey_tower::remote::is_not_tls(e) {
            // A plain listener answers a TLS handshake with bytes rustls cannot read.
            format!(
                "cannot connect to the latchkey daemon at {} over TLS ({e}): if it serves \
                     plain HTTP, use an http:// --url",
                self.shown
            )
        } else if e.is_connect() {
            format!(
                "cannot connect to the latchkey daemon at {}: is `latchkey serve` running? \
                     (or work on a store directly with --db PATH)",
                self.shown
            )
        } else if e.is_timeout() && makes_a_key(request) {
            format!(
                "the latchkey daemon at {} did not answer in time: a key may have been \
                     made all the same, whose secret is lost; look for it (`latchkey keys \
                     list`) and revoke it before retrying",
                self.shown
            )
        } else if e.is_timeout() && request.method != ::http::Method::GET {
            format!(
                "the latchkey daemon at {} did not answer in time: the change may have \
                     been made all the same; look before retrying",
                self.shown
            )
        } else if e.is_timeout() {
            format!(
                "the latchkey daemon at {} did not answer in time",
                self.shown
            )
        } else if self.answered.load(std::sync::atomic::Ordering::Relaxed) {
            // It answered over this URL before: the connection was lost on the way, maybe
            // after the request arrived.
            let applied = if makes_a_key(request) {
                "; a key may have been made all the same, whose secret is lost: look for \
                     it (`latchkey keys list`) and revoke it before retrying"
            } else if request.method != ::http::Method::GET {
                "; the change may have been made all the same: look before retrying"
            } else {
                ""
            };
            format!(
                "request to the latchkey daemon at {} failed after it had answered: \
                     {e} (did it stop, or the network in between fail?){applied}",
                self.shown
            )
        } else if self.base.starts_with("http://") {
            // A TLS listener hangs up on plain HTTP without an answer.
            format!(
                "request to the latchkey daemon at {} failed: {e} (if it serves HTTPS, \
                     use an https:// --url)",
                self.shown
            )
        } else {
            format!(
                "request to the latchkey daemon at {} failed: {e}",
                self.shown
            )
        }
    }

    /// GETs `path` and streams the body into `out` as it arrives (for `latchkey backup`,
    /// whose answer can be larger than memory should hold); answers the answer's headers.
    /// An error answer becomes its problem line.
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<::http::HeaderMap> {
        let request = ApiRequest {
            method: ::http::Method::GET,
            path: path.to_owned(),
            body: None,
        };
        let mut response = self.start(&request, Some(DOWNLOAD_DEADLINE)).await?;
        let status = response.status();
        if !status.is_success() {
            let body = self.read_capped(&mut response).await?;
            return Err(super::Problem::from_response(status, &body).into());
        }
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("reading the answer of the daemon at {}", self.shown))?
        {
            out.write_all(&chunk).context("writing the file")?;
        }
        Ok(response.headers().clone())
    }

    /// Reads an answer's body a chunk at a time, up to [`MAX_ANSWER_BYTES`] for a success
    /// and [`MAX_PROBLEM_BYTES`] for an error; past that, refuses it.
    async fn read_capped(&self, response: &mut reqwest::Response) -> anyhow::Result<Bytes> {
        let status = response.status();
        let cap = if status.is_success() {
            MAX_ANSWER_BYTES
        } else {
            MAX_PROBLEM_BYTES
        };
        let too_long = || {
            anyhow::anyhow!(
                "the answer of the daemon at {} (HTTP {status}) is longer than {} KiB: refused \
                 (is --url a latchkey daemon?)",
                self.shown,
                cap >> 10
            )
        };
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_long());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("reading the answer of the daemon at {}", self.shown))?
        {
            if body.len() + chunk.len() > cap {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Whether `request` makes a key: its answer alone holds the new secret. The daemon never
/// cuts such a request off (its request timeout spares it), nor does the CLI after 60 s:
/// it waits up to [`KEY_DEADLINE`], and says, if it gives up, that a key may exist.
fn makes_a_key(request: &ApiRequest) -> bool {
    let path = request.path.split('?').next().unwrap_or_default();
    crate::server::mints_a_secret(&request.method, path)
}

impl Transport for HttpTransport {
    async fn send(&self, request: ApiRequest) -> anyhow::Result<ApiResponse> {
        let deadline = makes_a_key(&request).then_some(KEY_DEADLINE);
        let mut response = self.start(&request, deadline).await?;
        let status = response.status();
        let body = self.read_capped(&mut response).await.map_err(|error| {
            // Answered as done, the answer lost: what was done is not known.
            if status.is_success() {
                super::lost_answer(&request.method, format!("{error:#}"))
            } else {
                error
            }
        })?;
        Ok(ApiResponse { status, body })
    }
}

/// The innermost cause of a certificate failure ("invalid peer certificate: UnknownIssuer").
fn certificate_problem(error: &reqwest::Error) -> String {
    // A self-signed certificate comes out of rustls as a signature algorithm that does not
    // suit the key of some trusted root it tried as the issuer: a dump of object
    // identifiers that says nothing of the cause.
    if CertificateProblem::of(error) == Some(CertificateProblem::UntrustedIssuer) {
        return "no CA trusted here signed it: it is self-signed, or its CA is a private one"
            .to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// A current-thread runtime, and a loopback listener with its port.
    fn a_runtime_and_a_listener() -> (tokio::runtime::Runtime, TcpListener, u16) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (runtime, listener, port)
    }

    fn get_users() -> ApiRequest {
        ApiRequest {
            method: reqwest::Method::GET,
            path: "/v1/users".into(),
            body: None,
        }
    }

    /// A user and password in the URL go as `Proxy-Authorization`, never as a second
    /// `Authorization` beside the key's: the daemon refused every such request (two
    /// credentials), and the README has them for a proxy in front.
    #[test]
    fn the_url_s_password_goes_as_proxy_authorization() {
        let (runtime, listener, port) = a_runtime_and_a_listener();
        let url = format!("http://ops:hunter%202@127.0.0.1:{port}/");
        let transport = HttpTransport::new(&url, Some("lk_live_key".into()), None).unwrap();
        let request = get_users();
        let reader = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            for line in BufReader::new(&stream).lines() {
                let line = line.unwrap();
                if line.is_empty() {
                    break;
                }
                head.push(line.to_ascii_lowercase());
            }
            (&stream)
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            head
        });
        let _ = runtime.block_on(transport.start(&request, None));
        let head = reader.join().unwrap();
        let authorization: Vec<_> = head
            .iter()
            .filter(|l| l.starts_with("authorization:"))
            .collect();
        assert_eq!(
            authorization,
            ["authorization: bearer lk_live_key"],
            "{head:?}"
        );
        // base64("ops:hunter 2"), lowercased with the rest of the head.
        let proxy = "proxy-authorization: basic b3bzomh1bnrlciay".to_owned();
        assert!(head.contains(&proxy), "{head:?}");
    }

    /// A daemon over plain HTTP that answered and then went away (killed mid-import) is
    /// said to have gone away, not to serve HTTPS.
    #[test]
    fn a_connection_lost_after_an_answer_is_no_tls_hint() {
        let (runtime, listener, port) = a_runtime_and_a_listener();
        let transport =
            HttpTransport::new(&format!("http://127.0.0.1:{port}"), None, None).unwrap();
        let request = get_users();
        let server = std::thread::spawn(move || {
            // The first request is answered, and the connection closed after it; the next
            // one is hung up on unanswered.
            for answer in [true, false] {
                let (stream, _) = listener.accept().unwrap();
                for line in BufReader::new(&stream).lines() {
                    if line.unwrap().is_empty() {
                        break;
                    }
                }
                if answer {
                    let head = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
                    (&stream).write_all(head.as_bytes()).unwrap();
                }
            }
        });
        let hung_up = |transport: &HttpTransport| {
            runtime
                .block_on(transport.start(&request, None))
                .unwrap_err()
                .to_string()
        };
        runtime.block_on(transport.start(&request, None)).unwrap();
        let error = hung_up(&transport);
        server.join().unwrap();
        assert!(error.contains("after it had answered"), "{error}");
        assert!(!error.contains("HTTPS"), "{error}");
    }

    /// A change hung up on once sent may have been made: its error says the outcome is
    /// not known (so `keys import` does not call its lines not imported). A read hung up on
    /// is not a change, and a change that never reached a listener was not made.
    #[test]
    fn a_change_hung_up_on_has_an_unknown_outcome() {
        let (runtime, listener, port) = a_runtime_and_a_listener();
        let transport =
            HttpTransport::new(&format!("http://127.0.0.1:{port}"), None, None).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                for line in BufReader::new(&stream).lines() {
                    if line.unwrap().is_empty() {
                        break;
                    }
                }
            }
        });
        let post = ApiRequest {
            method: reqwest::Method::POST,
            path: "/v1/keys/import".into(),
            body: None,
        };
        let hung_up = |request: &ApiRequest| runtime.block_on(transport.send(request.clone()));
        assert!(super::super::outcome_unknown(&hung_up(&post).unwrap_err()));
        assert!(!super::super::outcome_unknown(
            &hung_up(&get_users()).unwrap_err()
        ));
        server.join().unwrap();
        // Nothing listens there now.
        let error = hung_up(&post).unwrap_err();
        assert!(error.to_string().contains("cannot connect"), "{error:#}");
        assert!(!super::super::outcome_unknown(&error));
    }

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let transport = HttpTransport::new("http://ops:hunter2@127.0.0.1:1/", None, None).unwrap();
        assert_eq!(transport.shown, "http://ops:***@127.0.0.1:1");
        assert!(!format!("{transport:?}").contains("hunter2"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let request = get_users();
        let error = runtime
            .block_on(transport.start(&request, None))
            .unwrap_err();
        let error = format!("{error:#}");
        assert!(error.contains("ops:***@127.0.0.1:1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    /// Refused URLs too: one that does not parse, one of another scheme, and one with no
    /// scheme at all (which parses as a URL of the scheme `ops`, with no password).
    #[test]
    fn a_refused_url_never_shows_its_password() {
        for url in [
            "http://ops:hunter2@proxy:99999",
            "ftp://ops:hunter2@proxy:21",
            "ops:hunter2@proxy:7878",
            "ops:hunter2@proxy",
        ] {
            let error = format!("{:#}", check_url("--url", url).unwrap_err());
            assert!(!error.contains("hunter2"), "{url}: {error}");
            assert!(error.contains("***@proxy"), "{url}: {error}");
        }
        assert_eq!(shown_text("http://127.0.0.1:7878"), "http://127.0.0.1:7878");
    }

    /// Answers one request with `status` and a chunked body of `len` bytes of JSON-ish text
    /// (no length announced, so only reading tells how long it is), then hangs up.
    fn server(status: &'static str, len: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || -> std::io::Result<()> {
            let (stream, _) = listener.accept()?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 2 {
                line.clear();
            }
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 transfer-encoding: chunked\r\n\r\n"
            )?;
            let block = [b' '; 64 << 10];
            let mut sent = 0;
            while sent < len {
                let n = block.len().min(len - sent);
                write!(stream, "{n:x}\r\n")?;
                stream.write_all(&block[..n])?;
                stream.write_all(b"\r\n")?;
                sent += n;
            }
            stream.write_all(b"0\r\n\r\n")
        });
        url
    }

    async fn get(url: &str) -> anyhow::Result<ApiResponse> {
        let transport = HttpTransport::new(url, None, None).unwrap();
        let request = ApiRequest {
            method: ::http::Method::GET,
            path: "/v1/keys".to_owned(),
            body: None,
        };
        transport.send(request).await
    }

    /// The requests whose answer alone holds a new secret, and only those, wait past 60 s.
    #[test]
    fn only_the_requests_that_make_a_key_wait_longer() {
        let request = |method: ::http::Method, path: &str| ApiRequest {
            method,
            path: path.to_owned(),
            body: None,
        };
        use ::http::Method;
        for path in [
            "/v1/keys",
            "/v1/keys?x=1",
            "/v1/keys/0190f0a0-0000-7000-8000-000000000000/rotate",
        ] {
            assert!(makes_a_key(&request(Method::POST, path)), "{path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/keys"),
            (Method::POST, "/v1/users"),
            (Method::POST, "/v1/keys/x/revoke"),
            (Method::PATCH, "/v1/keys/x"),
        ] {
            assert!(
                !makes_a_key(&request(method.clone(), path)),
                "{method} {path}"
            );
        }
    }

    #[tokio::test]
    async fn answers_are_read_up_to_a_cap() {
        let fits = get(&server("200 OK", MAX_ANSWER_BYTES)).await.unwrap();
        assert_eq!(fits.body.len(), MAX_ANSWER_BYTES);
        let error = get(&server("200 OK", MAX_ANSWER_BYTES + 1))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("longer than {} KiB", MAX_ANSWER_BYTES >> 10)),
            "{error:#}"
        );
        let error = get(&server("404 Not Found", MAX_PROBLEM_BYTES + 1))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("HTTP 404 Not Found) is longer than 64 KiB"),
            "{error:#}"
        );
        let problem = get(&server("404 Not Found", 100)).await.unwrap();
        assert_eq!(problem.status, 404);
    }
}
