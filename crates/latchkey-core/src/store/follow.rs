//! On a database several processes share: applying the changes the others write.
//!
//! Every change is an audit event, in `seq` order. A process applies them in that order —
//! its own writes and everyone else's alike — by reading the audit range after the last
//! event it applied: each event drops what it touches from the verify cache and goes out on
//! [`Store::subscribe`], so `/v1/events` of every process carries every change of the
//! cluster in one order. The backend wakes the catch-up when the database announces a
//! commit (PostgreSQL `NOTIFY`), and a timer wakes it every second anyway, so a missed
//! announcement or a reconnection costs at most a second.
//!
//! The database's history may also go back under a running process: a failover to a
//! standby that had not received the last commits, or a backup restored into the database
//! the daemons use. New writes then reuse sequence numbers this process applied already,
//! and reading after its last one would never return them (a revocation among them). So
//! each catch-up first compares the database's newest event (`m:seq`, `m:head`) with the
//! last one applied here, and each page's first event with it; on a mismatch it logs an
//! error, empties the whole verify cache and goes on from the database's newest event.
//! The changes in between never reach this process's `subscribe()` feed.
//!
//! Verification trusts the cache as it is only while this process's progress is recorded
//! in the database (`latchkey_followers`), which tells the others' writes to wait until it
//! applied them. Once the last record is older than `max_staleness`, the others' writes no
//! longer wait for this process, so a verification reads the changes itself before it
//! answers (one read serving every verification that began before it), as long as the
//! database answers reads (it may refuse only the record: read-only for maintenance or at
//! a full disk on a managed service, a lock on the row, a revoked privilege); once the
//! reads too have failed for `max_staleness`, verification answers
//! [`VerifyError::Unavailable`](crate::VerifyError::Unavailable) (a 503) rather than risk
//! serving a key another process revoked. The change feed vouches for nothing while the
//! record fails ([`Store::is_fresh`]): a heartbeat would tell remote verifiers that a
//! change already returned elsewhere had reached them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::backend::Backend;
use super::{Store, import, layout};
use crate::audit::{Action, AuditEvent};
use crate::error::{Entity, StoreError};

/// How many events one range read of the catch-up takes.
const CATCH_UP_PAGE: usize = 256;

/// What a process following a shared database keeps.
#[derive(Debug)]
pub(crate) struct Follow {
    /// The newest event applied and published here; held while applying, so events go out
    /// once each, in order.
    applied: Mutex<Tip>,
    /// `applied` as last published, read without waiting for a catch-up that holds it (one
    /// may wait on the database): what `/v1/verify` reports.
    published: AtomicU64,
    /// When this process's progress was last recorded in the database for the others
    /// (from then on, their writes wait for it), as nanoseconds after `base` (a monotonic
    /// clock: the store's clock may be a test's manual one): when the recording started.
    /// `i64::MIN` until the first, and after the history went back.
    confirmed_at: AtomicI64,
    /// When a catch-up last read the changes to their end: when it took the applied tip,
    /// before its first statement (every change committed before then has been applied).
    read_at: AtomicI64,
    /// How many times the history went back (`history_rewritten`, `skip_unreadable`):
    /// an acknowledgement made across one confirms nothing. Changed under `applied`.
    resets: AtomicU64,
    /// One acknowledgement at a time, so that none writes an older `applied` over a newer.
    acknowledging: Mutex<()>,
    base: Instant,
    /// How long cached answers stay valid without a successful catch-up.
    max_staleness: Duration,
    /// This process among the followers, for acknowledgements.
    id: Uuid,
}

/// An event of the audit chain: its `seq` and hash (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tip {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

impl Tip {
    /// The database's newest event, `m:seq` and `m:head` read in one statement.
    pub(crate) fn of(db: &dyn Backend) -> Result<Tip, StoreError> {
        let read = db.get_many(&[layout::SEQ.to_vec(), layout::HEAD.to_vec()])?;
        let mut read = read.into_iter();
        let seq = super::decode_seq(read.next().flatten())?;
        let hash = super::decode_head(read.next().flatten())?;
        Ok(Tip { seq, hash })
    }
}

impl Follow {
    /// Starts following after `tip` (the newest event at open, read now); confirmed once
    /// its first acknowledgement is made.
    pub(crate) fn new(tip: Tip, max_staleness: Duration) -> Follow {
        let seq = tip.seq;
        Follow {
            applied: Mutex::new(tip),
            published: AtomicU64::new(seq),
            confirmed_at: AtomicI64::new(i64::MIN),
            read_at: AtomicI64::new(0),
            resets: AtomicU64::new(0),
            acknowledging: Mutex::new(()),
            base: Instant::now(),
            max_staleness,
            id: Uuid::now_v7(),
        }
    }

    /// This process among the followers.
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    fn now(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    /// The history went back (called under `applied`): what this process recorded of its
    /// progress may name an event the database no longer holds, so its cache is not served
    /// as it is until it records its progress again.
    fn unconfirm(&self) {
        self.resets.fetch_add(1, Ordering::AcqRel);
        self.confirmed_at.store(i64::MIN, Ordering::Release);
    }

    /// Whether `at` is recent enough to vouch for the cache now.
    fn within_staleness(&self, at: &AtomicI64) -> bool {
        let bound = i64::try_from(self.max_staleness.as_nanos()).unwrap_or(i64::MAX);
        self.now().saturating_sub(at.load(Ordering::Acquire)) <= bound
    }

    /// How far what the cache holds may be served now.
    pub(crate) fn freshness(&self) -> Freshness {
        if self.within_staleness(&self.confirmed_at) {
            Freshness::Confirmed
        } else if self.within_staleness(&self.read_at) {
            Freshness::Unacknowledged(self.now())
        } else {
            Freshness::Stale
        }
    }
}

/// How far a process following a shared database may serve from its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Acknowledged within `max_staleness`: every other process's write waits until this
    /// one applied it, so the cache serves as it is.
    Confirmed,
    /// Read, not acknowledged, within `max_staleness` (the database refuses this process's
    /// progress row: read-only, a lock, a privilege): the others' writes do not wait for
    /// this process, so a verification that began at this instant (as `Follow` counts
    /// time) serves once the changes were read after it ([`Store::read_changes_since`]).
    /// Its change feed vouches for nothing meanwhile ([`Store::is_fresh`]).
    Unacknowledged(i64),
    /// Neither: the database has been away for `max_staleness`.
    Stale,
}

impl Store {
    /// On a database several processes share: the newest change this process has applied
    /// (its verify cache reflects every change up to it). `None` on a store only this
    /// process opens, whose writes reach its cache before they return.
    pub fn applied_seq(&self) -> Option<u64> {
        let follow = self.inner.follow.as_ref()?;
        Some(follow.published.load(Ordering::Acquire))
    }

    /// The newest change sent on [`Store::subscribe`]: every change up to it has gone out,
    /// and was durable first (on a store only this process opens, a write's changes go out
    /// once it is flushed; on a shared database, once applied here, as
    /// [`Store::applied_seq`]). What a change feed may vouch for: a change committed and
    /// not flushed yet may still be lost, and the number reused.
    pub fn published_seq(&self) -> u64 {
        match &self.inner.follow {
            Some(follow) => follow.published.load(Ordering::Acquire),
            None => self.inner.published.load(Ordering::Acquire),
        }
    }

    /// Sends a committed write's events to subscribers: directly on a store no other
    /// process writes; on a shared database by catching up, which publishes them in `seq`
    /// order after any earlier change of another process.
    pub(crate) fn publish(&self, events: Vec<AuditEvent>) {
        if self.inner.follow.is_none() {
            let newest = events.last().map(|e| e.seq);
            for event in events {
                // No receiver is fine: nobody is listening.
                let _ = self.inner.events.send(event);
            }
            if let Some(seq) = newest {
                self.inner.published.fetch_max(seq, Ordering::AcqRel);
            }
        } else if let Err(e) = self.read_changes_now() {
            // The follower's thread, woken by the commit's notification, records the
            // progress: not here, under the cluster's writers' lock, where a lock on this
            // process's row in the database would hold every writer of the cluster.
            crate::warn_limited!(error = %e, "could not read the changes after a write; retrying in a second");
        }
    }

    /// After a store only this process opens was reopened (a write failed): sends what it
    /// holds beyond the last change published. A write whose flush failed may have
    /// committed for good all the same (redb commits durably before the flush that found
    /// its handle closed): never published, its changes would reach no subscriber, a
    /// revocation among them, and a retried revocation records none. A store that went
    /// back behind what was published (which was flushed: it should not) breaks the feed,
    /// as a database that lost changes does.
    pub(crate) fn publish_after_reopen(&self) -> Result<(), StoreError> {
        if self.inner.follow.is_some() {
            return Ok(());
        }
        let published = self.inner.published.load(Ordering::Acquire);
        let head = self.last_seq()?;
        if head < published {
            tracing::error!(
                published,
                head,
                "the reopened store holds fewer changes than were published; event streams end and resume from it"
            );
            self.inner.published.store(head, Ordering::Release);
            self.inner.breaks.send_modify(|breaks| *breaks += 1);
            return Ok(());
        }
        let mut after = published;
        while after < head {
            let events = self.events_since(after, CATCH_UP_PAGE)?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            for event in events {
                let _ = self.inner.events.send(event);
            }
            self.inner.published.fetch_max(last, Ordering::AcqRel);
            after = last;
        }
        Ok(())
    }

    /// Applies and publishes every change after the last one applied, in `seq` order; a
    /// no-op on a store no other process writes.
    pub(crate) fn read_changes_now(&self) -> Result<(), StoreError> {
        let Some(follow) = &self.inner.follow else {
            return Ok(());
        };
        self.read_changes(follow, i64::MAX).map(drop)
    }

    /// Records in the database how far this process has applied the changes: the others'
    /// writes wait for it from then on, and its cache serves as it is
    /// ([`Freshness::Confirmed`]). A process whose records fail (a read-only database, a
    /// lock on its row, a privilege revoked) is not waited for once `max_staleness` has
    /// passed, so its verifications read the changes themselves by then
    /// ([`Freshness::Unacknowledged`]).
    pub(crate) fn acknowledge_applied(&self) -> Result<(), StoreError> {
        let Some(follow) = &self.inner.follow else {
            return Ok(());
        };
        let _one = follow
            .acknowledging
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (seq, resets) = {
            let applied = follow
                .applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (applied.seq, follow.resets.load(Ordering::Acquire))
        };
        let started = follow.now();
        self.inner.db.acknowledge(follow.id, Some(seq))?;
        // Waited for from this record on. A write may have committed and stopped waiting
        // for this process before it, while its last record was older than
        // `max_staleness` (after a fault: the re-check s52c's F1, a remote verifier's
        // cache vouched for by a heartbeat before the revocation was read): such a write
        // committed before the record, so the changes are read once more first.
        if !follow.within_staleness(&follow.confirmed_at) {
            self.read_changes_now()?;
        }
        // Under `applied`, as a reset is: one made since the value was taken leaves the
        // process unconfirmed (the row may name an event the history no longer holds),
        // until the next acknowledgement.
        let _applied = follow
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if follow.resets.load(Ordering::Acquire) == resets {
            follow.confirmed_at.fetch_max(started, Ordering::AcqRel);
        }
        Ok(())
    }

    /// For a verification that began at `begun` while the others' writes do not wait for
    /// this process: applies the changes after the last one applied, unless a read that
    /// started after `begun` did already (one read serves every verification waiting).
    pub(crate) fn read_changes_since(&self, begun: i64) -> Result<(), StoreError> {
        let Some(follow) = &self.inner.follow else {
            return Ok(());
        };
        if follow.read_at.load(Ordering::Acquire) >= begun {
            return Ok(());
        }
        self.read_changes(follow, begun).map(drop)
    }

    /// Whether a verification may answer from what this process holds, reading the
    /// changes first when it must (and `may_read`): `Ok(false)` when it must and may not
    /// (the caller reads off its async worker); `Unavailable` once neither a
    /// record nor a read of the changes succeeded within `max_staleness`.
    pub(crate) fn ready_to_verify(&self, may_read: bool) -> Result<bool, crate::VerifyError> {
        match self.freshness() {
            Freshness::Confirmed => Ok(true),
            Freshness::Unacknowledged(_) if !may_read => Ok(false),
            Freshness::Unacknowledged(begun) => self
                .read_changes_since(begun)
                .map(|()| true)
                .map_err(|e| crate::VerifyError::Unavailable(e.to_string())),
            Freshness::Stale => Err(crate::VerifyError::Unavailable(
                "the keystore's database has not been reachable within max_staleness".into(),
            )),
        }
    }

    /// Applies and publishes every change after the last one applied, in `seq` order, and
    /// notes the read as made when it took the applied tip; not when a read that started at
    /// `skip_after` or later is done by the time this holds the applied tip. Returns the
    /// newest change applied.
    fn read_changes(&self, follow: &Follow, skip_after: i64) -> Result<u64, StoreError> {
        let mut applied = follow
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if follow.read_at.load(Ordering::Acquire) >= skip_after {
            return Ok(applied.seq);
        }
        // Taken once the tip is held, not before waiting for it: every verification that
        // began while the previous read held it is served by this one, instead of each
        // reading again in turn (bench/postgres-unacknowledged.sh: 6.5 % of the confirmed
        // state's requests a second with the time taken before the wait).
        let started = follow.now();
        let tip = Tip::of(&*self.inner.db)?;
        // Once per catch-up at most: a chain broken in the database itself (which
        // `verify_audit` reports) must not keep it going round.
        let mut reset =
            tip.seq < applied.seq || (tip.seq == applied.seq && tip.hash != applied.hash);
        if reset {
            self.history_rewritten(follow, &mut applied, tip);
        }
        // One event at a time after a page that did not decode, to apply every event
        // before the damaged one and then step over it.
        let mut page = CATCH_UP_PAGE;
        loop {
            let events = match self.events_since(applied.seq, page) {
                Ok(events) => events,
                Err(StoreError::Corrupt(_)) if page > 1 => {
                    page = 1;
                    continue;
                }
                Err(StoreError::Corrupt(why)) => {
                    self.skip_unreadable(follow, &mut applied, &why)?;
                    // The next event links to the one skipped: taken as given.
                    reset = true;
                    page = CATCH_UP_PAGE;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !reset && events.first().is_some_and(|e| e.prev_hash != applied.hash) {
                let tip = Tip::of(&*self.inner.db)?;
                self.history_rewritten(follow, &mut applied, tip);
                reset = true;
                continue;
            }
            let more = events.len() == page;
            for event in events {
                self.apply_remote(&event)?;
                *applied = Tip {
                    seq: event.seq,
                    hash: event.hash.clone(),
                };
                follow.published.store(event.seq, Ordering::Release);
                let _ = self.inner.events.send(event);
            }
            if !more {
                break;
            }
        }
        follow.read_at.fetch_max(started, Ordering::AcqRel);
        Ok(applied.seq)
    }

    /// The database's history no longer holds the last event applied here (see the module
    /// docs): nothing cached can be trusted, and following goes on from `tip`.
    fn history_rewritten(&self, follow: &Follow, applied: &mut Tip, tip: Tip) {
        tracing::error!(
            applied = applied.seq,
            database = tip.seq,
            "the database lost changes this process had applied (a failover to a standby \
             that missed commits, or an older backup restored under running daemons); \
             emptying the verify cache and the meters and following on from the database's \
             newest change: the changes in between are not in this process's event feed"
        );
        self.forget_derived();
        follow.unconfirm();
        follow.published.store(tip.seq, Ordering::Release);
        *applied = tip;
    }

    /// The database holds an event that does not decode (damaged by hand, or by a fault):
    /// what it changed is unknown, so everything derived from the records goes, as after
    /// lost history, and following goes on after it instead of stalling on it for ever
    /// (every process would answer 503 once `max_staleness` passed). `audit verify` names
    /// the event.
    fn skip_unreadable(
        &self,
        follow: &Follow,
        applied: &mut Tip,
        why: &str,
    ) -> Result<(), StoreError> {
        let seq = applied.seq + 1;
        tracing::error!(
            seq,
            error = why,
            "a change in the database does not decode; emptying the verify cache and the \
             meters and following on after it (`latchkey audit verify` names it)"
        );
        self.forget_derived();
        // The skipped event's hash, as the next one links to it (or the database's head).
        let hash = match self.events_since(seq, 1) {
            Ok(next) if !next.is_empty() => next[0].prev_hash.clone(),
            _ => Tip::of(&*self.inner.db)?.hash,
        };
        follow.unconfirm();
        follow.published.store(seq, Ordering::Release);
        *applied = Tip { seq, hash };
        Ok(())
    }

    /// Forgets what this process derived from the records. A meter built from controls
    /// the database no longer holds would outrank the older ones it does hold (its version
    /// is higher), and imported keys may have come or gone. The meters' unspent credit
    /// slices are lost with them: spent, never granted twice.
    fn forget_derived(&self) {
        self.inner.breaks.send_modify(|breaks| *breaks += 1);
        self.inner.cache.invalidate(None);
        self.inner.meters.clear();
        self.inner.user_meters.clear();
        let imports = super::import::any_imported(&self.inner.db).unwrap_or(true);
        self.inner.has_imports.store(imports, Ordering::Release);
    }

    /// After a write committed `seq`: waits until every other live process applied it, so
    /// that the next verification anywhere in the cluster sees it.
    pub(crate) fn await_cluster(&self, seq: u64) {
        let Some(follow) = &self.inner.follow else {
            return;
        };
        if let Err(e) = self
            .inner
            .db
            .await_followers(follow.id, seq, follow.max_staleness)
        {
            tracing::warn!(error = %e, seq, "could not confirm that every daemon applied a change");
        }
    }

    /// What a change written elsewhere means to this process's memory.
    fn apply_remote(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let cache = &self.inner.cache;
        match (event.action.entity(), layout::public_id_of(event.target)) {
            (Entity::Key, Some(public)) => cache.invalidate(Some(&public)),
            _ => cache.invalidate(None),
        }
        if event.action == Action::UserDelete {
            self.inner.user_meters.forget(event.target);
        }
        if event.action == Action::KeyCreate
            && !self.inner.has_imports.load(Ordering::Relaxed)
            && import::any_imported(&self.inner.db)?
        {
            self.inner.has_imports.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether every change another process makes reaches this one before that write
    /// returns: always, unless the store follows a shared database and has not recorded
    /// its progress there within `max_staleness` (the others' writes then stop waiting for
    /// it: its verifications read the changes first, or answer `Unavailable` when they
    /// cannot). A change feed opens no stream and sends no heartbeat meanwhile: its clients
    /// must not vouch for their caches on the word of a process that may not have read a
    /// change already returned elsewhere.
    pub fn is_fresh(&self) -> bool {
        self.freshness() == Freshness::Confirmed
    }

    /// How far verification may serve from the cache now ([`Freshness`]).
    pub(crate) fn freshness(&self) -> Freshness {
        self.inner
            .follow
            .as_ref()
            .map_or(Freshness::Confirmed, Follow::freshness)
    }
}
