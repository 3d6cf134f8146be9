//! A restore's staging directory: built beside the store it becomes, held while it is
//! built, moved into place whole. One that a killed restore left behind is removed by the
//! next restore into the same store.
//!
//! The directory is held by an advisory lock (`flock`) on the directory itself, which the
//! kernel releases when the process that holds it ends, however it ends: a staging
//! directory whose lock can be taken belongs to no running restore. The lock follows the
//! directory through its rename into place, and adds no file to the store.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::files;
use crate::error::StoreError;

/// What names a staging directory: the store's name, this, and an id.
const STAGING: &str = ".restoring-";

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
    /// `init` makes).
    pub(super) fn create(target: &Path) -> Result<Staging, StoreError> {
        let name = target
            .file_name()
            .ok_or_else(|| StoreError::invalid("db", "must name a directory"))?;
        remove_abandoned(target);
        let mut staging = name.to_owned();
        staging.push(format!("{STAGING}{}", Uuid::now_v7().simple()));
        let path = target.with_file_name(staging);
        files::create_private_dir(&path)?;
        let held = File::open(&path).ok().filter(|dir| dir.lock().is_ok());
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
/// stopped midway (one that fails removes its own), each once no process holds it. One
/// that cannot be told abandoned (held, or not lockable) is left, with a warning.
fn remove_abandoned(target: &Path) {
    for left in staging_dirs(target) {
        let abandoned = File::open(&left).map(|dir| dir.try_lock());
        match abandoned {
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
            Ok(Err(TryLockError::WouldBlock)) => tracing::warn!(
                directory = %left.display(),
                "another restore into this store is running"
            ),
            Ok(Err(TryLockError::Error(_))) | Err(_) => tracing::warn!(
                directory = %left.display(),
                "an earlier restore into this store was stopped midway and left its \
                 unfinished copy: remove that directory once no restore runs"
            ),
        }
    }
}

/// The staging directories beside the store at `target`, by name.
fn staging_dirs(target: &Path) -> Vec<PathBuf> {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}{STAGING}");
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    let Ok(entries) = fs::read_dir(parent.unwrap_or(Path::new("."))) else {
        return Vec::new();
    };
    let mut left: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    left.sort();
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_removes_what_a_stopped_one_left_but_not_what_a_running_one_holds() {
        let dir = tempfile::tempdir().unwrap();
        let running = Staging::create(&dir.path().join("store")).unwrap();
        let target = dir.path().join("store");
        fs::write(running.path().join("db"), "being written").unwrap();
        // A killed restore's directory: no process holds it.
        let killed = dir.path().join(format!("store{STAGING}0190f0c0aaaa"));
        files::create_private_dir(&killed).unwrap();
        fs::write(killed.join("db"), "half").unwrap();
        // Another store's leftover is not this restore's business.
        let other = dir.path().join(format!("other{STAGING}0190f0c0bbbb"));
        files::create_private_dir(&other).unwrap();

        let next = Staging::create(&target).unwrap();
        assert!(!killed.exists(), "the killed restore's copy is removed");
        assert!(
            running.path().join("db").exists(),
            "a running restore's copy stays"
        );
        assert!(other.exists());
        assert_ne!(next.path(), running.path());

        next.move_into_place(&target).unwrap();
        assert!(target.is_dir());
        running.discard();
        assert_eq!(staging_dirs(&target), Vec::<PathBuf>::new());
    }
}
