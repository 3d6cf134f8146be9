//! One management write: a backend transaction, its audit events, and what it invalidates.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{KvTx, TxError};
use super::chunks::{self, Change};
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::{Action, AuditEvent, Changes, Recorded, StoredEvent, hash_bytes};
use crate::error::StoreError;
use crate::key::PublicId;

pub(crate) type TxResult<T> = Result<T, TxError>;

/// How many rounds of index hints a write reads before changes still without one start
/// from their index's head (one round is the rule).
const HINT_ROUNDS: usize = 4;

/// Aborts the transaction with a typed error.
pub(crate) fn abort<T>(err: StoreError) -> TxResult<T> {
    Err(TxError::Abort(err))
}

/// What the cache must forget once a write commits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Invalidate {
    Key(PublicId),
    All,
}

/// The view of the store inside one write.
pub(crate) struct Tx<'a> {
    tree: &'a dyn KvTx,
    pub(crate) now: OffsetDateTime,
    events: RefCell<Vec<Recorded>>,
    invalidations: RefCell<Vec<Invalidate>>,
    /// Index changes, applied to the chunks at the end of the write (`key_writes.rs`).
    pub(crate) index_changes: RefCell<Vec<Change>>,
    /// The counts this write would have taken below zero (`counters.rs`), logged once it
    /// commits: a transaction's body may run more than once.
    pub(crate) out_of_step: RefCell<Vec<String>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn get_raw(&self, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        self.tree.get(key)
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> TxResult<Option<T>> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(bytes) => match super::decode(&bytes) {
                Ok(value) => Ok(Some(value)),
                Err(e) => abort(e),
            },
        }
    }

    /// [`Tx::get`] for work over many records (a user's keys revoked in chunks, the expiry
    /// sweep) that must not stop for good at one that does not decode: that one is logged
    /// and read as absent, and the work goes on with the others. (A key whose record does
    /// not decode authenticates nobody: verification fails on it too.)
    pub(crate) fn get_or_skip<T: DeserializeOwned>(&self, key: &[u8]) -> TxResult<Option<T>> {
        match self.get(key) {
            Err(TxError::Abort(StoreError::Corrupt(why))) => {
                tracing::error!(
                    key = %String::from_utf8_lossy(key),
                    error = %why,
                    "a record does not decode; skipped (`latchkey restore` from a backup repairs the store)"
                );
                Ok(None)
            }
            read => read,
        }
    }

    /// Reads `keys` ahead, in one round trip where reads are round trips: see
    /// [`KvTx::prefetch`].
    pub(crate) fn prefetch(&self, keys: &[Vec<u8>]) -> TxResult<()> {
        self.tree.prefetch(keys)
    }

    pub(crate) fn put<T: Serialize>(&self, key: &[u8], value: &T) -> TxResult<()> {
        self.tree.put(key, &super::encode(value))
    }

    pub(crate) fn put_raw(&self, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.tree.put(key, value)
    }

    pub(crate) fn remove(&self, key: &[u8]) -> TxResult<()> {
        self.tree.remove(key)
    }

    /// Records an audit event (and change-feed entry) for this write.
    pub(crate) fn record(&self, action: Action, target: Uuid, user_id: Option<Uuid>) {
        self.record_changes(action, target, user_id, Changes::default());
    }

    /// [`Tx::record`] for an update or a rotation, with what it changed: the event's
    /// place, to add what the write learns later ([`Tx::add_changes`]).
    pub(crate) fn record_changes(
        &self,
        action: Action,
        target: Uuid,
        user_id: Option<Uuid>,
        changes: Changes,
    ) -> usize {
        let mut events = self.events.borrow_mut();
        events.push(Recorded {
            action,
            target,
            user_id,
            changes,
        });
        events.len() - 1
    }

    /// Adds to the changes of the event recorded at `place`.
    pub(crate) fn add_changes(&self, place: usize, add: impl FnOnce(Changes) -> Changes) {
        if let Some(event) = self.events.borrow_mut().get_mut(place) {
            event.changes = add(std::mem::take(&mut event.changes));
        }
    }

    pub(crate) fn invalidate(&self, what: Invalidate) {
        self.invalidations.borrow_mut().push(what);
    }

    /// Appends the recorded events to the audit chain, inside the transaction.
    fn append_events(&self, actor: Option<Uuid>) -> TxResult<Vec<AuditEvent>> {
        let indexed = super::user_index::INDEXED;
        self.prefetch(&[
            layout::SEQ.to_vec(),
            layout::HEAD.to_vec(),
            indexed.to_vec(),
        ])?;
        // A malformed counter or head aborts the write: read as a default, it would
        // overwrite the chain from its start or chain new events from nothing.
        let stored = (self.get_raw(layout::SEQ)?, self.get_raw(layout::HEAD)?);
        // This build keeps the indexes of users: they follow the trail while they are
        // complete (`user_index.rs`); one left behind stays behind until it is rebuilt.
        let users_indexed = self.get_raw(indexed)? == stored.0;
        let (mut seq, mut head) = match super::decode_seq(stored.0)
            .and_then(|seq| Ok((seq, super::decode_head(stored.1)?)))
        {
            Ok(found) => found,
            Err(e) => return abort(e),
        };
        let mut appended = Vec::new();
        for recorded in self.events.take() {
            seq += 1;
            let event = AuditEvent::new(seq, self.now, actor, recorded, head);
            self.put(&layout::audit(seq), &StoredEvent::from_event(&event))?;
            head = event.hash.clone();
            appended.push(event);
        }
        if !appended.is_empty() {
            self.put_raw(layout::SEQ, &seq.to_be_bytes())?;
            self.put_raw(layout::HEAD, &hash_bytes(&head))?;
            if users_indexed {
                self.put_raw(indexed, &seq.to_be_bytes())?;
            }
        }
        Ok(appended)
    }
}

impl Store {
    /// Runs one management write.
    ///
    /// The closure's writes, its audit events and the sequence counter commit in one
    /// transaction; the store is flushed to disk and the verify cache invalidated before
    /// this returns, so an acknowledged change survives `kill -9` and is seen by the very
    /// next verification.
    pub(crate) fn write<T>(
        &self,
        actor: &Actor,
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        self.write_prepared(actor, || Ok(()), |tx, ()| f(tx))
    }

    /// [`Store::write`] with a preparation step for what transactions do not do: scans.
    ///
    /// Writers are serialized by `write_lock` (and, on a shared database, by the backend's
    /// writer lock across processes), and `prepare` runs under both, so what it reads cannot
    /// change before the transaction commits. It must run outside the transaction: sled
    /// deadlocks on a plain read from inside a transaction closure.
    pub(crate) fn write_prepared<P, T>(
        &self,
        actor: &Actor,
        prepare: impl FnOnce() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let inner = &*self.inner;
        let _serialized = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ready_for_write()?;
        let _cluster = inner.db.lock_writers()?;
        let prepared = prepare()?;
        let now = inner.clock.now();
        // Index changes need hints from the committed state, all read at once
        // (`Backend::floors`). The locks held keep the committed state as it was, so it is
        // the transaction's snapshot too. Where a read may run while a transaction is open
        // (PostgreSQL), the attempt reads the hints it lacks itself. Where it may not
        // (sled deadlocks), an attempt that lacks some names them and writes nothing, they
        // are read here, and the write runs again; a write that draws new ids makes new
        // positions each attempt, close to the old ones, whose hints mostly serve.
        let mut hints = RefCell::new(chunks::Hints::default());
        let read_within = inner.db.reads_during_transactions();
        let mut rounds = 0;
        let outcome = loop {
            let missing = RefCell::new(Vec::new());
            let outcome = inner.db.transact(|tree| {
                let tx = Tx {
                    tree,
                    now,
                    events: RefCell::default(),
                    invalidations: RefCell::default(),
                    index_changes: RefCell::default(),
                    out_of_step: RefCell::default(),
                };
                let value = f(&tx, &prepared)?;
                let changes = tx.index_changes.take();
                if read_within {
                    let lacking = hints.borrow().missing(&changes);
                    hints
                        .borrow_mut()
                        .read(&*inner.db, &lacking)
                        .map_err(TxError::Storage)?;
                }
                let lacking =
                    chunks::apply_in_tx(tree, changes, &hints.borrow(), inner.chunk_positions)?;
                if !lacking.is_empty() {
                    *missing.borrow_mut() = lacking;
                    return abort(StoreError::storage("index hints to read first"));
                }
                let events = tx.append_events(actor.key_id())?;
                let after = (tx.invalidations.into_inner(), tx.out_of_step.into_inner());
                Ok((value, events, after))
            });
            let missing = missing.into_inner();
            if outcome.is_ok() || missing.is_empty() {
                break outcome;
            }
            rounds += 1;
            let hints = hints.get_mut();
            if rounds == HINT_ROUNDS {
                hints.start_from_heads();
            }
            if let Err(e) = hints.read(&*inner.db, &missing) {
                return Err(self.failed_write(e));
            }
        };
        let (value, events, (invalidations, out_of_step)) = match outcome {
            Ok(done) => done,
            Err(TxError::Abort(e)) => return Err(e),
            Err(TxError::Storage(e)) => return Err(self.failed_write(e)),
            Err(TxError::Conflict) => return Err(StoreError::storage("unresolved write conflict")),
        };
        for count in out_of_step {
            tracing::warn!(%count, "a count would have fallen below zero: the counts are out of step with the records; the next open counts them again");
        }
        for what in invalidations {
            match what {
                Invalidate::Key(id) => inner.cache.invalidate(Some(&id)),
                Invalidate::All => inner.cache.invalidate(None),
            }
        }
        if let Err(e) = inner.db.flush() {
            return Err(self.failed_write(e));
        }
        let newest = events.last().map(|e| (e.seq, e.hash.clone()));
        self.publish(events);
        // The mark's fsync runs after the lock is released: the next writer's transaction
        // goes on meanwhile, and one mark write covers every writer waiting for it.
        drop(_serialized);
        drop(_cluster);
        if let Some((seq, head)) = newest {
            match &inner.local {
                Some(_) => inner.mark.advance(&inner.path, seq, head),
                None => self.await_cluster(seq),
            }
        }
        Ok(value)
    }
}
