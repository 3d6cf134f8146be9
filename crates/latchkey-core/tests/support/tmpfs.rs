//! A small tmpfs for the full-disk tests: this crate's `full.rs` and the black-box
//! `tests/it/operations.rs`, which includes this file by path (not in `support`, which every
//! test of this crate includes: only these two fill a disk).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted for the test, unmounted on drop.
pub(crate) struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts one of `size` (`24m`); `None` (the caller skips, saying why) when mounting is
    /// refused, as it is to a user that is not root.
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }

    /// [`Tmpfs::mount`], or `None` after saying that the test is skipped and why.
    pub(crate) fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        let tmpfs = Tmpfs::mount(size);
        if tmpfs.is_none() {
            eprintln!("skipped: cannot mount a tmpfs here (the test needs root)");
        }
        tmpfs
    }

    /// Where it is mounted.
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills it to the last block with one file, returned.
    pub(crate) fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        // Bounded by the tmpfs's size: big chunks, then small ones until none fits.
        for chunk in [64 * 1024, 512] {
            let bytes = vec![0xA5u8; chunk];
            for _ in 0..100_000 {
                if file
                    .write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .is_err()
                {
                    break;
                }
            }
        }
        filler
    }

    /// Fills it, then gives `room` bytes back; returns the filler.
    pub(crate) fn fill_leaving(&self, room: u64) -> PathBuf {
        let filler = self.fill();
        let full = fs::metadata(&filler).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(full - room)
            .unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A daemon still exiting may hold a file on it (busy): then detached at once and
        // unmounted once free (`-l`), rather than left mounted for good.
        let unmounted = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(self.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !unmounted(&[]) {
            unmounted(&["-l"]);
        }
    }
}
