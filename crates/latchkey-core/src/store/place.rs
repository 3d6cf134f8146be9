//! The directory an embedded store was opened in, told from one that replaced it.
//!
//! A store's directory removed under a running process (by hand, by a clean-up job, a
//! volume detached lazily) leaves the engine writing into files no path leads to: every
//! write would be acknowledged and lost at the next start, which finds no store there.
//! Before each write and at each health check the directory's device and inode are
//! compared with those it had at open; another (or none) refuses writes, and says how to
//! save what the process still holds (an online backup reads the open files).

use std::io;
use std::path::Path;

use crate::error::{Displaced, StoreError};

/// A directory's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    dev: u64,
    ino: u64,
}

impl Place {
    /// The identity of the directory at `path` now (elsewhere than on Unix, only whether
    /// there is one).
    pub(super) fn of(path: &Path) -> io::Result<Place> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, u64::from(meta.is_dir()));
        Ok(Place { dev, ino })
    }

    /// `Ok` while `path` is still this directory; otherwise the error every write and
    /// health check answers (503 `keystore_unavailable`), said at ERROR.
    pub(super) fn check(self, path: &Path) -> Result<(), StoreError> {
        let why = match Place::of(path) {
            Ok(now) if now == self => return Ok(()),
            Ok(_) => "another directory stands at its path".to_owned(),
            Err(e) => e.to_string(),
        };
        let path = path.display();
        crate::error_limited!(store = %path, why = %why, "the store's directory was removed or replaced while this process held it open: writes are refused; take a backup now (it reads the open store), then restore it");
        Err(StoreError::Unavailable(Box::new(Displaced(format!(
            "the store's directory {path} was removed or replaced while this process held it open ({why}): writes are refused, since nothing would find them at the next start; take a backup now (`latchkey backup`: it reads the open store), then restore it"
        )))))
    }
}
