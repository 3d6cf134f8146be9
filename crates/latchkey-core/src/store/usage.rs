//! Usage figures: counted in memory on the hot path, persisted in batches.
//!
//! A verification never writes to disk. Counts accumulate in [`UsageBuffer`] and are
//! added to the stored figures every few seconds, at [`Store::flush`] and when the store
//! closes. A `kill -9` loses at most one interval of usage figures (never a management
//! change, which is flushed before it is acknowledged).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{Backend, Batch};
use super::chunks::{Overlay, Writer};
use super::keys::KeyRecord;
use super::{decode, encode, index, layout};
use crate::error::StoreError;
use crate::limits::MAX_USAGE_CLOCK_SKEW_SECONDS;

/// Whether a verification counts as a use of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// A request made with the key.
    Counted,
    /// A request about the key, such as a lease of its limits.
    Uncounted,
}

/// Usage of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub(crate) count: u64,
    pub(crate) last_used_at: Option<OffsetDateTime>,
}

impl Usage {
    pub(crate) fn add(&mut self, other: Usage) {
        self.count = self.count.saturating_add(other.count);
        self.last_used_at = self.last_used_at.max(other.last_used_at);
    }
}

/// Counts of one key not yet persisted: atomics, so the hot path takes no lock.
#[derive(Debug)]
pub(crate) struct KeyUsage {
    count: AtomicU64,
    /// Unix nanoseconds of the last use; `i64::MIN` for none since the last flush.
    last_used: AtomicI64,
}

impl Default for KeyUsage {
    fn default() -> Self {
        KeyUsage {
            count: AtomicU64::new(0),
            last_used: AtomicI64::new(i64::MIN),
        }
    }
}

impl KeyUsage {
    /// Counts one successful verification at `at` (Unix nanoseconds).
    pub(crate) fn record(&self, at: i128) {
        if self.count.fetch_add(1, Ordering::Relaxed) == u64::MAX {
            // Saturate rather than wrap (reachable only after a report of u64::MAX).
            self.count.store(u64::MAX, Ordering::Relaxed);
        }
        self.record_time(at);
    }

    /// Adds figures counted elsewhere, saturating.
    fn add(&self, count: u64, last_used_at: i128) {
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(count))
            });
        self.record_time(last_used_at);
    }

    fn read(&self) -> Usage {
        to_usage(
            self.count.load(Ordering::Relaxed),
            self.last_used.load(Ordering::Relaxed),
        )
    }
}

fn to_usage(count: u64, last_used: i64) -> Usage {
    let last_used_at = (last_used != i64::MIN)
        .then(|| OffsetDateTime::from_unix_timestamp_nanos(i128::from(last_used)).ok())
        .flatten();
    Usage {
        count,
        last_used_at,
    }
}

/// Every key's counters not yet persisted. The map's lock is taken when a key enters the
/// verify cache and at flush, never per verification: a cached entry holds its counters.
#[derive(Debug, Default)]
pub(crate) struct UsageBuffer {
    counters: Mutex<HashMap<Uuid, Arc<KeyUsage>>>,
    /// Written by a flush from the moment it takes the figures until the store holds them;
    /// read by whoever reads stored figures and then adds the pending ones
    /// ([`UsageBuffer::steady`]). Without it, a read in between would miss the figures in
    /// flight (a key's `usage_count` would dip), or count them twice.
    gate: RwLock<()>,
}

impl UsageBuffer {
    /// Holds flushes off while a reader reads stored figures and then
    /// [`pending`](UsageBuffer::pending) ones. The caller must not wait for the store's write
    /// lock meanwhile: a flush holds that lock while it waits for this one.
    pub(crate) fn steady(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of a key, made on first use.
    pub(crate) fn handle(&self, key: Uuid) -> Arc<KeyUsage> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// A key's figures not yet persisted. Read them and the stored ones under
    /// [`steady`](UsageBuffer::steady), or while holding the store's write lock.
    pub(crate) fn pending(&self, key: Uuid) -> Usage {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|u| u.read())
            .unwrap_or_default()
    }

    /// Whether any key's figures wait to be persisted.
    pub(crate) fn any_pending(&self) -> bool {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|u| u.read() != Usage::default())
    }

    /// Every key's figures not yet persisted, left in place, and forgets counters that
    /// nothing else holds and that counted nothing, so the map does not grow with every
    /// key ever used.
    fn peek(&self) -> HashMap<Uuid, Usage> {
        let mut all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = HashMap::new();
        all.retain(|key, usage| {
            // Whether anyone else holds these counters, read before the figures: when no
            // one does, no one can add to them any more (a new holder needs the map's lock,
            // held here), so the figures read next are final and a counter that counted
            // nothing may go. Read the other way round, a use added and its holder gone
            // between the two reads was forgotten with the counter. The fence pairs with
            // the holder's release of its `Arc`, so its last use is seen.
            let shared = Arc::strong_count(usage) > 1;
            std::sync::atomic::fence(Ordering::Acquire);
            let figures = usage.read();
            // A use reported with a count of 0 (a remote app's report may) still moves
            // `last_used_at`.
            let counted = figures.count > 0 || figures.last_used_at.is_some();
            if counted {
                pending.insert(*key, figures);
            }
            counted || shared
        });
        pending
    }

    /// Takes out of the pending figures exactly what `stored` holds now, leaving what
    /// counted since [`peek`](UsageBuffer::peek): the later uses and a later last use.
    fn settle(&self, stored: &HashMap<Uuid, Usage>) {
        let all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (key, usage) in stored {
            if let Some(counters) = all.get(key) {
                counters.subtract(*usage);
            }
        }
    }
}

impl KeyUsage {
    /// Takes out figures now stored: the count, and the last use unless a later one came.
    fn subtract(&self, stored: Usage) {
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(stored.count))
            });
        if let Some(at) = stored.last_used_at {
            let at = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
            let _ =
                self.last_used
                    .compare_exchange(at, i64::MIN, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn record_time(&self, at: i128) {
        // Clamped, never wrapped: a time outside i64 nanoseconds (before 1677 or after 2262)
        // must not become the other end of the range. `i64::MIN` means "none".
        let at = at.clamp(i128::from(i64::MIN) + 1, i128::from(i64::MAX));
        self.last_used
            .fetch_max(i64::try_from(at).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

/// Adds the buffered figures to the stored ones, with their `last_used_at` index positions
/// (the chunks that hold them read, changed in memory and written whole), in one batch, and
/// flushes. The caller holds the write lock: the usage figures live in the key records, and
/// no management write may interleave with this read-modify-write.
///
/// Readers of the figures wait only while the batch is applied and the figures it stored
/// are taken out of the buffer: everything before (taking the other processes' writers'
/// lock, reading the records and index chunks) runs with the figures left in the buffer,
/// where readers still find them. Uses that count meanwhile stay there for the next flush.
/// The price: on PostgreSQL the flush holds the writers' lock while it waits for the
/// readers in progress (a list page's few round trips), where before the readers waited
/// for the lock.
pub(super) fn flush(
    db: &dyn Backend,
    buffer: &UsageBuffer,
    chunk_positions: usize,
) -> Result<(), StoreError> {
    let figures = buffer.peek();
    if figures.is_empty() {
        return Ok(());
    }
    // On a shared database, other processes add their figures too: their flushes and
    // writes wait for this one.
    let _writers = db.lock_writers()?;
    // What `stored` holds is taken out of the buffer at the end: the figures written, and
    // those dropped because no record holds them.
    let mut stored = HashMap::with_capacity(figures.len());
    let (mut ids, mut paths) = (Vec::new(), Vec::new());
    for (key, usage) in &figures {
        match layout::public_id_of(*key) {
            Some(public) => {
                ids.push(*key);
                paths.push(layout::key(&public));
            }
            None => {
                stored.insert(*key, *usage);
            }
        }
    }
    let records = db.get_many(&paths)?;
    let mut batch = Batch::default();
    // The last-use indexes move with the figures, in the same batch.
    let mark = db.get(index::EXPIRY_MARK)?.unwrap_or_default();
    let mut chunks = Writer::new(Overlay::new(db), chunk_positions);
    for ((key, path), bytes) in ids.into_iter().zip(paths).zip(records) {
        let usage = figures[&key];
        // A key deleted meanwhile has nowhere to go; its figures are dropped.
        let Some(bytes) = bytes else {
            stored.insert(key, usage);
            continue;
        };
        // A damaged record loses its figures, said loudly, rather than holding back
        // every other key's (the batch would fail at each flush, for ever).
        let mut record = match decode::<KeyRecord>(&bytes) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(key_id = %key, error = %e, uses = usage.count, "a key's record does not decode: its usage figures since the last flush are dropped");
                stored.insert(key, usage);
                continue;
            }
        };
        // An id only shares its public id with this key (a report of a made-up id): the
        // figures are no one's.
        if record.id != key {
            stored.insert(key, usage);
            continue;
        }
        let before = index::entries(&record, &mark);
        record.usage.add(usage);
        index::apply(&mut chunks, before, index::entries(&record, &mark))?;
        batch.insert(path, encode(&record));
        stored.insert(key, usage);
    }
    chunks.write_into(&mut batch);
    {
        // From the batch to the buffer's settling, the figures are in both places: readers
        // wait.
        let _flushing = buffer.gate.write().unwrap_or_else(|e| e.into_inner());
        db.apply_batch(batch)?;
        buffer.settle(&stored);
    }
    db.flush()?;
    Ok(())
}

impl super::Store {
    /// Checks one figure of a usage report before any is recorded: `last_used_at` may not be
    /// more than [`MAX_USAGE_CLOCK_SKEW_SECONDS`] ahead of the store's clock, nor before the
    /// key's creation. Figures for unknown keys pass (they are dropped at flush); `None` is
    /// a key the reporter may not see, checked exactly as an unknown one, so that the
    /// answer never tells whether it exists.
    ///
    /// Fails with `Invalid { field: "last_used_at" }`.
    pub fn check_usage(
        &self,
        key_id: Option<Uuid>,
        last_used_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = self.inner.clock.now();
        if last_used_at > now + time::Duration::seconds(MAX_USAGE_CLOCK_SKEW_SECONDS) {
            return Err(StoreError::invalid("last_used_at", "is in the future"));
        }
        let Some(key_id) = key_id else {
            return Ok(());
        };
        match self.key_record(key_id) {
            // A key created after its user's revocation mark is stamped just after it, which a
            // clock that was ahead (another daemon's, or this one before a step back) put
            // later than now: until the clock passes it, its uses come before its stamp.
            Ok(record) if last_used_at < record.created_at && record.created_at <= now => Err(
                StoreError::invalid("last_used_at", "is before the key was created"),
            ),
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds usage counted elsewhere, such as a remote verifier's cache hits: buffered and
    /// persisted like local usage, counts saturating. Figures for unknown or deleted keys
    /// are dropped at flush; a last use ahead of the store's clock is taken as now. Check
    /// each figure with [`check_usage`](super::Store::check_usage) first. `last_used_at` never moves backwards.
    pub fn record_usage(&self, key_id: Uuid, count: u64, last_used_at: OffsetDateTime) {
        let at = last_used_at.min(self.inner.clock.now());
        self.inner
            .usage
            .handle(key_id)
            .add(count, at.unix_timestamp_nanos());
    }
}
