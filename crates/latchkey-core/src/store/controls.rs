//! A key's usage control as stored (`kc:<public id>`, beside the key record, so records
//! written before it decode as they are), the run-time meters built from it, and the
//! credits' reservations.
//!
//! **Credits are reserved a slice at a time.** The stored `remaining` is the balance no
//! process holds. A meter spends a *slice* it reserved from it in a small transaction of
//! its own (`balance -= slice`, durable before a credit of it is spent: sled flushed,
//! redb and PostgreSQL committed, whatever a flush after says), reserves again when the slice runs out, and gives back what is
//! unspent at a flush (an idle key's slice at each periodic flush, every slice at `flush`
//! and at close). Slices start at 1 and double while the key stays busy, up to
//! [`MAX_SLICE`](crate::meter::MAX_SLICE) and to an eighth of what is left, so the
//! last credits go one at a time. So processes sharing a database never grant together
//! more than the balance, and a `kill -9` loses at most the unspent slices, counted as
//! spent: never granted twice.
//!
//! Changes compose with the slices out there:
//! - `add` adds to the stored balance; slices stay valid (the version does not change).
//! - `set` (and `clear`, and the drain of a rotated key) writes the new balance and a new
//!   *credit epoch* (`version`'s high half: [`voiding`]): every slice reserved before is
//!   void (this process drops its own at once; another drops its own when it applies the
//!   change, and reserves from the new balance).
//! - Any other change (limits, allowlist, meta) writes a new version of the same epoch:
//!   every process carries its slice over to the new meter (this one at once, another when
//!   it applies the change) and may give it back meanwhile. Rate limiters whose rules stay
//!   the same are carried over to the new meter with their state (and on shared storage,
//!   their stored state with them: `rate_state.rs`); only a change of the rules starts
//!   them afresh.
//! - A refill sets the balance at the period's start, in the first reservation after it;
//!   a slice belongs to its period and is void after it.
//! - A slice goes back only to the epoch and period it was reserved from.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::{Backend, KvTx, TxError};
use super::rate_state::StoreRates;
use super::{Inner, Store, decode, encode, layout};
use crate::clock::Clock;
use crate::controls::{Credits, RateLimit, Refill, canonical_net};
use crate::error::StoreError;
use crate::key::PublicId;
use crate::meter::{
    CreditMeter, CreditSource, KeyMeter, Limit, Meter, Reserved, next_refill_after, same_epoch,
};
use crate::shared_limit::RateSource;
use crate::verify::VerifyError;

/// The version after a change that voids the credit slices reserved before (a balance
/// set or cleared, a rotation's drain): the next credit epoch. A version's high 32 bits
/// count those changes, its low 32 bits the others (`version + 1`), so a slice is good
/// across every change of its epoch and the record's layout stays as it was: stores
/// written before epochs hold versions of epoch 0.
pub(crate) fn voiding(version: u64) -> u64 {
    ((version >> 32) + 1) << 32
}

/// A key's usage control as stored (postcard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlsRecord {
    /// Raised at every change, so a meter built from an older record is never flushed;
    /// by [`voiding`] for a change that voids the credit slices.
    pub(crate) version: u64,
    /// `meta` as JSON text (postcard cannot carry a `serde_json::Value`).
    pub(crate) meta: Option<String>,
    pub(crate) rate_limits: Vec<RateLimit>,
    pub(crate) credits: Option<StoredCredits>,
    pub(crate) allowed_ips: Vec<IpNet>,
}

/// Credits as stored: the balance at the last flush or change, and the next refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCredits {
    pub(crate) remaining: u64,
    pub(crate) refill: Option<Refill>,
    /// Unix nanoseconds of the next refill.
    pub(crate) next_refill: Option<i64>,
}

impl StoredCredits {
    /// The end of the current refill period (`i64::MAX` without a refill).
    pub(crate) fn period(&self) -> i64 {
        self.next_refill.unwrap_or(i64::MAX)
    }

    /// These credits after the refill due at `now`, if one is.
    pub(crate) fn current(self, now: i128) -> StoredCredits {
        match self.refill {
            Some(refill) if now >= i128::from(self.period()) => StoredCredits {
                remaining: refill.amount,
                refill: self.refill,
                next_refill: Some(
                    i64::try_from(next_refill_after(&refill, now)).unwrap_or(i64::MAX),
                ),
            },
            _ => self,
        }
    }
}

impl ControlsRecord {
    /// Whether it controls nothing (then it is not stored at all).
    pub(crate) fn is_empty(&self) -> bool {
        self.meta.is_none()
            && self.rate_limits.is_empty()
            && self.credits.is_none()
            && self.allowed_ips.is_empty()
    }

    /// Whether verification must meter the key (`meta` alone needs no meter).
    fn meters(&self) -> bool {
        !self.rate_limits.is_empty() || self.credits.is_some() || !self.allowed_ips.is_empty()
    }

    pub(crate) fn meta_value(&self) -> Option<serde_json::Value> {
        self.meta
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
    }

    /// The credits as shown: the balance (after a refill that came due) plus `own`, the
    /// slice this process holds unspent.
    pub(crate) fn credits_view(&self, own: u64, now: i128) -> Option<Credits> {
        self.credits.map(|c| {
            let current = c.current(now);
            Credits {
                remaining: current.remaining + own,
                refill: c.refill,
            }
        })
    }

    /// New credits as stored, their first refill due after `now`.
    pub(crate) fn store_credits(credits: Credits, now: i128) -> StoredCredits {
        StoredCredits {
            remaining: credits.remaining,
            refill: credits.refill,
            next_refill: credits
                .refill
                .map(|r| i64::try_from(next_refill_after(&r, now)).unwrap_or(i64::MAX)),
        }
    }
}

/// Every metered key's meter, by record id; the verify cache's entries hold them too.
#[derive(Default)]
pub(crate) struct Meters(Mutex<HashMap<Uuid, Meter>>);

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

impl Meters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Meter>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any key is metered here (its rate limiters' state or credit slice would be
    /// persisted at close).
    pub(crate) fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The meter of a key as `record` describes it: the one in use when it was built from
    /// the same version, else a new one that keeps the old one's rate limiters when their
    /// rules are the same, and its credit slice when of the same epoch (else the slice is
    /// dropped: see the module docs). `None` when the key needs none.
    ///
    /// A caller that read the record before a change committed (and its meter settled)
    /// gets the newer meter in use: an older record never replaces it, which would drop
    /// the slice it carried over and start its limits afresh.
    pub(crate) fn meter(
        &self,
        key: Uuid,
        record: &ControlsRecord,
        store: &Weak<Inner>,
        clock: &Arc<dyn Clock>,
    ) -> Option<Meter> {
        let mut all = self.lock();
        if let Some(meter) = all.get(&key).filter(|m| m.0.version > record.version) {
            return Some(meter.clone());
        }
        if !record.meters() {
            all.remove(&key);
            return None;
        }
        if let Some(meter) = all.get(&key).filter(|m| m.0.version == record.version) {
            return Some(meter.clone());
        }
        // The same rules go on with the same state: only a change of the limits themselves
        // starts them afresh.
        let carried = all
            .get(&key)
            .filter(|m| m.0.version < record.version && same_rules(&m.0.limits, record))
            .map(|m| (Arc::clone(&m.0.limits), m.0.rates.clone()));
        if let Some(rates) = carried.as_ref().and_then(|(_, rates)| rates.as_ref()) {
            rates.carry_to(record.version);
        }
        // Taken under the reservation lock, or not at all (then it stays with the retired
        // meter: counted as spent).
        let slice = all
            .get(&key)
            .filter(|m| same_epoch(m.0.version, record.version))
            .and_then(|m| m.0.credits.as_ref())
            .and_then(CreditMeter::take_slice);
        let meter = build(key, record, store, clock, carried);
        if let (Some(credits), Some((slice, period))) = (meter.0.credits.as_ref(), slice) {
            credits.put_slice(slice, period);
        }
        all.insert(key, meter.clone());
        Some(meter)
    }

    /// The unspent slice this process holds of a key's credits, when its meter was built
    /// from `version`'s epoch and its period is not over at `now`.
    pub(crate) fn own_slice(&self, key: Uuid, version: u64, now: i128) -> u64 {
        let all = self.lock();
        let credits = all
            .get(&key)
            .filter(|m| same_epoch(m.0.version, version))
            .and_then(|m| m.0.credits.as_ref());
        match credits {
            Some(c) if now < i128::from(c.period.load(Ordering::Acquire)) => {
                c.slice.load(Ordering::Acquire)
            }
            _ => 0,
        }
    }

    /// Takes away the unspent slice this process holds of a key's credits, when its meter
    /// was built from `version`'s epoch and its period is not over at `now`: the slice and its
    /// period, for a write that moves it elsewhere (a rotation) and, should that write not
    /// commit, [`Meters::put_back`]. From then on the meter reserves anew, so no credit of
    /// the slice is spent by it and counted elsewhere too.
    pub(crate) fn take_own_slice(&self, key: Uuid, version: u64, now: i128) -> (u64, i64) {
        let meter = self
            .lock()
            .get(&key)
            .filter(|m| same_epoch(m.0.version, version))
            .cloned();
        match meter.as_ref().and_then(|m| m.0.credits.as_ref()) {
            // While it reserves, it keeps its slice, which the write then voids.
            Some(c) if now < i128::from(c.period.load(Ordering::Acquire)) => {
                c.take_slice().unwrap_or((0, i64::MAX))
            }
            _ => (0, i64::MAX),
        }
    }

    /// Gives back to a key's meter of `version`'s epoch a slice [`Meters::take_own_slice`]
    /// took for a write that did not commit (while the meter reserves, it adds them when
    /// the reservation ends).
    pub(crate) fn put_back(&self, key: Uuid, version: u64, (slice, period): (u64, i64)) {
        let meter = self
            .lock()
            .get(&key)
            .filter(|m| same_epoch(m.0.version, version))
            .cloned();
        if let Some(credits) = meter.as_ref().and_then(|m| m.0.credits.as_ref()) {
            credits.put_slice(slice, period);
        }
    }

    /// After a change to a key's controls committed (as `record`): a new version retires
    /// the old meter, whose slice the new one takes over when `carry`, or else is void; a
    /// change of the balance alone is what the meter reports from now on.
    pub(crate) fn settle(
        &self,
        key: Uuid,
        old_version: u64,
        carry: bool,
        record: &ControlsRecord,
        store: &Weak<Inner>,
        clock: &Arc<dyn Clock>,
    ) {
        // Of `old_version`'s epoch: a meter not yet rebuilt since another process's change
        // of the same epoch holds the same slice.
        let old = self
            .lock()
            .get(&key)
            .filter(|m| same_epoch(m.0.version, old_version))
            .cloned();
        // A slice carried over is taken under the reservation lock, or not at all (then it
        // stays with the retired meter: counted as spent); a void one is dropped at once.
        let taken = old
            .as_ref()
            .and_then(|m| m.0.credits.as_ref())
            .filter(|_| record.version != old_version)
            .and_then(|c| match carry {
                true => c.take_slice(),
                false => Some(c.void_slice()),
            });
        let Some(new) = self.meter(key, record, store, clock) else {
            return;
        };
        let Some(credits) = new.0.credits.as_ref() else {
            return;
        };
        if let Some(stored) = record.credits {
            credits.left.store(stored.remaining, Ordering::Release);
        }
        if let Some((slice, period)) = taken.filter(|_| carry) {
            credits.put_slice(slice, period);
        }
    }

    /// After key `from` was rotated to `to`, whose controls are `record`: `to`'s meter goes
    /// on from the rate limits' state of `from`'s (usage hunt s56 M4: it started them
    /// afresh), as a copy. Only for limits this process keeps (an embedded store); a
    /// database several processes share had the state copied by the rotation's
    /// transaction. Nothing when this process holds no meter of `from` (its limits are
    /// whole then, as at a start) or `to`'s limits differ.
    pub(crate) fn succeed(
        &self,
        from: Uuid,
        to: Uuid,
        record: &ControlsRecord,
        store: &Weak<Inner>,
        clock: &Arc<dyn Clock>,
    ) {
        let mut all = self.lock();
        if all.contains_key(&to) {
            return;
        }
        let Some(old) = all
            .get(&from)
            .filter(|m| !m.0.limits.is_empty() && same_rules(&m.0.limits, record))
        else {
            return;
        };
        let Some(limits) = old
            .0
            .limits
            .iter()
            .map(|limit| limit.successor(clock))
            .collect::<Option<Arc<[Limit]>>>()
        else {
            return;
        };
        let meter = build(to, record, store, clock, Some((limits, None)));
        all.insert(to, meter);
    }

    /// Forgets every key's meter (the database's history went back: see `follow.rs`).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Forgets a deleted key's meter.
    pub(crate) fn remove(&self, key: Uuid) {
        self.lock().remove(&key);
    }

    /// The meter this process holds for a key now, if any.
    fn current(&self, key: Uuid) -> Option<Meter> {
        self.lock().get(&key).cloned()
    }

    /// Every meter with credits.
    fn with_credits(&self) -> Vec<(Uuid, Meter)> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.0.credits.is_some())
            .map(|(k, m)| (*k, m.clone()))
            .collect()
    }
}

impl Store {
    /// The meter this process holds for the key `key_id` now (the key's own, which its
    /// verifications join with its user's), or `None` when it holds none. A caller that
    /// kept a principal's [`Meter`] tells with [`Meter::same_credits`] whether its credits
    /// are still the key's: any change to the key's usage control makes a new meter. The
    /// daemon's `POST /v1/leases/return` does, so that credits go back only to the meter
    /// they were leased from.
    ///
    /// On a database several processes share, another one may have voided the key's
    /// credit slices (set its credits, rotated it) since this meter was built: then this
    /// answers `None`, from one read of the stored control. Another change (meta, limits,
    /// allowlist) keeps the slices; it still makes a new meter, so credits leased from the
    /// old one (`Meter::same_credits`) no longer go back.
    pub fn current_meter(&self, key_id: Uuid) -> Result<Option<Meter>, StoreError> {
        let Some(meter) = self.inner.meters.current(key_id) else {
            return Ok(None);
        };
        if !self.inner.shares_storage() {
            return Ok(Some(meter));
        }
        let Some(public) = layout::public_id_of(key_id) else {
            return Ok(None);
        };
        let stored = self.get::<ControlsRecord>(&layout::key_controls(&public))?;
        Ok(stored
            .filter(|r| same_epoch(r.version, meter.0.version))
            .map(|_| meter))
    }
}

/// Reserves a key's credits from the store (a [`CreditSource`]). Holds the store weakly:
/// meters live in the store, and a meter of a closed store reserves nothing.
struct StoreCredits {
    store: Weak<Inner>,
    public: PublicId,
}

impl CreditSource for StoreCredits {
    fn reserve(&self, at_least: u64, want: u64) -> Result<Reserved, VerifyError> {
        let unavailable = |e: &dyn std::fmt::Display| VerifyError::Unavailable(e.to_string());
        let inner = self
            .store
            .upgrade()
            .ok_or_else(|| unavailable(&"the store is closed"))?;
        // As before any write: the engine is not asked to write on a full disk, where a
        // failed write closes it (see `space`).
        if inner.disk_full() {
            return Err(unavailable(&"the disk is full: credits cannot be reserved"));
        }
        // The grant is the meter's once durable: at once where a commit is (then a failed
        // flush after it must not lose a grant that stands); on sled once flushed, on the
        // instance that committed it (a failed flush drops the commit at the reopen that
        // follows, so the grant with it).
        let reserved = reserve(
            &*inner.db,
            &self.public,
            inner.clock.unix_nanos(),
            at_least,
            want,
        );
        reserved.map_err(|e| {
            crate::warn_limited!(error = %e, "could not reserve credits");
            unavailable(&"the credits could not be reserved")
        })
    }
}

/// Whether `limits` enforce the rules `record` holds.
fn same_rules(limits: &[Limit], record: &ControlsRecord) -> bool {
    limits.len() == record.rate_limits.len()
        && limits
            .iter()
            .zip(&record.rate_limits)
            .all(|(l, r)| l.rule == *r)
}

/// The limiters a key's meter carries over from its previous one, with their source.
type Carried = (Arc<[Limit]>, Option<Arc<dyn RateSource>>);

fn build(
    key: Uuid,
    record: &ControlsRecord,
    store: &Weak<Inner>,
    clock: &Arc<dyn Clock>,
    carried: Option<Carried>,
) -> Meter {
    let public = layout::public_id_of(key);
    let credits = record.credits.zip(public).map(|(c, public)| {
        let source = StoreCredits {
            store: Weak::clone(store),
            public,
        };
        CreditMeter::new(c.remaining, c.refill, c.period(), Box::new(source))
    });
    let (limits, rates) = carried.unwrap_or_else(|| {
        // On a database several processes share, the limits' state is the store's.
        let rates = public
            .filter(|_| store.upgrade().is_some_and(|s| s.shares_storage()))
            .map(|public| {
                let path = layout::key_rates(&public);
                Arc::new(StoreRates::new(Weak::clone(store), path, record.version))
                    as Arc<dyn RateSource>
            });
        let limits = record
            .rate_limits
            .iter()
            .map(|r| match &rates {
                Some(rates) => Limit::shared(r.clone(), Arc::clone(rates)),
                None => Limit::new(r.clone(), clock),
            })
            .collect();
        (limits, rates)
    });
    let key = Arc::new(KeyMeter {
        version: record.version,
        // Stored before ranges were made canonical as they are written.
        allowed_ips: record
            .allowed_ips
            .iter()
            .copied()
            .map(canonical_net)
            .collect(),
        limits,
        rates,
        credits,
        clock: Arc::clone(clock),
    });
    Meter(key, None)
}

fn tx_store_error(e: TxError) -> StoreError {
    match e {
        TxError::Abort(e) | TxError::Storage(e) => e,
        TxError::Conflict => StoreError::Unavailable("a transaction kept conflicting".into()),
    }
}

/// A key's controls record as a transaction reads it.
fn controls_in(tx: &dyn KvTx, path: &[u8]) -> Result<Option<ControlsRecord>, TxError> {
    tx.get(path)?
        .map(|b| decode::<ControlsRecord>(&b))
        .transpose()
        .map_err(TxError::Abort)
}

/// Takes at least `at_least` and up to `want` credits (at most an eighth of the balance
/// beyond `at_least`) from a key's balance in one transaction, after a refill that came due.
fn reserve(
    db: &(dyn Backend + 'static),
    public: &PublicId,
    now: i128,
    at_least: u64,
    want: u64,
) -> Result<Reserved, StoreError> {
    let path = layout::key_controls(public);
    db.transact_durably(|tx| {
        let record = controls_in(tx, &path)?;
        let Some(mut record) = record.filter(|r| r.credits.is_some()) else {
            return Ok(Reserved {
                granted: 0,
                left: 0,
                period: i64::MAX,
            });
        };
        let stored = record.credits.as_mut().expect("filtered on credits");
        let before = *stored;
        *stored = stored.current(now);
        let pool = stored.remaining;
        let granted = if pool < at_least {
            0
        } else {
            pool.min(at_least.max(want.min(pool.div_ceil(8))))
        };
        stored.remaining = pool - granted;
        let reserved = Reserved {
            granted,
            left: stored.remaining,
            period: stored.period(),
        };
        if *stored != before {
            tx.put(&path, &encode(&record))?;
        }
        Ok(reserved)
    })
    .map_err(tx_store_error)
}

/// Gives an unspent slice back to the balance it came from: only to the same credit epoch
/// and period (a `set` or a refill since voided it). Answers the balance after, if it
/// went back.
fn give_back(
    db: &(dyn Backend + 'static),
    public: &PublicId,
    version: u64,
    slice: u64,
    period: i64,
    now: i128,
) -> Result<Option<u64>, StoreError> {
    let path = layout::key_controls(public);
    db.transact(|tx| {
        let record = controls_in(tx, &path)?;
        let Some(mut record) = record.filter(|r| same_epoch(r.version, version)) else {
            return Ok(None);
        };
        let Some(stored) = record
            .credits
            .as_mut()
            .filter(|c| c.period() == period && now < i128::from(period))
        else {
            return Ok(None);
        };
        stored.remaining = stored.remaining.saturating_add(slice);
        let left = stored.remaining;
        tx.put(&path, &encode(&record))?;
        Ok(Some(left))
    })
    .map_err(tx_store_error)
}

/// Gives back the unspent slices: every one with `all` (`flush`, close), else those of
/// keys not used since the last flush (the periodic flush), so a quiet key holds nothing.
pub(super) fn flush(
    db: &(dyn Backend + 'static),
    meters: &Meters,
    now: i128,
    all: bool,
) -> Result<(), StoreError> {
    let mut gave = false;
    for (key, meter) in meters.with_credits() {
        let credits = meter.0.credits.as_ref().expect("filtered on credits");
        if credits.used.swap(false, Ordering::AcqRel) && !all {
            continue;
        }
        let Some(public) = layout::public_id_of(key) else {
            continue;
        };
        // Busy reserving: its slice goes back at a later flush.
        let Some((slice, period)) = credits.take_slice() else {
            continue;
        };
        if slice == 0 {
            continue;
        }
        match give_back(db, &public, meter.0.version, slice, period, now) {
            Ok(left) => {
                if let Some(left) = left {
                    credits.left.store(left, Ordering::Release);
                }
                gave = true;
            }
            // A damaged usage-control record loses this slice (spent, never granted
            // twice), said loudly, rather than holding back every other key's at each
            // flush for ever.
            Err(StoreError::Corrupt(why)) => {
                tracing::error!(key_id = %key, error = %why, credits = slice, "a key's usage control does not decode: its unspent credit slice is dropped");
            }
            Err(e) => {
                if !e.may_have_committed() {
                    credits.put_slice(slice, period);
                } else {
                    tracing::warn!(key_id = %key, credits = slice, error = %e, "giving back unspent credits failed and may have committed: the slice is dropped (spent), never counted twice");
                }
                return Err(e);
            }
        }
    }
    if gave {
        db.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn a_voiding_change_starts_an_epoch_above_every_version_before() {
        for version in [0, 1, 7, u64::from(u32::MAX), 1 << 32, (1 << 32) + 5] {
            let next = voiding(version);
            assert!(next > version, "{version}");
            assert!(!same_epoch(version, next), "{version}");
            assert!(same_epoch(next, next + 1), "{version}");
        }
        assert!(same_epoch(3, 4));
    }

    #[test]
    fn a_meter_of_an_older_record_never_replaces_a_newer_one() {
        let meters = Meters::default();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let key = Uuid::now_v7();
        let v1 = ControlsRecord {
            version: 1,
            rate_limits: vec![RateLimit {
                name: "default".into(),
                limit: 10,
                window_seconds: 60,
            }],
            ..ControlsRecord::default()
        };
        let v2 = ControlsRecord {
            version: 2,
            meta: Some("{}".into()),
            ..v1.clone()
        };
        let v3 = ControlsRecord {
            version: 3,
            rate_limits: Vec::new(),
            ..v2.clone()
        };
        let store = Weak::new();
        let newer = meters.meter(key, &v2, &store, &clock).unwrap();
        // A verification that read v1 before v2 committed.
        assert_eq!(meters.meter(key, &v1, &store, &clock), Some(newer.clone()));
        assert_eq!(meters.meter(key, &v2, &store, &clock), Some(newer.clone()));
        // A newer record that needs no meter retires it; an older one does not.
        assert_eq!(meters.meter(key, &v1, &store, &clock), Some(newer));
        assert_eq!(meters.meter(key, &v3, &store, &clock), None);
        assert!(meters.current(key).is_none());
    }
}
