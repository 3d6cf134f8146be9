//! The open sled database, behind a handle that can reopen it.
//!
//! After a failed log write (a full disk), sled 0.34.7 refuses every later write until it
//! is opened again, and keeps in memory what the failed write applied (see `space`). So
//! the store holds sled through [`Db`], which [`Embedded::reopen`] can swap for a fresh open of
//! the same files: that drops the poisoned instance and whatever it had not made durable.
//! It is the sled [`Backend`], plus what only sled needs: reopening.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::RefCell;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::backend::{Backend, Batch, Entry, KeyRange, KvTx, Take, TxBody, TxError};
use super::engine::{Embedded, Engine, Slot};
use super::{files, space};
use crate::error::StoreError;

/// The open database, or none while it is being reopened (or could not be).
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    cache_capacity: u64,
    current: Slot<sled::Db>,
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
            current: Slot::new(db),
        }
    }

    fn try_handle(&self) -> Result<sled::Db, StoreError> {
        self.current.get()
    }

    /// The open instance and its generation, for [`Db::failed`].
    fn try_handle_at(&self) -> Result<(sled::Db, u64), StoreError> {
        self.current.get_at()
    }

    /// sled's error as the store's. A full disk is [`StoreError::StorageFull`] whichever
    /// call met it: sled fails every later write and flush with the error one of its own
    /// threads hit, so a reservation of credits or a flush learns of the full disk as
    /// often as the write that filled it.
    fn error(&self, err: sled::Error) -> StoreError {
        if space::sled_is_full(&err) {
            StoreError::StorageFull {
                path: self.path.clone(),
            }
        } else {
            err.into()
        }
    }

    /// A failed write or flush on the instance of `generation`, as the store's error: after
    /// an I/O error sled refuses every later write until it is opened again, whichever call
    /// saw the error (a reservation of credits, a usage flush), so the database is then due
    /// for a reopen, unless one has replaced that instance already.
    fn failed(&self, err: sled::Error, generation: u64) -> StoreError {
        if let sled::Error::Io(_) = err {
            self.current.failed_at(generation);
        }
        self.error(err)
    }

    /// A transaction on the instance `db`.
    fn transaction_on(
        &self,
        (db, generation): &(sled::Db, u64),
        body: &mut TxBody<'_>,
    ) -> Result<(), TxError> {
        let body = RefCell::new(body);
        let outcome = db.transaction(|tree| {
            let mut body = body.borrow_mut();
            match body(&SledTx(tree)) {
                Ok(()) => Ok(()),
                Err(TxError::Conflict) => Err(ConflictableTransactionError::Conflict),
                Err(TxError::Storage(e)) => match unwrap_sled(e) {
                    Ok(sled) => Err(ConflictableTransactionError::Storage(sled)),
                    Err(e) => Err(ConflictableTransactionError::Abort(TxError::Storage(e))),
                },
                Err(abort) => Err(ConflictableTransactionError::Abort(abort)),
            }
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(TxError::Storage(self.failed(e, *generation))),
        }
    }
}

impl Embedded for Db {
    fn is_open(&self) -> bool {
        self.current.is_open()
    }

    fn reopen(&self) -> Result<(), StoreError> {
        self.current.reopen(|| {
            files::remove_leftover_snapshots(&self.path)?;
            open_sled(&self.path, self.cache_capacity)
        })
    }

    fn engine(&self) -> Engine {
        Engine::Sled
    }
}

/// A sled transaction's view, for the domain's [`Tx`](super::tx::Tx).
struct SledTx<'a>(&'a TransactionalTree);

/// sled's errors travel inside ours through the closure, and back out.
fn sled_result<T>(r: Result<T, UnabortableTransactionError>) -> Result<T, TxError> {
    r.map_err(|e| match e {
        UnabortableTransactionError::Conflict => TxError::Conflict,
        UnabortableTransactionError::Storage(e) => TxError::Storage(e.into()),
    })
}

impl KvTx for SledTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        Ok(sled_result(self.0.get(key))?.map(|v| v.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        sled_result(self.0.insert(key, value)).map(drop)
    }

    fn remove(&self, key: &[u8]) -> Result<(), TxError> {
        sled_result(self.0.remove(key)).map(drop)
    }
}

impl Backend for Db {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.try_handle()?.get(key).map_err(|e| self.error(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError> {
        let db = self.try_handle()?;
        let items = db.range::<&[u8], _>(range.bounds());
        let entry = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.error(e))
        };
        take.collect(items.map(entry))
    }

    fn transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        let db = self.try_handle_at().map_err(TxError::Storage)?;
        self.transaction_on(&db, body)
    }

    fn durable_transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        // One handle for both: a reopen between them cannot swap the flushed instance.
        let db = self.try_handle_at().map_err(TxError::Storage)?;
        self.transaction_on(&db, body)?;
        db.0.flush()
            .map_err(|e| TxError::Storage(self.failed(e, db.1)))?;
        Ok(())
    }

    fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        let (db, generation) = self.try_handle_at()?;
        db.apply_batch(sled_batch)
            .map_err(|e| self.failed(e, generation))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (db, generation) = self.try_handle_at()?;
        db.flush().map_err(|e| self.failed(e, generation))?;
        Ok(())
    }
}

/// The sled error inside a storage error, to hand back to sled (which then fails the
/// transaction with it).
fn unwrap_sled(e: StoreError) -> Result<sled::Error, StoreError> {
    match e {
        StoreError::Storage(source) => match source.downcast::<sled::Error>() {
            Ok(sled) => Ok(*sled),
            Err(other) => Err(StoreError::Storage(other)),
        },
        other => Err(other),
    }
}

/// How long opening waits for a lock that is being released, by a process that may be
/// exiting. Dropping the last handle of a store does not release sled's file lock at once
/// (its I/O threads finish first); a store closed in this process is waited for longer
/// (`files::lock_wait`).
pub(super) const LOCK_WAIT: Duration = Duration::from_millis(3_000);

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
    let (started, wait) = (std::time::Instant::now(), files::lock_wait(path));
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open();
        match opened {
            Ok(db) => {
                files::opened_here(path);
                return Ok(db);
            }
            // sled reports a held file lock as an I/O error with this text.
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= wait {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_storage_full_and_a_store_being_reopened_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 1 << 20).unwrap();
        // What sled answers after one of its threads met ENOSPC: a clone keeping the kind.
        let full = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(db.error(full), StoreError::StorageFull { path } if path == dir.path()));
        let bug = sled::Error::ReportableBug("a bug".into());
        assert!(matches!(db.error(bug), StoreError::Storage(_)));

        let failed = db
            .current
            .reopen(|| Err(StoreError::storage("cannot open")));
        assert!(failed.is_err());
        assert!(matches!(db.get(b"k"), Err(StoreError::Unavailable(_))));
        assert!(matches!(db.flush(), Err(StoreError::Unavailable(_))));
        let write = db.transaction(&mut |tx| tx.put(b"k", b"v"));
        assert!(matches!(
            write,
            Err(TxError::Storage(StoreError::Unavailable(_)))
        ));
    }
}
