//! Building the indexes and counts of a store written before they existed, or by a version
//! whose index layout differs (version 1: one entry per position; 2: chunks), or whose
//! build was interrupted, or one of whose counts no longer reads: at open, once, in batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{Backend, Batch, Direction, KeyRange, scan};
use super::chunks::{Overlay, Writer};
use super::counters::{self, Counter};
use super::index::{self, Class};
use super::keys::KeyRecord;
use super::{decode, layout};
use crate::error::StoreError;

/// Marks a store whose indexes and counts are complete, by the layout's version.
pub(crate) const INDEXED: &[u8] = b"m:indexed";
/// The index layout this version writes.
pub(crate) const INDEX_VERSION: &[u8] = b"2";

/// Keys per batch while building.
const BATCH: usize = 10_000;

/// Whether the indexes and counts are complete, in this version's layout, and every count
/// reads.
fn complete(db: &dyn Backend) -> Result<bool, StoreError> {
    Ok(db.get(INDEXED)?.as_deref() == Some(INDEX_VERSION) && counters::readable(db)?)
}

/// Builds the indexes and counts unless the store says they are complete.
pub(crate) fn ensure(
    db: &Arc<dyn Backend>,
    now: OffsetDateTime,
    chunk_positions: usize,
) -> Result<(), StoreError> {
    if complete(&**db)? {
        return Ok(());
    }
    // On a shared database, no other process writes index chunks meanwhile (nor builds
    // them too: the first to get here does).
    let _writers = db.lock_writers()?;
    if complete(&**db)? {
        return Ok(());
    }
    tracing::info!("building the store's indexes (once)");
    // The mark goes first: a build cut off from here on is started again at the next open,
    // whatever made this one start. Then whatever an interrupted build or an older layout
    // left goes, in bounded batches.
    let mut batch = Batch::default();
    batch.remove(INDEXED);
    db.apply_batch(std::mem::take(&mut batch))?;
    for item in scan(db, KeyRange::prefix(index::INDEX), Direction::Forward) {
        batch.remove(item?.0);
        if batch.writes.len() == BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    db.apply_batch(batch)?;
    let mark = index::expiry_position(now, Uuid::max());
    let mut counts: BTreeMap<Class, u64> = BTreeMap::new();
    let mut batch = Batch::default();
    let mut chunks = Writer::new(Overlay::new(&**db), chunk_positions);
    let mut pending = 0;
    for item in scan(db, KeyRange::prefix(layout::KEYS), Direction::Forward) {
        let (path, bytes) = item?;
        // A record that does not decode is stepped over, said loudly, as the sweep and the
        // jobs step over it: refusing to open would make one damaged key take the whole
        // store down. It is in no list and no count until it is put right (its own reads
        // still answer 500).
        let record: KeyRecord = match decode(&bytes) {
            Ok(record) => record,
            Err(e) => {
                let key = String::from_utf8_lossy(&path);
                tracing::error!(record = %key, error = %e, "a key record does not decode: left out of the rebuilt indexes and counts");
                continue;
            }
        };
        *counts.entry(Class::of(&record, &mark)).or_default() += 1;
        index::apply(&mut chunks, Vec::new(), index::entries(&record, &mark))?;
        pending += 1;
        if pending == BATCH {
            chunks.write_into(&mut batch);
            db.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    let count = |prefix| {
        scan(db, KeyRange::prefix(prefix), Direction::Forward)
            .try_fold(0_u64, |n, item| item.map(|_| n + 1))
    };
    chunks.write_into(&mut batch);
    let users = count(layout::USERS)?;
    let groups = count(layout::GROUPS)?;
    for class in Class::ALL {
        let n = counts.get(&class).copied().unwrap_or(0);
        batch.insert(Counter::Keys(class).key(), n.to_be_bytes());
    }
    batch.insert(Counter::Users.key(), users.to_be_bytes());
    batch.insert(Counter::Groups.key(), groups.to_be_bytes());
    batch.insert(index::EXPIRY_MARK, mark);
    batch.insert(INDEXED, INDEX_VERSION);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
