//! A restore's staging directory: built beside the store it becomes, held while it is
//! built, moved into place whole. One that a killed restore left behind is removed by the
//! next restore into the same store.
//!
//! The directory is held by an advisory lock (`flock`) on the directory itself, which the
//! kernel releases when the process that holds it ends, however it ends: a staging
//! directory whose lock can be taken belongs to no running restore. The lock follows the
//! directory through its rename into place, and adds no file to the store. The remover
//! holds the lock while it removes, and a new directory gets its name only once it is
//! locked (a restore killed in the instant between the two leaves a `…-new` name, which
//! no cleanup takes). Where the file system cannot lock a directory,
//! restores run unlocked and nothing is removed.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::files;
use crate::error::StoreError;

/// What names a staging directory: the store's name, this, and an id of 32 hex digits.
const STAGING: &str = ".restoring-";
const ID_LEN: usize = 32;
/// What a staging directory's name ends with until it is locked.
const FRESH: &str = "-new";

/// A staging directory this process holds.
#[derive(Debug)]
pub(super) struct Staging {
    path: PathBuf,
    /// The directory, locked while this value lives. `None` where the platform cannot lock
    /// a directory: the restore runs all the same, and a later one leaves it alone.
    _held: Option<File>,
}

impl Staging {
    /// Removes what killed restores into `target` left, then creates and holds a new,
    /// empty staging directory beside `target`, readable by its owner alone (as a store
    /// `init` makes). Refused while another restore into `target` runs.
    pub(super) fn create(target: &Path) -> Result<Staging, StoreError> {
        let name = target
            .file_name()
            .ok_or_else(|| StoreError::invalid("db", "must name a directory"))?;
        remove_abandoned(target)?;
        let mut staging = name.to_owned();
        staging.push(format!("{STAGING}{}", Uuid::now_v7().simple()));
        let path = target.with_file_name(staging);
        // Made under a name the cleanup never takes, locked, then renamed (the lock goes
        // with the directory): no cleanup ever sees it unlocked.
        let mut fresh = path.clone().into_os_string();
        fresh.push(FRESH);
        let fresh = PathBuf::from(fresh);
        files::create_private_dir(&fresh)?;
        let held = File::open(&fresh).ok().filter(|dir| dir.lock().is_ok());
        if let Err(e) = fs::rename(&fresh, &path) {
            let _ = fs::remove_dir_all(&fresh);
            return Err(StoreError::storage(format!(
                "cannot create {}: {e}",
                path.display()
            )));
        }
        Ok(Staging { path, _held: held })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and what it holds: the restore failed.
    pub(super) fn discard(self) {
        let _ = fs::remove_dir_all(&self.path);
    }

    /// Puts the restored store at `target`, in place of the empty directory there, if any
    /// (which may hold the reserve file an earlier store of the same path left, and whose
    /// mode the store keeps), and makes the rename durable: a power cut after the restore
    /// returned must not take the store away again. On failure the directory is removed.
    pub(super) fn move_into_place(self, target: &Path) -> Result<(), StoreError> {
        match rename(&self.path, target) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }
}

fn rename(staging: &Path, target: &Path) -> Result<(), StoreError> {
    let kept_mode = fs::metadata(target).ok().map(|m| m.permissions());
    if let Some(mode) = kept_mode {
        // Only an empty directory, or one with an earlier store's reserve alone, is
        // replaced (a store that appeared meanwhile keeps its reserve).
        let others = fs::read_dir(target)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() != super::space::BALLAST)
            })
            .unwrap_or(true);
        if others {
            return Err(StoreError::storage(format!(
                "cannot restore into {}: it is no longer empty",
                target.display()
            )));
        }
        fs::set_permissions(staging, mode).map_err(|e| {
            StoreError::storage(format!("cannot keep {}'s mode: {e}", target.display()))
        })?;
        let _ = fs::remove_file(target.join(super::space::BALLAST));
        fs::remove_dir(target).map_err(|e| {
            StoreError::storage(format!("cannot replace {}: {e}", target.display()))
        })?;
    }
    fs::rename(staging, target).map_err(|e| {
        StoreError::storage(format!(
            "cannot move the restored store to {}: {e}",
            target.display()
        ))
    })?;
    // `staging` is a sibling of `target`: one directory holds both names.
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    File::open(parent.unwrap_or(Path::new(".")))
        .and_then(|dir| dir.sync_all())
        .map_err(|e| {
            StoreError::storage(format!(
                "restored the store to {}, but cannot make its move durable: {e}",
                target.display()
            ))
        })
}

/// Removes the staging directories beside `target` of earlier restores into it that were
/// stopped midway (one that fails removes its own), each while holding its lock. One that
/// cannot be told abandoned (not lockable) is left, with a warning; one held means
/// another restore into `target` runs now, and this one is refused.
fn remove_abandoned(target: &Path) -> Result<(), StoreError> {
    for left in staging_dirs(target) {
        let dir = File::open(&left);
        match dir.as_ref().map(File::try_lock) {
            Ok(Ok(())) => match fs::remove_dir_all(&left) {
                Ok(()) => tracing::warn!(
                    directory = %left.display(),
                    "removed the unfinished copy an earlier restore into this store left \
                     when it was stopped midway"
                ),
                Err(e) => tracing::warn!(
                    directory = %left.display(), error = %e,
                    "cannot remove the unfinished copy an earlier restore left: remove it"
                ),
            },
            Ok(Err(TryLockError::WouldBlock)) => {
                return Err(StoreError::storage(format!(
                    "cannot restore into {}: another restore into it is running (it builds \
                     {}); wait for it to end",
                    target.display(),
                    left.display()
                )));
            }
            Ok(Err(TryLockError::Error(_))) | Err(_) => tracing::warn!(
                directory = %left.display(),
                "an earlier restore into this store was stopped midway and left its \
                 unfinished copy: remove that directory once no restore runs"
            ),
        }
        // The lock, if taken, is released only now, once the directory is gone.
        drop(dir);
    }
    Ok(())
}

/// The staging directories beside the store at `target` (named as this module names
/// them, and directories), by name.
fn staging_dirs(target: &Path) -> Vec<PathBuf> {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}{STAGING}");
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    let Ok(entries) = fs::read_dir(parent.unwrap_or(Path::new("."))) else {
        return Vec::new();
    };
    let ours = |e: &fs::DirEntry| {
        let named = e.file_name().to_str().is_some_and(|n| {
            n.strip_prefix(&prefix).is_some_and(|id| {
                id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
        });
        named && e.file_type().is_ok_and(|t| t.is_dir())
    };
    let mut left: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(ours)
        .map(|e| e.path())
        .collect();
    left.sort();
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging directory's name beside `target` with the id `id`.
    fn named(dir: &Path, store: &str, id: &str) -> PathBuf {
        let path = dir.join(format!("{store}{STAGING}{id}"));
        files::create_private_dir(&path).unwrap();
        path
    }

    #[test]
    fn a_restore_removes_what_a_stopped_one_left_and_waits_for_none() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("store");
        // A killed restore's directory: no process holds it.
        let killed = named(dir.path(), "store", "0190f0c0aaaa4bbb8cccdddd0000eeee");
        fs::write(killed.join("db"), "half").unwrap();
        // Another store's leftover, and names that only look alike, are not this
        // restore's business.
        let other = named(dir.path(), "other", "0190f0c0aaaa4bbb8cccdddd0000ffff");
        let kept = named(dir.path(), "store", "keep");
        let file = dir
            .path()
            .join(format!("store{STAGING}0190f0c0aaaa4bbb8cccdddd00001111"));
        fs::write(&file, "a user's file").unwrap();

        let next = Staging::create(&target).unwrap();
        assert!(!killed.exists(), "the killed restore's copy is removed");
        assert!(other.exists() && kept.exists() && file.exists());
        // A second restore into the same store while the first runs is refused.
        let refused = Staging::create(&target).unwrap_err().to_string();
        assert!(refused.contains("another restore"), "{refused}");
        assert!(next.path().exists());

        next.move_into_place(&target).unwrap();
        assert!(target.is_dir());
        assert_eq!(staging_dirs(&target), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_new_staging_directory_is_locked_under_its_name_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::create(&dir.path().join("store")).unwrap();
        assert_eq!(
            staging_dirs(&dir.path().join("store")),
            [staging.path().to_owned()]
        );
        let probe = File::open(staging.path()).unwrap();
        assert!(matches!(probe.try_lock(), Err(TryLockError::WouldBlock)));
    }

    #[test]
    fn a_store_that_appeared_meanwhile_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("store");
        fs::create_dir(&target).unwrap();
        fs::write(target.join(super::super::space::BALLAST), "").unwrap();
        fs::write(target.join("conf"), "another restore's store").unwrap();
        let staging = Staging::create(&target).unwrap();
        let staged = staging.path().to_owned();
        let error = staging.move_into_place(&target).unwrap_err().to_string();
        assert!(error.contains("no longer empty"), "{error}");
        assert!(target.join(super::super::space::BALLAST).exists());
        assert!(!staged.exists());
    }
}
