//! The high-water mark: the last write the store acknowledged, kept beside it.
//!
//! sled recovers a damaged or truncated log by dropping its tail, and a store copied back
//! from an older snapshot of the disk opens just as well: either way the store would
//! silently forget writes it had acknowledged. The mark is a small file in the store's
//! directory, `latchkey.mark`, holding the store's lineage and the sequence number and
//! hash of the newest audit event it acknowledged. It is advanced after every write's
//! flush (written to a temporary file, fsynced, renamed over the old one, the directory
//! fsynced), so it never runs ahead of the store. At open, a store whose chain ends before
//! the mark, or whose event at the mark's position has another hash, or which belongs to
//! another lineage, is refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The file name, in the store's directory.
pub(crate) const FILE: &str = "latchkey.mark";
const TEMP: &str = "latchkey.mark.tmp";
/// A mark is a few dozen bytes; anything larger is not one.
const MAX_LEN: u64 = 4096;

/// The last acknowledged write of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    /// The store's lineage: new for every store created or restored.
    pub(crate) lineage: Uuid,
    /// The sequence number of the newest acknowledged audit event (0 for none).
    pub(crate) seq: u64,
    /// That event's hash, hex (the genesis hash for none).
    pub(crate) head: String,
}

/// The mark's path for a store.
pub(crate) fn path(store: &Path) -> PathBuf {
    store.join(FILE)
}

/// Reads the mark; `Ok(None)` when there is none. An unreadable mark is an error naming
/// the file and the cause.
pub(crate) fn read(store: &Path) -> Result<Option<Mark>, String> {
    read_or_denied(store).map_err(|e| match e {
        Unread::Denied(e) => e.to_string(),
        Unread::Bad(why) => why,
    })
}

/// Why a mark was not read: this process may not (the file is another user's: no damage),
/// or it is no mark.
pub(crate) enum Unread {
    Denied(crate::error::StoreError),
    Bad(String),
}

/// [`read`], telling a mark this process may not read (a file of root's left by a command
/// run as root: the store is whole, its owner is wrong) from a damaged one.
pub(crate) fn read_or_denied(store: &Path) -> Result<Option<Mark>, Unread> {
    let path = path(store);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Unread::Denied(crate::error::StoreError::storage(format!(
                "cannot read {}: {e}{}",
                path.display(),
                super::files::ownership_hint(store, &e)
            ))));
        }
        Err(e) => {
            return Err(Unread::Bad(format!("cannot read {}: {e}", path.display())));
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_LEN {
        return Err(Unread::Bad(format!(
            "{} is not a latchkey mark (too large)",
            path.display()
        )));
    }
    serde_json::from_reader(std::io::BufReader::new(file))
        .map(Some)
        .map_err(|e| Unread::Bad(format!("{} is damaged: {e}", path.display())))
}

/// Replaces the mark atomically: a crash leaves the old mark or the new one, whole.
///
/// The new mark's content is fsynced before the rename, so a rename that survives a power
/// cut never exposes an empty file. The directory is fsynced only when `durable_rename`:
/// without it a power cut may undo the rename, which leaves the previous mark, one that
/// trails the store, which is safe; each write then costs one fsync instead of two (see
/// the README's figures).
pub(crate) fn write(store: &Path, mark: &Mark, durable_rename: bool) -> std::io::Result<()> {
    write_through(None, store, mark, durable_rename)
}

/// [`write`] through `dir`, the store's directory as the process opened it (on Linux): the
/// mark lands in that directory wherever it now stands, never in another one put at its
/// path meanwhile (a restored copy swapped in under a running process would get a mark of
/// another lineage, and refuse to open), and nowhere once it is removed.
pub(crate) fn write_through(
    dir: Option<&fs::File>,
    store: &Path,
    mark: &Mark,
    durable_rename: bool,
) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(dir) = dir {
        use rustix::fs::{Mode, OFlags, openat, renameat};
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        let mut file = fs::File::from(openat(dir, TEMP, flags, Mode::from_raw_mode(0o666))?);
        file.write_all(&serde_json::to_vec(mark).expect("a mark serializes"))?;
        file.sync_all()?;
        drop(file);
        renameat(dir, TEMP, dir, FILE)?;
        if durable_rename {
            dir.sync_all()?;
        }
        return Ok(());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
    let temp = store.join(TEMP);
    let mut file = fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec(mark).expect("a mark serializes"))?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path(store))?;
    if durable_rename {
        fs::File::open(store)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u64) -> Mark {
        Mark {
            lineage: Uuid::nil(),
            seq,
            head: "00".repeat(32),
        }
    }

    /// Re-check s48c N1: a store's directory moved away under a process and another put at
    /// its path (a restored copy): the process's next mark goes with its own directory and
    /// never into the other one, which would then name another lineage than its records.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mark_follows_the_directory_opened_not_its_path() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        fs::create_dir(&store).unwrap();
        let opened = fs::File::open(&store).unwrap();
        write_through(Some(&opened), &store, &mark(1), true).unwrap();
        let moved = root.path().join("moved");
        fs::rename(&store, &moved).unwrap();
        fs::create_dir(&store).unwrap();
        write_through(Some(&opened), &store, &mark(2), false).unwrap();
        assert_eq!(read(&moved).unwrap(), Some(mark(2)));
        assert_eq!(
            read(&store).unwrap(),
            None,
            "nothing in the directory put there"
        );
        // Removed, the directory takes no mark at all.
        fs::remove_dir_all(&moved).unwrap();
        assert!(write_through(Some(&opened), &store, &mark(3), false).is_err());
        assert_eq!(read(&store).unwrap(), None);
    }
}
