//! [`RemoteVerifier`]: the [`Verifier`] that asks the daemon and remembers its answers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use latchkey_core::limits::{MAX_IMPORTED_KEY_LEN, MIN_IMPORTED_KEY_LEN};
use latchkey_core::{ApiKey, Principal, VerifyError};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use super::cache::{
    Cache, Cached, Digest, DigestHasher, Effect, Negative, Positive, Scope, SecretHasher,
};
use super::client::{Daemon, Verdict};
use super::config::{RemoteVerifierBuilder, VerifierSettings};
use super::error::RemoteError;
use super::feed;
use super::lease::{Lease, Need, Take};
use super::usage::UsageBuffer;
use crate::verifier::{Charged, Verifier};

/// Verifies keys against a latchkey daemon, with a cache that the daemon's change feed
/// keeps current. See the [module docs](super) for the guarantees and failure modes.
///
/// Cheap to clone: clones share the cache and the background tasks, which stop when the
/// last clone is dropped.
///
/// # Example
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use latchkey_tower::remote::RemoteVerifier;
/// use latchkey_tower::{ApiKeyAuthLayer, Permission, RequirePermission};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = RemoteVerifier::builder("http://127.0.0.1:7878", "lk_live_…").build()?;
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "orders" }))
///     .route_layer(RequirePermission::layer(Permission::from_static("orders:read")))
///     .layer(ApiKeyAuthLayer::new(verifier.clone()));
/// // ... serve `app`; at shutdown, send the last usage figures:
/// verifier.flush_usage().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// A verification fails with [`VerifyError::Unavailable`] (the layer answers 503
/// `keystore_unavailable`) when no trusted cached answer exists and the daemon cannot
/// answer; with the daemon's refusal (401) when it refused the key.
#[derive(Clone)]
pub struct RemoteVerifier {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// The state the verifier and its tasks share.
pub(super) struct Shared {
    pub(super) daemon: Daemon,
    pub(super) settings: VerifierSettings,
    pub(super) hasher: SecretHasher,
    pub(super) cache: Cache,
    /// Misses being asked of the daemon, by digest: later misses for the same key wait for
    /// the same answer.
    pending: Mutex<HashMap<Digest, Waiter, BuildHasherDefault<DigestHasher>>>,
    /// One permit per request to the daemon in flight: `max_concurrent_misses`.
    misses: Semaphore,
    /// When the daemon last showed it answers about real keys ([`Shared::mark_answering`]),
    /// in milliseconds since `created` plus one; 0: never. Sets how long a miss waits for a
    /// permit ([`Shared::queue_wait`]).
    answered: AtomicU64,
    /// When this verifier was made: what `answered` counts from.
    created: std::time::Instant,
    usage: UsageBuffer,
    /// When the verifier last heard from the daemon on a caught-up stream, in Unix
    /// nanoseconds of the configured clock; `i64::MIN`: never.
    last_alive: AtomicI64,
    status: watch::Sender<RemoteStatus>,
    pub(super) runtime: Handle,
}

/// How long a cache miss waits for a free request slot before it is answered 503 when the
/// daemon has not answered lately (it is away, or hangs): long enough to ride out a burst,
/// short enough that a flood is refused quickly.
const MISS_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// [`MISS_QUEUE_WAIT`] while the daemon answers (it showed it answers about real keys
/// within [`ANSWERING`]: [`Shared::mark_answering`]): long enough for the misses a routine
/// change makes at once to be answered in turn. A group's edit drops every cached answer,
/// and 150 clients then missing together got 503 for valid keys from a daemon answering
/// each in tens of milliseconds (remote hunt M1).
const MISS_QUEUE_WAIT_ANSWERING: std::time::Duration = std::time::Duration::from_secs(1);

/// How recent the daemon's last answer must be for [`MISS_QUEUE_WAIT_ANSWERING`].
const ANSWERING: std::time::Duration = std::time::Duration::from_secs(2);

/// How many `POST /v1/leases/return` requests [`RemoteVerifier::flush_usage`] has in flight
/// at once.
const GIVE_BACK_CONCURRENCY: usize = 8;

/// How many times one request asks the daemon for more of its key's lease before it is
/// refused. Each grant is progress: other requests of the key took it, or a cost close to
/// what is left takes several (the daemon grants at most a twentieth of the credits left at
/// a time; what cannot be gathered so is charged by the daemon in one step); a refusal ends
/// it.
const MAX_ASKS: usize = 32;

/// The daemon's answer to one miss, for the requests that joined it: with whether the key
/// has usage control (limits, credits, an allowlist), which the daemon checked and charged
/// for the request that asked only.
type Answer = Option<Result<(Principal, Metered), VerifyError>>;
/// Whether a key has usage control, as the daemon's answer says.
type Metered = bool;
/// A cached valid answer: the principal, and a metered key's lease.
type Hit = (Principal, Option<Arc<Lease>>);
type Waiter = watch::Receiver<Answer>;

/// Aborts the background tasks when the last clone of the verifier goes.
struct Tasks(Vec<AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What a [`RemoteVerifier`] knows of the daemon, for health checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStatus {
    /// The event stream is open and caught up with the daemon's changes. After a stream
    /// whose heartbeats arrived `max_staleness` late, the next one counts as connected
    /// from its first heartbeat that arrives in time, so that a delay that lasts does not
    /// flip it at every reconnection.
    pub connected: bool,
    /// The sequence number of the last change applied; `None` before the first connection.
    pub position: Option<u64>,
    /// How many times `connected` became true: the stream caught up after connecting (1
    /// after the first connection, 2 after a reconnection, …), or, after a stream that
    /// ended late, a heartbeat arrived in time.
    pub syncs: u64,
    /// How many times the whole cache was dropped: the first connection, a `reset`, a
    /// replaced or diverged store, a gap in the feed.
    pub cache_drops: u64,
}

impl RemoteVerifier {
    /// Starts configuring a verifier of the daemon at `url` (for example
    /// `http://127.0.0.1:7878`), authenticating with `service_key`, a key that holds
    /// `latchkey:verify`.
    pub fn builder(url: &str, service_key: &str) -> RemoteVerifierBuilder {
        RemoteVerifierBuilder::new(url, service_key)
    }

    pub(super) fn start(
        url: &str,
        service_key: ApiKey,
        settings: VerifierSettings,
    ) -> Result<RemoteVerifier, RemoteError> {
        let shared = Arc::new(Shared::new(url, &service_key, settings)?);
        let runtime = shared.runtime.clone();
        let feed = runtime.spawn(feed::run(Arc::clone(&shared)));
        let usage = runtime.spawn(report_usage(Arc::clone(&shared)));
        Ok(RemoteVerifier {
            shared,
            _tasks: Arc::new(Tasks(vec![feed.abort_handle(), usage.abort_handle()])),
        })
    }

    /// The daemon as this verifier last saw it.
    pub fn status(&self) -> RemoteStatus {
        self.shared.status.borrow().clone()
    }

    /// Waits until the status satisfies `condition` (at once if it already does). Wrap it
    /// in a timeout: it waits as long as it takes.
    ///
    /// ```no_run
    /// # async fn run(verifier: latchkey_tower::remote::RemoteVerifier) {
    /// // Wait until the stream is up (e.g. before reporting ready).
    /// verifier.wait_for(|status| status.connected).await;
    /// # }
    /// ```
    pub async fn wait_for(&self, condition: impl FnMut(&RemoteStatus) -> bool) -> RemoteStatus {
        let mut receiver = self.shared.status.subscribe();
        let status = receiver
            .wait_for(condition)
            .await
            .expect("the sender lives in `shared`, which `self` holds");
        status.clone()
    }

    /// Whether cached answers are trusted right now: the verifier heard from the daemon
    /// within `max_staleness`.
    pub fn is_fresh(&self) -> bool {
        self.shared.trusted(self.shared.settings.clock.now())
    }

    /// How many valid answers are cached.
    pub fn cached_keys(&self) -> usize {
        self.shared.cache.len()
    }

    /// Sends the usage figures of cache hits counted so far (`POST /v1/usage`), and gives
    /// back the credits the verifier leased of metered keys and did not spend (`POST
    /// /v1/leases/return`). Call this at shutdown, once requests have stopped: the figures
    /// are sent every `usage_interval` anyway, but the last ones would be lost, and so would
    /// the unspent credits (counted as spent). A request admitted after it asks the daemon
    /// again.
    ///
    /// What the daemon cannot take back stays spent: a return it could not answer (logged
    /// at DEBUG), credits of a key whose usage control changed since, or leased from a daemon
    /// that restarted since.
    pub async fn flush_usage(&self) {
        self.shared.usage.flush(&self.shared.daemon).await;
        let mut leases = self.shared.cache.take_dropped_leases();
        leases.extend(self.shared.cache.leases());
        self.shared.give_back_credits(leases).await;
    }
}

impl Verifier for RemoteVerifier {
    type Future = RemoteFuture;

    fn verify(&self, key: &ApiKey) -> RemoteFuture {
        self.shared.lookup(key.expose(), None)
    }

    /// The layer hands the client's address to [`Verifier::verify_from`]: the daemon checks
    /// it against a key's allowlist, and so does the lease.
    fn wants_client_ip(&self) -> bool {
        true
    }

    fn verify_from(&self, key: &ApiKey, client_ip: Option<IpAddr>) -> RemoteFuture {
        self.shared.lookup(key.expose(), client_ip)
    }

    /// A metered key's lease holds its limits and credits here: a route's extra cost is
    /// taken from it like its requests (see `extra_cost.rs`).
    fn charges_extra(&self) -> bool {
        true
    }

    fn charge_extra(&self, presented: &str, client_ip: Option<IpAddr>, cost: u32) -> Charged {
        self.shared.charge_extra(presented, client_ip, cost)
    }

    /// The cache's generation, which every invalidation moves.
    fn credit_mark(&self) -> u64 {
        self.shared.cache.generation().changes()
    }

    fn give_back_credit(&self, presented: &str, mark: u64) {
        self.shared.give_back_credit(presented, mark);
    }

    fn verifies_foreign(&self) -> bool {
        self.shared.settings.imported_keys
    }

    /// With [`imported_keys`](RemoteVerifierBuilder::imported_keys) on, a text that could
    /// be an imported key (16–512 visible ASCII characters, as `latchkey keys import`
    /// takes) is asked of the daemon like any key; every other text is malformed.
    fn verify_foreign(&self, text: &str) -> Option<RemoteFuture> {
        self.verify_foreign_from(text, None)
    }

    /// An imported key's allowlist is checked by the daemon, as a native key's.
    fn verify_foreign_from(&self, text: &str, client_ip: Option<IpAddr>) -> Option<RemoteFuture> {
        let plausible = (MIN_IMPORTED_KEY_LEN..=MAX_IMPORTED_KEY_LEN).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic());
        (self.shared.settings.imported_keys && plausible)
            .then(|| self.shared.lookup(text, client_ip))
    }
}

impl Shared {
    /// A verifier's state, its tasks not started: in the current runtime.
    pub(super) fn new(
        url: &str,
        service_key: &ApiKey,
        settings: VerifierSettings,
    ) -> Result<Shared, RemoteError> {
        let runtime = Handle::try_current().map_err(|_| RemoteError::NoRuntime)?;
        Ok(Shared {
            daemon: Daemon::new(url, service_key, &settings)?,
            hasher: SecretHasher::generate(),
            cache: Cache::new(settings.max_entries, settings.max_refusals),
            misses: Semaphore::new(settings.max_concurrent_misses),
            answered: AtomicU64::new(0),
            created: std::time::Instant::now(),
            pending: Mutex::default(),
            usage: UsageBuffer::default(),
            last_alive: AtomicI64::new(i64::MIN),
            status: watch::Sender::new(RemoteStatus::default()),
            runtime,
            settings,
        })
    }

    /// The status as [`RemoteVerifier::status`] tells it.
    #[cfg(test)]
    pub(super) fn status(&self) -> RemoteStatus {
        self.status.borrow().clone()
    }

    /// Gives back the unspent credits of `leases`, a few requests at a time, until one
    /// fails: a daemon that cannot take one back (unreachable, refusing the service key)
    /// would fail the others too, one request timeout each (a stop took 2 s + 0.25 s a key
    /// with the daemon down). The leases not tried keep their credits, for their requests
    /// or the next report.
    async fn give_back_credits(&self, leases: Vec<Arc<Lease>>) {
        let failed = AtomicBool::new(false);
        futures_util::stream::iter(&leases)
            .for_each_concurrent(GIVE_BACK_CONCURRENCY, |lease| {
                let failed = &failed;
                async move {
                    if !failed.load(Ordering::Acquire) && !self.give_back_lease(lease).await {
                        failed.store(true, Ordering::Release);
                    }
                }
            })
            .await;
    }

    /// Gives back the unspent credits of one lease; `false` when the daemon could not
    /// take them (they stay spent).
    pub(super) async fn give_back_lease(&self, lease: &Lease) -> bool {
        // After a request for more in flight: its grant is in the lease then.
        let _one = lease.asking.lock().await;
        let Some((key_id, credits)) = lease.unspent_credits() else {
            return true;
        };
        match self.daemon.give_back(key_id, credits).await {
            Ok(returned) => {
                tracing::debug!(credits, returned, "gave back unspent leased credits");
                true
            }
            Err(cause) => {
                tracing::debug!(credits, error = %cause, "could not give back unspent leased credits: they stay spent");
                false
            }
        }
    }

    /// A cached answer for a presented text, or the daemon's; a metered key's request is
    /// admitted from its lease.
    fn lookup(self: &Arc<Self>, presented: &str, client_ip: Option<IpAddr>) -> RemoteFuture {
        let digest = self.hasher.digest(presented);
        let now = self.settings.clock.now();
        match self.cached(&digest, now) {
            Some(Ok((principal, Some(lease)))) => {
                return self.leased(principal, lease, presented, client_ip);
            }
            Some(answer) => return RemoteFuture::ready(answer.map(|(p, _)| p)),
            None => {}
        }
        let (waiter, joined) = self.miss(digest, presented, client_ip);
        if !joined {
            return RemoteFuture::waiting(waiter);
        }
        // A request that joined another's. The daemon checked and counted the other one
        // only: a key without usage control is this one's too (its use counted here), a
        // metered key's request is admitted from the lease, and where no lease reached the
        // cache (one not trusted, an invalidation meanwhile) it asks the daemon itself.
        // A refusal of the other's address or charge is no answer for this request either.
        let shared = Arc::clone(self);
        let presented = presented.to_owned();
        RemoteFuture(State::Waiting(Box::pin(async move {
            let answer = wait(waiter).await;
            let now = shared.settings.clock.now();
            match answer {
                Ok((principal, false)) => {
                    shared.usage.record(principal.key_id, now);
                    Ok(principal)
                }
                Ok((_, true)) => match shared.cached(&digest, now) {
                    Some(Ok((principal, Some(lease)))) => {
                        shared.leased(principal, lease, &presented, client_ip).await
                    }
                    _ => shared
                        .fetch(digest, &presented, client_ip)
                        .await
                        .map(|(p, _)| p),
                },
                Err(
                    VerifyError::RateLimited(_)
                    | VerifyError::UsageExceeded { .. }
                    | VerifyError::IpNotAllowed,
                ) => shared
                    .fetch(digest, &presented, client_ip)
                    .await
                    .map(|(p, _)| p),
                Err(error) => Err(error),
            }
        })))
    }

    /// A metered key's request, admitted from its lease: at once when every bucket has
    /// some left (asking for more in the background when one runs low), else after asking
    /// the daemon.
    fn leased(
        self: &Arc<Self>,
        principal: Principal,
        lease: Arc<Lease>,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> RemoteFuture {
        let now = nanos(self.settings.clock.now());
        match lease.take(client_ip, now, 1) {
            Take::Taken => {
                self.top_up(lease, presented, client_ip, now);
                RemoteFuture::ready(Ok(principal))
            }
            Take::Refused(error) => RemoteFuture::ready(Err(error)),
            Take::Short => {
                let shared = Arc::clone(self);
                let presented = presented.to_owned();
                RemoteFuture(State::Waiting(Box::pin(async move {
                    shared
                        .take_asking(&lease, &presented, client_ip, Need::REQUEST)
                        .await?;
                    Ok(principal)
                })))
            }
        }
    }

    /// Asks the daemon in the background for more of a lease's buckets that run low (no
    /// request waits: none lacks anything), unless a request for it is on its way.
    pub(super) fn top_up(
        self: &Arc<Self>,
        lease: Arc<Lease>,
        presented: &str,
        client_ip: Option<IpAddr>,
        now: i64,
    ) {
        if lease.low(now) && !lease.topping_up.swap(true, Ordering::AcqRel) {
            let shared = Arc::clone(self);
            let presented = presented.to_owned();
            self.runtime.spawn(async move {
                let _ = shared.ask(&lease, &presented, client_ip, Need::AHEAD).await;
                lease.topping_up.store(false, Ordering::Release);
            });
        }
    }

    /// Takes what a request needs from a lease that held too little, asking the daemon
    /// for more until it is taken, the daemon refuses, or [`MAX_ASKS`] grants went to other
    /// requests first (many requests of one key at once drain each grant as it comes). No
    /// ask starts once one request timeout has gone by, so a request waits at most about
    /// three (the last ask's wait for its turn, and its call).
    pub(super) async fn take_asking(
        &self,
        lease: &Lease,
        presented: &str,
        client_ip: Option<IpAddr>,
        need: Need,
    ) -> Result<(), VerifyError> {
        if let Some(refusal) = lease.beyond_a_limit(need) {
            return Err(refusal);
        }
        let started = tokio::time::Instant::now();
        for ask in 0..MAX_ASKS {
            if ask > 0 && started.elapsed() >= self.settings.request_timeout {
                break;
            }
            self.ask(lease, presented, client_ip, need).await?;
            let now = nanos(self.settings.clock.now());
            match lease.take(client_ip, now, need.requests) {
                Take::Taken => return Ok(()),
                Take::Refused(error) => return Err(error),
                Take::Short if lease.refused() => break,
                Take::Short => {}
            }
        }
        // What was granted meanwhile stays in the lease for the next requests (and unspent
        // credits go back at `flush_usage`). One request's worth that others kept taking is
        // no sign the key is out of credits: the daemon's refusal, or a 503 without one.
        let now = nanos(self.settings.clock.now());
        let cost = need.requests;
        let credits_refused = matches!(lease.refusal(), VerifyError::UsageExceeded { .. });
        if cost == 1 || (lease.refused() && !credits_refused) || !lease.credits_short(now, cost) {
            return Err(lease.refusal_for(need));
        }
        // A cost close to the credits left is more than the daemon grants a lease (a
        // twentieth of what is left at a time): what the lease gathered goes back, and the
        // daemon charges the whole cost from the key's balance in one step, as for a key no
        // longer cached. Its refusal is the answer: with when the credits come back, only
        // when the refill covers the cost (a lease's refusal tells when the next refill
        // comes, whatever the cost).
        self.give_back_lease(lease).await;
        self.charge_at_daemon(presented, client_ip, cost).await
    }

    /// Asks the daemon for more of a lease's low buckets, and of those holding less than
    /// the requests' worth `need` says, one request at a time per key (a request that waited for
    /// another's finds the buckets filled and asks nothing).
    pub(super) async fn ask(
        &self,
        lease: &Lease,
        presented: &str,
        client_ip: Option<IpAddr>,
        need: Need,
    ) -> Result<(), VerifyError> {
        // Behind another request's ask, at most as long as one ask may take: a daemon that
        // hangs makes the queue behind it answer 503, not wait one timeout per request.
        let Ok(_one) =
            tokio::time::timeout(self.settings.request_timeout, lease.asking.lock()).await
        else {
            return Err(VerifyError::Unavailable(
                "the daemon did not answer a lease of this key's limits in time".to_owned(),
            ));
        };
        let now = nanos(self.settings.clock.now());
        let wants = lease.wants(now, need);
        if wants.is_empty() && lease.knows_allowlist() {
            return Ok(());
        }
        match self.daemon.lease(presented, client_ip, wants).await {
            // A slice is valid from when it was asked for, not from when the answer came:
            // the daemon granted it after that, and a slow answer must not make it last
            // longer than the daemon meant.
            Ok(answer) => lease.grant(&answer, now),
            Err(cause) => {
                latchkey_core::warn_limited!(error = %cause, "latchkey daemon could not lease a key's limits");
                Err(VerifyError::Unavailable(cause))
            }
        }
    }

    /// A cached answer that may be used at `now`, with a metered key's lease. While the
    /// event stream is trusted, any unexpired entry; while it is not (down, refused by a
    /// proxy or the daemon), only a key's answer fetched less than `max_staleness` ago, so
    /// that a revocation is still seen within the bound, per answer, and a verifier whose
    /// stream never comes up does not ask the daemon at every request.
    fn cached(&self, digest: &Digest, now: OffsetDateTime) -> Option<Result<Hit, VerifyError>> {
        let trusted = self.trusted(now);
        match self.cache.get(digest, now)? {
            Cached::Valid(entry) => {
                if entry.expired.load(Ordering::Relaxed)
                    || entry.expires_at.is_some_and(|at| at <= now)
                {
                    // Expiry is final (no change moves it later) and needs no daemon to
                    // tell: the entry stays, saying so, trusted or not, until it is
                    // evicted, whatever the clock does after.
                    entry.expired.store(true, Ordering::Relaxed);
                    return Some(Err(VerifyError::Expired));
                }
                let age = now - entry.fetched_at;
                if age >= self.settings.cache_ttl {
                    self.cache.forget(digest);
                    return None;
                }
                // A clock that went back does not extend the window.
                if !trusted && (age.is_negative() || age >= self.settings.max_staleness) {
                    return None;
                }
                self.usage.record(entry.principal.key_id, now);
                Some(Ok((entry.principal, entry.lease)))
            }
            Cached::Refused(error) => trusted.then_some(Err(error)),
        }
    }

    /// Joins the request in flight for this key (`true`), or starts one.
    fn miss(
        self: &Arc<Self>,
        digest: Digest,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> (Waiter, bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiter) = pending.get(&digest) {
            // A closed channel is a task that died without answering (a runtime shutting
            // down): start over rather than join it.
            if waiter.has_changed().is_ok() {
                return (waiter.clone(), true);
            }
        }
        let (sender, waiter) = watch::channel(None);
        pending.insert(digest, waiter.clone());
        drop(pending);
        // A task of its own, so the answer lands in the cache and reaches every waiter
        // even if the request that started it is cancelled.
        let shared = Arc::clone(self);
        let presented = presented.to_owned();
        self.runtime.spawn(async move {
            let answer = shared.fetch(digest, &presented, client_ip).await;
            shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest);
            let _ = sender.send(Some(answer));
        });
        (waiter, false)
    }

    /// How long a miss waits for one of the `max_concurrent_misses` permits.
    pub(super) fn queue_wait(&self) -> std::time::Duration {
        let answered = self.answered.load(Ordering::Relaxed);
        let since = self.created.elapsed().as_millis();
        let recent =
            answered != 0 && since.saturating_sub(u128::from(answered - 1)) < ANSWERING.as_millis();
        if recent {
            MISS_QUEUE_WAIT_ANSWERING
        } else {
            MISS_QUEUE_WAIT
        }
    }

    /// The daemon just showed it answers about real keys: it found one valid, refused one
    /// for what the key is (revoked, disabled, over its limits: not `invalid_key`), or
    /// streamed a change that dropped cached answers, after which the misses of the real
    /// keys they were come at once (remote hunt M1, review s55 M2: a warm verifier's
    /// traffic is all hits, so a group's edit found no valid answer in the last 2 s).
    /// Answers `invalid_key` do not count: a flood of made-up keys keeps the short wait.
    pub(super) fn mark_answering(&self) {
        let since = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.answered.store(since + 1, Ordering::Relaxed);
    }

    /// Asks the daemon, and caches its answer; 503 when `max_concurrent_misses` requests
    /// are already in flight and none ends within [`Shared::queue_wait`].
    async fn fetch(
        &self,
        digest: Digest,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<(Principal, Metered), VerifyError> {
        let wait = self.queue_wait();
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, self.misses.acquire()).await else {
            // At DEBUG: a flood of unknown keys would otherwise be a flood of log lines.
            tracing::debug!("too many verifications in flight; answering 503");
            return Err(VerifyError::Unavailable(
                "too many verifications in flight".to_owned(),
            ));
        };
        let generation = self.cache.generation();
        let position = self.status.borrow().position;
        let verdict = self.daemon.verify(presented, client_ip, None).await;
        // Not `invalid_key`: a flood of made-up keys, refused at once by a healthy daemon,
        // must not hold every miss of the flood for the longer wait.
        let real = match &verdict {
            Ok(Verdict::Valid { .. }) => true,
            Ok(Verdict::Refused { error, .. }) => {
                !matches!(error, VerifyError::Invalid | VerifyError::Unavailable(_))
            }
            Err(_) => false,
        };
        if real {
            self.mark_answering();
        }
        let now = self.settings.clock.now();
        // A daemon behind this verifier's event stream (another daemon of the cluster
        // answered behind one name) may not have applied a change the stream already
        // announced (a revocation, a re-enabling): its answer serves this request, never
        // the next.
        let behind = |answered: Option<u64>| {
            answered
                .zip(position)
                .is_some_and(|(answered, seen)| answered < seen)
        };
        match verdict {
            Ok(Verdict::Valid {
                principal,
                expires_at,
                limits,
                seq,
            }) => {
                let principal = Principal::new(*principal);
                if expires_at.is_some_and(|at| at <= now) {
                    return Err(VerifyError::Expired);
                }
                let metered = limits.is_some();
                // The daemon counted this request; a metered key's next ones are admitted
                // from a lease of its limits (see the README on remote verifiers and limits).
                let entry = Positive {
                    principal: principal.clone(),
                    expires_at,
                    expired: Arc::default(),
                    fetched_at: now,
                    lease: limits.map(|l| Arc::new(Lease::new(&l, principal.key_id))),
                };
                if !behind(seq) {
                    self.cache.insert_valid(digest, entry, generation);
                }
                Ok((principal, metered))
            }
            Ok(Verdict::Refused { error, seq }) => {
                // A usage refusal holds for this request only, and the daemon's failure is
                // no answer about the key.
                let lasting = !matches!(
                    error,
                    VerifyError::RateLimited(_)
                        | VerifyError::UsageExceeded { .. }
                        | VerifyError::IpNotAllowed
                        | VerifyError::Unavailable(_)
                );
                if lasting && !behind(seq) {
                    // Kept for `negative_ttl` (none when zero); the valid answer cached for
                    // this text goes in any case (see `Cache::insert_refused`).
                    let ttl = self.settings.negative_ttl;
                    let entry = (!ttl.is_zero()).then(|| Negative {
                        error: error.clone(),
                        // Saturating: a `negative_ttl` past the calendar's end is "for ever".
                        until: now.saturating_add(
                            time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX),
                        ),
                    });
                    self.cache.insert_refused(digest, entry, generation);
                }
                Err(error)
            }
            Err(cause) => {
                latchkey_core::warn_limited!(error = %cause, "latchkey daemon could not verify a key");
                Err(VerifyError::Unavailable(cause))
            }
        }
    }

    /// Whether cached answers may be used at `now`.
    pub(super) fn trusted(&self, now: OffsetDateTime) -> bool {
        let last = self.last_alive.load(Ordering::Acquire);
        if last == i64::MIN {
            return false;
        }
        let age = nanos(now).saturating_sub(last);
        // A clock that went back does not extend the window.
        let bound = i64::try_from(self.settings.max_staleness.as_nanos()).unwrap_or(i64::MAX);
        (0..bound).contains(&age)
    }

    /// The daemon just spoke on a caught-up stream. The latest mark wins, not the
    /// greatest: after the clock stepped forward and back, the next heartbeat opens the
    /// window again instead of leaving it shut until the clock reaches the step.
    pub(super) fn mark_alive(&self) {
        let now = nanos(self.settings.clock.now());
        self.last_alive.store(now, Ordering::Release);
    }

    /// The daemon spoke at `sent` (this verifier's clock, Unix nanoseconds, at the
    /// earliest it may have): the window runs from then, or from now if that is earlier.
    /// Answers how late the word arrived; `None` when `sent` is after now, which only a
    /// clock step since the clocks were measured makes.
    pub(super) fn mark_alive_at(&self, sent: i64) -> Option<std::time::Duration> {
        let now = nanos(self.settings.clock.now());
        self.last_alive.store(sent.min(now), Ordering::Release);
        lag(sent, now)
    }

    /// How long ago `sent` (Unix nanoseconds) was on this verifier's clock: `None` when it
    /// is ahead of it.
    pub(super) fn lag_since(&self, sent: i64) -> Option<std::time::Duration> {
        lag(sent, nanos(self.settings.clock.now()))
    }

    pub(super) fn drop_all(&self, reason: &str) {
        tracing::info!(reason, "latchkey remote cache dropped");
        self.cache.invalidate(Scope::All, Effect::MayAdmit);
        self.status.send_modify(|s| s.cache_drops += 1);
    }

    /// Says whether the event stream is connected; `true` when that changed.
    pub(super) fn set_connected(&self, connected: bool) -> bool {
        self.status.send_if_modified(|s| {
            if s.connected == connected {
                return false;
            }
            s.connected = connected;
            if connected {
                s.syncs += 1;
            }
            true
        })
    }

    pub(super) fn set_position(&self, position: Option<u64>) {
        self.status.send_if_modified(|s| {
            let changed = s.position != position;
            s.position = position;
            changed
        });
    }
}

pub(super) fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// From `sent` to `now` (Unix nanoseconds): `None` when `sent` is later.
fn lag(sent: i64, now: i64) -> Option<std::time::Duration> {
    u64::try_from(now.checked_sub(sent)?)
        .ok()
        .map(std::time::Duration::from_nanos)
}

/// Sends usage figures every `usage_interval`.
async fn report_usage(shared: Arc<Shared>) {
    let period = shared.settings.usage_interval;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        shared.usage.flush(&shared.daemon).await;
        // Answers dropped from the cache (expired past `cache_ttl`, evicted, made stale by
        // a change) leave their leases: what they did not spend goes back, and so do the
        // unspent credits of the leases no request took from since the last report.
        let mut leases = shared.cache.take_dropped_leases();
        leases.extend(shared.cache.leases().into_iter().filter(|l| l.idle()));
        shared.give_back_credits(leases).await;
    }
}

impl fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("daemon", &self.shared.daemon)
            .field("settings", &self.shared.settings)
            .field("status", &*self.shared.status.borrow())
            .field("cached_keys", &self.shared.cache.len())
            .field("cached_refusals", &self.shared.cache.refusals())
            .field("usage_pending", &self.shared.usage.len())
            .finish()
    }
}

/// The future of [`RemoteVerifier::verify`]: ready at once on a cache hit, otherwise the
/// daemon's answer, shared with every concurrent miss for the same key.
pub struct RemoteFuture(State);

enum State {
    Ready(Option<Result<Principal, VerifyError>>),
    Waiting(Pin<Box<dyn Future<Output = Result<Principal, VerifyError>> + Send>>),
}

impl RemoteFuture {
    fn ready(answer: Result<Principal, VerifyError>) -> RemoteFuture {
        RemoteFuture(State::Ready(Some(answer)))
    }

    fn waiting(waiter: Waiter) -> RemoteFuture {
        RemoteFuture(State::Waiting(Box::pin(async move {
            wait(waiter).await.map(|(principal, _)| principal)
        })))
    }
}

/// The answer of the miss `waiter` follows.
async fn wait(mut waiter: Waiter) -> Result<(Principal, Metered), VerifyError> {
    match waiter.wait_for(Option::is_some).await {
        Ok(answer) => answer.clone().expect("waited for Some"),
        // The task asking the daemon is gone (the runtime is shutting down).
        Err(_) => Err(VerifyError::Unavailable(
            "the verification task ended without an answer".to_owned(),
        )),
    }
}

impl Future for RemoteFuture {
    type Output = Result<Principal, VerifyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Ready(answer) => Poll::Ready(answer.take().expect("polled after completion")),
            State::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for RemoteFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            State::Ready(_) => "ready",
            State::Waiting(_) => "waiting for the daemon",
        };
        f.debug_tuple("RemoteFuture").field(&state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_key() -> ApiKey {
        let prefix = latchkey_core::Prefix::new("lk").unwrap();
        ApiKey::generate(&prefix, latchkey_core::Env::Live)
    }

    #[tokio::test]
    async fn debug_never_shows_the_service_key() {
        let key = service_key();
        let builder = RemoteVerifier::builder("http://127.0.0.1:9", key.expose());
        let shown = [format!("{builder:?}"), format!("{builder:#?}")];
        let verifier = builder.build().unwrap();
        let shown = shown
            .into_iter()
            .chain([format!("{verifier:?}"), format!("{verifier:#?}")]);
        for text in shown {
            assert!(!text.contains(key.secret()), "{text}");
            assert!(text.contains(key.display_prefix()), "{text}");
            assert!(text.contains("127.0.0.1:9"), "{text}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_refused_without_echoing_the_key() {
        let err = RemoteVerifier::builder("ftp://example", "x")
            .build()
            .unwrap_err();
        assert!(matches!(err, RemoteError::ServiceKey(_)), "{err}");
        let key = service_key();
        for url in ["ftp://example", "not a url", "http://host/?q=1"] {
            let err = RemoteVerifier::builder(url, key.expose())
                .build()
                .unwrap_err();
            assert!(matches!(err, RemoteError::Url(_)), "{url}: {err}");
            assert!(!err.to_string().contains(key.expose()));
        }
    }

    #[tokio::test]
    async fn the_background_tasks_stop_when_the_last_clone_is_dropped() {
        let verifier = RemoteVerifier::builder("http://127.0.0.1:9", service_key().expose())
            .build()
            .unwrap();
        let clone = verifier.clone();
        let shared = Arc::downgrade(&verifier.shared);
        drop(verifier);
        tokio::task::yield_now().await;
        assert!(shared.upgrade().is_some(), "a clone still holds it");
        drop(clone);
        // Aborted tasks are dropped by the runtime at its next turn; a bounded wait.
        for _ in 0..1000 {
            if shared.strong_count() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            shared.strong_count(),
            0,
            "a task still holds the verifier's state"
        );
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        let key = service_key();
        let err = RemoteVerifier::builder("http://127.0.0.1:9", key.expose())
            .build()
            .unwrap_err();
        assert!(matches!(err, RemoteError::NoRuntime));
    }
}
