//! A full disk: refuse a write before sled sees it, and tell one when sled does.
//!
//! sled 0.34.7 reacts to a failed log write (ENOSPC included) by poisoning the whole
//! database: it records a global error that every later write and flush returns, and only
//! a fresh open clears it. Worse, the failed write is already applied in memory when its
//! flush fails. So latchkey checks the free space before each write and refuses it (507
//! `storage_full`) while less than the configured reserve is left; should sled still fail
//! (another process filled the disk meanwhile), the store reopens sled, which drops what
//! the failed write had applied in memory (see `Store::recover`).

use std::io;
use std::path::Path;

use crate::error::StoreError;

/// Whether an I/O error says the disk (or the quota) is full.
pub(crate) fn is_full(err: &io::Error) -> bool {
    // sled clones the error it keeps, which loses the OS code but keeps the kind.
    err.kind() == io::ErrorKind::StorageFull
        || err.kind() == io::ErrorKind::QuotaExceeded
        || err.raw_os_error() == Some(28)
        || err.to_string().contains("No space left on device")
}

/// Whether sled failed because the disk is full.
pub(crate) fn sled_is_full(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if is_full(io))
}

/// Whether a store's error is a full disk: latchkey's own `StorageFull`, or sled's or the
/// OS's error for one carried in `Storage`.
pub(crate) fn is_full_error(err: &StoreError) -> bool {
    match err {
        StoreError::StorageFull { .. } => true,
        StoreError::Storage(cause) => {
            cause
                .downcast_ref::<sled::Error>()
                .is_some_and(sled_is_full)
                || cause.downcast_ref::<io::Error>().is_some_and(is_full)
        }
        _ => false,
    }
}

/// Whether fewer than `reserve` bytes are available to the store. An error reading the
/// figure counts as enough: the write then goes ahead and sled reports what happens.
pub(crate) fn below_reserve(path: &Path, reserve: u64) -> bool {
    reserve > 0 && fs2::available_space(path).is_ok_and(|free| free < reserve)
}

/// The reserve file's name, in the store's directory.
pub(crate) const BALLAST: &str = "latchkey.reserve";
/// Its size: room for the snapshot sled writes when it opens a store whose log went past
/// its last snapshot (a few bytes per page; a million keys take well under this), or for
/// redb's commit of a repair.
pub(crate) const BALLAST_BYTES: u64 = 4 << 20;

/// Makes sure the reserve file exists, when the disk has room for it and more. Best
/// effort: without it, only a reopen on a full disk is at risk.
///
/// sled writes a snapshot when it opens a store (see `files::remove_leftover_snapshots`),
/// and redb, after an unclean shutdown, repairs its file and commits the repair; on a
/// full disk that fails and the store would not open, which is the moment space matters
/// most. So each store keeps 4 MiB allocated in a file of its own, and gives it
/// back ([`release_ballast`]) right before it has to open sled on a full disk.
pub(crate) fn ensure_ballast(store: &Path) {
    use fs2::FileExt;
    let path = store.join(BALLAST);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= BALLAST_BYTES) {
        return;
    }
    if !fs2::available_space(store).is_ok_and(|free| free >= 2 * BALLAST_BYTES) {
        return;
    }
    let made = std::fs::File::create(&path).and_then(|file| {
        file.allocate(BALLAST_BYTES)?;
        file.sync_all()
    });
    if let Err(e) = made {
        tracing::warn!(error = %e, file = %path.display(), "could not allocate the store's disk reserve");
        let _ = std::fs::remove_file(&path);
    }
}

/// Gives the reserve back to the file system; whether there was one.
pub(crate) fn release_ballast(store: &Path) -> bool {
    let released = std::fs::remove_file(store.join(BALLAST)).is_ok();
    if released {
        tracing::warn!(store = %store.display(), "the disk is full: released the store's 4 MiB reserve to reopen it");
    }
    released
}
