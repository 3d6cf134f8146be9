//! The daemon's HTTP API as the verifier speaks it: `POST /v1/verify`, `POST /v1/leases`,
//! `POST /v1/leases/return`, `GET /v1/events`, `POST /v1/usage`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, StatusCode};
use latchkey_core::controls::is_limit_state_name;
use latchkey_core::meter::RateLimited;
use latchkey_core::wire::{
    BucketWant, LeaseRequest, LeaseResponse, LeaseReturn, LeaseReturned, UsageItem, UsageReport,
    VerifyRequest, VerifyResponse,
};
use latchkey_core::{ApiKey, LimitState, PrincipalInfo, RateLimit, VerifyError};
use reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use super::config::VerifierSettings;
use super::error::RemoteError;

/// The daemon: its URLs and the service key's header, built once.
#[derive(Clone)]
pub(super) struct Daemon {
    http: reqwest::Client,
    base: Url,
    verify_url: Url,
    leases_url: Url,
    return_url: Url,
    events_url: Url,
    usage_url: Url,
    /// `Bearer <service key>`, marked sensitive.
    authorization: HeaderValue,
    /// The service key's display prefix, for logs.
    service_prefix: String,
    request_timeout: Duration,
}

/// The daemon's verdict on a key.
#[derive(Debug)]
pub(super) enum Verdict {
    Valid {
        principal: Box<PrincipalInfo>,
        expires_at: Option<OffsetDateTime>,
        /// The key has rate limits, credits or an allowlist (their states): the daemon
        /// counted this request; the next ones are admitted from a lease.
        limits: Option<Vec<LimitState>>,
        /// The newest change the answering daemon had applied (on a shared database).
        seq: Option<u64>,
    },
    Refused {
        error: VerifyError,
        /// As for `Valid`: a refusal from a daemon behind the event stream is not cached.
        seq: Option<u64>,
    },
}

/// How `POST /v1/usage` went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum UsageOutcome {
    Accepted,
    /// 404 or 405: the daemon has no such endpoint.
    Unsupported,
    /// No answer came, or one that does not say whether the figures were recorded (a 5xx,
    /// perhaps from a proxy after the daemon took them; 408; 409, the same report still
    /// being recorded): send the same report again, under its key, so that it is recorded
    /// once. The text says why.
    Unanswered(String),
    /// An answer that refuses this send before its figures are recorded (401, 403, 429,
    /// …): on a first send they were not, and go again with the figures gathered since; on
    /// a report sent again, the first send may have been recorded.
    NotTaken(String),
    /// 400: the daemon will never take this report as it is; `item` is the one it named
    /// (its `field` is `items[N]…`), when it named one.
    Refused {
        item: Option<usize>,
    },
}

impl Daemon {
    pub(super) fn new(
        url: &str,
        service_key: &ApiKey,
        settings: &VerifierSettings,
    ) -> Result<Daemon, RemoteError> {
        // Errors repeat the URL without what may be a password in it.
        let shown = without_userinfo(url);
        let mut base = Url::parse(url).map_err(|e| RemoteError::Url(format!("{shown:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(RemoteError::Url(format!(
                "{shown:?}: expected http:// or https://"
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(RemoteError::Url(format!("{shown:?}: no query or fragment")));
        }
        // The service key authenticates: a user or password in the URL would only end up
        // in logs (errors and warnings name the URL).
        if !base.username().is_empty() || base.password().is_some() {
            return Err(RemoteError::Url(format!(
                "{shown:?}: no user or password in the URL (the service key authenticates)"
            )));
        }
        // A daemon mounted under a path (`https://auth.internal/latchkey`) keeps it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| RemoteError::Url(format!("{shown:?}: {e}")))
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", service_key.expose()))
            .map_err(|e| RemoteError::Client(e.into()))?;
        authorization.set_sensitive(true);
        let http = super::tls::https_client_builder(settings.ca_pem.as_deref())?;
        let http = super::tls::direct_unless_tunneled(http, &base)
            .connect_timeout(settings.connect_timeout)
            // Below the daemon's idle keep-alive close (its header timeout, 10 s by
            // default): a pooled connection taken as the daemon closes it fails its request
            // (re-check s55 L3: "connection closed before message completed", a 503).
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            // A daemon reached over TLS is never spoken to in the clear.
            .https_only(base.scheme() == "https")
            .build()
            .map_err(|e| RemoteError::Client(e.into()))?;
        Ok(Daemon {
            verify_url: join("v1/verify")?,
            leases_url: join("v1/leases")?,
            return_url: join("v1/leases/return")?,
            events_url: join("v1/events")?,
            usage_url: join("v1/usage")?,
            base,
            http,
            authorization,
            service_prefix: service_key.display_prefix().to_owned(),
            request_timeout: settings.request_timeout,
        })
    }

    /// Asks the daemon about a key, presented by a client at `client_ip`, for a request
    /// that costs `cost` (`None`: one). `Err` when it could not answer (unreachable, timed
    /// out, 503, or a refusal of the service key itself): the caller says 503.
    pub(super) async fn verify(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        cost: Option<u32>,
    ) -> Result<Verdict, String> {
        // Permissions are checked here, against the principal the answer carries.
        let body = VerifyRequest {
            key: presented.to_owned(),
            permissions: None,
            client_ip,
            cost: cost.map(u64::from),
        };
        let answer: VerifyResponse = self
            .call("POST /v1/verify", &self.verify_url, &body)
            .await?;
        verdict(answer)
    }

    /// Asks for slices of a key's rate limits and credits (`POST /v1/leases`). `Err` when
    /// the daemon could not answer.
    pub(super) async fn lease(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        buckets: Vec<BucketWant>,
    ) -> Result<LeaseResponse, String> {
        let body = LeaseRequest {
            key: presented.to_owned(),
            client_ip,
            buckets,
        };
        self.call("POST /v1/leases", &self.leases_url, &body).await
    }

    /// Gives back `credits` leased of a key and not spent (`POST /v1/leases/return`): how
    /// many the daemon took back. `Err` when it could not answer.
    pub(super) async fn give_back(&self, key_id: Uuid, credits: u64) -> Result<u64, String> {
        let body = LeaseReturn { key_id, credits };
        let answer: LeaseReturned = self
            .call("POST /v1/leases/return", &self.return_url, &body)
            .await?;
        Ok(answer.returned)
    }

    /// `POST url` with the service key, `body` as JSON, within the request time limit.
    async fn post(&self, url: &Url, body: &impl Serialize) -> reqwest::Result<reqwest::Response> {
        self.posting(url, body).send().await
    }

    /// The request [`post`](Self::post) sends, for a caller that adds to it.
    fn posting(&self, url: &Url, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.http
            .post(url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .timeout(self.request_timeout)
            .json(body)
    }

    /// [`post`](Self::post) and its 200 answer read as JSON; `Err` naming `what` when the
    /// daemon could not answer.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        url: &Url,
        body: &impl Serialize,
    ) -> Result<T, String> {
        let response = self
            .post(url, body)
            .await
            .map_err(|e| format!("{what}: {}", describe(&e)))?;
        self.expect_ok(what, response.status())?;
        read_json(what, response).await
    }

    /// `Err` naming `what` unless the daemon answered 200; a refusal of the service key
    /// itself (401, 403) is logged as the misconfiguration it is.
    fn expect_ok(&self, what: &str, status: StatusCode) -> Result<(), String> {
        if status == StatusCode::OK {
            return Ok(());
        }
        Err(self.not_ok(what, status))
    }

    /// Why `what` failed with `status`, logged when the service key itself was refused.
    fn not_ok(&self, what: &str, status: StatusCode) -> String {
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            latchkey_core::error_limited!(
                %status,
                service_key = %self.service_prefix,
                "the daemon refused the service key: it must authenticate and hold latchkey:verify"
            );
        }
        format!("{what} answered {status}")
    }

    /// Opens the event stream, resuming after `after` when given.
    pub(super) async fn events(
        &self,
        after: Option<u64>,
        heartbeat: Duration,
    ) -> Result<reqwest::Response, String> {
        let mut url = self.events_url.clone();
        url.query_pairs_mut()
            .append_pair("heartbeat_ms", &heartbeat.as_millis().to_string());
        let mut request = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        // Opening the stream is bounded here; reading it, by the idle timeout of the feed
        // (a request timeout would cut the stream itself).
        let response = tokio::time::timeout(self.request_timeout, request.send())
            .await
            .map_err(|_| "GET /v1/events: timed out".to_owned())?
            .map_err(|e| format!("GET /v1/events: {}", describe(&e)))?;
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            // A tenant-bound service key verifies, but is given no stream (README): no
            // refused key, and the feed says it once, as the stream's end.
            // Read within the request's time limit: a body that stalls is no answer.
            let code = tokio::time::timeout(
                self.request_timeout,
                read_json::<ProblemCode>("GET /v1/events", response),
            )
            .await;
            match code {
                Ok(Ok(problem)) if problem.code == "tenant_forbidden" => {
                    return Err(TENANT_BOUND.to_owned());
                }
                Err(_) => {
                    return Err("GET /v1/events answered 403, its body not read within \
                                request_timeout"
                        .to_owned());
                }
                Ok(_) => {}
            }
            return Err(self.not_ok("GET /v1/events", status));
        }
        self.expect_ok("GET /v1/events", status)?;
        Ok(response)
    }

    /// Sends usage figures, under the report's own `Idempotency-Key` (`id`): sent again
    /// under it, after an answer that was lost, they are recorded once.
    pub(super) async fn report_usage(&self, id: Uuid, items: &[UsageItem]) -> UsageOutcome {
        let report = UsageReport {
            items: items.to_vec(),
        };
        let sent = self
            .posting(&self.usage_url, &report)
            .header("idempotency-key", id.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => UsageOutcome::Accepted,
            Ok(r) if matches!(r.status().as_u16(), 404 | 405) => UsageOutcome::Unsupported,
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                let problem = r.json::<serde_json::Value>().await.unwrap_or_default();
                let item = problem["field"]
                    .as_str()
                    .and_then(|field| field.strip_prefix("items["))
                    .and_then(|rest| rest.split_once(']'))
                    .and_then(|(index, _)| index.parse().ok());
                UsageOutcome::Refused { item }
            }
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 409) => {
                UsageOutcome::NotTaken(format!("answered {}", r.status()))
            }
            Ok(r) => UsageOutcome::Unanswered(format!("answered {}", r.status())),
            Err(e) => UsageOutcome::Unanswered(describe(&e)),
        }
    }

    /// The daemon's base URL.
    pub(super) fn url(&self) -> &Url {
        &self.base
    }
}

/// The verdict a `POST /v1/verify` answer stands for. `Err`, a daemon failure (503, never
/// cached), for an answer that cannot be used: valid without a principal, or a limit name
/// that is not one core allows, which the layer would have to put in headers and JSON.
fn verdict(answer: VerifyResponse) -> Result<Verdict, String> {
    let mut limits = answer.limits.iter().flatten();
    if limits.any(|limit| !is_limit_state_name(&limit.name)) {
        return Err(
            "POST /v1/verify: a limit name that is not 1 to 32 characters of [A-Za-z0-9_.-], \
             after `user:` for a user's"
                .to_owned(),
        );
    }
    match (answer.valid, answer.principal) {
        (true, Some(principal)) => Ok(Verdict::Valid {
            principal: Box::new(principal),
            expires_at: answer.expires_at,
            limits: answer.limits,
            seq: answer.seq,
        }),
        (true, None) => Err("POST /v1/verify: valid without a principal".to_owned()),
        (false, _) => Ok(Verdict::Refused {
            error: refusal(&answer.code, answer.limits.as_deref(), answer.retry_after),
            seq: answer.seq,
        }),
    }
}

/// The error a refusal code stands for. A code this version does not know is still a
/// refusal: the daemon said the key is not valid. `keystore_unavailable` is not one, in
/// whatever answer it comes: it is the daemon's failure, answered 503 and never cached.
pub(super) fn refusal(
    code: &str,
    limits: Option<&[LimitState]>,
    retry_after: Option<u64>,
) -> VerifyError {
    match code {
        "key_disabled" => VerifyError::Disabled,
        "key_revoked" => VerifyError::Revoked,
        "key_expired" => VerifyError::Expired,
        "user_disabled" => VerifyError::UserDisabled,
        "ip_not_allowed" => VerifyError::IpNotAllowed,
        "usage_exceeded" => VerifyError::UsageExceeded {
            retry_after_seconds: retry_after.map(|s| s.max(1)),
        },
        "keystore_unavailable" => {
            VerifyError::Unavailable("the daemon could not read its keystore".to_owned())
        }
        "rate_limited" => {
            let limit = limits.and_then(|l| l.first());
            VerifyError::RateLimited(Box::new(RateLimited {
                limit: RateLimit {
                    name: limit.map_or_else(|| "default".to_owned(), |l| l.name.clone()),
                    limit: limit.and_then(|l| l.limit).unwrap_or(1),
                    window_seconds: limit.and_then(|l| l.window_seconds).unwrap_or(1),
                },
                retry_after_seconds: retry_after.unwrap_or(1).max(1),
            }))
        }
        _ => VerifyError::Invalid,
    }
}

/// A reqwest error with its causes ("error sending request: connection refused"); a
/// certificate that did not verify says so first, since only configuration fixes it.
/// The largest answer the daemon's JSON may be: a verdict with every field of a principal
/// is a few KiB. Up to [`max_concurrent_misses`](super::RemoteVerifierBuilder::max_concurrent_misses) are read at
/// once, so an answer without a bound could hold that many times any size in memory.
const MAX_ANSWER: usize = 1024 * 1024;

/// The body of `response` read as JSON, `Err` naming `what` past [`MAX_ANSWER`] bytes
/// (read no further) or when it does not parse.
async fn read_json<T: DeserializeOwned>(
    what: &str,
    mut response: reqwest::Response,
) -> Result<T, String> {
    let too_large = || format!("{what}: the answer is larger than {MAX_ANSWER} bytes");
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{what}: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{what}: the answer is not valid: {e}"))
}

/// How long an idle connection to the daemon is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Why the stream of a tenant-bound service key does not open.
const TENANT_BOUND: &str = "GET /v1/events answered 403 tenant_forbidden: the service key is bound to a tenant, and the daemon streams changes to none (a global service key gets the stream)";

/// The `code` of a problem answer.
#[derive(serde::Deserialize)]
struct ProblemCode {
    code: String,
}

pub(super) fn describe(error: &reqwest::Error) -> String {
    use super::tls::CertificateProblem;
    let advice = match CertificateProblem::of(error) {
        None => None,
        Some(CertificateProblem::CaServed) => Some(
            "it is a CA certificate, CA:TRUE, which no client takes for a server's own: serve \
             one that CA signed",
        ),
        Some(CertificateProblem::UntrustedIssuer) => Some("trust its CA with `ca_certificate`"),
        Some(CertificateProblem::OutOfValidity) => Some(
            "it is expired or not valid yet: renew it on the daemon, or set this machine's \
             clock right",
        ),
        Some(CertificateProblem::OtherName) => {
            Some("it does not name the URL's host: use a host name it names")
        }
        Some(_) => Some("see the cause"),
    };
    let mut text = match advice {
        Some(advice) => format!("the daemon's TLS certificate does not verify ({advice}): {error}"),
        None => error.to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `url` with everything between its scheme and its last `@` (a user and password, even
/// one holding `/`, `?` or `#` unencoded) replaced, for error messages. A URL with an `@`
/// in its path loses more than it needs to: an error message can spare it.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("url", &self.base.as_str())
            .field(
                "service_key",
                &format_args!("{}_<redacted>", self.service_prefix),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL with a user or password is refused, and no error repeats the password.
    #[test]
    fn a_url_with_a_password_is_refused_without_repeating_it() {
        let key = ApiKey::generate(
            &latchkey_core::Prefix::new("lk").unwrap(),
            latchkey_core::Env::Live,
        );
        let settings = VerifierSettings::default();
        for url in [
            "http://svc:hunter2@127.0.0.1:7878",
            "https://svc:hunter2@auth.internal/latchkey",
            "ftp://svc:hunter2@auth.internal",
            "http://svc:hunter2@127.0.0.1:7878/?q",
            "http://svc:hunter2@[::1:7878",
            "http://svc:hun#ter2@127.0.0.1:7878",
            "http://svc:hun/ter2@127.0.0.1:7878",
        ] {
            let Err(RemoteError::Url(why)) = Daemon::new(url, &key, &settings) else {
                panic!("{url} was taken");
            };
            assert!(!why.contains("hunter2") && !why.contains("ter2@"), "{why}");
            assert!(why.contains("<redacted>@"), "{why}");
        }
        assert_eq!(without_userinfo("http://host/a"), "http://host/a");
    }

    /// A refused service key fails every request: it is said at ERROR once, then at most
    /// once a second, however many requests meet it (it was one line per request).
    #[test]
    fn a_refused_service_key_is_logged_once_a_second_at_most() {
        use tracing_subscriber::layer::SubscriberExt;

        /// Counts the ERROR events it sees.
        struct Errors(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *event.metadata().level() == tracing::Level::ERROR {
                    self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Errors(errors.clone()));
        let key = ApiKey::generate(
            &latchkey_core::Prefix::new("lk").unwrap(),
            latchkey_core::Env::Live,
        );
        let daemon = Daemon::new("http://127.0.0.1:1", &key, &VerifierSettings::default()).unwrap();
        let started = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].repeat(500) {
                assert!(daemon.expect_ok("verify", status).is_err());
            }
        });
        // One a second at most (however slow this machine ran the loop).
        let most = 1 + started.elapsed().as_secs() as usize;
        let said = errors.load(std::sync::atomic::Ordering::Relaxed);
        assert!(said <= most, "{said} lines for 1,000 refusals in {most} s");
    }

    #[test]
    fn the_daemon_s_failure_is_no_refusal_of_the_key() {
        assert!(matches!(
            refusal("keystore_unavailable", None, None),
            VerifyError::Unavailable(_)
        ));
        assert_eq!(refusal("key_revoked", None, None), VerifyError::Revoked);
        assert_eq!(refusal("a_code_of_later", None, None), VerifyError::Invalid);
    }

    #[test]
    fn a_limit_name_core_would_refuse_is_the_daemon_s_failure() {
        let answer = |name: &str| {
            serde_json::from_value::<VerifyResponse>(serde_json::json!({
                "valid": false,
                "code": "rate_limited",
                "limits": [{ "name": name, "limit": 10, "window_seconds": 60, "remaining": 0 }],
                "retry_after": 5,
            }))
            .unwrap()
        };
        for bad in ["a\"b", "line\nbreak", "", "é", &"x".repeat(33)] {
            let verdict = verdict(answer(bad));
            assert!(verdict.is_err(), "{bad:?}: {verdict:?}");
        }
        for good in ["per_min", "user:per_min", "credits"] {
            let Ok(Verdict::Refused {
                error: VerifyError::RateLimited(limited),
                ..
            }) = verdict(answer(good))
            else {
                panic!("{good:?}: a well-named limit is a refusal");
            };
            assert_eq!(limited.limit.name, good);
        }
    }
}
