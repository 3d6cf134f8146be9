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
/// Marks a store whose counts were found out of step with its records (a write would have
/// taken one below zero): the next open counts them again, leaving the indexes alone.
pub(crate) const RECOUNT: &[u8] = b"m:recount";
/// The index layout this version writes.
pub(crate) const INDEX_VERSION: &[u8] = b"2";

/// Keys per batch while building.
pub(super) const BATCH: usize = 10_000;

/// Whether the indexes and counts are complete, in this version's layout, and every count
/// reads.
fn complete(db: &dyn Backend) -> Result<bool, StoreError> {
    Ok(db.get(INDEXED)?.as_deref() == Some(INDEX_VERSION) && counters::readable(db)?)
}

/// Builds the indexes and counts unless the store says they are complete (and the indexes
/// of users by tenant and group, `user_index.rs`, unless they are).
pub(crate) fn ensure(
    db: &Arc<dyn Backend>,
    now: OffsetDateTime,
    chunk_positions: usize,
) -> Result<(), StoreError> {
    super::user_index::ensure(db)?;
    if complete(&**db)? && db.get(RECOUNT)?.is_none() {
        return Ok(());
    }
    // On a shared database, no other process writes index chunks meanwhile (nor builds
    // them too: the first to get here does).
    let _writers = db.lock_writers()?;
    if complete(&**db)? {
        return match db.get(RECOUNT)? {
            Some(_) => recount(db),
            None => Ok(()),
        };
    }
    tracing::info!("building the store's indexes (once)");
    // The mark goes first: a build cut off from here on is started again at the next open,
    // whatever made this one start. Then whatever an interrupted build or an older layout
    // left goes, in bounded batches.
    let mut unmark = Batch::default();
    unmark.remove(INDEXED);
    db.apply_batch(unmark)?;
    remove_all(db, index::INDEX)?;
    let mark = index::expiry_position(now, Uuid::max());
    let mut counts: BTreeMap<Class, u64> = BTreeMap::new();
    let mut batch = Batch::default();
    let mut chunks = Writer::new(Overlay::new(&**db), chunk_positions);
    let mut pending = 0;
    for record in key_records(db) {
        let record = record?;
        *counts.entry(Class::of(&record, &mark)).or_default() += 1;
        index::apply(&mut chunks, Vec::new(), index::entries(&record, &mark))?;
        pending += 1;
        if pending == BATCH {
            chunks.write_into(&mut batch);
            db.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    chunks.write_into(&mut batch);
    write_counts(db, &mut batch, &counts)?;
    batch.insert(index::EXPIRY_MARK, mark);
    batch.insert(INDEXED, INDEX_VERSION);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// Removes every entry under `prefix` (what an interrupted build or an older layout left),
/// [`BATCH`] at a time.
pub(super) fn remove_all(db: &Arc<dyn Backend>, prefix: &[u8]) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for item in scan(db, KeyRange::prefix(prefix), Direction::Forward) {
        batch.remove(item?.0);
        if batch.writes.len() == BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    db.apply_batch(batch)
}

/// Counts the keys by class at the stored expiry mark (the one the class indexes follow),
/// the users and the groups again, and writes the counts, indexes untouched. The caller
/// holds the writers' lock.
fn recount(db: &Arc<dyn Backend>) -> Result<(), StoreError> {
    tracing::warn!(
        "counting the store's keys, users and groups again (their counts were out of step)"
    );
    let mark = db.get(index::EXPIRY_MARK)?.unwrap_or_default();
    let mut counts: BTreeMap<Class, u64> = BTreeMap::new();
    for record in key_records(db) {
        *counts.entry(Class::of(&record?, &mark)).or_default() += 1;
    }
    let mut batch = Batch::default();
    write_counts(db, &mut batch, &counts)?;
    db.apply_batch(batch)?;
    db.flush()
}

/// Every key record that decodes. One that does not is stepped over, said loudly, as the
/// sweep and the jobs step over it: refusing to open would make one damaged key take the
/// whole store down. It is in no list and no count until it is put right (its own reads
/// still answer 500).
fn key_records(db: &Arc<dyn Backend>) -> impl Iterator<Item = Result<KeyRecord, StoreError>> {
    scan(db, KeyRange::prefix(layout::KEYS), Direction::Forward).filter_map(|item| {
        let (path, bytes) = match item {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        match decode(&bytes) {
            Ok(record) => Some(Ok(record)),
            Err(e) => {
                let key = String::from_utf8_lossy(&path);
                tracing::error!(record = %key, error = %e, "a key record does not decode: left out of the rebuilt indexes and counts");
                None
            }
        }
    })
}

/// Puts the key counts `counts` and the users' and groups' counts (counted now) into
/// `batch`, and clears the recount mark.
fn write_counts(
    db: &Arc<dyn Backend>,
    batch: &mut Batch,
    counts: &BTreeMap<Class, u64>,
) -> Result<(), StoreError> {
    let count = |prefix| {
        scan(db, KeyRange::prefix(prefix), Direction::Forward)
            .try_fold(0_u64, |n, item| item.map(|_| n + 1))
    };
    for class in Class::ALL {
        let n = counts.get(&class).copied().unwrap_or(0);
        batch.insert(Counter::Keys(class).key(), n.to_be_bytes());
    }
    batch.insert(Counter::Users.key(), count(layout::USERS)?.to_be_bytes());
    batch.insert(Counter::Groups.key(), count(layout::GROUPS)?.to_be_bytes());
    batch.remove(RECOUNT);
    Ok(())
}
