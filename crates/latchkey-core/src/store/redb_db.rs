//! The redb [`Backend`]: the store's keyspace as one redb table in `latchkey.redb`, behind
//! a handle that can reopen it.
//!
//! One table maps `&[u8]` to `&[u8]`, in the byte order the keyspace needs
//! ([`layout`](super::layout)). redb has a single writer and readers that see the last
//! commit without waiting for it (MVCC): a transaction is one `WriteTransaction`, which
//! never conflicts, and a read from any thread, including one that has a transaction open,
//! runs beside it. Every commit is `Durability::Immediate` (fsynced before it returns), so
//! a write that was acknowledged is never lost and [`Backend::flush`] has nothing left to
//! do.
//!
//! After an I/O error (a full disk) redb refuses every later operation with `PreviousIo`
//! until the file is opened again: the handle then reports itself closed
//! ([`Embedded::is_open`]) whichever call saw the error, and [`Embedded::reopen`] opens it
//! again, as `Db::reopen` does for sled.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};

use super::backend::{Backend, Batch, Entry, KeyRange, KvTx, Take, TxBody, TxError};
use super::engine::{Embedded, Engine, Slot};
use super::space;
use crate::error::StoreError;

/// The file, in the store's directory.
pub(crate) const FILE: &str = "latchkey.redb";

/// One entry as redb's range iterator yields it.
type RangeItem<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// The one table: the whole keyspace.
const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("latchkey");

/// The open redb database, or none while it is being reopened (or could not be).
#[derive(Debug)]
pub(crate) struct RedbDb {
    /// The store's directory.
    path: PathBuf,
    cache_capacity: u64,
    current: Slot<Arc<Database>>,
}

impl RedbDb {
    /// Opens `latchkey.redb` in the store directory `path`; creates it (and the directory)
    /// when `create`, and otherwise refuses a file that is not a whole redb database (an
    /// emptied one included, which redb would initialise anew).
    pub(crate) fn open(
        path: &Path,
        cache_capacity: u64,
        create: bool,
    ) -> Result<RedbDb, StoreError> {
        let db = open_releasing(path, cache_capacity, create)?;
        Ok(RedbDb {
            path: path.to_owned(),
            cache_capacity,
            current: Slot::new(Arc::new(db)),
        })
    }

    /// The open database. A clone of the handle: a reopen never waits for a reader.
    fn handle(&self) -> Result<Handle<'_>, StoreError> {
        let (db, generation) = self.current.get_at()?;
        Ok(Handle {
            db,
            generation,
            owner: self,
        })
    }

    /// Runs one write transaction: `body`'s writes commit durably, or none of them when it
    /// fails.
    fn write<T>(
        &self,
        body: impl FnOnce(&RedbTx<'_, '_>) -> Result<T, TxError>,
    ) -> Result<T, TxError> {
        let storage = |e: StoreError| TxError::Storage(e);
        let db = self.handle().map_err(storage)?;
        let mut txn = db.begin_write().map_err(|e| storage(db.error(e)))?;
        txn.set_durability(redb::Durability::Immediate);
        let outcome = {
            let table = txn.open_table(TABLE).map_err(|e| storage(db.error(e)))?;
            let tx = RedbTx {
                db: &db,
                table: RefCell::new(table),
            };
            body(&tx)
        };
        match outcome {
            Ok(value) => {
                txn.commit().map_err(|e| storage(db.error(e)))?;
                Ok(value)
            }
            Err(e) => {
                // Nothing of it is written; an abort that fails leaves nothing either.
                let _ = txn.abort();
                Err(e)
            }
        }
    }
}

/// An open instance, with which one it is: an error seen on it marks it, not a
/// replacement a reopen has put in its place since (`Slot::failed_at`).
struct Handle<'a> {
    db: Arc<Database>,
    generation: u64,
    owner: &'a RedbDb,
}

impl Handle<'_> {
    /// redb's error as the store's. After an I/O error redb answers every later read of
    /// its file with `PreviousIo`, reads on the verify path included: the instance is then
    /// due for a reopen, whichever call saw it.
    fn error(&self, err: impl Into<redb::Error>) -> StoreError {
        let err = err.into();
        if matches!(err, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.owner.current.failed_at(self.generation);
        }
        store_error(&self.owner.path, err)
    }
}

impl std::ops::Deref for Handle<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Embedded for RedbDb {
    fn is_open(&self) -> bool {
        self.current.is_open()
    }

    fn reopen(&self) -> Result<(), StoreError> {
        self.current
            .reopen(|| open_releasing(&self.path, self.cache_capacity, false).map(Arc::new))
    }

    fn engine(&self) -> Engine {
        Engine::Redb
    }
}

/// A redb error as the store's: a held lock, a full disk and damage as the sled side
/// reports them (`files::open_error`), anything else as a storage error.
fn store_error(path: &Path, err: redb::Error) -> StoreError {
    match err {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        redb::Error::Io(io) if space::is_full(&io) => StoreError::StorageFull {
            path: path.to_owned(),
        },
        // What redb answers for a file whose header is not its own (a zeroed file), or
        // one cut short or garbled so that a read runs past its end.
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                reason: format!("is damaged (redb cannot read its file: {io})"),
            }
        }
        redb::Error::Corrupted(what) => StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("is damaged (redb found corrupted data in its file: {what})"),
        },
        redb::Error::UpgradeRequired(version) => StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("cannot be opened by this version (redb file format {version})"),
        },
        other => StoreError::Storage(Box::new(other)),
    }
}

/// One write transaction's view, for the domain's [`Tx`](super::tx::Tx).
struct RedbTx<'db, 'txn> {
    db: &'db Handle<'db>,
    table: RefCell<redb::Table<'txn, &'static [u8], &'static [u8]>>,
}

impl KvTx for RedbTx<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        let table = self.table.borrow();
        let found = table
            .get(key)
            .map_err(|e| TxError::Storage(self.db.error(e)))?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        let mut table = self.table.borrow_mut();
        table
            .insert(key, value)
            .map(drop)
            .map_err(|e| TxError::Storage(self.db.error(e)))
    }

    fn remove(&self, key: &[u8]) -> Result<(), TxError> {
        let mut table = self.table.borrow_mut();
        table
            .remove(key)
            .map(drop)
            .map_err(|e| TxError::Storage(self.db.error(e)))
    }
}

impl Backend for RedbDb {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.handle()?;
        let read = db.begin_read().map_err(|e| db.error(e))?;
        let table = match read.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db.error(e)),
        };
        let found = table.get(key).map_err(|e| db.error(e))?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError> {
        if range.is_empty() || take.limit == 0 {
            return Ok(Vec::new());
        }
        let db = self.handle()?;
        let read = db.begin_read().map_err(|e| db.error(e))?;
        let table = match read.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db.error(e)),
        };
        let items = table
            .range::<&[u8]>(range.bounds())
            .map_err(|e| db.error(e))?;
        let entry = |item: RangeItem<'_>| {
            item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(|e| db.error(e))
        };
        take.collect(items.map(entry))
    }

    /// redb's readers never wait for its writer: a read beside an open transaction sees the
    /// last commit.
    fn reads_during_transactions(&self) -> bool {
        true
    }

    fn transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        // A single writer: nothing conflicts with this transaction. A body that reports a
        // conflict all the same is run again, as the contract says.
        loop {
            match self.write(|tx| body(tx)) {
                Err(TxError::Conflict) => continue,
                done => return done,
            }
        }
    }

    fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let applied = self.write(|tx| {
            for (key, value) in &batch.writes {
                match value {
                    Some(value) => tx.put(key, value)?,
                    None => tx.remove(key)?,
                }
            }
            Ok(())
        });
        applied.map_err(|e| match e {
            TxError::Abort(e) | TxError::Storage(e) => e,
            TxError::Conflict => StoreError::storage("unexpected write conflict"),
        })
    }

    /// Every commit is durable when it returns (`Durability::Immediate`): there is nothing
    /// to flush. A closed database (after a storage failure) still says so.
    fn flush(&self) -> Result<(), StoreError> {
        self.handle().map(drop)
    }

    fn commits_durably(&self) -> bool {
        true
    }
}

/// Opens the database; on a full disk, once more after releasing the store's reserve, as
/// sled's open does: after an unclean shutdown redb repairs the file at open and commits
/// the repair, which needs free blocks.
fn open_releasing(path: &Path, cache_capacity: u64, create: bool) -> Result<Database, StoreError> {
    match open_waiting(path, cache_capacity, create) {
        Err(StoreError::StorageFull { .. }) if space::release_ballast(path) => {
            open_waiting(path, cache_capacity, create)
        }
        opened => opened,
    }
}

/// Opens the database, waiting for a lock being released (`files::lock_wait`: a handle of
/// this process that is still being dropped), and makes the table if it is missing.
fn open_waiting(path: &Path, cache_capacity: u64, create: bool) -> Result<Database, StoreError> {
    let file = path.join(FILE);
    if create {
        // sled creates the store's directory; so does this.
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::storage(format!(
                "cannot create the store at {}: {e}",
                path.display()
            ))
        })?;
    } else if std::fs::metadata(&file).is_ok_and(|m| m.len() == 0) {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("is damaged (its `{FILE}` file is empty)"),
        });
    }
    let (started, wait) = (Instant::now(), super::files::lock_wait(path));
    let db = loop {
        let mut builder = Database::builder();
        builder.set_cache_size(usize::try_from(cache_capacity).unwrap_or(usize::MAX));
        // redb 2.6.4 asserts on some damage rather than returning an error (a file cut
        // shorter than its header says): at open, that is a damaged store like any other.
        let opened = quietly(|| {
            if create {
                builder.create(&file)
            } else {
                builder.open(&file)
            }
        });
        let Ok(opened) = opened else {
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                reason: "is damaged (redb could not read its file)".into(),
            });
        };
        match opened {
            Ok(db) => {
                super::files::opened_here(path);
                break db;
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let hint = match &e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                        super::files::ownership_hint(path, io)
                    }
                    _ => String::new(),
                };
                return Err(match store_error(path, e.into()) {
                    StoreError::Storage(e) => StoreError::storage(format!(
                        "cannot open the store at {}: {e}{hint}",
                        path.display()
                    )),
                    e => e,
                });
            }
        }
    };
    let read = db.begin_read().map_err(|e| store_error(path, e.into()))?;
    match read.open_table(TABLE) {
        Ok(_) => return Ok(db),
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(store_error(path, e.into())),
    }
    drop(read);
    // A new file: its table is made once (a commit, an fsync), not at every open.
    let txn = db.begin_write().map_err(|e| store_error(path, e.into()))?;
    txn.open_table(TABLE)
        .map(drop)
        .map_err(|e| store_error(path, e.into()))?;
    txn.commit().map_err(|e| store_error(path, e.into()))?;
    Ok(db)
}

thread_local! {
    /// Whether a panic on this thread is caught and answered by [`quietly`].
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without the panic hook's message: a caught panic is an
/// answer (a damaged file), not a crash, and the store's one-line error says it. The hook
/// is wrapped once, for the whole process, and stays silent only on a thread inside this
/// call: a panic elsewhere meanwhile is reported as before, by the hook that was there.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|quiet| quiet.set(false));
    outcome
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::*;

    fn open() -> (tempfile::TempDir, RedbDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = RedbDb::open(dir.path(), 1 << 20, true).unwrap();
        (dir, db)
    }

    fn batch(keys: &[&[u8]]) -> Batch {
        let mut batch = Batch::default();
        for key in keys {
            batch.insert(key, [b"v:".as_slice(), key].concat());
        }
        batch
    }

    fn keys(entries: &[Entry]) -> Vec<&[u8]> {
        entries.iter().map(|(k, _)| k.as_slice()).collect()
    }

    #[test]
    fn ranges_read_both_directions_within_their_bounds_and_limit() {
        let (_dir, db) = open();
        db.apply_batch(batch(&[b"a", b"b1", b"b2", b"b3", b"b4", b"c"]))
            .unwrap();
        let b = KeyRange::prefix(b"b");
        let forward = db.range(&b, Take::forward(10)).unwrap();
        assert_eq!(keys(&forward), [b"b1", b"b2", b"b3", b"b4"]);
        assert_eq!(forward[0].1, b"v:b1");
        let reverse = db.range(&b, Take::reverse(3)).unwrap();
        assert_eq!(keys(&reverse), [b"b4", b"b3", b"b2"]);
        let inner = KeyRange::new(
            Bound::Excluded(b"b1".to_vec()),
            Bound::Included(b"b3".to_vec()),
        );
        assert_eq!(
            keys(&db.range(&inner, Take::forward(10)).unwrap()),
            [b"b2", b"b3"]
        );
        assert_eq!(keys(&db.range(&inner, Take::reverse(1)).unwrap()), [b"b3"]);
        let everything = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
        assert_eq!(db.range(&everything, Take::forward(100)).unwrap().len(), 6);
        assert!(db.range(&everything, Take::forward(0)).unwrap().is_empty());
        // A range whose lower bound is above its upper holds nothing (and does not panic).
        let inverted = KeyRange::new(
            Bound::Included(b"c".to_vec()),
            Bound::Excluded(b"a".to_vec()),
        );
        assert!(db.range(&inverted, Take::reverse(10)).unwrap().is_empty());
        let floors = db
            .floors(&[
                (b"b".to_vec(), b"b2z".to_vec()),
                (b"d".to_vec(), b"e".to_vec()),
            ])
            .unwrap();
        assert_eq!(floors, [Some(b"b2".to_vec()), None]);
    }

    #[test]
    fn a_transaction_sees_its_writes_and_an_abort_writes_nothing() {
        let (_dir, db) = open();
        db.apply_batch(batch(&[b"kept"])).unwrap();
        let aborted = db.transaction(&mut |tx| {
            tx.put(b"new", b"1")?;
            tx.remove(b"kept")?;
            assert_eq!(tx.get(b"new")?, Some(b"1".to_vec()));
            assert_eq!(tx.get(b"kept")?, None);
            Err(TxError::Abort(StoreError::storage("the body's decision")))
        });
        assert!(matches!(aborted, Err(TxError::Abort(_))));
        assert_eq!(db.get(b"new").unwrap(), None);
        assert_eq!(db.get(b"kept").unwrap(), Some(b"v:kept".to_vec()));

        db.transaction(&mut |tx| tx.put(b"new", b"2")).unwrap();
        assert_eq!(db.get(b"new").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn a_store_being_reopened_is_unavailable() {
        let (_dir, db) = open();
        let failed = db
            .current
            .reopen(|| Err(StoreError::storage("cannot open")));
        assert!(failed.is_err());
        assert!(matches!(db.get(b"k"), Err(StoreError::Unavailable(_))));
        let write = db.transaction(&mut |tx| tx.put(b"k", b"v"));
        assert!(matches!(
            write,
            Err(TxError::Storage(StoreError::Unavailable(_)))
        ));
    }

    #[test]
    fn reads_run_beside_an_open_transaction_on_the_same_thread() {
        let (_dir, db) = open();
        db.apply_batch(batch(&[b"a"])).unwrap();
        assert!(db.reads_during_transactions());
        db.transaction(&mut |tx| {
            tx.put(b"b", b"uncommitted")?;
            // Outside the transaction: the last commit, without waiting for this one.
            assert_eq!(db.get(b"a").unwrap(), Some(b"v:a".to_vec()));
            assert_eq!(db.get(b"b").unwrap(), None);
            let all = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
            assert_eq!(keys(&db.range(&all, Take::forward(10)).unwrap()), [b"a"]);
            Ok(())
        })
        .unwrap();
        assert_eq!(db.get(b"b").unwrap(), Some(b"uncommitted".to_vec()));
    }

    #[test]
    fn a_database_held_by_another_open_is_locked_until_it_is_dropped() {
        let (dir, db) = open();
        db.apply_batch(batch(&[b"a"])).unwrap();
        let started = Instant::now();
        match RedbDb::open(dir.path(), 1 << 20, false) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        // After the bounded wait for a handle being dropped.
        assert!(started.elapsed() >= crate::store::db::LOCK_WAIT);
        drop(db);
        let again = RedbDb::open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(again.get(b"a").unwrap(), Some(b"v:a".to_vec()));
    }

    #[test]
    fn a_reopen_keeps_every_commit() {
        let (_dir, db) = open();
        db.apply_batch(batch(&[b"a"])).unwrap();
        db.transaction(&mut |tx| tx.put(b"b", b"2")).unwrap();
        db.reopen().unwrap();
        assert!(db.is_open());
        assert_eq!(db.get(b"a").unwrap(), Some(b"v:a".to_vec()));
        assert_eq!(db.get(b"b").unwrap(), Some(b"2".to_vec()));
    }
}
