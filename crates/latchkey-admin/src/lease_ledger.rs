//! The credits `POST /v1/leases` granted and `POST /v1/leases/return` may take back: per
//! caller and leased key, how many are out, and the meter and refill period they came from.
//!
//! In memory and bounded: an entry untouched for [`MAX_IDLE`] is dropped, and when
//! [`MAX_ENTRIES`] are held the oldest go. What is dropped (or forgotten by a restart) can
//! no longer be given back: it stays counted as spent, as before returns existed. Never
//! more than was granted goes back, and only into the meter it was taken from, or a later
//! one of the same credit epoch (the key's meta, limits or allowlist changed), in the same
//! period.
//!
//! A grant made after the key's credits were set (or a period ended) makes what was out
//! before *void*: it can never come back. A return names only a key and a number, and the
//! caller may hold void credits and good ones at once, so the void ones are counted off
//! every return first: what goes back is never more than what the caller holds of the
//! good ones (and may be less, then counted as spent: never granted twice).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use latchkey_core::Meter;
use uuid::Uuid;

/// The most (caller, key) pairs remembered.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// How long an entry is kept without a grant or a return.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(3_600);

/// Who leased (the caller's key id; `None` for the operator) and which key.
type Pair = (Option<Uuid>, Uuid);

#[derive(Debug)]
struct Entry {
    meter: Meter,
    period: i64,
    /// Granted from `meter` in `period`, neither returned nor known spent.
    outstanding: u64,
    /// What was out when a grant made it void (another epoch or period): counted off the
    /// returns first, never given back.
    void: u64,
    touched: Instant,
}

impl Entry {
    /// Moves to `meter` in `period`: what is out stays good in a later meter of the same
    /// credit epoch and period, and is void otherwise.
    fn follow(&mut self, meter: &Meter, period: i64) {
        if self.meter.same_credits(meter) && self.period == period {
            return;
        }
        if !(self.period == period && self.meter.same_credit_epoch(meter)) {
            self.void = self.void.saturating_add(self.outstanding);
            self.outstanding = 0;
        }
        self.meter = meter.clone();
        self.period = period;
    }
}

/// The ledger; one per daemon, shared by the handlers.
#[derive(Debug, Default)]
pub(crate) struct LeaseLedger {
    entries: Mutex<HashMap<Pair, Entry>>,
}

impl LeaseLedger {
    /// Records `granted` credits leased to `caller` of `key` from `meter` in `period`.
    /// Grants from another meter or period than the entry's replace it: the older ones can
    /// no longer be given back anyway.
    pub(crate) fn granted(
        &self,
        caller: Option<Uuid>,
        key: Uuid,
        meter: &Meter,
        period: i64,
        granted: u64,
    ) {
        if granted == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&(caller, key)) && entries.len() >= MAX_ENTRIES {
            make_room(&mut entries, now);
        }
        let entry = entries.entry((caller, key)).or_insert_with(|| Entry {
            meter: meter.clone(),
            period,
            outstanding: 0,
            void: 0,
            touched: now,
        });
        entry.follow(meter, period);
        entry.outstanding = entry.outstanding.saturating_add(granted);
        entry.touched = now;
    }

    /// Gives back up to `credits` of what `caller` leased of `key`, into `current` (the
    /// key's meter now) when it is the one they came from; answers how many went back.
    pub(crate) fn give_back(
        &self,
        caller: Option<Uuid>,
        key: Uuid,
        current: &Meter,
        credits: u64,
    ) -> u64 {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get_mut(&(caller, key)) else {
            return 0;
        };
        if now.duration_since(entry.touched) >= MAX_IDLE {
            entries.remove(&(caller, key));
            return 0;
        }
        let Some(period) = current.credit_period() else {
            entries.remove(&(caller, key));
            return 0;
        };
        entry.follow(current, period);
        // Void credits first: what the caller gives back may be theirs.
        let discarded = credits.min(entry.void);
        entry.void -= discarded;
        let returned = (credits - discarded).min(entry.outstanding);
        if returned == 0 {
            if entry.outstanding == 0 && entry.void == 0 {
                entries.remove(&(caller, key));
            }
            return 0;
        }
        // Under the lock: two returns at once never give back the same credits.
        if !current.return_credits(returned, entry.period) {
            entries.remove(&(caller, key));
            return 0;
        }
        entry.outstanding -= returned;
        entry.touched = now;
        if entry.outstanding == 0 && entry.void == 0 {
            entries.remove(&(caller, key));
        }
        returned
    }
}

/// Drops the entries untouched for [`MAX_IDLE`], and when that is not enough, the oldest
/// sixteenth, so a full ledger scans once per many grants.
fn make_room(entries: &mut HashMap<Pair, Entry>, now: Instant) {
    entries.retain(|_, e| now.duration_since(e.touched) < MAX_IDLE);
    if entries.len() < MAX_ENTRIES {
        return;
    }
    let mut touched: Vec<Instant> = entries.values().map(|e| e.touched).collect();
    let cut = touched.len() / 16;
    let (_, oldest_kept, _) = touched.select_nth_unstable(cut);
    let oldest_kept = *oldest_kept;
    entries.retain(|_, e| e.touched >= oldest_kept);
    // Equal times could keep too many: drop any, the bound holds.
    while entries.len() >= MAX_ENTRIES {
        let Some(pair) = entries.keys().next().copied() else {
            break;
        };
        entries.remove(&pair);
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{
        Actor, Credits, CreditsPatch, KeyPatch, NewKey, NewUser, Store, StoreConfig,
    };

    use super::*;

    /// A store, the meter of a key with 1,000 credits, and the key's id.
    fn meter() -> (tempfile::TempDir, Store, Meter, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::default().usage_flush_interval(None);
        let store = Store::create_empty(dir.path(), "lk", config).unwrap();
        let system = Actor::system();
        let user = NewUser {
            name: "partner".into(),
            ..NewUser::default()
        };
        let user = store.create_user(&system, user).unwrap();
        let key = NewKey {
            name: "metered".into(),
            user_id: user.id,
            credits: Some(Credits {
                remaining: 1_000,
                refill: None,
            }),
            ..NewKey::default()
        };
        let created = store.create_key(&system, key).unwrap();
        let principal = store.verify(created.secret.expose()).unwrap();
        let meter = principal.meter.clone().unwrap();
        (dir, store, meter, created.key.id)
    }

    #[test]
    fn the_ledger_is_bounded_and_what_it_dropped_cannot_come_back() {
        let (_dir, _store, meter, _) = meter();
        let period = meter.credit_period().unwrap();
        let ledger = LeaseLedger::default();
        let first = Uuid::now_v7();
        ledger.granted(None, first, &meter, period, 1);
        for _ in 0..MAX_ENTRIES {
            ledger.granted(None, Uuid::now_v7(), &meter, period, 1);
        }
        let held = ledger.entries.lock().unwrap().len();
        assert!(held <= MAX_ENTRIES && held > MAX_ENTRIES / 2, "{held}");
        // The oldest went first: its credit stays spent.
        assert_eq!(ledger.give_back(None, first, &meter, 1), 0);
    }

    #[test]
    fn a_return_takes_back_at_most_what_was_granted_once_and_for_its_caller() {
        let (_dir, _store, meter, _) = meter();
        let period = meter.credit_period().unwrap();
        let ledger = LeaseLedger::default();
        let (caller, key) = (Some(Uuid::now_v7()), Uuid::now_v7());
        ledger.granted(caller, key, &meter, period, 3);
        ledger.granted(caller, key, &meter, period, 2);
        assert_eq!(ledger.give_back(Some(Uuid::now_v7()), key, &meter, 5), 0);
        assert_eq!(ledger.give_back(None, key, &meter, 5), 0);
        assert_eq!(ledger.give_back(caller, key, &meter, 4), 4);
        assert_eq!(ledger.give_back(caller, key, &meter, 4), 1);
        assert_eq!(ledger.give_back(caller, key, &meter, 4), 0);
        // A grant of another period makes what was out void: counted off the next returns,
        // it never comes back, whichever lease the caller gives back first.
        ledger.granted(caller, key, &meter, period - 1, 3);
        ledger.granted(caller, key, &meter, period, 2);
        assert_eq!(ledger.give_back(caller, key, &meter, 2), 0);
        assert_eq!(ledger.give_back(caller, key, &meter, 3), 2);
        assert_eq!(ledger.give_back(caller, key, &meter, 1), 0);
    }

    /// Credits set since a lease: what the caller held of it is void, and a return that
    /// mixes it with a later lease's never gives back more than the later lease (the hunt:
    /// 162 admitted on a balance set to 100, the old lease refunded into the new balance).
    /// A change that leaves the credits (meta) keeps what is out good.
    #[test]
    fn a_set_voids_what_was_out_and_a_meta_change_keeps_it() {
        let (_dir, store, before, key) = meter();
        let ledger = LeaseLedger::default();
        let caller = Some(Uuid::now_v7());
        let period = before.credit_period().unwrap();
        ledger.granted(caller, key, &before, period, 40);
        let patch = |patch| store.update_key(&Actor::system(), key, patch).unwrap();
        patch(KeyPatch {
            meta: Some(Some(serde_json::json!({"plan": "gold"}))),
            ..KeyPatch::default()
        });
        let meta = store.current_meter(key).unwrap().unwrap();
        assert!(!meta.same_credits(&before) && meta.same_credit_epoch(&before));
        assert_eq!(ledger.give_back(caller, key, &meta, 10), 10, "kept");
        patch(KeyPatch {
            credits: Some(CreditsPatch::Set {
                remaining: 100,
                refill: None,
            }),
            ..KeyPatch::default()
        });
        let set = store.current_meter(key).unwrap().unwrap();
        assert!(!set.same_credit_epoch(&meta));
        ledger.granted(caller, key, &set, period, 5);
        // 30 void and 5 good out: however the caller returns them, 5 at most go back.
        assert_eq!(ledger.give_back(caller, key, &set, 33), 3);
        assert_eq!(ledger.give_back(caller, key, &set, 2), 2);
        assert_eq!(ledger.give_back(caller, key, &set, 5), 0);
    }
}
