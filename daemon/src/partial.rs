//! A backup's partial file: where `latchkey backup` writes before the backup gets its
//! name, and what a killed run left of one.
//!
//! The file is locked (`flock`) while it is written, and the kernel drops the lock when
//! the process ends, however it ends. So a later backup into the same directory tells a
//! partial file that a killed run left (its lock free) from one a running backup writes,
//! and removes it when it is one of latchkey's: named `NAME.<12 hex digits>.partial`,
//! and empty or beginning as a backup begins.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// How a backup file begins: its header's first member.
const SIGNATURE: &[u8] = br#"{"format":"latchkey-backup""#;
const SUFFIX: &str = ".partial";
/// The random part of a partial file's name: hex digits.
const TAG_LEN: usize = 12;

/// A partial file this process writes, and holds.
#[derive(Debug)]
pub(crate) struct Partial {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
}

impl Partial {
    /// Creates `FILE.<random>.partial` beside `out` (never over an existing file), locked,
    /// through `create` (which sets its mode).
    pub(crate) fn create(
        out: &Path,
        create: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> std::io::Result<Partial> {
        let path = path_for(out);
        let file = create(&path)?;
        // A fresh file that no one else can have locked: this does not wait.
        file.lock()?;
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
/// says which. Best effort: a file it cannot read or remove is left as it is.
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
        if is_abandoned(&path) && fs::remove_file(&path).is_ok() {
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
    !base.is_empty() && tag.len() == TAG_LEN && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether no process holds the file and it begins as a backup does (or is empty).
fn is_abandoned(path: &Path) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    let mut start = Vec::with_capacity(SIGNATURE.len());
    if (&mut file)
        .take(SIGNATURE.len() as u64)
        .read_to_end(&mut start)
        .is_err()
    {
        return false;
    }
    SIGNATURE.starts_with(&start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &Path) -> std::io::Result<File> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
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
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("2026-12-06.backup");
        // A killed run's file, cut short in its header, under another day's name.
        let killed = path_for(&dir.path().join("2026-12-05.backup"));
        fs::write(&killed, &SIGNATURE[..10]).unwrap();
        let empty = path_for(&out);
        fs::write(&empty, "").unwrap();
        // Whole records after the header: still a backup's beginning.
        let longer = path_for(&out);
        fs::write(
            &longer,
            [SIGNATURE, b",\"version\":1}\n\0\0\0\x05"].concat(),
        )
        .unwrap();
        // A running backup's file, held.
        let mut running = Partial::create(&out, create).unwrap();
        std::io::Write::write_all(&mut running.file, SIGNATURE).unwrap();
        // Files that merely look alike: someone else's.
        let foreign = path_for(&dir.path().join("film.mkv"));
        fs::write(&foreign, "a download").unwrap();
        let no_tag = dir.path().join("notes.partial");
        fs::write(&no_tag, "").unwrap();

        remove_abandoned(&out);
        assert!(!killed.exists() && !empty.exists() && !longer.exists());
        assert!(running.path.exists(), "a running backup's file stays");
        assert!(foreign.exists() && no_tag.exists());
    }
}
