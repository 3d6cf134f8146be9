//! The shared state of rate limits on a database several processes open (PostgreSQL): one
//! record per key (`r:k:<public id>`) and per user (`r:u:<user uuid>`), holding each of its
//! limits' GCRA theoretical arrival time, which every process reserves its slices from
//! (`shared_limit.rs`). A store only one process opens (sled) keeps its limiters in memory
//! and never writes here.
//!
//! A reservation is one small transaction of its own: no writers' lock, no audit event, no
//! change notification (a rate limit is not a management write), and no flush.
//!
//! A change to a key's or user's limits starts them afresh, as in one process: a key's
//! record carries the version of the key's controls it was reserved under, and one of an
//! older version counts as empty (a change of the key's other controls, which keeps its
//! limits, moves the record on to the new version in the same transaction); a user's record is removed with any change to the user's
//! limits. Both go with the key or user they belong to, and stay out of backups (they
//! matter for one window at most).

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::backend::{KvTx, TxError};
use super::tx::{Tx, TxResult};
use super::{Inner, decode, encode};
use crate::controls::RateLimit;
use crate::shared_limit::{Ask, Gcra, GiveBack, RateGrant, RateReserved, RateSource, Unreserved};
use crate::verify::VerifyError;

/// A key's or user's limits as stored (postcard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RateRecord {
    /// The version of the key's controls the record was written under (0 for a user).
    version: u64,
    /// Each limit's theoretical arrival time (Unix nanoseconds), by the name the meter
    /// gives it; a limit with none, or one in the past, has all of its burst.
    tats: Vec<(String, i64)>,
}

/// Reserves slices of one key's or user's limits from their record at `path`.
pub(crate) struct StoreRates {
    store: Weak<Inner>,
    path: Vec<u8>,
    /// Raised when the key's controls change and its limits stay the same (`carry_to`).
    version: AtomicU64,
}

impl StoreRates {
    /// The source of the limits whose record is at `path`, written under `version`.
    pub(crate) fn new(store: Weak<Inner>, path: Vec<u8>, version: u64) -> StoreRates {
        StoreRates {
            store,
            path,
            version: AtomicU64::new(version),
        }
    }
}

impl RateSource for StoreRates {
    fn reserve(
        &self,
        rule: &RateLimit,
        ask: Ask,
        now: i128,
        back: Option<GiveBack<'_>>,
    ) -> Result<RateReserved, Unreserved> {
        self.run(rule, ask, now, true, back)
    }

    fn peek(&self, rule: &RateLimit, now: i128) -> Result<RateGrant, VerifyError> {
        let peeked = self.run(rule, Ask::new(1, 1), now, false, None);
        Ok(peeked.map_err(|failed| failed.error)?.grant)
    }

    fn carry_to(&self, version: u64) {
        self.version.fetch_max(version, Ordering::AcqRel);
    }

    fn give_back(&self, rule: &RateLimit, back: GiveBack<'_>) -> Result<bool, VerifyError> {
        let inner = self.inner()?;
        let version = self.version.load(Ordering::Acquire);
        let given = inner.db.transact(|tx| {
            let mut record = record_in(tx, &self.path)?;
            let given = give_back_in(&mut record, version, rule, &back);
            if given {
                tx.put(&self.path, &encode(&record))?;
            }
            Ok(given)
        });
        given.map_err(|e| VerifyError::Unavailable(failure(e)))
    }
}

/// Gives `back` to `rule`'s arrival time in `record`, as a transaction read it for a
/// source of `version`: whether it moved.
fn give_back_in(
    record: &mut RateRecord,
    version: u64,
    rule: &RateLimit,
    back: &GiveBack<'_>,
) -> bool {
    // The clock read in the transaction, each time it runs (review s58 L1): the slice
    // void, they came back by time; written under other controls, the limits started
    // afresh. Nothing to give either way.
    let now = (back.now)();
    if now >= back.until || record.version != version {
        return false;
    }
    let Some(entry) = record.tats.iter_mut().find(|(name, _)| *name == rule.name) else {
        return false;
    };
    match Gcra::of(rule).give_back(Some(entry.1), back.cost, now) {
        Some(moved) => {
            entry.1 = moved;
            true
        }
        None => false,
    }
}

impl StoreRates {
    /// The store, while it is open.
    fn inner(&self) -> Result<std::sync::Arc<Inner>, VerifyError> {
        self.store
            .upgrade()
            .ok_or_else(|| VerifyError::Unavailable("the store is closed".to_owned()))
    }

    /// What `ask` comes to at `now`, in one transaction, `back` given back first; it takes
    /// the grant only when `take` (a peek gives back nothing, and writes nothing).
    fn run(
        &self,
        rule: &RateLimit,
        ask: Ask,
        now: i128,
        take: bool,
        back: Option<GiveBack<'_>>,
    ) -> Result<RateReserved, Unreserved> {
        let inner = self.inner().map_err(Unreserved::before_commit)?;
        let gcra = Gcra::of(rule);
        let version = self.version.load(Ordering::Acquire);
        let reserved = inner.db.transact(|tx| {
            let mut record = record_in(tx, &self.path)?;
            let given_back = back
                .as_ref()
                .is_some_and(|back| give_back_in(&mut record, version, rule, back));
            if record.version < version {
                // Written under controls since changed: the limits start afresh.
                record = RateRecord {
                    version,
                    tats: Vec::new(),
                };
            }
            let now_i64 = i64::try_from(now).unwrap_or(i64::MAX);
            let tat = record
                .tats
                .iter()
                .find(|(name, _)| *name == rule.name)
                .map(|(_, tat)| *tat);
            let (tat, grant) = gcra.reserve(tat, now, ask);
            if let (Some(tat), RateGrant::Granted { .. }, true) = (tat, grant, take) {
                // Arrival times already past hold nothing: dropped, so a record never
                // outgrows the limits in use.
                record
                    .tats
                    .retain(|(name, at)| *name != rule.name && *at > now_i64);
                record.tats.push((rule.name.clone(), tat));
                tx.put(&self.path, &encode(&record))?;
            } else if given_back {
                // Refused, yet what was given back is the limit's again.
                tx.put(&self.path, &encode(&record))?;
            }
            Ok(RateReserved { grant, given_back })
        });
        reserved.map_err(unreserved)
    }
}

/// What a reservation whose transaction failed with `e` answers.
fn unreserved(e: TxError) -> Unreserved {
    let in_doubt = matches!(&e, TxError::Storage(e) if e.may_have_committed());
    let e = failure(e);
    crate::warn_limited!(error = %e, "could not reserve a slice of a rate limit");
    Unreserved {
        error: VerifyError::Unavailable("the rate limit could not be reserved".to_owned()),
        in_doubt,
    }
}

/// What a transaction that failed says.
fn failure(e: TxError) -> String {
    match e {
        TxError::Abort(e) | TxError::Storage(e) => e.to_string(),
        TxError::Conflict => "a transaction kept conflicting".to_owned(),
    }
}

/// After a change of a key's controls from `from` to `to` that keeps its rate limits: the
/// state written under `from` goes on under `to`, in the change's transaction, so that
/// every process's meter of `to` finds it (one written under an older version stays void).
pub(super) fn carry_key_rates_in(tx: &Tx<'_>, path: &[u8], from: u64, to: u64) -> TxResult<()> {
    match from < to {
        true => copy_key_rates_in(tx, (path, from), (path, to)),
        false => Ok(()),
    }
}

/// Copies the limits' state at `from`, when it is of the controls `from_version`, to `to`
/// under the controls `to_version`: a rotated key's successor goes on from where its
/// limits stand (usage hunt s56 M4), on every process of the database.
pub(super) fn copy_key_rates_in(
    tx: &Tx<'_>,
    (from, from_version): (&[u8], u64),
    (to, to_version): (&[u8], u64),
) -> TxResult<()> {
    match tx.get::<RateRecord>(from)? {
        Some(mut record) if record.version == from_version => {
            record.version = to_version;
            tx.put(to, &record)
        }
        _ => Ok(()),
    }
}

/// The record at `path` as a transaction reads it (empty when there is none).
fn record_in(tx: &dyn KvTx, path: &[u8]) -> Result<RateRecord, TxError> {
    tx.get(path)?
        .map(|b| decode::<RateRecord>(&b))
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(TxError::Abort)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{Store, StoreConfig};

    const SECOND: i128 = 1_000_000_000;

    /// A reservation whose transaction failed at its commit, the answer lost, is in doubt
    /// (what it gave back may be the shared state's); one that failed before, or kept
    /// conflicting, committed nothing (review s59b L1).
    #[test]
    fn a_failed_reservation_is_in_doubt_only_at_its_commit() {
        use crate::error::{CommitInDoubt, StoreError};
        let at_commit = StoreError::Unavailable(Box::new(CommitInDoubt("reset".into())));
        assert!(unreserved(TxError::Storage(at_commit)).in_doubt);
        let before = StoreError::Unavailable("connection refused".into());
        assert!(!unreserved(TxError::Storage(before)).in_doubt);
        assert!(!unreserved(TxError::Conflict).in_doubt);
        let failed = unreserved(TxError::Conflict).error;
        assert!(matches!(failed, VerifyError::Unavailable(_)));
    }

    /// One request of a slice void from `until`, at the clock `now`.
    fn give(until: i128, now: &dyn Fn() -> i128) -> GiveBack<'_> {
        GiveBack {
            cost: 1,
            until,
            now,
        }
    }

    /// The source of the limits at `r:k:test` in `store`, under the key's controls `version`.
    fn rates_in(store: &Store, version: u64) -> StoreRates {
        StoreRates::new(Arc::downgrade(&store.inner), b"r:k:test".to_vec(), version)
    }

    /// `default`: `limit` requests a `window_seconds`.
    fn default_of(limit: u32, window_seconds: u32) -> RateLimit {
        RateLimit {
            name: "default".into(),
            limit,
            window_seconds,
        }
    }

    /// What a reservation that gives nothing back grants.
    fn take(rates: &StoreRates, rule: &RateLimit, ask: Ask, now: i128) -> RateGrant {
        rates.reserve(rule, ask, now, None).unwrap().grant
    }

    /// Runs `test` on a store on sled and, when the tests have a PostgreSQL server, on one
    /// there.
    fn on_each_store(test: impl Fn(&Store)) {
        let dir = tempfile::tempdir().unwrap();
        test(&Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap());
        #[cfg(feature = "postgres")]
        if let Some(database) = crate::store::postgres::testing::TestDatabase::create() {
            let location = crate::location::Location::Postgres(database.url.clone());
            test(&Store::create_empty_at(&location, "lk", StoreConfig::default()).unwrap());
        }
    }

    /// A reservation gives back what the slice it replaces held, first and in its own
    /// transaction (review s58 L2): the grant counts them, and a refusal still has them
    /// back. It moves nothing once that slice is void (the clock read in the transaction)
    /// or under other controls, as a give-back of its own.
    #[test]
    fn a_reservation_gives_back_what_the_slice_it_replaces_held() {
        on_each_store(|store| {
            let rates = rates_in(store, 1);
            // One request back every 10 s.
            let rule = default_of(5, 50);
            let t0 = 1_000 * SECOND;
            let now = t0 + SECOND;
            let all = take(&rates, &rule, Ask::new(5, 5), t0);
            assert!(matches!(all, RateGrant::Granted { granted: 5, .. }));
            // That slice (50 s) replaced with 2 left, for a cost of 3: only 2 fit.
            let until = t0 + 50 * SECOND;
            let back = |now: &'static dyn Fn() -> i128| GiveBack {
                cost: 2,
                until,
                now,
            };
            let at = &|| 1_001 * SECOND;
            let refused = rates.reserve(&rule, Ask::new(3, 3), now, Some(back(at)));
            let refused = refused.unwrap();
            assert!(refused.given_back);
            assert!(
                matches!(refused.grant, RateGrant::Refused { .. }),
                "{refused:?}"
            );
            let two = RateGrant::Granted {
                granted: 2,
                left: 0,
            };
            assert_eq!(take(&rates, &rule, Ask::new(2, 2), now), two);
            // A slice of those 2 replaced with both left, for a cost of 2.
            let renewed = rates.reserve(&rule, Ask::new(2, 2), now, Some(back(at)));
            let given = RateReserved {
                grant: two,
                given_back: true,
            };
            assert_eq!(renewed.unwrap(), given);
            // Void by the time the transaction reads the clock: nothing given, none fit.
            let lapsed = rates.reserve(&rule, Ask::new(1, 1), now, Some(back(&|| 1_050 * SECOND)));
            let lapsed = lapsed.unwrap();
            assert!(!lapsed.given_back);
            assert!(
                matches!(lapsed.grant, RateGrant::Refused { .. }),
                "{lapsed:?}"
            );
            // Under other controls the limits started afresh: nothing to give.
            let other = rates_in(store, 2);
            let afresh = other.reserve(&rule, Ask::new(1, 1), now, Some(back(at)));
            assert!(!afresh.unwrap().given_back);
        });
    }

    /// A give-back reads the clock in its transaction: from the deadline of the slice its
    /// requests came from on, it moves nothing and says so (review s58 L1, L3); before,
    /// the requests are the limit's again.
    #[test]
    fn a_give_back_moves_the_state_only_before_its_slice_s_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
        let rates = rates_in(&store, 1);
        let rule = default_of(2, 60);
        let t0 = 1_000 * SECOND;
        let granted = take(&rates, &rule, Ask::new(2, 2), t0);
        assert_eq!(
            granted,
            RateGrant::Granted {
                granted: 2,
                left: 0
            }
        );
        // One request's slice, 30 s.
        let until = t0 + 30 * SECOND;
        let lapsed = rates.give_back(&rule, give(until, &|| until)).unwrap();
        assert!(!lapsed);
        let refused = take(&rates, &rule, Ask::new(1, 1), t0 + SECOND);
        assert!(matches!(refused, RateGrant::Refused { .. }), "{refused:?}");
        assert!(
            rates
                .give_back(&rule, give(until, &|| t0 + SECOND))
                .unwrap()
        );
        let again = take(&rates, &rule, Ask::new(1, 1), t0 + SECOND);
        assert_eq!(
            again,
            RateGrant::Granted {
                granted: 1,
                left: 0
            }
        );
        // Under other controls the limits started afresh: nothing to give.
        let other = rates_in(&store, 2);
        assert!(
            !other
                .give_back(&rule, give(until, &|| t0 + SECOND))
                .unwrap()
        );
    }
}
