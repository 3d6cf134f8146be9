//! A metered key's lease: the slices of its rate limits and credits the daemon granted this
//! verifier (`POST /v1/leases`), from which it admits requests without a round trip.
//!
//! Each bucket (a rate limit, the credits) is leased on its own: a request takes one from
//! every bucket or from none. A rate limit's slice is valid for the `valid_ms` the daemon
//! gave (the time the limit takes to win it back, at most one window); unused, it is void
//! after that, so the verifier never admits from it later than the daemon would have. Its
//! size follows the daemons' own policy ([`SliceSize`]): doubling while the limit had half
//! of itself left at the last grant (the daemon's `left`) or while its slices run short
//! before they lapse, 1 otherwise, so that verifiers sharing a limit near its end do not
//! use it up with slices nobody used. When
//! a bucket runs low (under half of its last grant, for a rate limit one of 2 or more) the
//! verifier asks for more in the background, so a busy key rarely waits; when one is empty
//! a request waits for the daemon's answer, and is refused (`rate_limited`,
//! `usage_exceeded`) when the daemon grants nothing.
//!
//! At shutdown ([`RemoteVerifier::flush_usage`](super::RemoteVerifier::flush_usage)) the
//! credits left unspent are taken out of the lease and given back (`POST
//! /v1/leases/return`); rate limit slices are not: they are void within a window anyway.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use latchkey_core::meter::{RateLimited, beyond_the_limit, rate_limited_after};
use latchkey_core::slice_size::SliceSize;
use latchkey_core::wire::{BucketKind, BucketWant, LeaseGrant, LeaseResponse};
use latchkey_core::{LimitState, RateLimit, VerifyError};
use uuid::Uuid;

/// The most credits a verifier leases at once: at most this many are lost (counted as
/// spent) when it stops without giving them back (killed, or the daemon unreachable).
const MAX_CREDITS_SLICE: u64 = 100;

/// One bucket's slice.
#[derive(Debug)]
struct Bucket {
    kind: BucketKind,
    /// The rate limit's name; empty for the credits.
    name: String,
    /// For a rate limit: its requests per window (what the slice size follows).
    limit: Option<u32>,
    /// For a rate limit: its window.
    window_seconds: Option<u32>,
    left: AtomicU64,
    /// Unix nanoseconds after which `left` is void (`i64::MAX` for credits).
    until: AtomicI64,
    /// Unix nanoseconds at which the slice was granted (`i64::MIN` for credits): before
    /// it, after the clock went back, `left` is void too, so that a step back never
    /// lengthens a slice.
    since: AtomicI64,
    /// Credits: what to ask for next, doubling while the key is busy.
    want: AtomicU64,
    /// A rate limit: the size of its slices.
    size: Option<SliceSize>,
    /// The last grant, for the low-water mark.
    last_grant: AtomicU64,
}

/// What an ask of the daemon is for: how many requests' worth a request waits for (none:
/// a top-up ahead), and whether it is a route's extra cost, charged right after the
/// request's own: a slice it finds used up shows nothing of how fast the key comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Need {
    pub(super) requests: u64,
    extra: bool,
}

impl Need {
    /// A top-up ahead of the requests: the low buckets only.
    pub(super) const AHEAD: Need = Need {
        requests: 0,
        extra: false,
    };
    /// A request's own.
    pub(super) const REQUEST: Need = Need {
        requests: 1,
        extra: false,
    };

    /// A route's extra cost of `requests`.
    pub(super) fn extra_cost(requests: u64) -> Need {
        Need {
            requests,
            extra: true,
        }
    }
}

/// What [`Lease::take`] found.
#[derive(Debug)]
pub(super) enum Take {
    /// One request's worth taken from every bucket.
    Taken,
    /// Some bucket is empty: ask the daemon.
    Short,
    /// The allowlist refuses the client.
    Refused(VerifyError),
}

/// A metered key's lease; shared by its cache entry's clones, dropped with it.
#[derive(Debug)]
pub(super) struct Lease {
    buckets: Box<[Bucket]>,
    /// `None` until the daemon's first grant tells the allowlist.
    allowed_ips: Mutex<Option<Vec<IpNet>>>,
    /// Why the daemon last granted nothing, for the request that finds a bucket empty.
    refusal: Mutex<Option<VerifyError>>,
    /// One request to the daemon at a time per key.
    pub(super) asking: tokio::sync::Mutex<()>,
    /// A background request is on its way.
    pub(super) topping_up: AtomicBool,
    /// Taken from since the last usage report ([`Lease::idle`]).
    used: AtomicBool,
    /// The key's id, to give unspent credits back.
    key_id: Uuid,
}

impl Lease {
    /// A lease with nothing granted yet, of the buckets `/v1/verify` reported for the key
    /// `key_id`.
    pub(super) fn new(limits: &[LimitState], key_id: Uuid) -> Lease {
        let buckets = limits
            .iter()
            .map(|l| {
                let (kind, name) = match l.limit {
                    Some(_) => (BucketKind::RateLimit, l.name.clone()),
                    None => (BucketKind::Credits, String::new()),
                };
                Bucket {
                    kind,
                    name,
                    limit: l.limit,
                    window_seconds: l.window_seconds,
                    left: AtomicU64::new(0),
                    until: AtomicI64::new(0),
                    since: AtomicI64::new(i64::MIN),
                    want: AtomicU64::new(1),
                    size: l.limit.map(SliceSize::new),
                    last_grant: AtomicU64::new(0),
                }
            })
            .collect();
        Lease {
            key_id,
            buckets,
            allowed_ips: Mutex::new(None),
            refusal: Mutex::new(None),
            asking: tokio::sync::Mutex::new(()),
            topping_up: AtomicBool::new(false),
            used: AtomicBool::new(true),
        }
    }

    /// Takes `requests` requests' worth from every bucket, or from none, for a client at
    /// `client`: one for a request, a route's extra cost for a route that costs more.
    pub(super) fn take(&self, client: Option<IpAddr>, now: i64, requests: u64) -> Take {
        match &*self.allowed_ips.lock().unwrap_or_else(|e| e.into_inner()) {
            None => return Take::Short,
            Some(ips) => {
                if let Err(refused) = latchkey_core::meter::check_ip(ips, client) {
                    return Take::Refused(refused);
                }
            }
        }
        for (i, bucket) in self.buckets.iter().enumerate() {
            let valid = bucket.valid(now);
            let taken = valid
                && bucket
                    .left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                        l.checked_sub(requests)
                    })
                    .is_ok();
            if !taken {
                for earlier in &self.buckets[..i] {
                    earlier.left.fetch_add(requests, Ordering::AcqRel);
                }
                return Take::Short;
            }
        }
        self.used.store(true, Ordering::Relaxed);
        Take::Taken
    }

    /// Whether nothing was taken from the lease since the last call: its unspent credits
    /// then go back at the usage report, as a daemon gives back an idle key's slice, so a
    /// quiet app does not hold them from the other apps (it did, until the key's answer
    /// left its cache at its next request, minutes or hours later).
    pub(super) fn idle(&self) -> bool {
        !self.used.swap(false, Ordering::AcqRel)
    }

    /// Puts back the credit a request took when its route refused it (403, or its extra
    /// cost refused): a refused request spends none. A lease never granted credits holds
    /// it from then on, as a slice of one: that request was admitted by the daemon's
    /// verification, which recorded its credit as leased to this verifier, so the daemon
    /// takes it back with the lease's unspent credits (before, it stayed spent: the first
    /// request of a key, a miss, refused with 403, spent its credit). A grant landing at
    /// the same moment may overwrite it: it then stays spent, never counted twice.
    pub(super) fn give_back_credit(&self) {
        for bucket in self
            .buckets
            .iter()
            .filter(|b| b.kind == BucketKind::Credits)
        {
            bucket.left.fetch_add(1, Ordering::AcqRel);
            // Opened as a grant of credits opens it, valid for ever (`Bucket::add`; `since`
            // is `i64::MIN` from the start); a slice granted already keeps its window
            // (review s59 I3).
            let _ = bucket
                .until
                .compare_exchange(0, i64::MAX, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Takes every credit left unspent out of the lease (so none is both spent and given
    /// back), with the key to give them back for; `None` when there are none.
    pub(super) fn unspent_credits(&self) -> Option<(Uuid, u64)> {
        let left = self
            .buckets
            .iter()
            .filter(|b| b.kind == BucketKind::Credits)
            .map(|b| b.left.swap(0, Ordering::AcqRel))
            .sum::<u64>();
        (left > 0).then_some((self.key_id, left))
    }

    /// Whether the daemon told the allowlist yet.
    pub(super) fn knows_allowlist(&self) -> bool {
        self.allowed_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether a bucket is low: time to ask for more in the background.
    pub(super) fn low(&self, now: i64) -> bool {
        self.buckets.iter().any(|b| b.low(now))
    }

    /// What to ask the daemon for: every low bucket, and every bucket that holds less than
    /// `need` (a request that waits for that many requests' worth), at least what that
    /// bucket lacks. Sizes each rate limit's next slice: one ask at a time per key (the
    /// `asking` lock) calls this.
    pub(super) fn wants(&self, now: i64, need: Need) -> Vec<BucketWant> {
        self.buckets
            .iter()
            .filter_map(|b| {
                let lacking = need.requests.saturating_sub(b.held(now));
                (b.low(now) || lacking > 0).then(|| BucketWant {
                    kind: b.kind,
                    name: (b.kind == BucketKind::RateLimit).then(|| b.name.clone()),
                    want: b
                        .next_want(now, lacking, need.extra)
                        .max(lacking)
                        .min(latchkey_core::limits::MAX_LEASE),
                })
            })
            .collect()
    }

    /// Adds the daemon's grants. `Err` with the daemon's refusal of the key itself.
    pub(super) fn grant(&self, answer: &LeaseResponse, now: i64) -> Result<(), VerifyError> {
        if !answer.valid {
            return Err(super::client::refusal(&answer.code, None, None));
        }
        *self.allowed_ips.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(answer.allowed_ips.clone());
        let mut refusal = None;
        for grant in &answer.grants {
            let Some(bucket) = self.buckets.iter().find(|b| {
                b.kind == grant.kind && grant.name.as_deref().unwrap_or_default() == b.name
            }) else {
                continue;
            };
            bucket.add(grant, now);
            if grant.granted == 0 {
                refusal = Some(refused(bucket, grant));
            }
        }
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = refusal;
        Ok(())
    }

    /// The refusal of what `need` asks for when a rate limit of the key never passes it,
    /// being more than its whole limit (core's [`beyond_the_limit`], the daemon's and the
    /// embedded layer's rule), without asking the daemon (whose grants of what the limit
    /// has left would say when that comes back, not that it will never be enough).
    pub(super) fn beyond_a_limit(&self, need: Need) -> Option<VerifyError> {
        self.buckets.iter().find_map(|b| {
            let limit = b.limit?;
            let rule = RateLimit {
                name: b.name.clone(),
                limit,
                window_seconds: b.window_seconds.unwrap_or(1),
            };
            beyond_the_limit(&rule, need.requests, need.extra)
        })
    }

    /// Whether the daemon's last answer granted nothing of some bucket.
    pub(super) fn refused(&self) -> bool {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the credits, not a limit, hold less than `need` requests' worth at `now`.
    pub(super) fn credits_short(&self, now: i64, need: u64) -> bool {
        self.buckets
            .iter()
            .any(|b| b.kind == BucketKind::Credits && b.held(now) < need)
    }

    /// Why a request found a bucket empty after asking: the daemon's last refusal. Without
    /// one, the daemon granted every bucket but other requests took the grant first (or it
    /// lapsed): nothing says the key is over a limit, so rather than a 429 with a policy
    /// the key may not have, the request is answered as one the daemon could not serve.
    pub(super) fn refusal(&self) -> VerifyError {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| {
                VerifyError::Unavailable(
                    "the daemon's grant of the key's limits was used up by other requests"
                        .to_owned(),
                )
            })
    }

    /// [`Lease::refusal`] of what `need` asks for. A route's extra cost refused by a rate
    /// limit is told when the route's whole cost fits, the request's own unit counted in
    /// (core's [`rate_limited_after`], as the embedded layer answers): the daemon's wait
    /// for one request, and one interval for each of the extra's.
    pub(super) fn refusal_for(&self, need: Need) -> VerifyError {
        match self.refusal() {
            VerifyError::RateLimited(refused) if need.extra => {
                let wait = Duration::from_secs(refused.retry_after_seconds);
                rate_limited_after(&refused.limit, wait, need.requests)
            }
            other => other,
        }
    }
}

impl Bucket {
    /// Whether the slice may be admitted from at `now`: within the window it was granted
    /// for, on a clock that did not go back before its grant.
    fn valid(&self, now: i64) -> bool {
        (self.since.load(Ordering::Acquire)..self.until.load(Ordering::Acquire)).contains(&now)
    }

    /// What the slice holds that may be admitted at `now`.
    fn held(&self, now: i64) -> u64 {
        if self.valid(now) {
            self.left.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// Time to ask for more in the background. Credits: void, or under half of the last
    /// grant. A rate limit: under half of a grant of 2 or more, still valid. A void slice,
    /// or one of 1 (which the request that asked took), is no sign the key comes at the
    /// limit's rate: a slice asked for ahead would lapse unused, and the limit would count
    /// it all the same.
    fn low(&self, now: i64) -> bool {
        let last_grant = self.last_grant.load(Ordering::Acquire);
        let half_used = self.left.load(Ordering::Acquire).saturating_mul(2) < last_grant.max(1);
        match self.size {
            None => !self.valid(now) || half_used,
            Some(_) => self.valid(now) && last_grant >= 2 && half_used,
        }
    }

    /// The size to ask for: the credits' next, or a rate limit's [`SliceSize`]: for a
    /// request `lacking` some, grown when it found the slice still valid (it ran short in
    /// time; not for an `extra` cost) or the limit has room, else 1; for a top-up, grown
    /// while the limit has room, else kept.
    fn next_want(&self, now: i64, lacking: u64, extra: bool) -> u64 {
        match &self.size {
            None => self.want.load(Ordering::Relaxed),
            Some(size) if lacking > 0 => u64::from(size.reserve(self.valid(now) && !extra)),
            Some(size) => u64::from(size.top_up()),
        }
    }

    fn add(&self, grant: &LeaseGrant, now: i64) {
        // Never more than any request asks for: a daemon that answers more (by a bug, or
        // an impostor) cannot lift the limit or wrap the counter.
        let granted = grant.granted.min(latchkey_core::limits::MAX_LEASE);
        let (since, until) = match grant.valid_ms {
            Some(ms) => (
                now,
                now.saturating_add(i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            ),
            None => (i64::MIN, i64::MAX),
        };
        if !self.valid(now) {
            // The old slice is void: start from this grant.
            self.left.store(granted, Ordering::Release);
            self.since.store(since, Ordering::Release);
        } else {
            // Top-ups add at most MAX_LEASE each; saturate all the same.
            let _ = self
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                    Some(l.saturating_add(granted))
                });
        }
        if granted > 0 {
            self.until.store(until, Ordering::Release);
        }
        self.last_grant.store(granted, Ordering::Relaxed);
        if let Some(size) = &self.size {
            // A refusal: no room. A daemon that predates `left` tells none.
            match (granted, grant.left) {
                (0, _) => size.granted(0),
                (_, Some(left)) => size.granted(left),
                _ => {}
            }
        }
        if self.kind == BucketKind::Credits && granted > 0 {
            // Credits: double while the key is busy, as the daemon's own meter does.
            let next = (self.want.load(Ordering::Relaxed) * 2).min(MAX_CREDITS_SLICE);
            self.want.store(next, Ordering::Relaxed);
        }
    }
}

/// The refusal a bucket's empty grant stands for.
fn refused(bucket: &Bucket, grant: &LeaseGrant) -> VerifyError {
    match bucket.kind {
        BucketKind::Credits => VerifyError::UsageExceeded {
            retry_after_seconds: grant.retry_after.map(|s| s.max(1)),
        },
        BucketKind::RateLimit => VerifyError::RateLimited(Box::new(RateLimited {
            limit: RateLimit {
                name: bucket.name.clone(),
                limit: grant.limit.or(bucket.limit).unwrap_or(1),
                window_seconds: grant.window_seconds.or(bucket.window_seconds).unwrap_or(1),
            },
            retry_after_seconds: grant.retry_after.unwrap_or(1).max(1),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    /// The daemon's answer granting `granted` of the limit `default` and of the credits.
    fn answer(granted: u64) -> LeaseResponse {
        answer_of(granted, granted)
    }

    /// The daemon's answer granting `limit` of the limit `default` (of 100 a minute) and
    /// `credits` of the credits.
    fn answer_of(limit: u64, credits: u64) -> LeaseResponse {
        let grant = |kind, name: Option<&str>, granted| LeaseGrant {
            kind,
            name: name.map(str::to_owned),
            granted,
            valid_ms: name.map(|_| 60_000),
            retry_after: None,
            limit: name.map(|_| 100),
            window_seconds: name.map(|_| 60),
            left: None,
        };
        LeaseResponse {
            valid: true,
            code: "ok".to_owned(),
            allowed_ips: Vec::new(),
            grants: vec![
                grant(BucketKind::RateLimit, Some("default"), limit),
                grant(BucketKind::Credits, None, credits),
            ],
        }
    }

    /// A lease of a limit `default` of 100 and of credits, granted `limit` and `credits`.
    fn granted(limit: u64, credits: u64) -> Lease {
        let state = |name: &str, limit: Option<u32>| LimitState {
            name: name.to_owned(),
            limit,
            window_seconds: limit.map(|_| 60),
            remaining: 0,
            reset_seconds: None,
        };
        let lease = Lease::new(
            &[state("default", Some(100)), state("credits", None)],
            Uuid::nil(),
        );
        lease.grant(&answer_of(limit, credits), NOW).unwrap();
        lease
    }

    #[test]
    fn a_cost_is_taken_from_every_bucket_or_from_none() {
        let lease = granted(10, 4);
        // The credits hold 4: a cost of 5 takes nothing, from the limit either.
        assert!(matches!(lease.take(None, NOW, 5), Take::Short));
        assert!(matches!(lease.take(None, NOW, 4), Take::Taken));
        assert!(matches!(lease.take(None, NOW, 1), Take::Short));
        // What was taken: 4 of the limit's 10, all 4 credits.
        let wants = lease.wants(NOW, Need::extra_cost(7));
        let want = |kind| wants.iter().find(|w| w.kind == kind).map(|w| w.want);
        assert_eq!(want(BucketKind::Credits), Some(7), "{wants:?}");
        // The limit holds 6 of its 10 (not low), 1 less than 7: it is asked for what it
        // lacks (an extra cost that finds a slice short shows nothing of how fast the key
        // comes, and the daemon told no room).
        assert_eq!(want(BucketKind::RateLimit), Some(1), "{wants:?}");
    }

    /// A request's own credit goes back when its route's extra cost is refused; its rate
    /// limit keeps the count.
    #[test]
    fn a_credit_given_back_is_a_credit_again_and_no_request_of_a_limit() {
        let lease = granted(2, 1);
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        assert!(
            matches!(lease.take(None, NOW, 1), Take::Short),
            "no credit left"
        );
        lease.give_back_credit();
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        lease.give_back_credit();
        assert!(
            matches!(lease.take(None, NOW, 1), Take::Short),
            "the limit is spent"
        );
        // A lease never granted credits holds the one given back: the daemon's verification
        // took it, as leased to this verifier, which gives it back unspent or admits from it.
        let credits = LimitState {
            name: "credits".to_owned(),
            limit: None,
            window_seconds: None,
            remaining: 0,
            reset_seconds: None,
        };
        let empty = Lease::new(&[credits], Uuid::nil());
        empty.give_back_credit();
        assert_eq!(empty.unspent_credits(), Some((Uuid::nil(), 1)));
        assert_eq!(empty.unspent_credits(), None, "taken out once");
    }

    #[test]
    fn a_shortfall_of_credits_is_told_from_one_of_a_limit() {
        let lease = granted(10, 2);
        assert!(matches!(lease.take(None, NOW, 3), Take::Short));
        assert!(lease.credits_short(NOW, 3));
        assert!(!lease.credits_short(NOW, 2));
        assert!(matches!(lease.take(None, NOW, 2), Take::Taken));
        // A limit that holds too little is no shortfall of the credits.
        let limited = granted(2, 10);
        assert!(matches!(limited.take(None, NOW, 3), Take::Short));
        assert!(!limited.credits_short(NOW, 3));
    }

    /// Near its limit, a rate limit is leased a request at a time while its slices lapse
    /// before they run short (the key comes slower than the limit's rate), and doubles
    /// only when a request finds one used up in time; a slice used up is topped up in the
    /// background at its size. (Slices of a twentieth of the limit, asked for ahead, used
    /// two verifiers' shared limit up under light traffic.) While the limit has half of
    /// itself left, slices grow all the same.
    #[test]
    fn a_rate_limit_slice_grows_only_when_it_runs_short_in_time_or_has_room() {
        let wanted = |lease: &Lease, now, need| {
            let wants = lease.wants(now, need);
            wants
                .iter()
                .find(|w| w.kind == BucketKind::RateLimit)
                .map(|w| w.want)
        };
        let lease = granted(1, 100);
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        // A slice of 1 that its request took: nothing to top up in the background.
        assert!(!lease.low(NOW));
        assert_eq!(wanted(&lease, NOW, Need::AHEAD), None);
        // The next request after it lapsed: 1 again, and again.
        let later = NOW + 61_000 * 1_000_000;
        assert!(matches!(lease.take(None, later, 1), Take::Short));
        assert_eq!(wanted(&lease, later, Need::REQUEST), Some(1));
        assert_eq!(wanted(&lease, later, Need::REQUEST), Some(1));
        // Within the slice's time: a route's extra cost shows nothing; a request that
        // finds it used up does: 2, then 4.
        assert!(matches!(lease.take(None, NOW, 1), Take::Short));
        assert_eq!(wanted(&lease, NOW, Need::extra_cost(1)), Some(1));
        assert_eq!(wanted(&lease, NOW, Need::REQUEST), Some(2));
        lease.grant(&answer_of(2, 0), NOW).unwrap();
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        assert!(!lease.low(NOW), "half of 2 left");
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        assert!(lease.low(NOW));
        assert_eq!(
            wanted(&lease, NOW, Need::AHEAD),
            Some(2),
            "a top-up keeps its size"
        );
        assert_eq!(wanted(&lease, NOW, Need::REQUEST), Some(4));
        // A twentieth of the limit (100) at most.
        for _ in 0..5 {
            wanted(&lease, NOW, Need::REQUEST);
        }
        assert_eq!(wanted(&lease, NOW, Need::REQUEST), Some(5));
        // The daemon says the limit has half of itself left: a lapsed slice grows, and so
        // does a top-up; with less left, it is 1 again.
        let roomy = granted(1, 100);
        let mut answer = answer_of(2, 0);
        answer.grants[0].left = Some(50);
        roomy.grant(&answer, NOW).unwrap();
        assert_eq!(wanted(&roomy, later, Need::REQUEST), Some(2));
        assert!(matches!(roomy.take(None, NOW, 3), Take::Taken));
        assert_eq!(wanted(&roomy, NOW, Need::AHEAD), Some(4));
        answer.grants[0].left = Some(49);
        roomy.grant(&answer, NOW).unwrap();
        assert_eq!(wanted(&roomy, later, Need::REQUEST), Some(1));
    }

    #[test]
    fn a_void_slice_holds_nothing() {
        let lease = granted(10, 10);
        let later = NOW + 60_000 * 1_000_000;
        assert!(matches!(lease.take(None, later, 1), Take::Short));
        assert!(matches!(lease.take(None, NOW, 10), Take::Taken));
    }

    /// A clock that went back before a grant does not lengthen its slice: the limit's slice
    /// is void then (credits, which no window bounds, are not).
    #[test]
    fn a_clock_gone_back_before_a_grant_voids_its_slice() {
        let lease = granted(10, 10);
        let earlier = NOW - 1_000_000;
        assert!(matches!(lease.take(None, earlier, 1), Take::Short));
        assert_eq!(lease.buckets[1].held(earlier), 10, "credits stay");
        assert!(matches!(lease.take(None, NOW, 10), Take::Taken));
    }

    #[test]
    fn a_grant_is_capped_to_what_any_request_asks_for() {
        use latchkey_core::limits::MAX_LEASE;
        let lease = granted(u64::MAX, u64::MAX);
        // Granted again on top: capped, it neither wraps nor lifts the limit.
        lease.grant(&answer(u64::MAX), NOW).unwrap();
        assert!(matches!(
            lease.take(None, NOW, 2 * MAX_LEASE + 1),
            Take::Short
        ));
        assert!(matches!(lease.take(None, NOW, 2 * MAX_LEASE), Take::Taken));
    }

    #[test]
    fn a_used_up_grant_without_a_refusal_is_no_invented_rate_limit() {
        let lease = granted(1, 1);
        assert!(matches!(lease.take(None, NOW, 1), Take::Taken));
        assert!(matches!(lease.take(None, NOW, 1), Take::Short));
        assert!(
            matches!(lease.refusal(), VerifyError::Unavailable(_)),
            "{:?}",
            lease.refusal()
        );
    }
}
