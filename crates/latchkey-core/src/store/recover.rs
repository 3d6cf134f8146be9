//! What keeps a store honest about its writes: the space check before a write, recovery
//! after sled fails one, the mark advanced after each acknowledged write and checked at
//! open (see `mark` and `space` for why).

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::backend::Backend;
use super::mark::{self, Mark};
use super::{Store, decode_event, layout, space};
use crate::audit::{self, ChainBreak};
use crate::error::StoreError;

impl Store {
    /// Before a write, under the write lock: the database is open (reopening it after a
    /// failure) and the disk has room.
    pub(super) fn ready_for_write(&self) -> Result<(), StoreError> {
        if self.inner.local.is_none() {
            return Ok(());
        }
        self.ensure_in_place()?;
        self.ensure_open()?;
        if space::below_reserve(&self.inner.path, self.inner.min_free_bytes) {
            return Err(self.full());
        }
        space::ensure_ballast(&self.inner.path);
        Ok(())
    }

    /// Reopens the database if a storage failure closed it. Called under the write lock.
    pub(super) fn ensure_open(&self) -> Result<(), StoreError> {
        match &self.inner.local {
            Some(db) if !db.is_open() => self.reopen(),
            _ => Ok(()),
        }
    }

    /// After the embedded engine failed a write, under the write lock: sled is now poisoned
    /// and holds the failed write in memory, redb refuses everything (`PreviousIo`), so
    /// reopen it from its files, which drops that write, and
    /// forget every cached verification, which may have read it.
    pub(super) fn failed_write(&self, err: StoreError) -> StoreError {
        if self.inner.local.is_none() {
            // Another backend's failed write changed nothing and poisons nothing.
            return err;
        }
        if !matches!(err, StoreError::Storage(_) | StoreError::StorageFull { .. }) {
            // A record that does not decode (`Corrupt`) poisons no engine: reopening would
            // only empty the verify cache and hold up verifications, again at every retry.
            return err;
        }
        let full = space::is_full_error(&err)
            || space::below_reserve(&self.inner.path, self.inner.min_free_bytes.max(1));
        // A full disk is the keystore's failure, not latchkey's: a warning (README, Logs).
        if full {
            tracing::warn!(error = %err, store = %self.inner.path.display(), "a write failed on a full disk; reopening the store");
        } else {
            tracing::error!(error = %err, store = %self.inner.path.display(), "a write failed in storage; reopening the store");
        }
        if let Err(e) = self.reopen() {
            tracing::error!(error = %e, "could not reopen the store; retrying at the next write");
        }
        if full { self.full() } else { err }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let Some(db) = &self.inner.local else {
            return Ok(());
        };
        // The engine would make a new, empty store where the directory was.
        self.ensure_in_place()?;
        let reopened = db.reopen();
        // Whatever succeeded or not, cached answers may come from the dropped instance.
        self.inner.cache.invalidate(None);
        reopened.map_err(reopen_failed)?;
        tracing::info!(store = %self.inner.path.display(), "store reopened");
        if let Err(e) = self.publish_after_reopen() {
            tracing::error!(error = %e, "could not publish the reopened store's last changes; event streams end and resume");
            self.inner.breaks.send_modify(|breaks| *breaks += 1);
        }
        Ok(())
    }

    fn full(&self) -> StoreError {
        StoreError::StorageFull {
            path: self.inner.path.clone(),
        }
    }

    /// Writes the mark of a store just created (its newest event, or none), through the
    /// directory as opened, as every later mark.
    pub(super) fn write_first_mark(&self) -> Result<(), StoreError> {
        if self.inner.local.is_none() {
            return Ok(());
        }
        let current = self.inner.mark.current();
        let seq = self.last_seq()?;
        let head = head_of(&*self.inner.db)?;
        let first = Mark {
            seq,
            head,
            ..current
        };
        let dir = self.inner.mark.dir.as_ref();
        mark::write_through(dir, &self.inner.path, &first, true).map_err(|e| {
            StoreError::storage(format!(
                "cannot write {}: {e}",
                mark::path(&self.inner.path).display()
            ))
        })?;
        self.inner.mark.set(first);
        Ok(())
    }
}

/// A reopen's failure as the store answers it. A held lock is most often the dropped
/// instance's own, which its I/O threads hold until they finish: a 503 to retry (the next
/// write reopens again), not a store another `latchkey serve` holds; another process that
/// took the store meanwhile is named too.
fn reopen_failed(e: StoreError) -> StoreError {
    match e {
        StoreError::Locked { path } => StoreError::Unavailable(
            format!(
                "the store at {} is being reopened after a storage failure and its files \
                 are still locked (by the instance it replaces, or by another process)",
                path.display()
            )
            .into(),
        ),
        e => e,
    }
}

/// The mark as last written, and the writes waiting for it: one mark write (an fsync)
/// serves every writer that flushed while the previous one was in flight (group commit).
#[derive(Debug)]
pub(super) struct Marker {
    state: Mutex<MarkState>,
    written: Condvar,
    /// The store's directory as opened, which each mark is written through
    /// ([`mark::write_through`]); `None` elsewhere than on Linux, or when it could not be
    /// opened (the mark then goes by path).
    dir: Option<std::fs::File>,
}

#[derive(Debug)]
struct MarkState {
    current: Mark,
    /// The newest mark a writer waits for.
    wanted: Option<Mark>,
    /// Whether a writer is writing the mark file now.
    writing: bool,
}

impl Marker {
    /// The mark `current` of the store in the directory `dir` (none for a database).
    pub(super) fn new(current: Mark, dir: Option<&Path>) -> Marker {
        Marker {
            state: Mutex::new(MarkState {
                current,
                wanted: None,
                writing: false,
            }),
            written: Condvar::new(),
            dir: dir.and_then(|dir| {
                std::fs::File::open(dir)
                    .inspect_err(|e| {
                        tracing::warn!(store = %dir.display(), error = %e, "cannot hold the store's directory open: its mark is written by path");
                    })
                    .ok()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MarkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mark as last written.
    pub(super) fn current(&self) -> Mark {
        self.lock().current.clone()
    }

    fn set(&self, mark: Mark) {
        self.lock().current = mark;
    }

    /// After a write was flushed: returns once the mark covers change `seq`. A mark that
    /// cannot be written stays behind, which is safe (it only ever trails the store).
    pub(super) fn advance(&self, path: &Path, seq: u64, head: String) {
        let mut state = self.lock();
        if state.wanted.as_ref().is_none_or(|w| w.seq < seq) {
            let lineage = state.current.lineage;
            state.wanted = Some(Mark { lineage, seq, head });
        }
        // Bounded: each turn writes the newest wanted mark, or waits for the write in
        // flight, which ends with a notification.
        while state.current.seq < seq {
            if state.writing {
                state = self
                    .written
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Taken by a write that failed: this writer's change stays unmarked.
            let Some(next) = state.wanted.take() else {
                break;
            };
            state.writing = true;
            drop(state);
            let written = mark::write_through(self.dir.as_ref(), path, &next, false);
            state = self.lock();
            state.writing = false;
            self.written.notify_all();
            match written {
                Ok(()) if next.seq > state.current.seq => state.current = next,
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not advance the store's mark; it stays at an older write");
                    break;
                }
            }
        }
    }
}

/// At open: compares the store with its mark. Refuses a store behind its mark, diverged
/// from it or of another lineage; advances the mark over writes flushed after it (a crash
/// between a write's flush and its mark) and writes one for a store that has none. On a
/// full disk, even without the store's reserve, a mark that trails the store is kept.
pub(super) fn reconcile_mark(path: &Path, db: &dyn Backend) -> Result<Mark, StoreError> {
    let damaged = |reason: String| StoreError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let stored_lineage = db.get(layout::LINEAGE)?;
    let lineage = match &stored_lineage {
        Some(bytes) => {
            Uuid::from_slice(bytes).map_err(|_| damaged("has a bad lineage id".into()))?
        }
        None => {
            // A store made before lineages: it gets one now.
            let lineage = Uuid::now_v7();
            let mut batch = super::backend::Batch::default();
            batch.insert(layout::LINEAGE, lineage.as_bytes().as_slice());
            db.apply_batch(batch)?;
            db.flush()?;
            lineage
        }
    };
    let seq = match db.get(layout::SEQ)? {
        Some(bytes) => u64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| damaged("has a bad sequence number".into()))?,
        ),
        None => 0,
    };
    // A record that does not decode is damage; a read that fails in storage is not.
    let damaged_if_corrupt = |what: &'static str| {
        let damaged = &damaged;
        move |e: StoreError| match e {
            StoreError::Corrupt(why) => damaged(format!("{what} ({why})")),
            other => other,
        }
    };
    let head = head_of(db).map_err(damaged_if_corrupt("has a bad audit head"))?;
    // The head new events chain from must be the newest event's hash: one that is not
    // would chain them from elsewhere, and the mark written below would then agree.
    let newest =
        event_at(db, seq).map_err(damaged_if_corrupt("has an unreadable newest change"))?;
    let newest_hash = newest.as_ref().map_or(audit::GENESIS, |e| e.hash.as_str());
    if newest_hash != head {
        return Err(damaged(format!(
            "has an audit head ({}) that is not the hash of its newest change {seq} ({})",
            short(&head),
            short(newest_hash)
        )));
    }
    let current = Mark { lineage, seq, head };
    let known = mark::read_or_denied(path).map_err(|e| match e {
        mark::Unread::Denied(e) => e,
        mark::Unread::Bad(why) => damaged(format!("has an unreadable mark ({why})")),
    })?;
    if let Some(known) = &known {
        if known.lineage != lineage {
            return Err(damaged(format!(
                "holds the records of another store (lineage {lineage}) than its mark names \
                 ({})",
                known.lineage
            )));
        }
        if seq < known.seq {
            return Err(damaged(format!(
                "is behind its last acknowledged write: its audit chain ends at change {seq}, \
                 but change {} (hash {}) was acknowledged; its log was damaged or rolled back",
                known.seq,
                short(&known.head)
            )));
        }
        if known.seq > 0 {
            let at_mark = event_at(db, known.seq)?;
            if at_mark.as_ref().map(|e| e.hash.as_str()) != Some(known.head.as_str()) {
                return Err(damaged(format!(
                    "has diverged from its last acknowledged write: change {} does not have \
                     the hash {} it was acknowledged with",
                    known.seq,
                    short(&known.head)
                )));
            }
        }
        if *known == current {
            return Ok(current);
        }
    } else if seq > 0 && stored_lineage.is_some() {
        // A store with a lineage was given a mark when it got one: this one was deleted, or
        // the store copied without it. Writing a new one is all that can be done, and said.
        tracing::warn!(
            store = %path.display(),
            change = seq,
            "the store's mark ({}) is missing: a new one is written at its newest change; \
             whether acknowledged writes were lost before this open cannot be checked",
            mark::FILE
        );
    }
    match (write_at_open(path, &current), known) {
        (Ok(()), _) => Ok(current),
        // A mark that trails the store is safe (it only ever checks less): a store whose
        // last mark write failed on a full disk opens on it still, and keeps it until a
        // write's mark fits.
        (Err(e), Some(known)) if space::is_full(&e) => {
            tracing::warn!(error = %e, store = %path.display(), "the disk is full: the store's mark stays at an older write until there is room");
            Ok(known)
        }
        (Err(e), _) => Err(StoreError::storage(format!(
            "cannot write {}: {e}",
            mark::path(path).display()
        ))),
    }
}

/// Writes the mark at open; on a full disk, once more after releasing the store's reserve.
fn write_at_open(path: &Path, current: &Mark) -> std::io::Result<()> {
    match mark::write(path, current, true) {
        Err(e) if space::is_full(&e) && space::release_ballast(path) => {
            mark::write(path, current, true)
        }
        written => written,
    }
}

/// `audit verify`'s check of a whole chain against the mark: it must reach the mark's
/// change, with the hash that change was acknowledged with.
pub(super) fn check_against_mark(
    mark: &Mark,
    events: u64,
    hash_at_mark: Option<&str>,
) -> Option<ChainBreak> {
    if events < mark.seq {
        return Some(ChainBreak {
            seq: events + 1,
            reason: format!(
                "the chain ends at change {events}, but change {} was acknowledged (the \
                 store's mark); the log was damaged or rolled back",
                mark.seq
            ),
        });
    }
    (hash_at_mark != Some(mark.head.as_str())).then(|| ChainBreak {
        seq: mark.seq,
        reason: "the change does not have the hash it was acknowledged with (the store's mark)"
            .to_owned(),
    })
}

/// The audit event `seq`, if the store holds it (`Corrupt` when it does not decode).
pub(super) fn event_at(
    db: &dyn Backend,
    seq: u64,
) -> Result<Option<crate::audit::AuditEvent>, StoreError> {
    let path = layout::audit(seq);
    db.get(&path)?
        .map(|value| decode_event(&(path, value)))
        .transpose()
}

pub(super) fn head_of(db: &dyn Backend) -> Result<String, StoreError> {
    super::decode_head(db.get(layout::HEAD)?)
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that committed for good though its flush failed (redb) is published by
    /// the reopen: subscribers get it, as they would have.
    #[test]
    fn a_reopen_publishes_what_the_store_holds_beyond_what_was_published() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig::default().usage_flush_interval(None);
        let store = Store::create_empty(dir.path(), "lk", config).unwrap();
        let group = crate::NewGroup {
            name: "support".into(),
            permissions: crate::PermissionSet::parse(["orders:read"]).unwrap(),
        };
        store.create_group(&crate::Actor::system(), group).unwrap();
        let head = store.last_seq().unwrap();
        assert_eq!(store.published_seq(), head);
        let mut receiver = store.subscribe();
        // As if the change at `head` had committed and never gone out.
        store
            .inner
            .published
            .store(head - 1, std::sync::atomic::Ordering::Release);
        store.reopen().unwrap();
        assert_eq!(receiver.try_recv().unwrap().seq, head);
        assert_eq!(store.published_seq(), head);
        // Nothing more, nothing twice.
        store.reopen().unwrap();
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn a_reopen_that_finds_the_files_locked_answers_unavailable() {
        let locked = StoreError::Locked {
            path: "/var/lib/latchkey".into(),
        };
        let answered = reopen_failed(locked);
        assert_eq!(answered.code(), "keystore_unavailable");
        let said = answered.to_string();
        assert!(
            said.contains("/var/lib/latchkey is being reopened"),
            "{said}"
        );
        assert!(!said.contains("  "), "{said}");
        let damaged = StoreError::Damaged {
            path: "/s".into(),
            reason: "is damaged".into(),
        };
        assert_eq!(reopen_failed(damaged).code(), "store_damaged");
    }
}
