//! [`RemoteVerifierBuilder`]: where the daemon is, and how far to trust the cache.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::key::Redacted;
use latchkey_core::{ApiKey, Clock, SystemClock};

use super::RemoteVerifier;
use super::error::RemoteError;

/// Configures and starts a [`RemoteVerifier`].
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use latchkey_tower::remote::RemoteVerifier;
///
/// # async fn run() -> Result<(), latchkey_tower::remote::RemoteError> {
/// let service_key = std::env::var("LATCHKEY_SERVICE_KEY").unwrap_or_default();
/// let verifier = RemoteVerifier::builder("https://latchkey.internal:7878", &service_key)
///     .max_staleness(Duration::from_secs(5))
///     .negative_ttl(Duration::from_secs(1))
///     .build()?;
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteVerifierBuilder {
    pub(super) url: String,
    pub(super) service_key: String,
    pub(super) settings: VerifierSettings,
}

/// The settings once checked; shared by the verifier's tasks.
#[derive(Clone)]
pub(super) struct VerifierSettings {
    pub(super) max_staleness: Duration,
    pub(super) heartbeat: Duration,
    pub(super) negative_ttl: Duration,
    pub(super) cache_ttl: Duration,
    pub(super) max_entries: usize,
    pub(super) max_refusals: usize,
    pub(super) max_concurrent_misses: usize,
    pub(super) imported_keys: bool,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) usage_interval: Duration,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) clock: Arc<dyn Clock>,
    /// PEM certificates trusted beside the system's roots for `https://`.
    pub(super) ca_pem: Option<Arc<[u8]>>,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        VerifierSettings {
            max_staleness: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(300),
            max_entries: 100_000,
            max_refusals: 10_000,
            max_concurrent_misses: 64,
            imported_keys: false,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            usage_interval: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
            ca_pem: None,
        }
    }
}

/// The fastest heartbeat the daemon sends (it refuses a lower `heartbeat_ms`).
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// The slowest heartbeat the daemon sends (it refuses a higher `heartbeat_ms`).
const MAX_HEARTBEAT: Duration = Duration::from_secs(60);
/// The shortest reconnection delay: a zero would reconnect in a tight loop.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

impl VerifierSettings {
    /// The heartbeat actually asked for: at most a third of `max_staleness`, so that a
    /// live stream refreshes the trust window several times over before it closes.
    pub(super) fn effective_heartbeat(&self) -> Duration {
        let third = self.max_staleness / 3;
        let asked = if third.is_zero() {
            self.heartbeat
        } else {
            self.heartbeat.min(third)
        };
        // Within what the daemon accepts: beyond it, the stream would be refused (400) and
        // never come up.
        asked.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
    }

    /// How long the stream may stay silent before it counts as dead: three heartbeats.
    pub(super) fn idle_timeout(&self) -> Duration {
        self.effective_heartbeat() * 3
    }
}

/// Builder setters that store their argument in the field of [`VerifierSettings`] of the
/// same name, each documented where it is listed (as tower-http writes its accessors).
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.settings.$name = value;
                self
            }
        )*
    };
}

impl RemoteVerifierBuilder {
    pub(super) fn new(url: &str, service_key: &str) -> RemoteVerifierBuilder {
        RemoteVerifierBuilder {
            url: url.to_owned(),
            service_key: service_key.to_owned(),
            settings: VerifierSettings::default(),
        }
    }

    setters! {
        /// How long cached answers stay trusted after the verifier last heard from the daemon
        /// (a change or a heartbeat on the event stream); default 5 s. Past it, a cached
        /// answer is not used: the key is verified by the daemon again, and while the daemon
        /// cannot answer the layer says 503 `keystore_unavailable`. This is the bound on how
        /// long a revoked key can still authenticate here when the daemon or the network
        /// fails. `Duration::ZERO` trusts no cached answer: every request asks the daemon.
        max_staleness: Duration;
        /// The heartbeat interval asked of the daemon; default 1 s, and never more than a
        /// third of [`max_staleness`](Self::max_staleness) (nor less than 1 s or more than
        /// 60 s, the daemon's bounds). Three missed heartbeats close the stream and start a
        /// reconnection.
        heartbeat: Duration;
        /// How long a refusal (`invalid_key`, `key_disabled`, …) is cached; default 1 s. A
        /// change event that may admit a key (enabling a key or a user, a new or imported
        /// key: any change but a revocation, a deletion or a new user or group) also drops
        /// every cached refusal, so enabling a key takes effect at once; the short bound
        /// covers what no event announces. `Duration::ZERO` caches none.
        negative_ttl: Duration;
        /// The longest a valid answer is cached, whatever the events say; default 5 min. A
        /// safety net only: changes invalidate entries as they happen, and a key's
        /// `expires_at` ends its entry on time.
        cache_ttl: Duration;
        /// How many keys the cache holds (default 100,000). An entry is the key's principal:
        /// a few hundred bytes for a key of a few permissions, up to about 40 KB for one of
        /// 256 long permissions and 4 KiB of `meta`; size this by the keys your app sees.
        /// When it is full, an arbitrary entry makes room.
        max_entries: usize;
        /// About how many refusals the cache holds (default 10,000), apart from the valid
        /// answers of [`max_entries`](Self::max_entries): a scan of random keys can neither
        /// evict a valid answer nor, past the bound, a refusal presented again and again (the
        /// cache is S3-FIFO). `0` caches none.
        max_refusals: usize;
        /// Whether texts that are not latchkey keys are asked of the daemon too (default
        /// `false`): turn it on when the daemon's store holds keys imported from another system
        /// (`latchkey keys import`). Off, such a text is refused as malformed without a request;
        /// on, it costs one daemon request per distinct text (answers cached, misses bounded by
        /// [`max_concurrent_misses`](Self::max_concurrent_misses), as for any key), and only a
        /// text of 16–512 visible ASCII characters is sent.
        imported_keys: bool;
        /// The time limit of one `POST /v1/verify` (a cache miss); default 2 s. A miss that
        /// hits it is answered 503.
        request_timeout: Duration;
        /// The time limit for opening a connection to the daemon; default 1 s.
        connect_timeout: Duration;
        /// How often usage figures of cache hits are sent to the daemon (`POST /v1/usage`);
        /// default 5 s. Zero is refused by [`build`](Self::build) ([`RemoteError::Setting`]).
        usage_interval: Duration;
        /// The clock that ages cached answers (default: the system clock); tests pass a
        /// [`ManualClock`](latchkey_core::ManualClock).
        clock: Arc<dyn Clock>;
    }

    /// How many cache misses may be asked of the daemon at once (default 64; at least 1).
    /// A miss that finds them all busy waits for one, up to 1 s while the daemon answers
    /// (within 2 s it answered about a real key, valid or refused for what it is but not
    /// `invalid_key`, or streamed a change that dropped cached answers) and 100 ms
    /// otherwise, then is answered 503 `keystore_unavailable`: a flood of unknown keys
    /// costs the daemon a bounded number of requests, and a burst of real keys on a warm
    /// verifier (a group's edit drops every cached answer) waits its turn.
    pub fn max_concurrent_misses(mut self, misses: usize) -> Self {
        self.settings.max_concurrent_misses = misses.max(1);
        self
    }

    /// The reconnection delays of the event stream: from `min` (at least 10 ms), doubling
    /// up to `max`, each drawn at random between half and all of it; default 100 ms to 2 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_BACKOFF);
        self.settings.backoff_min = min;
        self.settings.backoff_max = max.max(min);
        self
    }

    /// Trusts the certificates of `pem` (one or more, PEM) beside the system's roots for an
    /// `https://` daemon URL: a private CA. A daemon whose certificate verifies against
    /// neither is never used (each miss answers 503), and nothing falls back to plain HTTP.
    /// A `pem` without a certificate fails [`build`](Self::build).
    pub fn ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.settings.ca_pem = Some(Arc::from(pem.as_ref()));
        self
    }

    /// Checks the settings and starts the verifier: its event-stream and usage tasks are
    /// spawned on the current tokio runtime and stop when the last clone of the verifier
    /// is dropped.
    ///
    /// It returns at once, without waiting for the daemon: until the event stream is up,
    /// every verification asks the daemon.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Url`] for a URL that is not `http(s)://…` or holds a user or
    /// password (the service key authenticates; errors never repeat a password),
    /// [`RemoteError::ServiceKey`] for a service key that is not a well-formed key,
    /// [`RemoteError::NoRuntime`] outside a tokio runtime, [`RemoteError::Client`] when
    /// the HTTP client cannot be built (for one, a CA certificate that is not PEM),
    /// [`RemoteError::Setting`] for a zero `usage_interval`.
    pub fn build(self) -> Result<RemoteVerifier, RemoteError> {
        if self.settings.usage_interval.is_zero() {
            return Err(RemoteError::Setting("usage_interval must be above zero"));
        }
        let service_key =
            ApiKey::parse(self.service_key.trim()).map_err(RemoteError::ServiceKey)?;
        RemoteVerifier::start(&self.url, service_key, self.settings)
    }
}

impl fmt::Debug for RemoteVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteVerifierBuilder")
            .field("url", &self.url)
            .field("service_key", &Redacted(&self.service_key))
            .field("settings", &self.settings)
            .finish()
    }
}

impl fmt::Debug for VerifierSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierSettings")
            .field("max_staleness", &self.max_staleness)
            .field("heartbeat", &self.effective_heartbeat())
            .field("negative_ttl", &self.negative_ttl)
            .field("cache_ttl", &self.cache_ttl)
            .field("max_entries", &self.max_entries)
            .field("max_refusals", &self.max_refusals)
            .field("max_concurrent_misses", &self.max_concurrent_misses)
            .field("imported_keys", &self.imported_keys)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("usage_interval", &self.usage_interval)
            .field("backoff", &(self.backoff_min..self.backoff_max))
            .field("ca_certificate", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_staleness: Duration, heartbeat: Duration) -> VerifierSettings {
        VerifierSettings {
            max_staleness,
            heartbeat,
            ..VerifierSettings::default()
        }
    }

    /// The heartbeat asked for is one the daemon accepts (1 to 60 s), and three of them
    /// never overflow: a stream asked for 120 s was refused (400) for good, and
    /// `Duration::MAX` with a zero staleness bound panicked in the stream's task.
    #[test]
    fn the_heartbeat_asked_for_is_within_the_daemon_s_bounds() {
        let secs = Duration::from_secs;
        assert_eq!(
            settings(secs(600), secs(120)).effective_heartbeat(),
            secs(60)
        );
        assert_eq!(settings(secs(6), secs(120)).effective_heartbeat(), secs(2));
        assert_eq!(settings(secs(5), secs(0)).effective_heartbeat(), secs(1));
        let extreme = settings(Duration::ZERO, Duration::MAX);
        assert_eq!(extreme.idle_timeout(), secs(180));
    }

    #[test]
    fn the_reconnection_delay_is_never_zero() {
        let builder = RemoteVerifierBuilder::new("http://127.0.0.1:1", "x")
            .reconnect_backoff(Duration::ZERO, Duration::ZERO);
        assert_eq!(builder.settings.backoff_min, MIN_BACKOFF);
        assert_eq!(builder.settings.backoff_max, MIN_BACKOFF);
    }
}
