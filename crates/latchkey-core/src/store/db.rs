//! The open sled database, behind a handle that can reopen it.
//!
//! After a failed log write (a full disk), sled 0.34.7 refuses every later write until it
//! is opened again, and keeps in memory what the failed write applied (see `space`). So
//! the store holds sled through [`Db`], which [`Db::reopen`] can swap for a fresh open of
//! the same files: that drops the poisoned instance and whatever it had not made durable.
//! Callers use the same methods as on `sled::Db`; iterators come from [`Db::handle`].

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use sled::transaction::{
    ConflictableTransactionResult, TransactionError, TransactionResult, TransactionalTree,
};

use super::{files, space};
use crate::error::StoreError;

/// The open database, or none while it is being reopened (or could not be).
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    cache_capacity: u64,
    current: RwLock<Option<sled::Db>>,
}

/// What a call answers while there is no open database.
fn closed() -> sled::Error {
    sled::Error::Io(std::io::Error::other(
        "the store is closed after a storage failure and is being reopened",
    ))
}

impl Db {
    /// Opens the database at `path`.
    pub(crate) fn open(path: &Path, cache_capacity: u64) -> Result<Db, StoreError> {
        let db = open_sled(path, cache_capacity)?;
        Ok(Db::from_sled(path, cache_capacity, db))
    }

    pub(crate) fn from_sled(path: &Path, cache_capacity: u64, db: sled::Db) -> Db {
        Db {
            path: path.to_owned(),
            cache_capacity,
            current: RwLock::new(Some(db)),
        }
    }

    /// The open sled database (a cheap clone), for iterators.
    pub(crate) fn handle(&self) -> Result<sled::Db, StoreError> {
        self.try_handle().map_err(StoreError::from)
    }

    fn try_handle(&self) -> sled::Result<sled::Db> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(closed)
    }

    /// Whether the database is open.
    pub(crate) fn is_open(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Drops the open instance and opens the files again. On failure there is no open
    /// database until a later call succeeds; every call meanwhile fails (reads answer 503).
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Dropped first: sled's file lock goes with the last handle.
        drop(current.take());
        files::remove_leftover_snapshots(&self.path)?;
        *current = Some(open_sled(&self.path, self.cache_capacity)?);
        Ok(())
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.try_handle()?.get(key)
    }

    pub(crate) fn contains_key(&self, key: impl AsRef<[u8]>) -> sled::Result<bool> {
        self.try_handle()?.contains_key(key)
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<sled::IVec>,
    ) -> sled::Result<Option<sled::IVec>> {
        self.try_handle()?.insert(key, value)
    }

    pub(crate) fn apply_batch(&self, batch: sled::Batch) -> sled::Result<()> {
        self.try_handle()?.apply_batch(batch)
    }

    pub(crate) fn flush(&self) -> sled::Result<usize> {
        self.try_handle()?.flush()
    }

    pub(crate) fn transaction<F, A, E>(&self, f: F) -> TransactionResult<A, E>
    where
        F: Fn(&TransactionalTree) -> ConflictableTransactionResult<A, E>,
    {
        match self.try_handle() {
            Ok(db) => db.transaction(f),
            Err(e) => Err(TransactionError::Storage(e)),
        }
    }
}

/// How long opening waits for a lock that is being released. Dropping the last handle of
/// a store does not release sled's file lock at once (its I/O threads finish first), so a
/// store closed and reopened in one process could otherwise see itself as "another process".
const LOCK_WAIT: Duration = Duration::from_millis(1_000);

/// Opens sled; on a full disk, once more after releasing the store's reserve (sled writes
/// a snapshot when it opens).
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    match open_waiting(path, cache_capacity) {
        Err(StoreError::StorageFull { .. }) if space::release_ballast(path) => {
            files::remove_leftover_snapshots(path)?;
            open_waiting(path, cache_capacity)
        }
        opened => opened,
    }
}

fn open_waiting(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled reports a held file lock as an I/O error with this text.
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked {
                        path: path.to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(files::open_error(path, e)),
        }
    }
}
