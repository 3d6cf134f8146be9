//! The embedded engine that holds a store in a directory: sled (the default) or redb, and
//! what the store needs of either beyond the [`Backend`] boundary (reopening after a
//! storage failure).
//!
//! A store directory is opened with the engine whose files it holds; only a new store
//! takes [`StoreConfig::engine`](super::StoreConfig::engine). Both keep latchkey's own files
//! beside theirs (the mark, the disk reserve).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::backend::Backend;
use super::db::Db;
use super::files;
use super::redb_db::{self, RedbDb};
use crate::error::StoreError;

/// The embedded database engine of a store in a directory.
///
/// An existing store is always opened with the engine it was created with (found from
/// its files); this chooses the engine of a new store only.
///
/// # Example
///
/// ```
/// use latchkey_core::{Engine, Store, StoreConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::create_empty(dir.path(), "lk", StoreConfig::default().engine(Engine::Redb)).unwrap();
/// assert_eq!(store.engine(), Some(Engine::Redb));
/// assert!(dir.path().join("latchkey.redb").is_file());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// sled 0.34.7 (the default): files `conf`, `db` and snapshots.
    #[default]
    Sled,
    /// redb 2: one file, `latchkey.redb`. Its memory is bounded by its cache, where sled
    /// keeps a few hundred bytes per page of its tree resident (README, *At scale*).
    Redb,
}

impl Engine {
    /// The engine's name, as the daemon's `--engine` takes it: `sled` or `redb`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
        }
    }

    /// The engine whose files the directory `path` holds, if any (a store, or the remains
    /// of a store's creation): what [`Store::open`](super::Store::open) would open it
    /// with. Reads the directory only; changes nothing.
    pub fn found_at(path: impl AsRef<Path>) -> Option<Engine> {
        found_in(path.as_ref())
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = StoreError;

    /// `sled` or `redb`; anything else is [`StoreError::Invalid`] (field `engine`).
    fn from_str(text: &str) -> Result<Engine, StoreError> {
        match text {
            "sled" => Ok(Engine::Sled),
            "redb" => Ok(Engine::Redb),
            other => Err(StoreError::invalid(
                "engine",
                format!("{other:?} is no engine: expected sled or redb"),
            )),
        }
    }
}

/// An embedded engine's database: a [`Backend`] that can be reopened after a storage
/// failure left it refusing writes (sled poisons itself, redb answers `PreviousIo`).
pub(crate) trait Embedded: Backend {
    /// Whether the database is open and usable: not after a reopen that failed, nor once
    /// one of its calls failed in storage (whichever call it was, a reservation of credits
    /// or a usage flush as much as a management write), so that the next
    /// `Store::ensure_open` reopens it.
    fn is_open(&self) -> bool;

    /// Drops the open instance and opens the files again, which drops whatever a failed
    /// write left in memory.
    fn reopen(&self) -> Result<(), StoreError>;

    /// Which engine this is.
    fn engine(&self) -> Engine;
}

/// An embedded database that a reopen can swap: the open instance, or none while it is
/// being reopened (or could not be). Readers take a clone of the instance (a handle), so a
/// reopen never waits for a read in flight; the engine's file lock goes with the last one.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    current: RwLock<Option<T>>,
    /// Set when a call failed in storage: the instance is still there (reads go on where
    /// they can) but is due for a reopen.
    failed: AtomicBool,
    /// Which instance is open: one more at each reopen, so that a call that failed on an
    /// instance already replaced does not mark its replacement failed.
    generation: AtomicU64,
}

impl<T: Clone> Slot<T> {
    pub(crate) fn new(open: T) -> Slot<T> {
        Slot {
            current: RwLock::new(Some(open)),
            failed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// [`Slot::get`], with the instance's generation for [`Slot::failed_at`].
    pub(crate) fn get_at(&self) -> Result<(T, u64), StoreError> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let generation = self.generation.load(Ordering::Acquire);
        current
            .clone()
            .map(|open| (open, generation))
            .ok_or_else(closed)
    }

    /// Records that a call made on the instance of `generation` failed in storage: the
    /// engine now refuses writes (sled) or every read of its file too (redb's `PreviousIo`)
    /// until it is opened again. Nothing when a reopen has replaced that instance since
    /// (the new one has not failed).
    pub(crate) fn failed_at(&self, generation: u64) {
        // Under the read lock: a reopen, which holds the write lock, cannot come between.
        let _current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            self.failed.store(true, Ordering::Release);
        }
    }

    /// The open instance; unavailable while there is none ([`closed`]).
    pub(crate) fn get(&self) -> Result<T, StoreError> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(closed)
    }

    /// Whether there is an instance and no call has failed in storage since it was opened.
    pub(crate) fn is_open(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
            && self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// Drops the open instance, then puts what `open` gives in its place. On failure there
    /// is no open instance until a later call succeeds; every call meanwhile fails (reads
    /// answer 503).
    pub(crate) fn reopen(
        &self,
        open: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<(), StoreError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Dropped first: the engine's file lock goes with the last handle.
        drop(current.take());
        self.failed.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        *current = Some(open()?);
        Ok(())
    }
}

/// What a call on a [`Slot`] with no open instance answers: unavailable (a 503), to retry
/// once the reopen is done. The call changed nothing.
fn closed() -> StoreError {
    StoreError::Unavailable(
        "the store is closed after a storage failure and is being reopened".into(),
    )
}

/// The engine whose files the directory holds, if any: `latchkey.redb` for redb, sled's
/// `conf` for sled.
pub(crate) fn found_in(path: &Path) -> Option<Engine> {
    if path.join(redb_db::FILE).is_file() {
        Some(Engine::Redb)
    } else if path.join("conf").exists() {
        Some(Engine::Sled)
    } else {
        None
    }
}

/// Opens the engine's database in the store directory `path`; creates it when `create`
/// (sled creates whatever is missing in any case: `files` checks before).
pub(crate) fn open(
    path: &Path,
    engine: Engine,
    cache_capacity: u64,
    create: bool,
) -> Result<Arc<dyn Embedded>, StoreError> {
    Ok(match engine {
        Engine::Sled => {
            files::remove_leftover_snapshots(path)?;
            Arc::new(Db::open(path, cache_capacity)?)
        }
        Engine::Redb => Arc::new(RedbDb::open(path, cache_capacity, create)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_on_a_replaced_instance_does_not_fail_its_replacement() {
        let slot = Slot::new(1);
        let (_, first) = slot.get_at().unwrap();
        slot.reopen(|| Ok(2)).unwrap();
        slot.failed_at(first);
        assert!(slot.is_open(), "the reopened instance did not fail");
        let (open, second) = slot.get_at().unwrap();
        assert_eq!((open, second), (2, first + 1));
        slot.failed_at(second);
        assert!(!slot.is_open());
    }

    /// A store whose last handle this process dropped is waited for longer than another
    /// process's (its engine is on its way out), however its path is named, until it is
    /// opened again.
    #[test]
    fn a_store_closed_here_is_waited_for_longer_until_opened_again() {
        use crate::store::files::{CLOSED_HERE_WAIT, lock_wait};
        use crate::store::{Store, StoreConfig, db::LOCK_WAIT};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        // No background thread: one in a chunk would close the store after `drop`.
        let config = StoreConfig::default()
            .usage_flush_interval(None)
            .background_jobs(false);
        drop(Store::create_empty(&path, "lk", config.clone()).unwrap());
        assert_eq!(
            lock_wait(&dir.path().join(".").join("store")),
            CLOSED_HERE_WAIT
        );
        let _again = Store::open(&path, config).unwrap();
        assert_eq!(lock_wait(&path), LOCK_WAIT);
    }
}
