//! A backup's partial file: where `latchkey backup` writes before the backup gets its
//! name, and what a killed run left of one.
//!
//! The file is locked (`flock`) while it is written, and the kernel drops the lock when
//! the process ends, however it ends. So a later backup into the same directory tells a
//! partial file that a killed run left (its lock free) from one a running backup writes,
//! and removes it when it is one of latchkey's: named `NAME.<12 hex digits>.partial`,
//! empty or beginning as a backup begins, and not a whole backup. The remover holds the
//! lock while it removes, and a new file gets its name only once it is locked: neither
//! can take the other's file (a backup killed in the instant between the two leaves an
//! empty `….partial-new`, which no cleanup takes). Where the file system cannot
//! lock (some NFS, FUSE and 9p mounts), backups are written unlocked and nothing is
//! removed.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use latchkey_core::Store;
use uuid::Uuid;

/// How a backup file begins: its header's first member (checked against a real backup in
/// the tests).
const SIGNATURE: &[u8] = br#"{"format":"latchkey-backup""#;
const SUFFIX: &str = ".partial";
/// The random part of a partial file's name: lower-case hex digits.
const TAG_LEN: usize = 12;
/// What a partial file's name ends with until it is locked.
const FRESH: &str = "-new";

/// A partial file this process writes, and holds when the file system can lock.
#[derive(Debug)]
pub(crate) struct Partial {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
}

impl Partial {
    /// Creates `FILE.<random>.partial` beside `out` (never over an existing file) through
    /// `create` (which sets its mode), locked from the start: it is made under a name the
    /// cleanup never takes, locked, then renamed (the lock goes with the file), so no
    /// cleanup ever sees it unlocked.
    pub(crate) fn create(
        out: &Path,
        create: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> std::io::Result<Partial> {
        let path = path_for(out);
        let mut fresh = path.clone().into_os_string();
        fresh.push(FRESH);
        let fresh = PathBuf::from(fresh);
        let file = create(&fresh)?;
        if let Err(e) = file.lock() {
            tracing::warn!(file = %path.display(), error = %e, "cannot lock the backup's partial file: it is written unlocked, and a killed run's partial files are not removed here");
        }
        if let Err(e) = fs::rename(&fresh, &path) {
            let _ = fs::remove_file(&fresh);
            return Err(e);
        }
        Ok(Partial { path, file })
    }
}

/// `FILE.<random>.partial` beside `FILE`: unique, so a file left by a killed run is in no
/// later run's way.
pub(crate) fn path_for(out: &Path) -> PathBuf {
    let tag = Uuid::now_v7().simple().to_string();
    let mut name = out.file_name().unwrap_or_default().to_owned();
    // The random bits of a UUID v7 end it.
    name.push(format!(".{}{SUFFIX}", &tag[tag.len() - TAG_LEN..]));
    out.with_file_name(name)
}

/// Removes the partial files that killed backups left in the directory that holds `out`;
/// says which. Best effort: a file it cannot read, lock or remove is left as it is.
pub(crate) fn remove_abandoned(out: &Path) {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let Ok(entries) = fs::read_dir(dir.unwrap_or(Path::new("."))) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !named_as_partial(&path) {
            continue;
        }
        // Held until the file is gone.
        let Some(_held) = abandoned(&path) else {
            continue;
        };
        if fs::remove_file(&path).is_ok() {
            tracing::warn!(file = %path.display(), "removed the partial file of a backup that was stopped midway");
        }
    }
}

fn named_as_partial(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(rest) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    let Some((base, tag)) = rest.rsplit_once('.') else {
        return false;
    };
    !base.is_empty()
        && tag.len() == TAG_LEN
        && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The file, locked, when no process holds it, it begins as a backup does (or is empty),
/// and it is no whole backup (a script's own name for a finished one, say).
fn abandoned(path: &Path) -> Option<File> {
    let mut file = File::open(path).ok()?;
    file.try_lock().ok()?;
    let mut start = Vec::with_capacity(SIGNATURE.len());
    (&mut file)
        .take(SIGNATURE.len() as u64)
        .read_to_end(&mut start)
        .ok()?;
    if !SIGNATURE.starts_with(&start) {
        return None;
    }
    if start.len() == SIGNATURE.len() {
        let whole = file.rewind().is_ok() && Store::check_backup(BufReader::new(&file)).is_ok();
        if whole {
            tracing::warn!(file = %path.display(), "a whole backup is named as a partial file: it is left as it is");
            return None;
        }
    }
    Some(file)
}

#[cfg(test)]
mod tests {
    use latchkey_core::StoreConfig;

    use super::*;

    fn create(path: &Path) -> std::io::Result<File> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// A real backup of a new store.
    fn a_backup() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::create_empty(dir.path().join("s"), "lk", StoreConfig::default()).unwrap();
        let mut backup = Vec::new();
        store.backup(&mut backup).unwrap();
        backup
    }

    #[test]
    fn partial_files_have_names_of_their_own() {
        let out = Path::new("/backups/latchkey.backup");
        let (a, b) = (path_for(out), path_for(out));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("latchkey.backup.") && name.ends_with(".partial"),
            "{name}"
        );
        assert!(named_as_partial(&a));
    }

    #[test]
    fn a_backup_removes_what_killed_ones_left_and_nothing_else() {
        let backup = a_backup();
        assert!(
            backup.starts_with(SIGNATURE),
            "the signature is how backups begin"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("2026-12-06.backup");
        // A killed run's file, cut short in its header, under another day's name.
        let killed = path_for(&dir.path().join("2026-12-05.backup"));
        fs::write(&killed, &backup[..10]).unwrap();
        let empty = path_for(&out);
        fs::write(&empty, "").unwrap();
        // Cut short after some records.
        let longer = path_for(&out);
        fs::write(&longer, &backup[..backup.len() - 40]).unwrap();
        // A running backup's file, held.
        let mut running = Partial::create(&out, create).unwrap();
        std::io::Write::write_all(&mut running.file, &backup[..100]).unwrap();
        // A whole backup a script named so, and files that merely look alike.
        let whole = path_for(&out);
        fs::write(&whole, &backup).unwrap();
        let foreign = path_for(&dir.path().join("film.mkv"));
        fs::write(&foreign, "a download").unwrap();
        let no_tag = dir.path().join("notes.partial");
        fs::write(&no_tag, "").unwrap();
        // latchkey writes its tags in lower case.
        let upper = dir.path().join("u.backup.0123456789AB.partial");
        fs::write(&upper, "").unwrap();

        remove_abandoned(&out);
        assert!(!killed.exists() && !empty.exists() && !longer.exists());
        assert!(running.path.exists(), "a running backup's file stays");
        assert!(whole.exists() && foreign.exists() && no_tag.exists() && upper.exists());
    }

    #[test]
    fn a_new_partial_file_is_locked_under_its_name_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.backup");
        let partial = Partial::create(&out, create).unwrap();
        assert!(named_as_partial(&partial.path));
        assert!(abandoned(&partial.path).is_none(), "held: not abandoned");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            names,
            std::slice::from_ref(&partial.path),
            "no name of its making stays"
        );
        drop(partial);
        assert!(abandoned(&dir.path().join(names[0].file_name().unwrap())).is_some());
    }
}
