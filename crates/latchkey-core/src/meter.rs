//! Enforcing a key's usage control at verification time, and [`admit`]: the one place that
//! orders the checks that follow the key's statuses.
//!
//! Verification checks in one order, the same everywhere: well-formed → secret → key
//! enabled → not revoked → not expired → user enabled → **IP → permissions → rate limits →
//! credits**; the first refusal is the answer. The first part is the
//! store's verification ([`crate::Store::verify_key`]); [`admit`] is the second, used by the
//! embedded layer, `/v1/verify` and the remote verifier alike, so a disabled key over its
//! limit answers `key_disabled` everywhere (a refused key never reaches [`admit`]).
//!
//! A key without usage control carries no [`Meter`]: its verification costs one `None`
//! check more than before.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::NotKeyed;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use time::{Date, OffsetDateTime, Time};

use crate::clock::Clock;
use crate::controls::{LimitState, RateLimit, Refill, RefillInterval, net_holds};
use crate::local_state::{LocalState, peeking};
use crate::permission::Permission;
use crate::shared_limit::{RateSource, SharedLimit};
use crate::verify::{Principal, VerifyError};

/// What a request asks of a key beyond its statuses.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// The client's address, when known (a key with `allowed_ips` is refused without one).
    pub client_ip: Option<IpAddr>,
    /// Permissions the key must all hold (`/v1/verify`'s `permissions`).
    pub permissions: &'a [Permission],
    /// What the request costs against the rate limits and the credits (default 1).
    pub cost: u32,
}

impl Default for Admission<'_> {
    fn default() -> Self {
        Admission {
            client_ip: None,
            permissions: &[],
            cost: 1,
        }
    }
}

/// Checks, in verification's order (the module docs), what follows a key's statuses: IP →
/// permission → rate limits → credits, consuming `cost` from the limits and credits only
/// when all pass the checks before them.
///
/// When the key's credit slice is short this blocks on a durable write (a reservation from
/// the store's balance, once per slice of up to 1,000 requests), and so it does on a
/// database several processes share when a rate limit's slice is short (a reservation from
/// the limit's shared state, `shared_limit.rs`): an async caller uses [`try_admit`] and
/// finishes the reservation where blocking is fine.
///
/// Fails with `IpNotAllowed`, `InsufficientPermission`, `RateLimited` or `UsageExceeded`.
pub fn admit(principal: &Principal, admission: &Admission<'_>) -> Result<(), VerifyError> {
    admit_reporting(principal, admission, None)
}

/// [`admit`], pushing the state of each rate limit and of the credits after this request
/// onto `report` (for `/v1/verify`'s answer).
pub fn admit_reporting(
    principal: &Principal,
    admission: &Admission<'_>,
    mut report: Option<&mut Vec<LimitState>>,
) -> Result<(), VerifyError> {
    match try_admit_reporting(principal, admission, report.as_deref_mut()) {
        Admitted::Done(answer) => answer,
        Admitted::Reserve(reservation) => reservation.finish_reporting(report),
    }
}

/// [`admit`] without waiting on storage: the answer, or the reservation (of credits, or of
/// a shared rate limit's slice) that decides it, to finish off the async workers (tokio's
/// blocking pool).
///
/// # Example
///
/// ```
/// use latchkey_core::meter::{Admitted, try_admit};
/// use latchkey_core::{Admission, Principal, VerifyError};
///
/// fn admit_off_the_workers(principal: &Principal) -> Result<(), VerifyError> {
///     match try_admit(principal, &Admission::default()) {
///         Admitted::Done(answer) => answer,
///         // In an async service: `tokio::task::spawn_blocking(move || reservation.finish())`.
///         Admitted::Reserve(reservation) => reservation.finish(),
///     }
/// }
/// ```
pub fn try_admit(principal: &Principal, admission: &Admission<'_>) -> Admitted {
    try_admit_reporting(principal, admission, None)
}

/// [`try_admit`], reporting as [`admit_reporting`] does: the state of the limits and credits
/// that a reservation decides is pushed when the answer is known, so by
/// [`Reservation::finish_reporting`].
pub fn try_admit_reporting(
    principal: &Principal,
    admission: &Admission<'_>,
    report: Option<&mut Vec<LimitState>>,
) -> Admitted {
    if let Some(meter) = &principal.meter
        && let Err(refused) = meter.check_ip(admission.client_ip)
    {
        return Admitted::Done(Err(refused));
    }
    if !admission.permissions.iter().all(|p| principal.allows(p)) {
        return Admitted::Done(Err(VerifyError::InsufficientPermission));
    }
    match &principal.meter {
        Some(meter) => meter.try_charge_reporting(admission.cost, report),
        None => Admitted::Done(Ok(())),
    }
}

/// What admitting a request comes to without waiting on storage; see [`try_admit`].
#[derive(Debug)]
#[must_use = "a reservation admits nothing until it is finished"]
pub enum Admitted {
    /// The answer.
    Done(Result<(), VerifyError>),
    /// Every check before a step that needs storage passed (the rate limits before it
    /// have taken the request, and take it back if a later step refuses), and that step's
    /// slice is short: a reservation decides,
    /// from the store's balance (the key's credits: a durable write) or from a rate limit's
    /// state on a database several processes share (a transaction).
    Reserve(Reservation),
}

/// The rest of an admission that needs storage, from the step whose slice is short; see
/// [`Admitted::Reserve`].
#[derive(Debug)]
#[must_use = "a reservation admits nothing until it is finished"]
pub struct Reservation {
    meter: Meter,
    cost: u32,
    /// A request's extra cost, charged after its own ([`Meter::try_charge`]).
    extra: bool,
    /// The first step not yet taken: a rate limit's index in [`Meter::rate_limits`], or
    /// their count for the credits.
    from: usize,
    /// When the steps before it had been taken, to give them back should a later one
    /// refuse.
    taken: Taken,
}

impl Reservation {
    /// Reserves what the request lacks (blocking on storage: a sled flush or a PostgreSQL
    /// round trip) and takes the request's cost from the remaining rate limits and the
    /// credits.
    ///
    /// Fails with `RateLimited` or `UsageExceeded` when too little is left, or
    /// `Unavailable`.
    pub fn finish(self) -> Result<(), VerifyError> {
        self.finish_reporting(None)
    }

    /// [`Reservation::finish`], pushing the state of each step it took after this request
    /// onto `report`.
    pub fn finish_reporting(self, report: Option<&mut Vec<LimitState>>) -> Result<(), VerifyError> {
        match self.meter.charge_from(
            self.from,
            self.cost,
            self.extra,
            Some(self.taken),
            report,
            true,
        ) {
            Admitted::Done(answer) => answer,
            Admitted::Reserve(_) => unreachable!("a charge that may block answers"),
        }
    }
}

/// When a charge was taken (this process's monotonic clock), so that giving it back gives
/// only what the limits have not won back since ([`Meter::taken_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    monotonic: u64,
}

/// What a remote verifier's lease of a rate limit came to ([`Meter::lease_limit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitGrant {
    /// Requests now the lease's to admit.
    pub granted: u32,
    /// What the limit had left after the grant (on a database several processes share,
    /// its shared state).
    pub left: u32,
}

/// A refusal by a rate limit: which limit, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit that refused.
    pub limit: RateLimit,
    /// Seconds until a request of the same cost would pass (at least 1); for a route's
    /// extra cost, until the route's whole cost would ([`rate_limited_after`]).
    pub retry_after_seconds: u64,
}

/// A key's usage control at run time: its allowlist, rate limiters and credits, and its
/// user's rate limiters. Shared by every verification of the key; lives in the store's
/// meters (not in the verify cache), so an evicted or invalidated cache entry does not
/// reset a window.
#[derive(Clone)]
pub struct Meter(pub(crate) Arc<KeyMeter>, pub(crate) Option<Arc<UserMeter>>);

impl PartialEq for Meter {
    fn eq(&self, other: &Meter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            && match (&self.1, &other.1) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

impl Eq for Meter {}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("allowed_ips", &self.0.allowed_ips.len())
            .field("rate_limits", &self.0.limits.len())
            .field(
                "user_rate_limits",
                &self.1.as_ref().map_or(0, |u| u.limits.len()),
            )
            .field("credits", &self.0.credits.is_some())
            .finish()
    }
}

/// Refuses a client outside an allowlist (`allowed` empty: any client; a client whose
/// address is not known is refused by a non-empty list). An IPv4-mapped IPv6 address counts
/// as its IPv4 address, and a range of them as its IPv4 range
/// ([`canonical_net`](crate::controls::canonical_net)); an IPv6 range wider than those
/// (`::/0`) holds the IPv4 addresses it maps ([`net_holds`]; usage hunt F4: it held none).
pub fn check_ip(allowed: &[IpNet], client: Option<IpAddr>) -> Result<(), VerifyError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(ip) = client.map(|ip| ip.to_canonical()) else {
        return Err(VerifyError::IpNotAllowed);
    };
    match allowed.iter().any(|net| net_holds(*net, ip)) {
        true => Ok(()),
        false => Err(VerifyError::IpNotAllowed),
    }
}

impl Meter {
    /// A key's meter joined with its user's rate limits (`None` when neither has any): the
    /// user's limiters are one per user, shared by all its keys.
    pub(crate) fn joined(
        key: Option<Meter>,
        user: Option<Arc<UserMeter>>,
        clock: &Arc<dyn Clock>,
    ) -> Option<Meter> {
        let Some(user) = user else { return key };
        let key = key.map_or_else(
            || {
                Arc::new(KeyMeter {
                    version: 0,
                    allowed_ips: Box::default(),
                    limits: Arc::default(),
                    rates: None,
                    credits: None,
                    clock: Arc::clone(clock),
                })
            },
            |k| k.0,
        );
        Some(Meter(key, Some(user)))
    }

    /// Refuses a client outside the key's `allowed_ips` (none known: refused too).
    pub fn check_ip(&self, client: Option<IpAddr>) -> Result<(), VerifyError> {
        check_ip(&self.0.allowed_ips, client)
    }

    /// Consumes `cost` from each of the key's rate limits, then its user's, then from the
    /// credits, as a request's extra cost: after its own unit, which [`admit`] took (a
    /// cost that with that unit is above a limit's whole limit never passes, a refill must
    /// cover both, and a refusal tells when both fit, [`rate_limited_after`]). A refusal, by a
    /// limit or the credits, takes nothing from any of them: the limits checked before the
    /// one that refused are given the cost back. Blocks on storage when the credit slice, or on
    /// a shared database a rate limit's slice, is short: [`Meter::try_charge`] does not.
    pub fn charge(&self, cost: u32) -> Result<(), VerifyError> {
        match self.try_charge(cost) {
            Admitted::Done(answer) => answer,
            Admitted::Reserve(reservation) => reservation.finish(),
        }
    }

    /// [`Meter::charge`] without waiting on storage: the answer, or the reservation that
    /// decides it. For a request's extra cost, after [`try_admit`] charged its own: a
    /// shared limit's slice it finds short is no sign that the key comes faster
    /// ([`crate::slice_size`]).
    pub fn try_charge(&self, cost: u32) -> Admitted {
        self.charge_from(0, cost, true, None, None, false)
    }

    fn try_charge_reporting(&self, cost: u32, report: Option<&mut Vec<LimitState>>) -> Admitted {
        self.charge_from(0, cost, false, None, report, false)
    }

    /// Takes `cost` from the steps from `from` on (the rate limits by their index, then the
    /// credits). With `block`, reserves where a slice is short; without, hands back the
    /// [`Reservation`] of the rest at the first such step.
    fn charge_from(
        &self,
        from: usize,
        cost: u32,
        extra: bool,
        taken: Option<Taken>,
        mut report: Option<&mut Vec<LimitState>>,
        block: bool,
    ) -> Admitted {
        let meter = &*self.0;
        // When the limits taken so far had been taken: a continuation's, or now, read once
        // they were (read before, what a give-back then gives would leave the limit a
        // fraction short, shown one lower, review s57 re-check F2).
        let taken = || taken.unwrap_or_else(|| self.taken_now());
        let reserve = |from| {
            Admitted::Reserve(Reservation {
                meter: self.clone(),
                cost,
                extra,
                from,
                taken: taken(),
            })
        };
        // A limit that memory already knows to refuse refuses before any other takes the
        // cost (review s57 F1: on a shared database, a cost given back to an earlier
        // limit went into a slice that could lapse unused, and parallel requests that a
        // later limit refused used the earlier one up).
        // With one limit left, none takes before it: the pass below finds its refusal, and
        // the limit is checked once (the layer charges every request).
        let several = self.limits().skip(from).nth(1).is_some();
        if let Some((at, refused)) = several
            .then(|| self.known_refusal(from, cost, extra))
            .flatten()
        {
            if let Some(report) = report.as_deref_mut() {
                for limit in self.limits().skip(from).take(at - from) {
                    report.push(limit.state(limit.known_left(&meter.clock)));
                }
                if let Some(limit) = self.limits().nth(at) {
                    let (left, units) = (limit.known_left(&meter.clock), cost + u32::from(extra));
                    report.push(limit.refused_state(left, &refused, units));
                }
            }
            self.give_back_to(from, cost, taken(), report, block);
            return Admitted::Done(Err(refused));
        }
        for (i, limit) in self.limits().enumerate().skip(from) {
            let checked = if block {
                let later = || Some(self.known_refusal(i + 1, cost, extra)?.1);
                limit.check_unless(cost, extra, &meter.clock, later)
            } else {
                match limit.try_check(cost, extra, &meter.clock) {
                    Some(checked) => checked,
                    None => return reserve(i),
                }
            };
            match checked {
                Ok(remaining) => {
                    if let Some(report) = report.as_deref_mut() {
                        report.push(limit.state(remaining));
                    }
                }
                Err(refused) => {
                    // A later limit known to refuse answers for this one, which waited on
                    // its reservation lock (`check_unless`): its figure is told.
                    let limit = match &refused {
                        VerifyError::RateLimited(refusal) => self
                            .limits()
                            .find(|l| l.rule == refusal.limit)
                            .unwrap_or(limit),
                        _ => limit,
                    };
                    // The limit that refused, as it stands: a cost it refused took nothing.
                    // A cost above the whole limit is refused whatever the limit holds, so
                    // its figure is what memory knows (a flood of them costs no round trip
                    // each); otherwise a shared limit's state not known without a round
                    // trip is read by the reservation.
                    if let Some(report) = report.as_deref_mut() {
                        let left = if beyond_the_limit(&limit.rule, cost.into(), extra).is_some() {
                            Some(limit.known_left(&meter.clock))
                        } else {
                            limit.left_now(block, &meter.clock)
                        };
                        match left {
                            Some(left) => {
                                let units = cost.saturating_add(extra.into());
                                report.push(limit.refused_state(left, &refused, units));
                            }
                            None => return reserve(i),
                        }
                    }
                    self.give_back_to(i, cost, taken(), report, block);
                    return Admitted::Done(Err(refused));
                }
            }
        }
        let Some(credits) = &meter.credits else {
            return Admitted::Done(Ok(()));
        };
        let now = meter.clock.unix_nanos();
        let remaining = if cost == 0 {
            match credits.peek(now) {
                0 => Err(credits.exhausted(now, 0)),
                left => Ok(left),
            }
        } else if block {
            credits.consume(u64::from(cost), now)
        } else {
            match credits.try_consume(u64::from(cost), now) {
                Some(remaining) => Ok(remaining),
                None => return reserve(self.limits().count()),
            }
        };
        // A route's extra cost comes after the request's own credit: a refill covers the
        // request only when it covers both.
        let remaining = match remaining {
            Err(VerifyError::UsageExceeded { .. }) if extra && cost > 0 => {
                Err(credits.exhausted(now, u64::from(cost) + 1))
            }
            other => other,
        };
        if remaining.is_err() {
            let limits = self.limits().count();
            self.give_back_to(limits, cost, taken(), report.as_deref_mut(), block);
        }
        if let Some(report) = report {
            let left = match &remaining {
                Ok(left) => Some(*left),
                // Too few for the cost: what is left (0, or less than the cost).
                Err(VerifyError::UsageExceeded { .. }) => Some(credits.peek(now)),
                Err(_) => None,
            };
            report.extend(left.map(|left| credits.state(left, now)));
        }
        Admitted::Done(remaining.map(drop))
    }

    /// The first limit from `from` on that memory knows to refuse `cost` (a limit of this
    /// process's, exactly; a shared one while its slice is short and the shared state
    /// refused a full slice), with its refusal: `None` for a cost of 0, which takes
    /// nothing.
    fn known_refusal(&self, from: usize, cost: u32, extra: bool) -> Option<(usize, VerifyError)> {
        if cost == 0 {
            return None;
        }
        let clock = &self.0.clock;
        self.limits()
            .enumerate()
            .skip(from)
            .find_map(|(i, limit)| Some((i, limit.known_refusal(cost, extra, clock)?)))
    }

    /// Now, as a charge about to be taken is stamped, to give it back with
    /// [`Meter::give_back`].
    pub fn taken_now(&self) -> Taken {
        Taken {
            monotonic: self.0.clock.monotonic_nanos(),
        }
    }

    /// Gives back to every rate limit the `cost` of a request they admitted at `taken`
    /// ([`Meter::taken_now`], read before the charge) and that a step after this meter's
    /// charge refused: a route's extra cost refused for want of credits, or for a store
    /// that could not be reached. What the limits won back since is not given twice.
    pub fn give_back(&self, cost: u32, taken: Taken) {
        self.give_back_to(self.limits().count(), cost, taken, None, false);
    }

    /// Gives `cost` back to the first `limits` limits, which took it at `taken` for a
    /// request that a later step refused: a refused request counts against no limit
    /// (usage hunt s56 M1: a key out of credits used up its limits, and was still refused
    /// once credits were added), as a remote verifier's lease takes a cost from every
    /// bucket or from none. Their figures in `report` become what they have left then.
    /// With `block` (off the async workers), a shared limit's cost goes back to its shared
    /// state in the database rather than into this process's slice.
    fn give_back_to(
        &self,
        limits: usize,
        cost: u32,
        taken: Taken,
        mut report: Option<&mut Vec<LimitState>>,
        block: bool,
    ) {
        if cost == 0 || limits == 0 {
            return;
        }
        let clock = &self.0.clock;
        for limit in self.limits().take(limits) {
            limit.give_back(cost, taken, clock, block);
            for state in report.iter_mut().flat_map(|r| r.iter_mut()) {
                if state.name == limit.rule.name && state.limit == Some(limit.rule.limit) {
                    *state = limit.state(limit.known_left(clock));
                }
            }
        }
    }

    /// The key's rate limits, then its user's (named `user:<name>`).
    pub fn rate_limits(&self) -> impl Iterator<Item = &RateLimit> {
        self.limits().map(|l| &l.rule)
    }

    fn limits(&self) -> impl Iterator<Item = &Limit> {
        let user = self.1.iter().flat_map(|u| u.limits.iter());
        self.0.limits.iter().chain(user)
    }

    /// The key's IP allowlist (empty: any address).
    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.0.allowed_ips
    }

    /// Whether the key has credits.
    pub fn has_credits(&self) -> bool {
        self.0.credits.is_some()
    }

    /// Takes up to `want` requests' worth of the rate limit `name` for a remote verifier's
    /// lease: as much as the limit allows now (trying halves; on a database several
    /// processes share, from the limit's shared state, in a transaction that blocks), or
    /// the refusal (`RateLimited`) when not even one request would pass. `None` when
    /// neither the key nor its user has such a limit (a user's is named `user:<name>`).
    ///
    /// Fails with `Unavailable` when the shared state cannot be reached.
    pub fn lease_limit(&self, name: &str, want: u32) -> Option<Result<LimitGrant, VerifyError>> {
        let limit = self.limits().find(|l| l.rule.name == name)?;
        let mut asked = want.clamp(1, limit.rule.limit);
        if let Gate::Shared(shared) = &limit.gate {
            return Some(shared.lease(&limit.rule, asked, self.0.clock.unix_nanos()));
        }
        loop {
            match limit.check(asked, false, &self.0.clock) {
                Ok(left) => {
                    return Some(Ok(LimitGrant {
                        granted: asked,
                        left,
                    }));
                }
                Err(_) if asked > 1 => asked /= 2,
                Err(refused @ VerifyError::RateLimited(_)) => return Some(Err(refused)),
                Err(_) => return Some(Ok(LimitGrant::default())),
            }
        }
    }

    /// Takes up to `want` credits for a remote verifier's lease (trying halves), and at
    /// most a twentieth of what is left, so the last credits go a few at a time; 0 when
    /// the key has none. `UsageExceeded` (saying when they are refilled) when none are left.
    pub fn lease_credits(&self, want: u64) -> Result<u64, VerifyError> {
        let Some(credits) = &self.0.credits else {
            return Ok(0);
        };
        let now = self.0.clock.unix_nanos();
        let left = credits.available();
        let mut asked = want.min(left.div_ceil(20)).max(1);
        loop {
            match credits.consume(asked, now) {
                Ok(_) => return Ok(asked),
                Err(VerifyError::UsageExceeded { .. }) if asked > 1 => asked /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    /// The refill period the key's credits are in now (its end, Unix nanoseconds;
    /// `i64::MAX` without a refill), or `None` for a key without credits. A lease records
    /// it with what it granted, so that [`Meter::return_credits`] gives back only into the
    /// period the credits came from.
    pub fn credit_period(&self) -> Option<i64> {
        self.0
            .credits
            .as_ref()
            .map(|c| c.period.load(Ordering::Acquire))
    }

    /// Whether `other` keeps its credits in this meter's: the same key's meter, whether or
    /// not either is joined with its user's (a verified principal's meter is; the store's
    /// [`current_meter`](crate::Store::current_meter) is the key's alone). What a lease of
    /// credits is returned into is decided by this, not by `==`.
    pub fn same_credits(&self, other: &Meter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether `other`, a later meter of the same key, spends from the same credit slices as
    /// this one: the key changed since (its meta, limits, allowlist), its credits did not
    /// (no balance set, cleared or drained by a rotation). Credits leased from this meter
    /// may then go back into `other`.
    pub fn same_credit_epoch(&self, other: &Meter) -> bool {
        same_epoch(self.0.version, other.0.version)
    }

    /// Gives back `credits` a remote verifier leased ([`Meter::lease_credits`]) and did not
    /// spend: they join this meter's unspent slice, which goes back to the store's balance
    /// at the next idle flush (or at close). Only when `period` (the [`Meter::credit_period`]
    /// they were leased in) is still the current one; answers whether they were put back
    /// (while a reservation of the key runs: kept for it to add when it ends, void if a
    /// refill came meanwhile).
    ///
    /// The caller must make sure this meter is the one they were leased from
    /// ([`Meter::same_credits`]; a key whose
    /// balance was set has a new meter: every slice reserved before is void) and that they
    /// are given back once.
    pub fn return_credits(&self, credits: u64, period: i64) -> bool {
        self.0
            .credits
            .as_ref()
            .is_some_and(|meter| meter.put_slice(credits, period))
    }
}

/// A user's rate limits at run time: one GCRA state per limit, shared by every key of the
/// user in this process. Their names read `user:<name>` in refusals and reports, apart
/// from the key's own.
pub(crate) struct UserMeter {
    /// The limits as stored, to tell whether a stored change calls for new limiters.
    pub(crate) rules: Vec<RateLimit>,
    pub(crate) limits: Box<[Limit]>,
}

/// The store's clock as `governor` reads it: its monotonic time, so that a wall clock set
/// back refuses no key (a limit shared through the store runs on the wall clock, the one
/// time its processes have in common).
#[derive(Debug, Clone)]
pub(crate) struct GovernorClock(pub(crate) Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.monotonic_nanos())
    }
}

type Limiter = RateLimiter<NotKeyed, LocalState, GovernorClock, StateInformationMiddleware>;

/// One rate limit with its GCRA state.
pub(crate) struct Limit {
    pub(crate) rule: RateLimit,
    gate: Gate,
}

/// Where a limit's GCRA state lives.
enum Gate {
    /// In this process (`governor`): a store only this process opens (sled). With a handle
    /// on the limiter's state and the nanoseconds one request adds to it, to give back, and
    /// when it was made (the clock's monotonic nanoseconds), which its state counts from.
    Local(Limiter, LocalState, u64, u64),
    /// In the store, shared by the processes on one database: this process admits from a
    /// slice of it (`shared_limit.rs`).
    Shared(SharedLimit),
}

/// The refusal of a request of `cost` (`extra`: a route's extra cost, after the request's
/// own 1) that `rule` never passes, being more than its whole limit: retry after one window
/// (as Unkey answers a cost above its limit), whatever the limit has left; `None` when it
/// may pass. One rule for the embedded layer, the daemon and a remote verifier's lease.
///
/// ```
/// use latchkey_core::RateLimit;
/// use latchkey_core::meter::beyond_the_limit;
/// let rule = RateLimit { name: "default".into(), limit: 5, window_seconds: 10 };
/// assert!(beyond_the_limit(&rule, 5, false).is_none());
/// // A route costing 6: its extra 5 after the request's own 1.
/// assert_eq!(beyond_the_limit(&rule, 5, true).unwrap().code(), "rate_limited");
/// ```
pub fn beyond_the_limit(rule: &RateLimit, cost: u64, extra: bool) -> Option<VerifyError> {
    let whole = cost.saturating_add(u64::from(extra));
    (cost > 0 && whole > u64::from(rule.limit))
        .then(|| rate_limited(rule, Duration::from_secs(rule.window_seconds.into())))
}

/// The refusal by `rule` of a request whose first unit fits after `wait`, and that needs
/// `more` after it: each comes back one interval (`window / limit`) after the one before,
/// as the limit wins them back. A route's extra cost refused is answered so, with the
/// request's own unit counted in (`more` one above what the extra lacks): the next try
/// takes its own unit again before the extra, so a client told when the extra alone fits
/// would spend each unit that came back on that, and be refused for ever.
///
/// ```
/// use std::time::Duration;
/// use latchkey_core::RateLimit;
/// use latchkey_core::meter::rate_limited_after;
/// let rule = RateLimit { name: "default".into(), limit: 10, window_seconds: 10 };
/// // The first unit in 0.2 s, nine more a second apart: retry in 10 s (9.2, rounded up).
/// match rate_limited_after(&rule, Duration::from_millis(200), 9) {
///     latchkey_core::VerifyError::RateLimited(refused) => {
///         assert_eq!(refused.retry_after_seconds, 10)
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn rate_limited_after(rule: &RateLimit, wait: Duration, more: u64) -> VerifyError {
    let window = u128::from(rule.window_seconds.max(1)) * 1_000_000_000;
    let interval = window / u128::from(rule.limit.max(1));
    let more = u64::try_from(interval.saturating_mul(more.into())).unwrap_or(u64::MAX);
    rate_limited(rule, wait.saturating_add(Duration::from_nanos(more)))
}

/// A refusal by `rule`, to retry after `retry` (reported in whole seconds, at least 1).
pub(crate) fn rate_limited(rule: &RateLimit, retry: Duration) -> VerifyError {
    VerifyError::RateLimited(Box::new(RateLimited {
        limit: rule.clone(),
        retry_after_seconds: (retry.as_secs())
            .saturating_add(u64::from(retry.subsec_nanos() > 0))
            .max(1),
    }))
}

impl Limit {
    /// A limit whose state is shared through the store, `source` (one per key or user).
    pub(crate) fn shared(rule: RateLimit, source: Arc<dyn RateSource>) -> Limit {
        let shared = SharedLimit::new(&rule, source);
        Limit {
            rule,
            gate: Gate::Shared(shared),
        }
    }

    /// A limit whose state is this process's.
    pub(crate) fn new(rule: RateLimit, clock: &Arc<dyn Clock>) -> Limit {
        Limit::local(rule, clock, None)
    }

    /// The limit for a rotated key's successor, going on from this one's state where it
    /// stands (usage hunt s56 M4: the successor started afresh, a whole limit more at each
    /// rotation): a copy, which the old key in its grace does not share. `None` for a limit
    /// whose state is the store's, which the rotation's transaction copies.
    pub(crate) fn successor(&self, clock: &Arc<dyn Clock>) -> Option<Limit> {
        matches!(self.gate, Gate::Local(..))
            .then(|| Limit::local(self.rule.clone(), clock, Some(self)))
    }

    /// A limit of this process's, from `from`'s state when given.
    fn local(rule: RateLimit, clock: &Arc<dyn Clock>, from: Option<&Limit>) -> Limit {
        let limit = NonZeroU32::new(rule.limit).unwrap_or(NonZeroU32::MIN);
        let window = Duration::from_secs(u64::from(rule.window_seconds.max(1)));
        // `limit` requests per `window`: a burst of `limit`, one back every `window / limit`.
        let quota = Quota::with_period(window / limit.get())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(limit);
        let interval = u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
        let made = clock.monotonic_nanos();
        let state = match from.map(|from| &from.gate) {
            Some(Gate::Local(_, state, _, from)) => state.rebased(*from, made),
            _ => LocalState::default(),
        };
        let clock = GovernorClock(Arc::clone(clock));
        let limiter: Limiter = RateLimiter::new(quota, state.clone(), clock);
        Limit {
            rule,
            gate: Gate::Local(limiter, state, interval, made),
        }
    }

    /// Consumes `cost` (`extra`: a request's extra cost); answers what is left of the
    /// limit. On a shared limit whose slice is short, blocks on a reservation from the
    /// store. At cost 0, takes nothing and is refused when not even one request would pass
    /// (a shared limit reads its state).
    fn check(&self, cost: u32, extra: bool, clock: &Arc<dyn Clock>) -> Result<u32, VerifyError> {
        self.check_unless(cost, extra, clock, || None)
    }

    /// [`Limit::check`]; a shared limit whose slice is short answers `refused`'s refusal
    /// instead of reserving, when it has one once its reservation lock is held
    /// ([`SharedLimit::take_unless`]).
    fn check_unless(
        &self,
        cost: u32,
        extra: bool,
        clock: &Arc<dyn Clock>,
        refused: impl Fn() -> Option<VerifyError>,
    ) -> Result<u32, VerifyError> {
        if let Some(refused) = beyond_the_limit(&self.rule, cost.into(), extra) {
            return Err(refused);
        }
        match (&self.gate, cost) {
            (Gate::Local(limiter, ..), 0) => self.peek_local(limiter, clock),
            (Gate::Shared(shared), 0) => shared.peek(&self.rule, clock.unix_nanos()),
            (Gate::Local(limiter, ..), _) => self.check_local(limiter, cost, extra, clock),
            (Gate::Shared(shared), _) => {
                let now = || clock.unix_nanos();
                shared.take_unless(&self.rule, cost, extra, now, refused)
            }
        }
    }

    /// [`Limit::check`] without waiting on storage: `None` when a shared limit's slice is
    /// short.
    fn try_check(
        &self,
        cost: u32,
        extra: bool,
        clock: &Arc<dyn Clock>,
    ) -> Option<Result<u32, VerifyError>> {
        if let Some(refused) = beyond_the_limit(&self.rule, cost.into(), extra) {
            return Some(Err(refused));
        }
        match (&self.gate, cost) {
            (Gate::Local(limiter, ..), 0) => Some(self.peek_local(limiter, clock)),
            (Gate::Shared(shared), 0) => shared.try_peek(&self.rule, clock.unix_nanos()),
            (Gate::Local(limiter, ..), _) => Some(self.check_local(limiter, cost, extra, clock)),
            (Gate::Shared(shared), _) => {
                shared.try_take(&self.rule, cost, extra, clock.unix_nanos())
            }
        }
    }

    /// What is left of the limit now, taking nothing (0 when not even one request would
    /// pass); `None` when a shared limit's state is not known without a round trip and
    /// `block` does not allow one. A shared state that cannot be read gives what memory
    /// knows ([`Limit::known_left`]), never a 0 it did not say.
    fn left_now(&self, block: bool, clock: &Arc<dyn Clock>) -> Option<u32> {
        let peeked = if block {
            Some(self.check(0, false, clock))
        } else {
            self.try_check(0, false, clock)
        };
        peeked.map(|left| match left {
            Ok(left) => left,
            Err(VerifyError::RateLimited(_)) => 0,
            Err(_) => self.known_left(clock),
        })
    }

    /// What is left of the limit as this process knows it without a round trip: all of a
    /// limit of this process's; of a shared one, its slice and the shared state at the last
    /// reservation (the whole limit before one).
    fn known_left(&self, clock: &Arc<dyn Clock>) -> u32 {
        match &self.gate {
            Gate::Local(limiter, ..) => self.peek_local(limiter, clock).unwrap_or(0),
            Gate::Shared(shared) => shared.known_left(&self.rule, clock.unix_nanos()),
        }
    }

    /// Whether one request would pass, taking nothing: what is left of the limit.
    fn peek_local(&self, limiter: &Limiter, clock: &Arc<dyn Clock>) -> Result<u32, VerifyError> {
        // What would be left after one request, and that request.
        peeking(|| self.check_local(limiter, 1, false, clock)).map(|left| left + 1)
    }

    /// Takes `cost` from a limit of this process's; refused (with the wait of the route's
    /// whole cost, for an `extra` cost), it takes nothing.
    fn check_local(
        &self,
        limiter: &Limiter,
        cost: u32,
        extra: bool,
        clock: &Arc<dyn Clock>,
    ) -> Result<u32, VerifyError> {
        let refused = |retry: Duration| Err(rate_limited_after(&self.rule, retry, extra.into()));
        let outcome = match NonZeroU32::new(cost) {
            Some(n) if n.get() > 1 => match limiter.check_n(n) {
                Ok(outcome) => outcome,
                // More than the whole limit: never passes.
                Err(_) => {
                    let window = Duration::from_secs(self.rule.window_seconds.into());
                    return Err(rate_limited(&self.rule, window));
                }
            },
            _ => limiter.check(),
        };
        match outcome {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                let now = governor::clock::Clock::now(&GovernorClock(Arc::clone(clock)));
                refused(not_until.wait_time_from(now))
            }
        }
    }

    /// Its refusal of `cost` when memory tells it without taking anything; see
    /// [`Meter::known_refusal`].
    fn known_refusal(&self, cost: u32, extra: bool, clock: &Arc<dyn Clock>) -> Option<VerifyError> {
        if let Some(refused) = beyond_the_limit(&self.rule, cost.into(), extra) {
            return Some(refused);
        }
        match &self.gate {
            Gate::Local(limiter, ..) => {
                peeking(|| self.check_local(limiter, cost, extra, clock)).err()
            }
            Gate::Shared(shared) => {
                shared.known_refusal(&self.rule, cost, extra, clock.unix_nanos())
            }
        }
    }

    /// Gives back `cost` this limit took at `taken` for a request refused after it
    /// ([`Meter::give_back_to`]). A limit of this process's gets what it has not won back
    /// since (review s57 L4: given whole after time had passed, it undid what other
    /// requests took once the limit had come back to whole); a shared limit takes it back
    /// while its slice is valid (once void, it stays counted): into the slice, or with
    /// `block` into its shared state ([`SharedLimit::give_back_to_store`]).
    fn give_back(&self, cost: u32, taken: Taken, clock: &Arc<dyn Clock>, block: bool) {
        match &self.gate {
            Gate::Local(_, state, interval, _) => {
                let elapsed = clock.monotonic_nanos().saturating_sub(taken.monotonic);
                let left = interval.saturating_mul(cost.into()).saturating_sub(elapsed);
                if left > 0 {
                    state.give_back(left);
                }
            }
            Gate::Shared(shared) if block => {
                shared.give_back_to_store(&self.rule, cost, &|| clock.unix_nanos());
            }
            Gate::Shared(shared) => shared.give_back(cost, clock.unix_nanos()),
        }
    }

    /// The state of this limit, which refused `units` (a request's, or a route's extra cost
    /// with its own 1) with `refused`, `left` being what it has. Used up, the whole limit is
    /// back once the refusal's wait has passed and the rest of it has come back, one
    /// request an interval: the figure counts down while the limit refuses (usage hunt s56
    /// L1: it said the whole window throughout, a limit of one a month 31 days each time).
    fn refused_state(&self, left: u32, refused: &VerifyError, units: u32) -> LimitState {
        let mut state = self.state(left);
        if let (0, VerifyError::RateLimited(limited)) = (left, refused) {
            let window = u64::from(self.rule.window_seconds);
            let limit = u64::from(self.rule.limit.max(1));
            let rest = limit.saturating_sub(units.into()) * window / limit;
            let whole = limited.retry_after_seconds.saturating_add(rest).min(window);
            state.reset_seconds = Some(whole);
        }
        state
    }

    /// The limit's state with `remaining` left: the full limit is back once what was used
    /// has been replenished.
    fn state(&self, remaining: u32) -> LimitState {
        let used = u64::from(self.rule.limit.saturating_sub(remaining));
        let window = u64::from(self.rule.window_seconds);
        LimitState {
            name: self.rule.name.clone(),
            limit: Some(self.rule.limit),
            window_seconds: Some(self.rule.window_seconds),
            remaining: u64::from(remaining),
            reset_seconds: Some((used * window).div_ceil(u64::from(self.rule.limit.max(1)))),
        }
    }
}

/// Where a meter's credits come from: the store's balance, a slice at a time
/// (`store/controls.rs`), so that several processes on one database never grant together
/// more than was bought.
pub(crate) trait CreditSource: Send + Sync {
    /// Takes from the balance, durably, at least `at_least` and up to `want` credits (none
    /// when fewer than `at_least` are left), after a refill that has come due.
    fn reserve(&self, at_least: u64, want: u64) -> Result<Reserved, VerifyError>;
}

/// What a [`CreditSource`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserved {
    /// Credits now this meter's to spend (0: fewer than `at_least` were left).
    pub(crate) granted: u64,
    /// The balance left in the store after the grant.
    pub(crate) left: u64,
    /// The end of the refill period the grant belongs to (Unix nanoseconds of the next
    /// refill; `i64::MAX` without a refill).
    pub(crate) period: i64,
}

/// The largest slice a meter reserves at once: at most this many credits are counted as
/// spent when a process dies holding them.
pub(crate) const MAX_SLICE: u64 = 1_000;

/// Credits at run time: a *slice* reserved from the store's balance and spent locally; a
/// new slice is reserved when it runs out (see `store/controls.rs` for the whole scheme).
pub(crate) struct CreditMeter {
    /// Reserved and not yet spent.
    pub(crate) slice: AtomicU64,
    /// The refill period the slice belongs to (its end, Unix nanoseconds; `i64::MAX` for
    /// none): once it is over, the slice is void.
    pub(crate) period: AtomicI64,
    /// The store's balance as this process last saw it (after its own reservations and
    /// changes), for the figures a verification reports.
    pub(crate) left: AtomicU64,
    pub(crate) refill: Option<Refill>,
    /// Spent since the last flush: an idle slice goes back to the store at a flush.
    pub(crate) used: AtomicBool,
    /// The size of the next reservation: it doubles while the key is busy, up to
    /// [`MAX_SLICE`], so a busy key costs few transactions and a quiet one holds little.
    next_want: AtomicU64,
    /// One reservation at a time per key.
    reserving: Mutex<()>,
    /// Credits given back while the reservation lock was held ([`CreditMeter::put_slice`]),
    /// with their period: the lock's holder adds them to the slice when it lets go, if
    /// their period is still the slice's.
    returned: Mutex<(u64, i64)>,
    source: Box<dyn CreditSource>,
}

/// The reservation lock of a [`CreditMeter`], held: letting go, it adds the credits given
/// back meanwhile to the slice, then takes the lock once more for those given back between
/// that and the unlock, unless another holder has it (whose letting go does the same).
struct Reserving<'a> {
    meter: &'a CreditMeter,
    guard: Option<MutexGuard<'a, ()>>,
}

impl Drop for Reserving<'_> {
    fn drop(&mut self) {
        self.meter.fold_returned();
        drop(self.guard.take());
        while self.meter.has_returned() {
            let Some(_guard) = self.meter.try_reserving_guard() else {
                break;
            };
            self.meter.fold_returned();
        }
    }
}

impl CreditMeter {
    pub(crate) fn new(
        left: u64,
        refill: Option<Refill>,
        period: i64,
        source: Box<dyn CreditSource>,
    ) -> Self {
        CreditMeter {
            slice: AtomicU64::new(0),
            period: AtomicI64::new(period),
            left: AtomicU64::new(left),
            refill,
            used: AtomicBool::new(false),
            next_want: AtomicU64::new(1),
            reserving: Mutex::new(()),
            returned: Mutex::new((0, 0)),
            source,
        }
    }

    /// The reservation lock, waited for.
    fn lock_reserving(&self) -> Reserving<'_> {
        Reserving {
            meter: self,
            guard: Some(self.reserving.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    /// The reservation lock, unless another holds it.
    fn try_lock_reserving(&self) -> Option<Reserving<'_>> {
        Some(Reserving {
            meter: self,
            guard: Some(self.try_reserving_guard()?),
        })
    }

    /// The bare reservation lock, unless another holds it (a poisoned one is taken).
    fn try_reserving_guard(&self) -> Option<MutexGuard<'_, ()>> {
        match self.reserving.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn returned(&self) -> MutexGuard<'_, (u64, i64)> {
        self.returned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_returned(&self) -> bool {
        self.returned().0 > 0
    }

    /// Keeps credits given back while the reservation lock is held, for its holder. Of
    /// two periods, the later one's: the earlier one's credits are void once it ended.
    fn hold_returned(&self, credits: u64, period: i64) {
        let mut returned = self.returned();
        match *returned {
            (0, _) => *returned = (credits, period),
            (held, p) if p == period => returned.0 = held.saturating_add(credits),
            (_, p) if p < period => *returned = (credits, period),
            _ => {}
        }
    }

    /// Adds the credits given back meanwhile to the slice, when of its period (else they
    /// are void: a refill came). Under the reservation lock.
    fn fold_returned(&self) {
        let (credits, period) = std::mem::take(&mut *self.returned());
        if credits > 0 && self.period.load(Ordering::Acquire) == period {
            self.slice.fetch_add(credits, Ordering::AcqRel);
        }
    }

    /// What is left: the store's balance as last seen plus the unspent slice.
    fn available(&self) -> u64 {
        self.left.load(Ordering::Acquire) + self.slice.load(Ordering::Acquire)
    }

    /// What is left at `now`, taking nothing: [`CreditMeter::available`], or once a refill
    /// came due, what it sets the balance to.
    fn peek(&self, now: i128) -> u64 {
        match self.refill {
            Some(refill) if now >= i128::from(self.period.load(Ordering::Acquire)) => refill.amount,
            _ => self.available(),
        }
    }

    /// Takes `cost`, reserving from the store when the slice is short; answers what is
    /// left (the store's balance as last seen plus the slice).
    pub(crate) fn consume(&self, cost: u64, now: i128) -> Result<u64, VerifyError> {
        loop {
            if let Some(remaining) = self.try_consume(cost, now) {
                return Ok(remaining);
            }
            self.reserve(cost, now)?;
        }
    }

    /// Takes `cost` from the slice, lock-free, when it holds that much in the current
    /// period; answers what is left. `None`: a reservation is needed first.
    fn try_consume(&self, cost: u64, now: i128) -> Option<u64> {
        if now >= i128::from(self.period.load(Ordering::Acquire)) {
            return None;
        }
        let before = self
            .slice
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| s.checked_sub(cost))
            .ok()?;
        self.used.store(true, Ordering::Relaxed);
        Some(self.left.load(Ordering::Acquire) + before - cost)
    }

    /// The credits' state for a report, with `remaining` left.
    fn state(&self, remaining: u64, now: i128) -> LimitState {
        LimitState {
            name: "credits".into(),
            limit: None,
            window_seconds: None,
            remaining,
            reset_seconds: self.refill_in(now, 1),
        }
    }

    /// Seconds from `now` to the next refill (at least 1) when it gives enough for a
    /// request of `cost`; `None` without a refill, or with one too small for it.
    fn refill_in(&self, now: i128, cost: u64) -> Option<u64> {
        let refill = self.refill.filter(|r| r.amount >= cost.max(1))?;
        let period = self.period.load(Ordering::Acquire);
        if period == i64::MAX {
            return None;
        }
        // An idle meter's period rolls at its next reservation: once it has ended, that
        // refill is due, and the next is the one after `now`.
        let next = if now >= i128::from(period) {
            next_refill_after(&refill, now)
        } else {
            i128::from(period)
        };
        Some(seconds_until(next, now).max(1))
    }

    /// The refusal of a request of `cost` that the credits left at `now` do not cover: it
    /// says when a refill will.
    fn exhausted(&self, now: i128, cost: u64) -> VerifyError {
        VerifyError::UsageExceeded {
            retry_after_seconds: self.refill_in(now, cost),
        }
    }

    /// Reserves what `cost` lacks (and more, for the requests to come); `UsageExceeded`
    /// when the store has too little left.
    fn reserve(&self, cost: u64, now: i128) -> Result<(), VerifyError> {
        let _one = self.lock_reserving();
        let period = self.period.load(Ordering::Acquire);
        if now >= i128::from(period) {
            // A refill came due: what is left of the last period's slice is void, and so
            // is what was given back to it (review s50 M2: folded in, it made `have`
            // larger than the cost).
            self.slice.store(0, Ordering::Release);
            *self.returned() = (0, 0);
        } else {
            self.fold_returned();
        }
        let have = self.slice.load(Ordering::Acquire);
        if have >= cost && now < i128::from(period) {
            // Another request reserved meanwhile.
            return Ok(());
        }
        let at_least = cost.saturating_sub(have);
        let want = self.next_want.load(Ordering::Relaxed).max(at_least);
        let reserved = self.source.reserve(at_least, want)?;
        self.left.store(reserved.left, Ordering::Release);
        if reserved.period != period {
            // Granted in another period than the slice's: the old slice is void.
            self.slice.store(0, Ordering::Release);
            self.period.store(reserved.period, Ordering::Release);
        }
        if reserved.granted == 0 {
            // Credits given back while the store was asked may cover it still.
            self.fold_returned();
            if self.slice.load(Ordering::Acquire) >= cost && now < i128::from(reserved.period) {
                return Ok(());
            }
            return Err(self.exhausted(now, cost));
        }
        self.slice.fetch_add(reserved.granted, Ordering::AcqRel);
        self.next_want
            .store((want * 2).min(MAX_SLICE), Ordering::Relaxed);
        Ok(())
    }

    /// Takes the unspent slice away (to give it back or carry it over), with its period.
    ///
    /// Under the reservation lock, as [`CreditMeter::put_slice`]: a reservation that
    /// crosses a refill changes the slice and its period in two steps, and a slice read
    /// between them would go back into the new period with the old period's credits. But
    /// never waiting for it (a reservation may wait on the database; a store closing gives
    /// back what it can): `None` while one runs, and the slice stays this meter's.
    /// Credits given back while it holds the lock join the slice it leaves, which stays
    /// this meter's (review s50 L3: they were cleared with the slice, and lost).
    pub(crate) fn take_slice(&self) -> Option<(u64, i64)> {
        let _one = self.try_lock_reserving()?;
        self.fold_returned();
        Some(self.swap_slice())
    }

    /// Takes the unspent slice away lock-free, with its period, to drop it (a change that
    /// voids it): it must not be added anywhere, nor what was given back to it.
    pub(crate) fn void_slice(&self) -> (u64, i64) {
        *self.returned() = (0, 0);
        self.swap_slice()
    }

    /// The unspent slice, taken away, with its period; the next reservation starts small.
    fn swap_slice(&self) -> (u64, i64) {
        self.next_want.store(1, Ordering::Relaxed);
        (
            self.slice.swap(0, Ordering::AcqRel),
            self.period.load(Ordering::Acquire),
        )
    }

    /// Adds a slice taken from another meter of the same key (or leased and given back),
    /// when of the same period; answers whether it was taken: added now, or, while a
    /// reservation runs, kept for it to add when it lets go (void then if that
    /// reservation moved the slice to another period).
    ///
    /// Under the reservation lock, which every change of period takes, so credits of a
    /// period that has just ended never join the next one; but never waiting for it (a
    /// reservation may wait on the database). Credits given back while it is held used to
    /// be dropped, counted as spent: under concurrent requests near the end of a balance,
    /// a refused route's own credit and the leases given back were lost for good (usage
    /// hunt F1, F2).
    pub(crate) fn put_slice(&self, slice: u64, period: i64) -> bool {
        if slice == 0 {
            return false;
        }
        if let Some(_one) = self.try_lock_reserving() {
            let added = self.period.load(Ordering::Acquire) == period;
            if added {
                self.slice.fetch_add(slice, Ordering::AcqRel);
            }
            return added;
        }
        self.hold_returned(slice, period);
        // The holder may have let go since: then this call adds them.
        drop(self.try_lock_reserving());
        true
    }
}

/// Whether credit slices reserved under a key's usage-control `version` are good under
/// `other`: the same credit epoch, the version's high half (`store/controls.rs`).
pub(crate) fn same_epoch(version: u64, other: u64) -> bool {
    version >> 32 == other >> 32
}

/// A key's usage control at run time.
pub(crate) struct KeyMeter {
    /// The version of the stored controls this was built from.
    pub(crate) version: u64,
    pub(crate) allowed_ips: Box<[IpNet]>,
    /// Shared with the meters of later versions while the rules stay the same: a change of
    /// anything else (meta, allowlist, credits) keeps the limits' state.
    pub(crate) limits: Arc<[Limit]>,
    /// Where `limits` keep their state on a database several processes share.
    pub(crate) rates: Option<Arc<dyn RateSource>>,
    pub(crate) credits: Option<CreditMeter>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// The next refill strictly after `now` (Unix nanoseconds), at 00:00 UTC.
pub(crate) fn next_refill_after(refill: &Refill, now: i128) -> i128 {
    let now = OffsetDateTime::from_unix_timestamp_nanos(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let today = now.date();
    let next: Option<Date> = match refill.interval {
        RefillInterval::Day => today.next_day(),
        RefillInterval::Month => {
            let day = refill.day_of_month.unwrap_or(1).clamp(1, 28);
            let this_month = today.replace_day(day).ok();
            match this_month.filter(|d| *d > today) {
                Some(d) => Some(d),
                None => {
                    let (year, month) = match today.month() {
                        time::Month::December => (today.year() + 1, time::Month::January),
                        m => (today.year(), m.next()),
                    };
                    Date::from_calendar_date(year, month, day).ok()
                }
            }
        }
    };
    next.map_or(i128::MAX, |d| {
        d.with_time(Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp_nanos()
    })
}

/// Whole seconds from `now` to `at`, rounded up.
fn seconds_until(at: i128, now: i128) -> u64 {
    let nanos = u128::try_from(at - now).unwrap_or(0);
    u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::shared_limit::Counted;

    /// Grants 10 credits in the period `next`, once the test lets it (`go`), after saying
    /// that it started (`started`).
    struct Gated {
        started: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
        next: i64,
    }

    impl CreditSource for Gated {
        fn reserve(&self, _at_least: u64, _want: u64) -> Result<Reserved, VerifyError> {
            self.started.lock().unwrap().send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
            Ok(Reserved {
                granted: 10,
                left: 90,
                period: self.next,
            })
        }
    }

    /// A meter of 100 credits in the period `old`, whose source grants in `new` once let;
    /// with the receiver that hears a reservation started and the sender that lets it.
    fn gated(old: i64, new: i64) -> (Arc<CreditMeter>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started, started_rx) = mpsc::channel();
        let (go_tx, go) = mpsc::channel();
        let source = Gated {
            started: Mutex::new(started),
            go: Mutex::new(go),
            next: new,
        };
        let meter = Arc::new(CreditMeter::new(100, None, old, Box::new(source)));
        (meter, started_rx, go_tx)
    }

    /// A key's meter of one limit of 5 per 10 s, shared through `source`.
    fn shared_five(source: &Arc<Counted>) -> Meter {
        let rule = RateLimit {
            name: "default".into(),
            limit: 5,
            window_seconds: 10,
        };
        let rates: Arc<dyn RateSource> = source.clone();
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
        ));
        Meter(
            Arc::new(KeyMeter {
                version: 1,
                allowed_ips: Box::new([]),
                limits: Arc::from([Limit::shared(rule, Arc::clone(&rates))]),
                rates: Some(rates),
                credits: None,
                clock,
            }),
            None,
        )
    }

    /// Review s48 L4: a cost above a shared limit's whole limit is refused whatever the
    /// limit holds, so a flood of them reports it from memory, without a round trip each.
    #[test]
    fn a_cost_above_a_shared_limit_is_reported_without_a_round_trip() {
        let source = Arc::new(Counted::default());
        let meter = shared_five(&source);
        for _ in 0..100 {
            let mut report = Vec::new();
            let Admitted::Done(Err(refused)) = meter.try_charge_reporting(6, Some(&mut report))
            else {
                panic!("a cost above the limit waits on a round trip");
            };
            assert_eq!(refused.code(), "rate_limited");
            assert_eq!(report.len(), 1);
            assert_eq!(report[0].remaining, 5, "the limit, never used");
        }
        assert!(source.asked.lock().unwrap().is_empty());
        assert_eq!(source.peeks.load(Ordering::SeqCst), 0);
    }

    /// Review s48 L5: a shared limit whose state cannot be read is reported as memory knows
    /// it, not as empty (a limit that refused nothing).
    #[test]
    fn a_shared_limit_that_cannot_be_read_is_not_reported_empty() {
        let source = Arc::new(Counted::default());
        source.down.store(true, Ordering::SeqCst);
        let meter = shared_five(&source);
        let Admitted::Reserve(reservation) = meter.try_charge_reporting(1, None) else {
            panic!("a fresh shared limit decides nothing from memory");
        };
        let mut report = Vec::new();
        let refused = reservation.finish_reporting(Some(&mut report)).unwrap_err();
        assert_eq!(refused.code(), "keystore_unavailable");
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].remaining, 5);
    }

    #[test]
    fn an_ipv6_range_holds_the_ipv4_addresses_it_maps() {
        let allows = |net: &str, client: &str| {
            check_ip(&[net.parse().unwrap()], Some(client.parse().unwrap())).is_ok()
        };
        for client in ["203.0.113.7", "::ffff:203.0.113.7"] {
            assert!(allows("::/0", client), "{client}");
            assert!(allows("::ffff:0.0.0.0/95", client), "{client}");
            assert!(allows("::ffff:203.0.113.0/120", client), "{client}");
            assert!(allows("203.0.113.0/24", client), "{client}");
            assert!(!allows("2001:db8::/32", client), "{client}");
            assert!(!allows("::ffff:198.51.100.0/120", client), "{client}");
        }
        assert!(allows("::/0", "2001:db8::1"));
        assert!(!allows("0.0.0.0/0", "2001:db8::1"));
        assert!(check_ip(&["::/0".parse().unwrap()], None).is_err());
    }

    #[test]
    fn credits_given_back_never_join_a_period_a_reservation_is_moving_to() {
        let (old, new) = (1_000, 2_000);
        let (meter, started_rx, go_tx) = gated(old, new);
        // A refill came due at `old`: the next request reserves into the new period.
        let reserving = Arc::clone(&meter);
        let request = std::thread::spawn(move || reserving.consume(1, 1_500));
        started_rx.recv().unwrap();
        // Kept for the reservation, which finds them of the period it left: void.
        assert!(meter.put_slice(5, old));
        go_tx.send(()).unwrap();
        assert_eq!(request.join().unwrap(), Ok(90 + 9));
        assert_eq!(meter.available(), 99);
        assert!(!meter.put_slice(5, old), "the old period is over");
        assert_eq!(meter.available(), 99);
        assert!(meter.put_slice(5, new));
        assert_eq!(meter.available(), 104);
    }

    /// Review s50 M2: credits given back to a period that has ended, waiting for the lock
    /// when a reservation crosses into the next, are void: never added to the slice the
    /// refill voided (they made it larger than the cost, and the reservation's arithmetic
    /// underflow).
    #[test]
    fn credits_given_back_to_an_ended_period_are_void_at_the_next_reservation() {
        let (old, new) = (1_000, 2_000);
        let (meter, started_rx, go_tx) = gated(old, new);
        meter.hold_returned(5, old);
        let reserving = Arc::clone(&meter);
        let request = std::thread::spawn(move || reserving.consume(1, 1_500));
        // The reservation asks the store (it panicked before, on `cost - have`).
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the reservation asked the store");
        go_tx.send(()).unwrap();
        assert_eq!(request.join().unwrap(), Ok(90 + 9));
        assert_eq!(meter.available(), 99);
    }

    /// Credits given back while another holds the lock join the slice when it lets go.
    #[test]
    fn credits_given_back_while_the_lock_is_held_join_the_slice_when_it_is_let_go() {
        let period = 1_000;
        let (meter, _started_rx, _go_tx) = gated(period, period);
        let held = meter.try_lock_reserving().unwrap();
        assert!(meter.put_slice(5, period));
        assert_eq!(meter.available(), 100, "not yet");
        drop(held);
        assert_eq!(meter.available(), 105);
        assert_eq!(meter.take_slice(), Some((5, period)));
    }

    /// Usage hunt F1, F2: credits given back while a reservation runs (a refused route's
    /// own credit, a lease's unspent credits) join the slice when it ends; they were
    /// dropped, lost for good.
    #[test]
    fn credits_given_back_while_a_reservation_runs_join_the_slice_after_it() {
        let period = 1_000;
        let (meter, started_rx, go_tx) = gated(period, period);
        let reserving = Arc::clone(&meter);
        let request = std::thread::spawn(move || reserving.consume(1, 500));
        started_rx.recv().unwrap();
        assert!(meter.put_slice(5, period));
        assert!(meter.put_slice(2, period));
        go_tx.send(()).unwrap();
        // 10 granted and 7 given back, 1 spent: 90 in the store and 16 in the slice.
        assert_eq!(request.join().unwrap(), Ok(90 + 16));
        assert_eq!(meter.take_slice(), Some((16, period)));
    }

    #[test]
    fn a_slice_is_never_taken_while_a_reservation_moves_it_to_another_period() {
        let (old, new) = (1_000, 2_000);
        let (meter, started_rx, go_tx) = gated(old, new);
        meter.slice.store(3, Ordering::Release);
        let reserving = Arc::clone(&meter);
        let request = std::thread::spawn(move || reserving.consume(1, 1_500));
        started_rx.recv().unwrap();
        assert_eq!(meter.take_slice(), None, "not while the reservation runs");
        go_tx.send(()).unwrap();
        assert_eq!(request.join().unwrap(), Ok(90 + 9));
        assert_eq!(meter.take_slice(), Some((9, new)));
    }
}
