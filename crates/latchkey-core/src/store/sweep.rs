//! The expiry sweep: keys become expired by the clock, not by a write, so their stored class
//! (which the status indexes and the counts follow) is moved by a sweep of the expiry index.
//!
//! It runs every second on the jobs thread, and before a status-filtered list and a read of
//! the counts, so those see every key that expired before they started. Each run handles at
//! most [`SWEEP_CHUNK`] keys in one transaction; a bigger backlog (a store reopened after
//! a long stop) takes several: the jobs thread runs them one after the other, pausing
//! between, and a read runs up to [`READ_SWEEP_CHUNKS`] of them before it reads.

use super::counters::Counter;
use super::index::{self, Class};
use super::keys::KeyRecord;
use super::{Store, layout};
use crate::actor::Actor;
use crate::error::StoreError;

/// The most keys one sweep reclassifies.
pub(crate) const SWEEP_CHUNK: usize = 1_000;

/// The most sweeps a read waits for: a backlog beyond that many chunks is read as it
/// stands (behind by what is left, which the jobs thread works through) rather than
/// holding the read for as long as the backlog takes.
pub(crate) const READ_SWEEP_CHUNKS: usize = 10;

impl Store {
    /// [`Store::sweep_expired`] before a read that counts or filters by status, up to
    /// [`READ_SWEEP_CHUNKS`] times while each finds a whole chunk, at best: a read must not
    /// fail because a write cannot run (a full disk). It then reads the classes as they
    /// are, behind by the keys not yet swept.
    pub(crate) fn sweep_before_read(&self) {
        for _ in 0..READ_SWEEP_CHUNKS {
            match self.sweep_expired() {
                Ok(n) if n < SWEEP_CHUNK => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "no expiry sweep before this read: it reads the statuses as they are");
                    return;
                }
            }
        }
    }

    /// Reclassifies up to [`SWEEP_CHUNK`] keys that expired since the last sweep; returns
    /// how many it looked at.
    pub(crate) fn sweep_expired(&self) -> Result<usize, StoreError> {
        let db = &self.inner.db;
        let now = self.inner.clock.now();
        let mark = || -> Result<Vec<u8>, StoreError> {
            Ok(db
                .get(index::EXPIRY_MARK)?
                .map(|m| m.to_vec())
                .unwrap_or_default())
        };
        // The common case, nothing due, takes no lock.
        if index::newly_expired(db, &mark()?, now, 1)?.is_empty() {
            return Ok(0);
        }
        let prepare = || {
            let old = mark()?;
            let due = index::newly_expired(db, &old, now, SWEEP_CHUNK)?;
            Ok((old, due))
        };
        self.write_prepared(&Actor::system(), prepare, |tx, (old_mark, due)| {
            let Some((new_mark, _)) = due.last() else {
                return Ok(0);
            };
            for (_, id) in due {
                let Some(public) = layout::public_id_of(*id) else {
                    continue;
                };
                let Some(record) = tx.get_or_skip::<KeyRecord>(&layout::key(&public))? else {
                    continue;
                };
                let before = index::entries(&record, old_mark);
                let after = index::entries(&record, new_mark);
                let mut sink = tx;
                index::apply(&mut sink, before, after)?;
                let (was, is) = (Class::of(&record, old_mark), Class::of(&record, new_mark));
                if was != is {
                    tx.count(Counter::Keys(was), -1)?;
                    tx.count(Counter::Keys(is), 1)?;
                }
            }
            tx.put_raw(index::EXPIRY_MARK, new_mark)?;
            Ok(due.len())
        })
    }
}
