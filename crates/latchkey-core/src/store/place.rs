//! The directory an embedded store was opened in, told from one that replaced it.
//!
//! A store's directory removed under a running process (by hand, by a clean-up job, a
//! volume detached lazily) leaves the engine writing into files no path leads to: every
//! write would be acknowledged and lost at the next start, which finds no store there.
//! Before each write and at each health check the directory's device and inode, and its
//! engine file's, are compared with those they had at open; another (or none) refuses writes, and the first time
//! writes a backup of what the process still holds beside where the directory was
//! ([`rescue`]): the process's open files are the only copy left, gone when it stops (a
//! health check that fails may well have it restarted).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::Store;
use crate::error::{Displaced, StoreError};

/// A file's or directory's identity: its device and inode (elsewhere than on Unix, only
/// whether there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id {
    dev: u64,
    ino: u64,
}

impl Id {
    fn of(path: &Path) -> io::Result<Id> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, u64::from(meta.is_dir()));
        Ok(Id { dev, ino })
    }
}

/// The directory a store was opened in, and the engine's file of records in it (redb's
/// `latchkey.redb`, sled's log `db`): both must still be the ones opened. The directory
/// alone is not enough: `rm -rf` of a store whose daemon writes its mark meanwhile
/// removes the records and fails on the directory, which keeps its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    dir: Id,
    records: Option<(&'static str, Id)>,
}

impl Place {
    /// The store's directory at `path` as it is now, with its engine's file of records.
    pub(super) fn of(path: &Path) -> io::Result<Place> {
        let records = [super::redb_db::FILE, "db"]
            .into_iter()
            .find_map(|name| Id::of(&path.join(name)).ok().map(|id| (name, id)));
        Ok(Place {
            dir: Id::of(path)?,
            records,
        })
    }

    /// `Ok` while `path` is still this directory and holds the same file of records;
    /// otherwise the error every write and health check answers (503
    /// `keystore_unavailable`), said at ERROR.
    pub(super) fn check(self, path: &Path) -> Result<(), StoreError> {
        let why = match (Id::of(path), self.records) {
            (Ok(dir), _) if dir != self.dir => "another directory stands at its path".to_owned(),
            (Ok(_), None) => return Ok(()),
            (Ok(_), Some((name, records))) => match Id::of(&path.join(name)) {
                Ok(now) if now == records => return Ok(()),
                Ok(_) => format!("another file stands at its `{name}`"),
                Err(e) => format!("its `{name}`: {e}"),
            },
            (Err(e), _) => e.to_string(),
        };
        let path = path.display();
        crate::error_limited!(store = %path, why = %why, "the store's directory was removed or replaced while this process held it open: writes are refused; what it holds is saved beside it as a .rescued-<time>.backup file (said next), to restore");
        Err(StoreError::Unavailable(Box::new(Displaced(format!(
            "the store's directory {path} was removed or replaced while this process held it open ({why}): writes are refused, since nothing would find them at the next start; what it holds is being saved beside it as {path}.rescued-<time>.backup, to restore with `latchkey restore` (the log says where, or why it could not be: then take a backup with `latchkey backup` before this process stops)"
        )))))
    }
}

/// A rescued backup's name: the store directory's, then these around the time it was
/// written (`STORE.rescued-<unix seconds>.backup`).
const RESCUED: &str = ".rescued-";
const BACKUP: &str = ".backup";

impl Store {
    /// A backup a process wrote beside `path` when the store there was removed under it
    /// (`PATH.rescued-<secs>.backup`, whole: a partial one ends in `.partial`), if one lies
    /// there: what to restore before making a new store at `path`.
    pub fn rescued_beside(path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?.to_string_lossy().into_owned();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let prefix = format!("{name}{RESCUED}");
        std::fs::read_dir(parent).ok()?.flatten().find_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            (file.starts_with(&prefix) && file.ends_with(BACKUP)).then(|| entry.path())
        })
    }
}

/// Where a rescue writes, and how it went: the backup's path, or why it was not written.
pub(super) type Rescue = JoinHandle<Result<PathBuf, String>>;

/// Writes what `store` holds, its directory gone, to `DIR.rescued-<unix seconds>.backup`
/// beside where the directory was (a `.partial` file until it is whole and synced), on a
/// thread of its own: the caller may hold the writers' lock, which a backup takes.
pub(super) fn rescue(store: Store) -> io::Result<Rescue> {
    std::thread::Builder::new()
        .name("latchkey-rescue".into())
        .spawn(move || {
            let path = store.inner.path.clone();
            let rescued = rescue_into(&store, &path);
            match &rescued {
                Ok(file) => {
                    tracing::error!(store = %path.display(), backup = %file.display(), "what the removed store held is saved: restore it with `latchkey restore`");
                }
                Err(why) => {
                    tracing::error!(store = %path.display(), error = %why, "could not save what the removed store holds: take a backup now with `latchkey backup`, before this process stops");
                }
            }
            rescued
        })
}

fn rescue_into(store: &Store, path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    let secs = store.inner.clock.unix_nanos() / 1_000_000_000;
    let target = path.with_file_name(format!("{name}{RESCUED}{secs}{BACKUP}"));
    let partial = path.with_file_name(format!("{name}{RESCUED}{secs}{BACKUP}.partial"));
    let written = (|| -> Result<(), String> {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        store.backup(&mut file).map_err(|e| e.to_string())?;
        file.flush()
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&partial, &target))
            .map_err(|e| format!("writing {}: {e}", partial.display()))
    })();
    if let Err(why) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(why);
    }
    Ok(target)
}
