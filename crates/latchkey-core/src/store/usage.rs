//! Usage figures: counted in memory on the hot path, persisted in batches.
//!
//! A verification never writes to disk. Counts accumulate in [`UsageBuffer`] and are
//! added to the stored figures every few seconds, at [`Store::flush`] and when the store
//! closes. A `kill -9` loses at most one interval of usage figures (never a management
//! change, which is flushed before it is acknowledged).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::KeyRecord;
use super::{decode, encode, layout};
use crate::error::StoreError;

/// Usage of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub(crate) count: u64,
    pub(crate) last_used_at: Option<OffsetDateTime>,
}

impl Usage {
    pub(crate) fn add(&mut self, other: Usage) {
        self.count += other.count;
        self.last_used_at = self.last_used_at.max(other.last_used_at);
    }
}

/// Counts not yet persisted. One short critical section per successful verification.
#[derive(Debug, Default)]
pub(crate) struct UsageBuffer(Mutex<HashMap<Uuid, Usage>>);

impl UsageBuffer {
    pub(crate) fn record(&self, key: Uuid, at: OffsetDateTime) {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(key).or_default().add(Usage {
            count: 1,
            last_used_at: Some(at),
        });
    }

    pub(crate) fn pending(&self, key: Uuid) -> Usage {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .unwrap_or_default()
    }

    fn take(&self) -> HashMap<Uuid, Usage> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn restore(&self, figures: HashMap<Uuid, Usage>) {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (key, usage) in figures {
            pending.entry(key).or_default().add(usage);
        }
    }
}

/// Adds the buffered figures to the stored ones, in one batch, and flushes. The caller
/// holds the write lock: the usage figures live in the key records, and no management write
/// may interleave with this read-modify-write.
pub(super) fn flush(db: &sled::Db, buffer: &UsageBuffer) -> Result<(), StoreError> {
    let figures = buffer.take();
    if figures.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    let staged = (|| {
        for (key, usage) in &figures {
            // A key deleted meanwhile has nowhere to go; its figures are dropped.
            let Some(public) = layout::public_id_of(*key) else {
                continue;
            };
            let path = layout::key(&public);
            let Some(mut record) = db
                .get(&path)?
                .map(|b| decode::<KeyRecord>(&b))
                .transpose()?
            else {
                continue;
            };
            record.usage.add(*usage);
            batch.insert(path, encode(&record));
        }
        Ok::<_, StoreError>(())
    })();
    if let Err(e) = staged.and_then(|()| Ok(db.apply_batch(batch)?)) {
        // Nothing was applied: keep the figures for the next attempt.
        buffer.restore(figures);
        return Err(e);
    }
    db.flush()?;
    Ok(())
}
