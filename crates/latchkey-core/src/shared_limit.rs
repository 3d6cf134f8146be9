//! A rate limit several processes share (a PostgreSQL database several daemons open): one
//! GCRA state in the store, of which each process reserves a *slice* and admits from it
//! without a round trip, as a remote verifier admits from its lease.
//!
//! The shared state is a theoretical arrival time (TAT, Unix nanoseconds on the store's
//! clock) per key (or user) and limit, advanced by a small transaction that reserves `k`
//! requests, never more than the limit allows at that moment (`store/rate_state.rs`;
//! [`Gcra`] is its arithmetic). A process admits from its slice only for the time the limit
//! takes to win the slice back (`k` emission intervals, at most one window), so it never
//! admits later than one shared limiter would have: across any number of processes the
//! total accepted never exceeds the limit, and falls short of it by at most the slices they
//! hold unused.
//!
//! A slice is 1 request at first and doubles at each reservation while the key comes at the
//! limit's rate or faster (its slice ran short before it expired), to at most a twentieth
//! of the limit; after one that expired with requests left it starts again at 1
//! ([`crate::slice_size`]: a process that held slices of a quieter key without a break
//! would take the limit's whole rate from the other processes). After a refusal,
//! requests are refused from memory until the shared state said a full slice would fit
//! (the `Retry-After` given says when), or until this process gives a cost back to it
//! ([`SharedLimit::give_back_to_store`]): an over-limit flood costs one reservation per slice
//! the limit wins back, never one per request. When a slice is short the request waits for
//! the reservation: on tokio's blocking pool in the layer and in `/v1/verify`
//! ([`crate::meter::Admitted::Reserve`]), never on an async worker. The reservation takes no
//! writers' lock and writes no audit event: a rate limit is not a management write.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::controls::RateLimit;
use crate::meter::{LimitGrant, rate_limited_after};
use crate::slice_size::SliceSize;
use crate::verify::VerifyError;

/// A limit's GCRA in nanoseconds: `limit` requests per `window`, a burst of `limit` that
/// comes back one request every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The window, the most the TAT may run ahead of now.
    window: i128,
    /// One request's share of the window.
    pub(crate) interval: i128,
    limit: u32,
}

/// What a reservation of a shared limit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateGrant {
    /// `granted` requests are the caller's; `left` more would have fitted.
    Granted {
        /// Requests now the caller's to admit.
        granted: u32,
        /// What the shared state had left after the grant.
        left: u32,
    },
    /// Fewer than asked fit now; `retry_after` until they would.
    Refused {
        /// How long until the request would fit.
        retry_after: Duration,
    },
}

/// How many requests a reservation asks for: at least `at_least`, or none, and up to
/// `up_to` (never below `at_least`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) at_least: u32,
    pub(crate) up_to: u32,
}

impl Ask {
    pub(crate) fn new(at_least: u32, up_to: u32) -> Ask {
        Ask {
            at_least,
            up_to: up_to.max(at_least),
        }
    }
}

impl Gcra {
    pub(crate) fn of(rule: &RateLimit) -> Gcra {
        let limit = rule.limit.max(1);
        let window = i128::from(rule.window_seconds.max(1)) * 1_000_000_000;
        Gcra {
            window,
            interval: (window / i128::from(limit)).max(1),
            limit,
        }
    }

    /// Reserves what `ask` asks for at `now` from the state `tat` (`None`: never used, or
    /// unused for a window): the new TAT (unchanged when refused) and the grant.
    pub(crate) fn reserve(
        &self,
        tat: Option<i64>,
        now: i128,
        ask: Ask,
    ) -> (Option<i64>, RateGrant) {
        let Ask { at_least, up_to } = ask;
        if at_least > self.limit {
            // More than the whole limit: never passes.
            let retry_after = Duration::from_nanos(nanos(self.window));
            return (tat, RateGrant::Refused { retry_after });
        }
        let start = tat.map_or(now, |t| i128::from(t).max(now));
        let backlog = start - now;
        let fit = u32::try_from(((self.window - backlog) / self.interval).max(0)).unwrap_or(0);
        let fit = fit.min(self.limit);
        let granted = up_to.min(fit);
        if granted < at_least.max(1) {
            let wait = backlog + i128::from(at_least.max(1)) * self.interval - self.window;
            let retry_after = Duration::from_nanos(nanos(wait));
            return (tat, RateGrant::Refused { retry_after });
        }
        let after = start + i128::from(granted) * self.interval;
        let tat = Some(i64::try_from(after).unwrap_or(i64::MAX));
        let left = fit - granted;
        (tat, RateGrant::Granted { granted, left })
    }

    /// The state `tat` with `cost` requests given back at `now`: the arrival time moves back
    /// by their intervals, never before `now`; `None` when it holds none of them (no state,
    /// or one already past: the limit is whole).
    pub(crate) fn give_back(&self, tat: Option<i64>, cost: u32, now: i128) -> Option<i64> {
        let tat = i128::from(tat?);
        (tat > now).then(|| {
            let back = (tat - i128::from(cost) * self.interval).max(now);
            i64::try_from(back).unwrap_or(i64::MAX)
        })
    }

    /// How long a slice of `granted` requests stays valid: the time the limit takes to win
    /// it back, at least a millisecond, at most one window.
    pub(crate) fn valid_for(&self, granted: u32) -> i128 {
        (i128::from(granted) * self.interval).clamp(1_000_000, self.window)
    }
}

fn nanos(n: i128) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}

/// Where a shared limit's slices come from: its state in the store (`store/rate_state.rs`).
pub(crate) trait RateSource: Send + Sync {
    /// Takes what `ask` asks for of the limit `rule` (named as the meter names it) from its
    /// shared state at `now`, in one transaction; in that transaction, first, gives `back`
    /// to it as [`RateSource::give_back`] does (review s58 L2: a slice replaced with
    /// requests left gave them back in a second transaction, under the reservation lock).
    /// The give-back commits whatever the grant: a refusal still has them back.
    fn reserve(
        &self,
        rule: &RateLimit,
        ask: Ask,
        now: i128,
        back: Option<GiveBack<'_>>,
    ) -> Result<RateReserved, Unreserved>;

    /// What a reservation of one request of `rule` would come to at `now`, taking nothing
    /// (a transaction that writes nothing).
    fn peek(&self, rule: &RateLimit, now: i128) -> Result<RateGrant, VerifyError>;

    /// The key's controls changed to `version` with the same limits: the state goes on
    /// under it (`store/rate_state.rs`).
    fn carry_to(&self, _version: u64) {}

    /// Gives `back` to the shared state of `rule`, in one transaction: the arrival time
    /// moves back by their intervals, never before now. Whether it moved.
    fn give_back(&self, _rule: &RateLimit, _back: GiveBack<'_>) -> Result<bool, VerifyError> {
        Ok(false)
    }
}

/// What a reservation came to ([`RateSource::reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateReserved {
    /// The grant, read after the give-back.
    pub(crate) grant: RateGrant,
    /// Whether the requests given back moved the shared state (as
    /// [`RateSource::give_back`] tells).
    pub(crate) given_back: bool,
}

/// A reservation that failed ([`RateSource::reserve`]).
#[derive(Debug)]
pub(crate) struct Unreserved {
    /// What the request is answered.
    pub(crate) error: VerifyError,
    /// Whether its transaction may have committed all the same (a database's commit whose
    /// answer was lost): what it gave back may be back in the shared state.
    pub(crate) in_doubt: bool,
}

impl Unreserved {
    /// A failure before anything could commit.
    pub(crate) fn before_commit(error: VerifyError) -> Unreserved {
        Unreserved {
            error,
            in_doubt: false,
        }
    }
}

/// Requests a slice held and gives back to the shared state ([`RateSource::give_back`]).
pub(crate) struct GiveBack<'a> {
    /// How many.
    pub(crate) cost: u32,
    /// Unix nanoseconds from which their slice is void: they came back by time, and
    /// nothing is given. Read against `now` in the transaction, each time it runs (review
    /// s58 L1: checked before a transaction that retried past it, they could undo another
    /// process's reservation).
    pub(crate) until: i128,
    /// The clock.
    pub(crate) now: &'a dyn Fn() -> i128,
}

/// One rate limit of a key or user on shared storage: this process's slice of it.
pub(crate) struct SharedLimit {
    gcra: Gcra,
    /// Requests left in the slice.
    left: AtomicU32,
    /// Unix nanoseconds from which the slice is void.
    until: AtomicI64,
    /// After a refusal, Unix nanoseconds before which the shared state cannot grant a full
    /// slice ([`SliceSize::max`] requests), as it answered: until then requests are refused from
    /// memory, never a round trip each (a change to the limits makes a new one), unless this
    /// process gives a cost back to the shared state, which ends it. So a flood over the
    /// limit costs one reservation per slice the limit wins back, and at most one per cost
    /// given back, not one per request.
    refused_until: AtomicI64,
    /// How many costs this process gave back to the shared state: a refusal read before
    /// one, by a reservation that ends after it, is not remembered ([`SharedLimit::reserve`]).
    given_back: AtomicU64,
    /// What the shared state had left at the last reservation, for the figures reported.
    shared_left: AtomicU32,
    /// The size of the next reservation.
    size: SliceSize,
    /// One reservation at a time per limit.
    reserving: Mutex<()>,
    source: Arc<dyn RateSource>,
}

impl SharedLimit {
    pub(crate) fn new(rule: &RateLimit, source: Arc<dyn RateSource>) -> SharedLimit {
        SharedLimit {
            gcra: Gcra::of(rule),
            left: AtomicU32::new(0),
            until: AtomicI64::new(i64::MIN),
            refused_until: AtomicI64::new(i64::MIN),
            given_back: AtomicU64::new(0),
            shared_left: AtomicU32::new(rule.limit),
            size: SliceSize::new(rule.limit),
            reserving: Mutex::new(()),
            source,
        }
    }

    /// Takes `cost` from a valid slice, lock-free: what is left of the limit as this
    /// process knows it (the shared state at its reservation plus the slice), or the
    /// refusal while the last one holds. `None`: a reservation decides.
    pub(crate) fn try_take(
        &self,
        rule: &RateLimit,
        cost: u32,
        extra: bool,
        now: i128,
    ) -> Option<Result<u32, VerifyError>> {
        if now < i128::from(self.until.load(Ordering::Acquire))
            && let Ok(before) = self
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(cost))
        {
            let known = self.shared_left.load(Ordering::Acquire);
            return Some(Ok(known.saturating_add(before - cost)));
        }
        // Refused from memory until a full slice fits; an extra cost is told when it fits
        // with its request's own unit.
        (self.refused_for(cost, now) > 0).then(|| {
            Err(rate_limited(
                rule,
                self.refused_for(cost + u32::from(extra), now),
            ))
        })
    }

    /// The refusal [`SharedLimit::try_take`] would answer `cost` with, without taking
    /// anything: `None` while the slice holds it or the shared state was not seen to
    /// refuse.
    pub(crate) fn known_refusal(
        &self,
        rule: &RateLimit,
        cost: u32,
        extra: bool,
        now: i128,
    ) -> Option<VerifyError> {
        let valid = now < i128::from(self.until.load(Ordering::Acquire));
        if valid && self.left.load(Ordering::Acquire) >= cost {
            return None;
        }
        (self.refused_for(cost, now) > 0)
            .then(|| rate_limited(rule, self.refused_for(cost + u32::from(extra), now)))
    }

    /// Gives back `cost` a request took from the slice and a later check refused: into the
    /// slice while it is valid (the shared state counted it when the slice was reserved, so
    /// this process may admit it once more); a void slice's requests stay counted.
    pub(crate) fn give_back(&self, cost: u32, now: i128) {
        if now < i128::from(self.until.load(Ordering::Acquire)) {
            let _ = self
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_add(cost));
        }
    }

    /// [`SharedLimit::give_back`] where blocking on the database is fine: into the shared
    /// state itself, so that no slice's lapse loses it (re-check s57b/c F1: parallel
    /// requests refused by a later step gave their units back into a slice of one that
    /// lapsed, or that a reservation running meanwhile overwrote, and the limit admitted
    /// 8 to 22 of 22). Only while the slice is valid: the unit has not come back to the
    /// shared state by time yet, so taking its interval off the arrival time undoes no
    /// other request. A failure leaves it counted, never more than the limit.
    ///
    /// A refusal held in memory is forgotten: it was answered while this cost, and maybe
    /// others in flight, held the limit, which has room again (re-check s57 F1: requests in
    /// flight that a later limit refused made a reservation refuse; their costs came back
    /// to the shared state, yet this process refused from memory for the refusal's whole
    /// wait, 3 s of a limit of 20 a minute, an hour's twelfth of one of 5 an hour, and
    /// admitted 8 to 22 of 22 in three re-checks). The next request asks the shared state.
    pub(crate) fn give_back_to_store(&self, rule: &RateLimit, cost: u32, now: &dyn Fn() -> i128) {
        let until = i128::from(self.until.load(Ordering::Acquire));
        self.return_to_store(rule, cost, until, now);
    }

    /// Takes `cost` requests of a slice valid until `until` off the shared state's arrival
    /// time (see [`SharedLimit::give_back_to_store`]).
    fn return_to_store(&self, rule: &RateLimit, cost: u32, until: i128, now: &dyn Fn() -> i128) {
        if now() >= until {
            return;
        }
        match self.source.give_back(rule, GiveBack { cost, until, now }) {
            // Nothing moved (the slice lapsed meanwhile, the limits changed, the state is
            // whole): the refusal held stands (review s58 L3).
            Ok(false) => {}
            Ok(true) => self.gave_back(rule, cost),
            Err(error) => {
                tracing::debug!(%error, "a refused request's rate limit units stay counted");
            }
        }
    }

    /// `cost` requests given back moved the shared state, by a give-back of their own or
    /// in a reservation's transaction: what memory tells of the shared state has them
    /// again, and a refusal held in memory is forgotten ([`SharedLimit::give_back_to_store`]).
    fn gave_back(&self, rule: &RateLimit, cost: u32) {
        // Counted before the refusal is forgotten: a reservation refused meanwhile sees the
        // count move and forgets its own (`reserve`).
        self.given_back.fetch_add(1, Ordering::SeqCst);
        self.refused_until.store(i64::MIN, Ordering::SeqCst);
        let _ = self
            .shared_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left.saturating_add(cost).min(rule.limit))
            });
    }

    /// Whether one request would pass now, taking nothing, as far as this process knows
    /// without a round trip: what is left (the shared state at the last reservation plus
    /// the slice), or the refusal held in memory. `None`: the shared state decides.
    pub(crate) fn try_peek(&self, rule: &RateLimit, now: i128) -> Option<Result<u32, VerifyError>> {
        let left = self.left.load(Ordering::Acquire);
        if now < i128::from(self.until.load(Ordering::Acquire)) && left > 0 {
            return Some(Ok(self
                .shared_left
                .load(Ordering::Acquire)
                .saturating_add(left)));
        }
        let wait = self.refused_for(1, now);
        (wait > 0).then(|| Err(rate_limited(rule, wait)))
    }

    /// [`SharedLimit::try_peek`]'s figure (0 when it refuses), else the shared state at the
    /// last reservation (the whole limit before one): never a round trip.
    pub(crate) fn known_left(&self, rule: &RateLimit, now: i128) -> u32 {
        match self.try_peek(rule, now) {
            Some(Ok(left)) => left,
            Some(Err(_)) => 0,
            None => self.shared_left.load(Ordering::Acquire),
        }
    }

    /// [`SharedLimit::try_peek`], reading the shared state (blocks on the database) when
    /// memory does not tell. Fails with `RateLimited` when not even one request would pass,
    /// `Unavailable` when the store cannot be reached.
    pub(crate) fn peek(&self, rule: &RateLimit, now: i128) -> Result<u32, VerifyError> {
        if let Some(answer) = self.try_peek(rule, now) {
            return answer;
        }
        match self.source.peek(rule, now)? {
            // What would be left after one request, and that request.
            RateGrant::Granted { granted, left } => Ok(left.saturating_add(granted)),
            RateGrant::Refused { retry_after } => {
                let wait = i128::try_from(retry_after.as_nanos()).unwrap_or(i128::MAX);
                Err(rate_limited(rule, wait))
            }
        }
    }

    /// How long requests of `cost` are refused from memory from `now` (0: not).
    fn refused_for(&self, cost: u32, now: i128) -> i128 {
        let refused_until = i128::from(self.refused_until.load(Ordering::Acquire));
        if now >= refused_until {
            return 0;
        }
        // A full slice fits at `refused_until`; each request beyond it, an interval later.
        let beyond = cost.saturating_sub(self.size.max());
        refused_until - now + i128::from(beyond) * self.gcra.interval
    }

    /// Takes `cost`, reserving a new slice from the shared state when this one is short
    /// (a transaction: blocks on the database). What a slice left with fewer than `cost`
    /// requests held goes back to the shared state while that slice is valid, in the same
    /// transaction.
    ///
    /// Fails with `RateLimited` when not even `cost` fits now, `Unavailable` when the
    /// store cannot be reached.
    #[cfg(test)]
    pub(crate) fn take(
        &self,
        rule: &RateLimit,
        cost: u32,
        extra: bool,
        now: impl Fn() -> i128,
    ) -> Result<u32, VerifyError> {
        self.take_unless(rule, cost, extra, now, || None)
    }

    /// [`SharedLimit::take`], refused with `refused`'s answer instead of reserving when,
    /// once this limit's reservation lock is held, it tells of a refusal still to come (a
    /// later limit of the request known to refuse it, review s57 re-check F1: parallel
    /// requests waiting on this lock each reserved a unit for a request that a later limit
    /// refused meanwhile, and the units given back lapsed with their slice).
    pub(crate) fn take_unless(
        &self,
        rule: &RateLimit,
        cost: u32,
        extra: bool,
        now: impl Fn() -> i128,
        refused: impl Fn() -> Option<VerifyError>,
    ) -> Result<u32, VerifyError> {
        let _one = self.reserving.lock().unwrap_or_else(|e| e.into_inner());
        let clock = &now;
        let now = now();
        if let Some(answer) = self.try_take(rule, cost, extra, now) {
            // Another request reserved (or was refused) meanwhile.
            return answer;
        }
        if let Some(refused) = refused() {
            return Err(refused);
        }
        let old_until = i128::from(self.until.load(Ordering::Acquire));
        let short_in_time = now < old_until;
        // A request's extra cost, right after its own took the slice, shows nothing of
        // how fast the key comes.
        let want = self.size.reserve(short_in_time && !extra);
        // What the old slice still holds (fewer than `cost`) goes back to the shared state
        // while it is valid, the new slice taking its place (review s57 L5: overwritten, it
        // was lost to the limit), in the reservation's own transaction (review s58 L2: in
        // a second one, most replacements of a route with an extra cost cost two round
        // trips, and every request waiting on this lock waited for both). Taken out of the
        // slice first, so that what is given back is exactly what no request takes; the
        // slice stays valid, so that a cost given back into it meanwhile is not lost.
        let carried = self.left.swap(0, Ordering::AcqRel);
        let back = (carried > 0).then_some(GiveBack {
            cost: carried,
            until: old_until,
            now: clock,
        });
        // Refused, the transaction gave them back, or found them the limit's already. Failed,
        // the old slice serves on with them, unless the commit is in doubt (`reserve`).
        let granted = self.reserve(rule, Ask::new(cost, want), now, extra, back)?;
        let until = now + self.gcra.valid_for(granted);
        // Void while it changes, so that no request takes from the new slice under the old
        // deadline (a reservation slower than the new slice's validity would admit from a
        // slice already lapsed; review s58 Info-3).
        self.until.store(i64::MIN, Ordering::Release);
        let late = self.left.swap(granted - cost, Ordering::AcqRel);
        self.until
            .store(i64::try_from(until).unwrap_or(i64::MAX), Ordering::Release);
        // A cost given back into the old slice while the reservation ran goes back to the
        // shared state on its own, as the slice's remainder did before (rare).
        if late > 0 {
            self.return_to_store(rule, late, old_until, clock);
        }
        Ok(self
            .shared_left
            .load(Ordering::Acquire)
            .saturating_add(granted - cost))
    }

    /// Reserves up to `want` requests straight from the shared state, for a remote
    /// verifier's lease (the daemon's `POST /v1/leases`): how many were granted.
    ///
    /// Fails as [`SharedLimit::take`] does.
    pub(crate) fn lease(
        &self,
        rule: &RateLimit,
        want: u32,
        now: i128,
    ) -> Result<LimitGrant, VerifyError> {
        match self.refused_for(1, now) {
            0 => {
                let ask = Ask::new(1, want.min(rule.limit.max(1)));
                let granted = self.reserve(rule, ask, now, false, None)?;
                let left = self.shared_left.load(Ordering::Acquire);
                Ok(LimitGrant { granted, left })
            }
            wait => Err(rate_limited(rule, wait)),
        }
    }

    /// Reserves `ask` from the shared state, giving `back` to it first in the same
    /// transaction; refused, with the wait of the route's whole cost for an `extra` cost.
    fn reserve(
        &self,
        rule: &RateLimit,
        ask: Ask,
        now: i128,
        extra: bool,
        back: Option<GiveBack<'_>>,
    ) -> Result<u32, VerifyError> {
        let given_back = self.given_back.load(Ordering::SeqCst);
        let carried = back.as_ref().map_or(0, |back| back.cost);
        let reserved = self
            .source
            .reserve(rule, ask, now, back)
            .map_err(|failed| {
                // Nothing committed (the store out of reach): what the replaced slice held is
                // its own again while it is valid (review s59b L1: it was lost to the limit
                // until the window passed). A commit in doubt may have given it back to the
                // shared state: counted, it costs fewer admissions, never more; put back into
                // the slice, it would be admitted twice.
                if !failed.in_doubt {
                    self.give_back(carried, now);
                }
                failed.error
            })?;
        if reserved.given_back {
            // Before the grant is read: a grant's `left` counts them already, and a
            // refusal is not held, as after any give-back.
            self.gave_back(rule, carried);
        }
        match reserved.grant {
            RateGrant::Granted { granted, left } => {
                self.shared_left.store(left, Ordering::Release);
                self.size.granted(left);
                Ok(granted)
            }
            RateGrant::Refused { retry_after } if ask.at_least > self.gcra.limit => {
                // More than the whole limit: this request never passes, and says nothing
                // of the shared state, so cheaper requests still reserve as before.
                let wait = i128::try_from(retry_after.as_nanos()).unwrap_or(i128::MAX);
                Err(rate_limited(rule, wait))
            }
            RateGrant::Refused { retry_after } => {
                let wait = i128::try_from(retry_after.as_nanos()).unwrap_or(i128::MAX);
                // `at_least` fit after `wait`; a full slice, that many intervals more or less.
                let slice = i128::from(self.size.max()) - i128::from(ask.at_least);
                let until = now.saturating_add(wait + slice * self.gcra.interval);
                let until = i64::try_from(until.max(now)).unwrap_or(i64::MAX);
                self.refused_until.fetch_max(until, Ordering::SeqCst);
                // A cost given back while the shared state was read, or by this
                // reservation, may have made room: the refusal is not held
                // (`give_back_to_store`).
                if self.given_back.load(Ordering::SeqCst) != given_back {
                    self.refused_until.store(i64::MIN, Ordering::SeqCst);
                }
                Err(refused(rule, wait, extra))
            }
        }
    }
}

/// A refusal by `rule` to retry after `wait` nanoseconds.
fn rate_limited(rule: &RateLimit, wait: i128) -> VerifyError {
    refused(rule, wait, false)
}

/// A refusal by `rule` of a request whose cost fits after `wait` nanoseconds; for a
/// route's `extra` cost, with the wait of its whole cost ([`rate_limited_after`]).
fn refused(rule: &RateLimit, wait: i128, extra: bool) -> VerifyError {
    let wait = u64::try_from(wait.max(0)).unwrap_or(u64::MAX);
    rate_limited_after(rule, Duration::from_nanos(wait), extra.into())
}

/// One shared state in memory, for tests: counting the reservations made of it (what
/// each asked for), the peeks and all its transactions; `down`, each fails as an
/// unreachable store does.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Counted {
    tat: Mutex<Option<i64>>,
    pub(crate) asked: Mutex<Vec<u32>>,
    pub(crate) peeks: std::sync::atomic::AtomicU64,
    /// Transactions run: reservations, give-backs and peeks.
    pub(crate) transactions: AtomicU32,
    pub(crate) down: std::sync::atomic::AtomicBool,
    /// Each reservation commits and then fails, as a commit whose answer was lost does.
    pub(crate) in_doubt: std::sync::atomic::AtomicBool,
    /// Requests given back that moved the state.
    pub(crate) given: AtomicU32,
    /// Run once by the next reservation, after it read the state (another request's
    /// give-back landing meanwhile).
    pub(crate) meanwhile: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

#[cfg(test)]
impl Counted {
    /// A transaction starts: it fails while `down`.
    fn up(&self) -> Result<(), VerifyError> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        match self.down.load(Ordering::SeqCst) {
            true => Err(VerifyError::Unavailable("the store is down".into())),
            false => Ok(()),
        }
    }

    /// Gives `back` to the state `tat`, the clock read with it held: whether it moved.
    fn give_back_in(&self, tat: &mut Option<i64>, rule: &RateLimit, back: GiveBack<'_>) -> bool {
        let GiveBack { cost, until, now } = back;
        let now = now();
        match Gcra::of(rule).give_back(*tat, cost, now) {
            Some(back) if now < until => {
                *tat = Some(back);
                self.given.fetch_add(cost, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
impl RateSource for Counted {
    fn reserve(
        &self,
        rule: &RateLimit,
        ask: Ask,
        now: i128,
        back: Option<GiveBack<'_>>,
    ) -> Result<RateReserved, Unreserved> {
        self.asked.lock().unwrap().push(ask.up_to);
        self.up().map_err(Unreserved::before_commit)?;
        let reserved = {
            let mut tat = self.tat.lock().unwrap();
            let given_back = back.is_some_and(|back| self.give_back_in(&mut tat, rule, back));
            let (next, grant) = Gcra::of(rule).reserve(*tat, now, ask);
            *tat = next;
            RateReserved { grant, given_back }
        };
        if let Some(meanwhile) = self.meanwhile.lock().unwrap().take() {
            meanwhile();
        }
        if self.in_doubt.load(Ordering::SeqCst) {
            return Err(Unreserved {
                error: VerifyError::Unavailable("the commit's answer was lost".into()),
                in_doubt: true,
            });
        }
        Ok(reserved)
    }

    fn give_back(&self, rule: &RateLimit, back: GiveBack<'_>) -> Result<bool, VerifyError> {
        self.up()?;
        Ok(self.give_back_in(&mut self.tat.lock().unwrap(), rule, back))
    }

    fn peek(&self, rule: &RateLimit, now: i128) -> Result<RateGrant, VerifyError> {
        self.peeks.fetch_add(1, Ordering::SeqCst);
        self.up()?;
        let tat = self.tat.lock().unwrap();
        Ok(Gcra::of(rule).reserve(*tat, now, Ask::new(1, 1)).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i128 = 1_000_000_000;

    /// `default`: `limit` requests a `window_seconds`.
    fn default_of(limit: u32, window_seconds: u32) -> RateLimit {
        RateLimit {
            name: "default".into(),
            limit,
            window_seconds,
        }
    }

    fn per_minute(limit: u32) -> Gcra {
        Gcra::of(&default_of(limit, 60))
    }

    #[test]
    fn a_fresh_limit_grants_its_whole_burst_and_no_more() {
        let gcra = per_minute(20);
        let now = 1_000 * SECOND;
        let (tat, grant) = gcra.reserve(None, now, Ask::new(1, 100));
        assert_eq!(
            grant,
            RateGrant::Granted {
                granted: 20,
                left: 0
            }
        );
        assert_eq!(tat, Some(i64::try_from(now + 60 * SECOND).unwrap()));
        // Nothing fits now; one request is back after 3 s.
        let (same, refused) = gcra.reserve(tat, now, Ask::new(1, 1));
        assert_eq!(same, tat);
        assert_eq!(
            refused,
            RateGrant::Refused {
                retry_after: Duration::from_secs(3)
            }
        );
        let (_, later) = gcra.reserve(tat, now + 3 * SECOND, Ask::new(1, 5));
        assert_eq!(
            later,
            RateGrant::Granted {
                granted: 1,
                left: 0
            }
        );
    }

    #[test]
    fn grants_add_up_to_the_limit_whatever_their_sizes() {
        let gcra = per_minute(20);
        let now = 50 * SECOND;
        let mut tat = None;
        let mut total = 0;
        for want in [1, 2, 4, 1, 8, 3, 9] {
            let (next, grant) = gcra.reserve(tat, now, Ask::new(1, want));
            tat = next;
            if let RateGrant::Granted { granted, left } = grant {
                total += granted;
                assert_eq!(left, 20 - total);
            }
        }
        assert_eq!(total, 20);
        // A state a window old is as good as none.
        let (_, grant) = gcra.reserve(tat, now + 60 * SECOND, Ask::new(1, 100));
        assert_eq!(
            grant,
            RateGrant::Granted {
                granted: 20,
                left: 0
            }
        );
    }

    #[test]
    fn at_least_more_than_fits_is_refused_and_more_than_the_limit_never_fits() {
        let gcra = per_minute(20);
        let (tat, _) = gcra.reserve(None, 0, Ask::new(18, 18));
        let (_, grant) = gcra.reserve(tat, 0, Ask::new(3, 3));
        assert_eq!(
            grant,
            RateGrant::Refused {
                retry_after: Duration::from_secs(3)
            }
        );
        let (_, grant) = gcra.reserve(None, 0, Ask::new(21, 21));
        assert_eq!(
            grant,
            RateGrant::Refused {
                retry_after: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn a_slice_is_valid_for_the_time_the_limit_takes_to_win_it_back() {
        let gcra = per_minute(20);
        assert_eq!(gcra.valid_for(1), 3 * SECOND);
        assert_eq!(gcra.valid_for(20), 60 * SECOND);
        assert_eq!(gcra.valid_for(100), 60 * SECOND);
        let fast = Gcra::of(&RateLimit {
            name: "burst".into(),
            limit: 1_000_000,
            window_seconds: 1,
        });
        assert_eq!(fast.valid_for(1), 1_000_000, "at least a millisecond");
    }

    /// A limit of 200 requests a second over a [`Counted`] source.
    fn two_hundred_a_second() -> (RateLimit, Arc<Counted>, SharedLimit) {
        let rule = default_of(200, 1);
        let source = Arc::new(Counted::default());
        let limit = SharedLimit::new(&rule, source.clone());
        (rule, source, limit)
    }

    /// A request whose later limit is known to refuse, once it holds the reservation
    /// lock, reserves nothing (review s57 re-check F1): it is answered that refusal, and
    /// the shared state keeps the whole limit.
    #[test]
    fn a_refusal_still_to_come_reserves_nothing() {
        let (rule, source, limit) = two_hundred_a_second();
        let t0 = 1_000_000_000_000_i128;
        let later = || Some(VerifyError::InsufficientPermission);
        let answer = limit.take_unless(&rule, 1, false, || t0, later);
        assert_eq!(answer, Err(VerifyError::InsufficientPermission));
        assert!(source.asked.lock().unwrap().is_empty(), "no reservation");
        assert_eq!(limit.take(&rule, 1, false, || t0), Ok(199));
        assert_eq!(source.asked.lock().unwrap().len(), 1);
    }

    /// A limit of 2 over a [`Counted`] source, both taken at `t0` (a slice of 1 each).
    fn both_taken(rule: &RateLimit, t0: i128) -> (Arc<Counted>, Arc<SharedLimit>) {
        let source = Arc::new(Counted::default());
        let limit = Arc::new(SharedLimit::new(rule, source.clone()));
        for _ in 0..2 {
            limit.take(rule, 1, false, || t0).unwrap();
        }
        (source, limit)
    }

    /// A refusal answered while other requests' costs held the limit is forgotten once
    /// one of them is given back to the shared state, also when the give-back lands while
    /// the refused reservation runs (re-check s57 F1: refused from memory for its whole
    /// wait, though the limit had room again).
    #[test]
    fn a_cost_given_back_ends_a_refusal_held_in_memory() {
        let rule = default_of(2, 60);
        let t0 = 1_000 * SECOND;
        for during in [false, true] {
            let (source, limit) = both_taken(&rule, t0);
            // The first request is refused by a later step: its cost goes back.
            let give_back = {
                let (limit, rule) = (Arc::clone(&limit), rule.clone());
                move || limit.give_back_to_store(&rule, 1, &|| t0)
            };
            if during {
                *source.meanwhile.lock().unwrap() = Some(Box::new(give_back.clone()));
            }
            let refused = limit.take(&rule, 1, false, || t0);
            assert!(matches!(refused, Err(VerifyError::RateLimited(_))));
            if !during {
                give_back();
            }
            assert_eq!(
                limit.try_take(&rule, 1, false, t0),
                None,
                "during: {during}"
            );
            assert_eq!(
                limit.take(&rule, 1, false, || t0),
                Ok(0),
                "during: {during}"
            );
            // Used up again: refused, and from memory.
            assert!(limit.take(&rule, 1, false, || t0).is_err());
            assert!(matches!(limit.try_take(&rule, 1, false, t0), Some(Err(_))));
        }
    }

    /// A cost given back into the slice while a reservation runs, and what a slice too
    /// short for a cost still held, go back to the shared state when the new slice takes
    /// its place (review s57 L5: overwritten, each was lost to the limit).
    #[test]
    fn a_new_slice_keeps_what_the_old_one_held() {
        let t0 = 1_000 * SECOND;
        let admitted = |limit: &SharedLimit, rule: &RateLimit, cost: u32| {
            let mut n = 0;
            while limit.take(rule, cost, false, || t0).is_ok() {
                n += 1;
            }
            n
        };
        // Given back during the reservation of the second request: three admitted in all.
        let rule = default_of(3, 60);
        let source = Arc::new(Counted::default());
        let limit = Arc::new(SharedLimit::new(&rule, source.clone()));
        limit.take(&rule, 1, false, || t0).unwrap();
        let first = Arc::clone(&limit);
        *source.meanwhile.lock().unwrap() = Some(Box::new(move || first.give_back(1, t0)));
        limit.take(&rule, 1, false, || t0).unwrap();
        assert_eq!(admitted(&limit, &rule, 1), 2);
        // A slice of 10 of a limit of 200 (after 1, 2, 4, 8 and 10), 3 left: a cost of 5
        // reserves anew, and the 3 are not lost; nor are the 3 the last slice, of 8, keeps
        // when the reservation after it is refused (it gives them back: review s58 L2).
        let (rule, source, limit) = three_left(t0);
        assert_eq!(admitted(&limit, &rule, 5), (200 - 32) / 5);
        assert_eq!(source.given.load(Ordering::SeqCst), 3 + 3);
        assert_eq!(admitted(&limit, &rule, 1), (200 - 32) % 5);
        // The same slice lapsed (10 requests, 50 ms) by the time the next one is reserved:
        // its 3 came back by time, and nothing is taken off the shared state.
        let (rule, source, limit) = three_left(t0);
        let lapsed = t0 + SECOND / 20;
        assert!(limit.take(&rule, 5, false, || lapsed).is_ok());
        assert_eq!(source.given.load(Ordering::SeqCst), 0);
    }

    /// A limit of 200 a second, 32 requests taken at `t0`: its slice of 10 (after 1, 2, 4,
    /// 8 and 10) holds 3, fewer than a route's cost of 5.
    fn three_left(t0: i128) -> (RateLimit, Arc<Counted>, SharedLimit) {
        let (rule, source, limit) = two_hundred_a_second();
        for _ in 0..32 {
            limit.take(&rule, 1, false, || t0).unwrap();
        }
        (rule, source, limit)
    }

    /// A slice replaced while it holds fewer requests than a cost gives them back in the
    /// reservation's own transaction (review s58 L2: a second one, under the reservation
    /// lock, made the replacement two round trips), and the shared state ends as after two:
    /// the requests given back are reserved again.
    #[test]
    fn a_slice_replaced_with_requests_left_costs_one_transaction() {
        let t0 = 1_000 * SECOND;
        let (rule, source, limit) = three_left(t0);
        let before = source.transactions.load(Ordering::SeqCst);
        assert_eq!(limit.take(&rule, 5, false, || t0), Ok(200 - 32 - 5));
        let transactions = source.transactions.load(Ordering::SeqCst) - before;
        assert_eq!(transactions, 1, "one transaction");
        assert_eq!(source.given.load(Ordering::SeqCst), 3);
        // 32 taken, 3 given back, a new slice of 10: 42 intervals of 5 ms.
        let tat = i64::try_from(t0 + 42 * SECOND / 200).unwrap();
        assert_eq!(*source.tat.lock().unwrap(), Some(tat));
        let mut admitted = 0;
        while limit.take(&rule, 1, false, || t0).is_ok() {
            admitted += 1;
        }
        assert_eq!(admitted, 200 - 32 - 5);
    }

    /// What a replaced slice held survives a reservation that is refused or fails (review
    /// s58 L2): refused, its transaction still gives them back, and the refusal is not
    /// held, so cheaper requests reserve them; failed before anything committed (the store
    /// down), the old slice serves them on from memory (review s59b L1: they were lost to
    /// the limit); failed with its commit in doubt (it committed, the answer was lost),
    /// they are the shared state's, and the slice does not admit them again.
    #[test]
    fn a_replaced_slice_s_requests_survive_a_refusal_and_a_failure() {
        let t0 = 1_000 * SECOND;
        for case in ["refused", "down", "in doubt"] {
            let (rule, source, limit) = three_left(t0);
            // Other processes took the rest of the limit: with the 3 back, 5 do not fit.
            *source.tat.lock().unwrap() = Some(i64::try_from(t0 + SECOND).unwrap());
            source.down.store(case == "down", Ordering::SeqCst);
            source.in_doubt.store(case == "in doubt", Ordering::SeqCst);
            let before = source.transactions.load(Ordering::SeqCst);
            let failed = limit.take(&rule, 5, false, || t0);
            source.down.store(false, Ordering::SeqCst);
            source.in_doubt.store(false, Ordering::SeqCst);
            let transactions = source.transactions.load(Ordering::SeqCst) - before;
            assert_eq!(transactions, 1, "{case}");
            match case {
                "down" => {
                    assert!(matches!(failed, Err(VerifyError::Unavailable(_))));
                    assert_eq!(source.given.load(Ordering::SeqCst), 0);
                    for _ in 0..3 {
                        assert!(matches!(limit.try_take(&rule, 1, false, t0), Some(Ok(_))));
                    }
                    assert_eq!(limit.try_take(&rule, 1, false, t0), None);
                }
                "in doubt" => {
                    assert!(matches!(failed, Err(VerifyError::Unavailable(_))));
                    assert_eq!(source.given.load(Ordering::SeqCst), 3);
                    assert_eq!(limit.try_take(&rule, 1, false, t0), None, "the store's");
                }
                _ => {
                    assert!(matches!(failed, Err(VerifyError::RateLimited(_))));
                    assert_eq!(source.given.load(Ordering::SeqCst), 3);
                    assert_eq!(limit.try_take(&rule, 1, false, t0), None, "not held");
                    for _ in 0..3 {
                        limit.take(&rule, 1, false, || t0).unwrap();
                    }
                    assert!(limit.take(&rule, 1, false, || t0).is_err());
                }
            }
        }
    }

    /// A give-back that moves nothing (its slice lapsed before the transaction read the
    /// clock, or the store cannot be reached) leaves the refusal held in memory, and the
    /// shared state as it was (review s58 L1, L3).
    #[test]
    fn a_give_back_that_gives_nothing_keeps_the_refusal() {
        let rule = default_of(2, 60);
        let t0 = 1_000 * SECOND;
        for down in [false, true] {
            let (source, limit) = both_taken(&rule, t0);
            assert!(limit.take(&rule, 1, false, || t0).is_err());
            source.down.store(down, Ordering::SeqCst);
            // The clock read in the transaction: the slice (one request, 30 s) lapsed
            // unless the store is down.
            let read = if down { t0 } else { t0 + 30 * SECOND };
            let reads = std::sync::atomic::AtomicU32::new(0);
            let clock = || {
                reads.fetch_add(1, Ordering::SeqCst);
                if reads.load(Ordering::SeqCst) == 1 {
                    t0
                } else {
                    read
                }
            };
            limit.give_back_to_store(&rule, 1, &clock);
            if !down {
                assert_eq!(reads.load(Ordering::SeqCst), 2, "read in the transaction");
            }
            assert_eq!(source.given.load(Ordering::SeqCst), 0, "down: {down}");
            assert!(
                matches!(limit.try_take(&rule, 1, false, t0), Some(Err(_))),
                "down: {down}"
            );
        }
    }

    #[test]
    fn a_cost_above_the_whole_limit_is_refused_without_refusing_cheaper_requests() {
        let (rule, source, limit) = two_hundred_a_second();
        let t0 = 1_000 * SECOND;
        assert!(matches!(
            limit.take(&rule, 201, false, || t0),
            Err(VerifyError::RateLimited(_))
        ));
        assert!(
            limit.try_take(&rule, 1, false, t0).is_none(),
            "no refusal from memory"
        );
        limit.take(&rule, 1, false, || t0).unwrap();
        assert_eq!(*source.asked.lock().unwrap(), [201, 1]);
    }

    /// A route's extra cost refused is told when the route's whole cost fits, its request's
    /// own unit included (one interval more than the extra alone): the next try takes that
    /// unit again before the extra.
    #[test]
    fn a_refused_extra_cost_waits_for_the_whole_cost() {
        let rule = default_of(5, 10);
        let t0 = 1_000 * SECOND;
        let seconds = |refusal| match refusal {
            Some(Err(VerifyError::RateLimited(refused))) => refused.retry_after_seconds,
            other => panic!("{other:?}"),
        };
        // Refused by the shared state, then from memory.
        let retry = |extra: bool| {
            let limit = SharedLimit::new(&rule, Arc::new(Counted::default()));
            limit.take(&rule, 5, false, || t0).unwrap();
            let told = seconds(Some(limit.take(&rule, 4, extra, || t0)));
            (told, seconds(limit.try_take(&rule, 4, extra, t0)))
        };
        // Four back, 2 s apart; and the request's own.
        assert_eq!(retry(false), (8, 8));
        assert_eq!(retry(true), (10, 10));
    }

    /// Two processes sharing a limit of 200 a second, each at 60 requests a second in
    /// irregular gaps (1 to 32 ms): 60% of the limit in all, so none is refused. When a
    /// slice that served more than the request that reserved it kept growing, whatever
    /// the room left, each process held slices of the limit's whole rate without a break:
    /// 2,394 requests reserved for 1,200, and 38 refused.
    #[test]
    fn light_traffic_sharing_a_limit_is_never_refused() {
        let (rule, source, first) = two_hundred_a_second();
        let second = SharedLimit::new(&rule, source.clone());
        let processes = [first, second];
        let mut next = [1_000 * SECOND; 2];
        let mut seed = 7_u64;
        let (mut admitted, mut refused) = (0, 0);
        for _ in 0..1_200 {
            let i = usize::from(next[1] < next[0]);
            let now = next[i];
            let answer = match processes[i].try_take(&rule, 1, false, now) {
                Some(answer) => answer,
                None => processes[i].take(&rule, 1, false, || now),
            };
            match answer {
                Ok(_) => admitted += 1,
                Err(_) => refused += 1,
            }
            // A gap of 1 to 32 ms (16.5 on average), from a fixed pseudo-random sequence.
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            next[i] = now + i128::from((seed >> 59) + 1) * SECOND / 1_000;
        }
        let reserved: u32 = source.asked.lock().unwrap().iter().sum();
        assert_eq!(
            (admitted, refused),
            (1_200, 0),
            "{reserved} requests reserved in {} reservations",
            source.asked.lock().unwrap().len()
        );
    }

    /// One process at a third of the limit (a PostgreSQL daemon alone): the limit keeps
    /// its room, so slices grow to a twentieth of it and the process reserves about 20
    /// times a window, not at each request.
    #[test]
    fn one_process_far_from_its_limit_reserves_about_twenty_times_a_window() {
        let (rule, source, limit) = two_hundred_a_second();
        let t0 = 1_000 * SECOND;
        // 66 requests a second for 10 s, 15 ms apart.
        for i in 0..660 {
            let now = t0 + i * 15 * SECOND / 1_000;
            match limit.try_take(&rule, 1, false, now) {
                Some(answer) => answer.unwrap(),
                None => limit.take(&rule, 1, false, || now).unwrap(),
            };
        }
        let reservations = source.asked.lock().unwrap().len();
        assert!(
            (150..=230).contains(&reservations),
            "{reservations} reservations in 10 windows"
        );
    }

    #[test]
    fn slices_grow_while_the_key_is_busy_and_a_refusal_is_answered_from_memory() {
        let (rule, source, limit) = two_hundred_a_second();
        let t0 = 1_000 * SECOND;
        // Nothing reserved yet: a reservation decides.
        assert!(limit.try_take(&rule, 1, false, t0).is_none());
        // Each slice used up: 1, 2, 4, 8, then 10 (a twentieth of 200) at most.
        let mut admitted = 0;
        while admitted < 60 {
            match limit.try_take(&rule, 1, false, t0) {
                Some(answer) => answer.unwrap(),
                None => limit.take(&rule, 1, false, || t0).unwrap(),
            };
            admitted += 1;
        }
        let asked = source.asked.lock().unwrap().clone();
        assert_eq!(asked[..6], [1, 2, 4, 8, 10, 10], "{asked:?}");
        // A slice is void once the limit has won it back: 10 requests, 50 ms.
        let reserved = asked.len();
        let after = t0 + SECOND / 20;
        assert!(limit.try_take(&rule, 1, false, after).is_none());
        // Used up to the limit: refused, then from memory until a slice fits again.
        let mut refusal = None;
        for _ in 0..300 {
            let answer = match limit.try_take(&rule, 1, false, after) {
                Some(answer) => answer,
                None => limit.take(&rule, 1, false, || after),
            };
            if let Err(e) = answer {
                refusal = Some(e);
                break;
            }
        }
        let calls = source.asked.lock().unwrap().len();
        for _ in 0..100 {
            match limit.try_take(&rule, 1, false, after) {
                Some(Err(VerifyError::RateLimited(refused))) => {
                    assert_eq!(refused.retry_after_seconds, 1);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(refusal, Some(VerifyError::RateLimited(_))));
        assert_eq!(source.asked.lock().unwrap().len(), calls, "no reservation");
        assert!(calls > reserved);
        // Once one fits, a reservation grants it (1: the last grant left no room). While
        // the limit has room, a quiet key's slices grow all the same: what lapses takes
        // nothing anyone waits for.
        let later = after + 2 * SECOND;
        limit.take(&rule, 1, false, || later).unwrap();
        let mut quiet = later;
        for _ in 0..2 {
            quiet += 10 * SECOND;
            limit.take(&rule, 1, false, || quiet).unwrap();
        }
        let last = |n: usize| {
            let asked = source.asked.lock().unwrap();
            asked[asked.len() - n..].to_vec()
        };
        assert_eq!(last(3), [1, 2, 4]);
        // Short of room (other processes hold 150 of the 200): after a slice that lapsed,
        // 1 again once a grant showed it.
        let others_hold_150 = |now: i128| {
            *source.tat.lock().unwrap() = Some(i64::try_from(now + SECOND * 3 / 4).unwrap());
        };
        for _ in 0..3 {
            quiet += 10 * SECOND;
            others_hold_150(quiet);
            limit.take(&rule, 1, false, || quiet).unwrap();
        }
        assert_eq!(last(3), [8, 1, 1]);
        // A request's extra cost that finds its slice used up in time shows nothing of how
        // fast the key comes: 1 again. Another request that does: 2.
        limit.take(&rule, 1, true, || quiet).unwrap();
        limit.take(&rule, 1, false, || quiet).unwrap();
        assert_eq!(last(2), [1, 2]);
    }
}
