//! The store's directory before sled opens it: what is there, what is left over, and one
//! clear line for every reason it cannot be opened.
//!
//! sled creates whatever files are missing when it opens a path, so a store whose `conf`
//! or `db` was deleted would come back empty. Everything here runs before sled touches
//! the directory, and decides from the files alone.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use super::mark;
use crate::error::StoreError;

/// The files and directories sled keeps in a store's directory.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];

/// Whether a directory entry is part of a store: sled's files, its snapshots, our mark.
fn is_store_part(name: &str) -> bool {
    SLED_FILES.contains(&name) || name.starts_with("snap.") || name.starts_with("latchkey.")
}

/// What a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing: the path does not exist, or is an empty directory.
    Nothing,
    /// Some part of a store, but never an acknowledged write (no mark): an `init`
    /// interrupted before it committed, or a store made before marks existed.
    Unmarked,
    /// A store that acknowledged writes: it has a mark.
    Marked,
}

/// Looks at a path without changing anything: what it holds of a store, and the name of
/// one entry that is no part of a store, if any (so `init` never writes into an unrelated
/// directory).
pub(crate) fn inspect(path: &Path) -> Result<(Found, Option<String>), StoreError> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Found::Nothing, None)),
        Err(e) => return Err(unreadable(path, &e)),
    };
    let mut found = Found::Nothing;
    let mut foreign = None;
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(path, &e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !is_store_part(&name) {
            foreign.get_or_insert_with(|| name.into_owned());
            continue;
        }
        if name == mark::FILE {
            found = Found::Marked;
        } else if found == Found::Nothing && name != super::space::BALLAST {
            // The reserve alone is no store.
            found = Found::Unmarked;
        }
    }
    Ok((found, foreign))
}

/// Creates the directory of a new store, readable by its owner alone whatever the umask
/// (`0700` on Unix): it holds the key that hashes every secret, every key's hash and usage.
/// Its parents, made if missing, are the user's own business: they get the umask's mode.
/// An existing directory keeps the permissions the operator gave it.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    let cannot =
        |e: std::io::Error| StoreError::storage(format!("cannot create {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(cannot)?;
    }
    let mut dir = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(path).map_err(cannot)
}

/// Before opening a marked store: the engine's own files must all be there, or the engine
/// would re-create them empty. A redb store is one file, `latchkey.redb`; a sled store
/// `conf` and `db`.
pub(crate) fn ensure_complete(path: &Path) -> Result<(), StoreError> {
    if super::engine::found_in(path) == Some(super::Engine::Redb) {
        return Ok(());
    }
    let missing = |name: &str| !path.join(name).is_file();
    if missing("conf") && missing("db") {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!(
                "is missing its database (`{}`, or sled's `conf` and `db`)",
                super::redb_db::FILE
            ),
        });
    }
    for name in ["conf", "db"] {
        if missing(name) {
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                reason: format!("is missing its `{name}` file"),
            });
        }
    }
    Ok(())
}

/// Before an engine opens a directory that holds part of a store but no mark (an `init`
/// that never committed, or files copied without theirs): sled's `conf` and `db` must be
/// there together or not at all. sled re-creates whichever is missing, and over a `db`
/// without its `conf` writes a new, empty log: the records of a store whose `db` alone was
/// copied would be lost, and a `conf` alone would pass for the start of a store.
pub(crate) fn ensure_not_partial(path: &Path) -> Result<(), StoreError> {
    if super::engine::found_in(path) == Some(super::Engine::Redb) {
        return Ok(());
    }
    let has = |name: &str| path.join(name).is_file();
    let reason = match (has("conf"), has("db")) {
        // What an `init` stopped before sled made its log may leave.
        (true, false) => {
            "is missing its `db` file beside its `conf`, and has no mark (if an \
             interrupted `init` left it, remove the directory and run it again)"
        }
        // sled never leaves this: a store's files copied in part. Opening it would write a
        // new log over its records.
        (false, true) => {
            "is missing its `conf` file beside its `db`, and has no mark \
             (copy the rest of the store's files beside it, its `conf` and `snap.*`, or \
             restore; opening it as it is would write a new store over that `db`)"
        }
        _ => return Ok(()),
    };
    Err(StoreError::Damaged {
        path: path.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Whether another process holds the store: sled locks its `db` file with `flock`, redb
/// its `latchkey.redb`, and so does this check, for the moment it takes, without opening
/// the engine.
pub(crate) fn is_locked(path: &Path) -> bool {
    use fs2::FileExt;
    let file = match super::engine::found_in(path) {
        Some(super::Engine::Redb) => super::redb_db::FILE,
        _ => "db",
    };
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join(file))
    else {
        return false;
    };
    // Dropping the file releases a lock this check took.
    FileExt::try_lock_exclusive(&file).is_err()
}

/// The stores this process has closed (their last handle dropped) and not opened since:
/// their engine may still hold the file lock a moment (sled's I/O threads finish first).
static CLOSED_HERE: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

/// How long this process waits for a store closed here to release its lock: far longer
/// than for another process's lock, since it is known to be on its way out (on a loaded
/// machine sled took over three seconds).
pub(crate) const CLOSED_HERE_WAIT: Duration = Duration::from_secs(30);

/// The store's path as one name, however it was given.
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Records that this process dropped the last handle of the store at `path`.
pub(crate) fn closed_here(path: &Path) {
    let mut closed = CLOSED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
    closed.insert(canonical(path));
}

/// Records that the store at `path` is open (again): its lock is this process's.
pub(crate) fn opened_here(path: &Path) {
    let mut closed = CLOSED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
    closed.remove(&canonical(path));
}

/// How long to wait for the lock of the store at `path` to be released before calling it
/// held by another process: `db::LOCK_WAIT`, or longer for a store this process closed.
pub(crate) fn lock_wait(path: &Path) -> Duration {
    let closed = CLOSED_HERE.lock().unwrap_or_else(PoisonError::into_inner);
    if closed.contains(&canonical(path)) {
        CLOSED_HERE_WAIT
    } else {
        super::db::LOCK_WAIT
    }
}

/// Whether another process holds the store after waiting up to `wait` for a lock being
/// released (see [`lock_wait`]).
pub(crate) fn is_locked_after(path: &Path, wait: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    while is_locked(path) {
        if started.elapsed() >= wait {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Removes the snapshot files sled left half-written (`snap.<lsn>.generating`).
///
/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, fsyncs it, then renames it.
/// A crash or a full disk before the rename leaves that file behind, often empty, and at
/// the next open sled takes it for the newest snapshot and fails with "Read corrupted
/// data". sled's own fix (spacejam/sled#1527) skips such files when it lists snapshots;
/// this does the equivalent for the pinned release. Such a file is never a complete
/// snapshot: the rename is what completes one.
///
/// Only under sled's lock (`flock` on `db`), taken here the way sled takes it: a process
/// that holds the store may be writing such a file right now (a daemon starting), and
/// another (`latchkey --db DIR keys list`) must not delete it. The lock is released on
/// return, before sled opens the store; a process that takes it in between makes that
/// open fail as locked, and nothing is removed after the release. Waits for a lock being
/// released as opening does ([`lock_wait`]).
pub(crate) fn remove_leftover_snapshots(path: &Path) -> Result<(), StoreError> {
    use fs2::FileExt;
    // No `db` yet: a new store, nothing left over (sled makes `db` before any snapshot).
    let Ok(db) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join("db"))
    else {
        return Ok(());
    };
    let (started, wait) = (std::time::Instant::now(), lock_wait(path));
    while FileExt::try_lock_exclusive(&db).is_err() {
        if started.elapsed() >= wait {
            return Err(StoreError::Locked {
                path: path.to_owned(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let Ok(entries) = fs::read_dir(path) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, store = %path.display(), "removing a snapshot sled left unfinished");
            fs::remove_file(entry.path()).map_err(|e| {
                StoreError::storage(format!(
                    "cannot remove the unfinished snapshot {}: {e}",
                    entry.path().display()
                ))
            })?;
        }
    }
    Ok(())
}

/// sled's open error as one line naming the path and the cause.
pub(crate) fn open_error(path: &Path, err: sled::Error) -> StoreError {
    match err {
        sled::Error::Corruption { .. } => StoreError::Damaged {
            path: path.to_owned(),
            reason: "is damaged (sled found corrupted data in its files)".into(),
        },
        sled::Error::Io(io) if super::space::is_full(&io) => StoreError::StorageFull {
            path: path.to_owned(),
        },
        sled::Error::Io(io) => StoreError::storage(format!(
            "cannot open the store at {}: {io}{}",
            path.display(),
            ownership_hint(path, &io)
        )),
        sled::Error::Unsupported(what) => StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("cannot be opened by this version ({what})"),
        },
        other => StoreError::storage(format!(
            "cannot open the store at {}: {other}",
            path.display()
        )),
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::storage(format!(
        "cannot read {}: {e}{}",
        path.display(),
        ownership_hint(path, e)
    ))
}

/// For a store refused for want of permission: the store, or the first of its files, that
/// belongs to another user than this process's, as a phrase to append ("" when none does,
/// or for another error). What a command run as root on a service's store leaves (a sled
/// snapshot, a restored store), which the service then cannot open.
pub(crate) fn ownership_hint(path: &Path, err: &std::io::Error) -> String {
    if err.kind() != std::io::ErrorKind::PermissionDenied {
        return String::new();
    }
    #[cfg(target_os = "linux")]
    {
        let me = rustix::process::geteuid().as_raw();
        if let Some((file, uid)) = owned_by_another(path, me) {
            return format!(
                " ({} belongs to uid {uid}, and this process runs as uid {me}: the store's files must belong to the user that opens it; `chown -R` them to it)",
                file.display()
            );
        }
    }
    String::new()
}

/// The store at `path`, or the first of its files, whose owner is not `uid`.
#[cfg(target_os = "linux")]
fn owned_by_another(path: &Path, uid: u32) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &Path| std::fs::symlink_metadata(p).ok().map(|m| m.uid());
    let files = std::fs::read_dir(path).into_iter().flatten().flatten();
    std::iter::once(path.to_owned())
        .chain(files.take(1_000).map(|entry| entry.path()))
        .find_map(|p| {
            owner(&p)
                .filter(|&owner| owner != uid)
                .map(|owner| (p, owner))
        })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// What `latchkey --db` run as root leaves in a service's store: a file of root's
    /// among the service user's. The refusal names it.
    #[test]
    fn a_refusal_for_want_of_permission_names_the_file_of_another_user() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("conf"), b"").unwrap();
        let me = std::fs::metadata(&store).unwrap().uid();
        assert_eq!(owned_by_another(&store, me), None, "all of one owner");
        let theirs = store.join("snap.0000000000000FE9");
        std::fs::write(&theirs, b"").unwrap();
        // Only root may give a file away: elsewhere there is nothing more to find.
        if std::os::unix::fs::chown(&theirs, Some(12_345), None).is_err() {
            eprintln!("skipped: cannot chown here (not root)");
            return;
        }
        assert_eq!(owned_by_another(&store, me), Some((theirs, 12_345)));
        // The store itself of another: named first.
        assert_eq!(owned_by_another(&store, 12_345), Some((store.clone(), me)));
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(ownership_hint(&store, &other), "", "another error");
    }
}
