//! A key's usage control as stored (`kc:<public id>`, beside the key record, so records
//! written before it decode as they are), the run-time meters built from it, and the
//! credits' flush.
//!
//! **Credits are durable like usage counts.** Consumption is counted in memory (an atomic
//! per key) and the *absolute* balance is written at each usage flush, under the write lock,
//! only by the meter built from the record's current `version`. A management change (PATCH
//! set or add) reads the live balance under the write lock, writes the new one with a new
//! version, and then retires the old meter: whatever the old meter let through between the
//! read and its retirement is taken from the new one. So no flush and no PATCH ever adds
//! back consumption; a `kill -9` loses at most the consumption since the last flush.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::{Backend, Batch};
use super::{decode, encode, layout};
use crate::clock::Clock;
use crate::controls::{Credits, RateLimit, Refill};
use crate::error::StoreError;
use crate::meter::{CreditMeter, KeyMeter, Limit, Meter, next_refill_after};

/// A key's usage control as stored (postcard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControlsRecord {
    /// Bumped at every change, so a meter built from an older record is never flushed.
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

    pub(crate) fn credits_view(&self, live: Option<LiveCredits>) -> Option<Credits> {
        self.credits.map(|c| Credits {
            remaining: live.map_or(c.remaining, |l| l.remaining),
            refill: c.refill,
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

/// Credits as a meter counts them now, ahead of the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveCredits {
    pub(crate) remaining: u64,
    /// Unix nanoseconds of the next refill.
    pub(crate) next_refill: Option<i64>,
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

    /// The meter of a key as `record` describes it: the one in use when it was built from
    /// the same version, else a new one. `None` when the key needs none.
    pub(crate) fn meter(
        &self,
        key: Uuid,
        record: &ControlsRecord,
        clock: &Arc<dyn Clock>,
    ) -> Option<Meter> {
        if !record.meters() {
            self.lock().remove(&key);
            return None;
        }
        let mut all = self.lock();
        if let Some(meter) = all.get(&key).filter(|m| m.0.version == record.version) {
            return Some(meter.clone());
        }
        let meter = build(record, clock);
        all.insert(key, meter.clone());
        Some(meter)
    }

    /// The live state of a key's credits, when its meter was built from `version`.
    pub(crate) fn live_credits(&self, key: Uuid, version: u64) -> Option<LiveCredits> {
        let all = self.lock();
        let meter = all.get(&key).filter(|m| m.0.version == version)?;
        let credits = meter.0.credits.as_ref()?;
        credits.refill_if_due(meter.0.clock.unix_nanos());
        let next = credits.next_refill.load(Ordering::Acquire);
        Some(LiveCredits {
            remaining: credits.remaining.load(Ordering::Acquire),
            next_refill: (next != i64::MAX).then_some(next),
        })
    }

    /// After a change committed: retires the meter of the old version, building the new
    /// one, and takes from it what the old one let through since `live` was read.
    pub(crate) fn settle(
        &self,
        key: Uuid,
        old_version: u64,
        live: Option<LiveCredits>,
        record: &ControlsRecord,
        clock: &Arc<dyn Clock>,
    ) {
        let old = self
            .lock()
            .get(&key)
            .filter(|m| m.0.version == old_version)
            .cloned();
        let consumed = match (&old, live) {
            (Some(old), Some(live)) => old.0.credits.as_ref().map_or(0, |c| {
                live.remaining
                    .saturating_sub(c.remaining.swap(0, Ordering::AcqRel))
            }),
            _ => 0,
        };
        let new = self.meter(key, record, clock);
        if consumed > 0
            && let Some(credits) = new.as_ref().and_then(|m| m.0.credits.as_ref())
        {
            let _ = credits
                .remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    Some(left.saturating_sub(consumed))
                });
            credits.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets a deleted key's meter.
    pub(crate) fn remove(&self, key: Uuid) {
        self.lock().remove(&key);
    }

    /// The balances changed since the last flush: (key, version, remaining, next refill).
    fn take_dirty(&self) -> Vec<(Uuid, u64, u64, Option<i64>)> {
        self.lock()
            .iter()
            .filter_map(|(key, meter)| {
                let credits = meter.0.credits.as_ref()?;
                credits.dirty.swap(false, Ordering::AcqRel).then(|| {
                    let next = credits.next_refill.load(Ordering::Acquire);
                    (
                        *key,
                        meter.0.version,
                        credits.remaining.load(Ordering::Acquire),
                        (next != i64::MAX).then_some(next),
                    )
                })
            })
            .collect()
    }

    fn mark_dirty(&self, key: Uuid) {
        if let Some(credits) = self.lock().get(&key).and_then(|m| m.0.credits.as_ref()) {
            credits.dirty.store(true, Ordering::Relaxed);
        }
    }
}

fn build(record: &ControlsRecord, clock: &Arc<dyn Clock>) -> Meter {
    let credits = record.credits.map(|c| {
        let next = c
            .next_refill
            .map(i128::from)
            .or_else(|| c.refill.map(|r| next_refill_after(&r, clock.unix_nanos())));
        CreditMeter::new(c.remaining, c.refill, next)
    });
    let key = Arc::new(KeyMeter {
        version: record.version,
        allowed_ips: record.allowed_ips.clone().into_boxed_slice(),
        limits: record
            .rate_limits
            .iter()
            .map(|r| Limit::new(r.clone(), clock))
            .collect(),
        credits,
        clock: Arc::clone(clock),
    });
    Meter(key, None)
}

/// Writes the credits' balances counted since the last flush into their records, in one
/// batch, flushed; the caller holds the write lock. A meter of an outdated version is
/// skipped: the change that outdated it wrote the balance.
pub(super) fn flush(db: &dyn Backend, meters: &Meters) -> Result<(), StoreError> {
    let dirty = meters.take_dirty();
    if dirty.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::default();
    let staged = (|| {
        for (key, version, remaining, next_refill) in &dirty {
            let Some(public) = layout::public_id_of(*key) else {
                continue;
            };
            let path = layout::key_controls(&public);
            let Some(mut record) = db
                .get(&path)?
                .map(|b| decode::<ControlsRecord>(&b))
                .transpose()?
            else {
                continue;
            };
            let Some(credits) = record
                .credits
                .as_mut()
                .filter(|_| record.version == *version)
            else {
                continue;
            };
            credits.remaining = *remaining;
            credits.next_refill = *next_refill;
            batch.insert(path, encode(&record));
        }
        Ok::<_, StoreError>(())
    })();
    if let Err(e) = staged.and_then(|()| db.apply_batch(batch)) {
        for (key, ..) in dirty {
            meters.mark_dirty(key);
        }
        return Err(e);
    }
    db.flush()?;
    Ok(())
}
