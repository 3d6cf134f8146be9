//! Backup and restore: a backup taken while writes go on holds every write acknowledged
//! before it began, its chain verifies, the restored store is a new lineage, and a damaged
//! file or a non-empty target restores nothing.

#[path = "support/edit_backup.rs"]
mod edit_backup;
mod support;
/// Edits a closed store's files, for a store whose audit chain was edited.
#[path = "support/tamper.rs"]
mod tamper;
use edit_backup::without_newest_event;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_core::{Actor, BackupHeader, NewUser, Store, StoreError};

fn user(store: &Store, name: String) -> Result<uuid::Uuid, StoreError> {
    let new = NewUser {
        name,
        ..NewUser::default()
    };
    Ok(store.create_user(&Actor::system(), new)?.id)
}

#[test]
fn a_backup_during_writes_restores_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, admin) =
        Store::create_with_admin(dir.path().join("a"), "lk", support::config()).unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: stopped after the backup, and at most this many writes.
            for i in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = user(&store, format!("u{i}")).unwrap();
                acknowledged.lock().unwrap().push(id);
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 20 {
        std::thread::yield_now();
    }
    let before: Vec<_> = acknowledged.lock().unwrap().clone();
    let mut file = Vec::new();
    let header = store.backup(&mut file).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(header.lineage, store.lineage());
    assert!(header.seq >= before.len() as u64 + 3, "{header:?}");

    let target = dir.path().join("b");
    let (restored, report) = Store::restore(&target, file.as_slice(), support::config()).unwrap();
    assert_eq!(report.header, header);
    assert_ne!(
        restored.lineage(),
        store.lineage(),
        "a restore is a new lineage"
    );
    assert_eq!(report.lineage, restored.lineage());
    assert_eq!(restored.last_seq().unwrap(), header.seq);
    for id in &before {
        restored.user(&id.to_string()).unwrap();
    }
    let report = restored.verify_audit().unwrap();
    assert_eq!((report.events, report.broken), (header.seq, None));
    assert!(restored.verify(admin.secret.expose()).is_ok());
    // The restored store takes writes and reopens.
    user(&restored, "after".into()).unwrap();
    drop(restored);
    let reopened = Store::open(&target, support::config()).unwrap();
    assert_eq!(reopened.last_seq().unwrap(), header.seq + 1);
}

/// Restoring `bytes` into `dir`/b is refused as an invalid backup saying `needle`, and
/// leaves nothing in `dir` but the source store `a`.
#[track_caller]
fn restores_nothing(dir: &std::path::Path, bytes: &[u8], needle: &str) {
    let target = dir.join("b");
    let err = Store::restore(&target, bytes, support::config()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "backup",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(needle), "{err}");
    assert!(!target.exists(), "a failed restore leaves nothing");
    let leftovers = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(leftovers, 1, "no staging directory is left");
}

/// A store `a` with a user in a new directory, and its backup.
fn backed_up() -> (tempfile::TempDir, Store, Vec<u8>, BackupHeader) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) =
        Store::create_with_admin(dir.path().join("a"), "lk", support::config()).unwrap();
    user(&store, "x".into()).unwrap();
    let mut file = Vec::new();
    let header = store.backup(&mut file).unwrap();
    (dir, store, file, header)
}

#[test]
fn a_damaged_backup_or_a_used_target_restores_nothing() {
    let (dir, store, file, _) = backed_up();
    let mut flipped = file.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    // A frame longer than any record (1 MiB): damaged, refused before it is read, however
    // much the file holds after it.
    let header = file.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut oversized = file[..header].to_vec();
    oversized.extend_from_slice(&((1u32 << 20) + 1).to_be_bytes());
    let cases: [(&[u8], &str); 5] = [
        (&file[..file.len() - 40], "truncated"),
        (&oversized, "larger than any"),
        (&flipped, "damaged"),
        (b"{\"hello\": 1}\n", "not a latchkey backup"),
        (b"", "not a latchkey backup"),
    ];
    for (bytes, needle) in cases {
        restores_nothing(dir.path(), bytes, needle);
    }
    // Onto a store, or any non-empty directory: refused, nothing changed.
    let used = dir.path().join("a");
    drop(store);
    let err = Store::restore(&used, file.as_slice(), support::config()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        Store::open(&used, support::config())
            .unwrap()
            .users()
            .unwrap()
            .len(),
        2
    );
}

/// A backup of a store whose audit chain was edited (its checksum matches: it was taken of
/// what the store held) restores nothing, and says where the chain breaks; kept as it is
/// when asked, to recover the keys, with the break reported by `verify_audit`.
#[test]
fn a_backup_whose_chain_breaks_restores_nothing_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("a");
    let (store, _) = Store::create_with_admin(&source, "lk", support::config()).unwrap();
    user(&store, "x".into()).unwrap();
    drop(store);
    tamper::copy_audit_event(&source, 3, 2);
    let store = Store::open(&source, support::config()).unwrap();
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    // Whole all the same: the check of the file names the break.
    let checked = Store::check_backup(file.as_slice()).unwrap();
    assert_eq!(checked.broken.map(|b| b.seq), Some(2));

    restores_nothing(dir.path(), &file, "chain breaks at #2");
    let target = dir.path().join("b");
    let location = latchkey_core::Location::Dir(target.clone());
    let (restored, _) =
        Store::restore_keeping_broken_chain_at(&location, file.as_slice(), support::config())
            .unwrap();
    assert_eq!(restored.verify_audit().unwrap().broken.unwrap().seq, 2);
    assert_eq!(
        restored.users().unwrap().len(),
        2,
        "the records are all there"
    );
}

/// A backup whose newest events were taken out, all the rest (its checksum too) made to
/// match, restores nothing: the chain check finds the chain short of the header's newest
/// event, and a store without that event would not open even when a broken chain is kept.
#[test]
fn a_backup_without_its_newest_events_restores_nothing() {
    let (dir, _store, file, header) = backed_up();
    assert_eq!(Store::check_backup(file.as_slice()).unwrap().broken, None);
    let cut = without_newest_event(&file);
    let seq = header.seq;
    let broken = Store::check_backup(cut.as_slice())
        .expect("a whole file")
        .broken
        .expect("a chain short of its newest event");
    assert_eq!(broken.seq, seq);
    assert!(broken.reason.contains("an event is missing"), "{broken}");
    restores_nothing(
        dir.path(),
        &cut,
        &format!(
            "chain breaks at #{seq}: an event is missing: the chain ends at #{}",
            seq - 1
        ),
    );
    let target = dir.path().join("b");
    let location = latchkey_core::Location::Dir(target.clone());
    let err = Store::restore_keeping_broken_chain_at(&location, cut.as_slice(), support::config())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("its newest event, #{seq}, is missing")),
        "{err}"
    );
    assert!(!target.exists(), "a failed restore leaves nothing");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A directory that holds only the reserve file a store kept there counts as empty: the
/// restore goes in, and no staging directory is left beside it.
#[test]
fn a_restore_goes_into_a_directory_holding_only_a_reserve_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) =
        Store::create_with_admin(dir.path().join("a"), "lk", support::config()).unwrap();
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    let target = dir.path().join("b");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("latchkey.reserve"), b"reserve").unwrap();
    let (restored, _) = Store::restore(&target, file.as_slice(), support::config()).unwrap();
    assert_eq!(restored.users().unwrap().len(), 1);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A backup of a newer schema is refused before the restored store is moved into place:
/// the target is left as it was (absent here), with no staging directory beside it. The
/// file itself is whole: checking it alone passes.
#[test]
fn a_backup_of_a_newer_schema_restores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) =
        Store::create_with_admin(dir.path().join("a"), "lk", support::config()).unwrap();
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    // `m:version` = "1" becomes "2" (same length), and the checksum is made to match.
    let frame = |bytes: &[u8]| [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat();
    let old = [frame(b"m:version"), frame(b"1")].concat();
    let at = file
        .windows(old.len())
        .position(|w| w == old.as_slice())
        .expect("the backup holds m:version");
    let body = file.len() - 32;
    file[at + old.len() - 1] = b'2';
    let digest = *blake3::hash(&file[..body]).as_bytes();
    file[body..].copy_from_slice(&digest);

    // Checking the file alone (`latchkey backup` from an older CLI) passes it.
    let checked = Store::check_backup(file.as_slice()).unwrap();
    assert_eq!(checked.header.lineage, store.lineage());
    assert_eq!(checked.broken, None);

    let target = dir.path().join("b");
    let err = Store::restore(&target, file.as_slice(), support::config()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 2, .. }),
        "{err}"
    );
    assert!(!target.exists(), "a refused restore leaves nothing");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A new store's directory, restored or created (`init`, `serve` on a new path), is its
/// owner's only (it holds the hash key and every key's hash), whatever the umask; the
/// missing parents made for it are not: they get the mode any new directory gets.
#[cfg(unix)]
#[test]
fn only_a_new_store_s_directory_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let created = dir.path().join("made").join("parents").join("store");
    let (store, _) = Store::create_with_admin(&created, "lk", support::config()).unwrap();
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();

    let restored = dir.path().join("new").join("parents").join("store");
    Store::restore(&restored, file.as_slice(), support::config()).unwrap();
    let probe = dir.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    for (target, parents) in [(&created, "made"), (&restored, "new")] {
        assert_eq!(mode(target), 0o700, "{}", target.display());
        assert_eq!(mode(&dir.path().join(parents)), mode(&probe));
        assert_eq!(
            mode(&dir.path().join(parents).join("parents")),
            mode(&probe)
        );
    }

    // An empty directory that was there keeps the mode it had (the README says so).
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
    Store::restore(&existing, file.as_slice(), support::config()).unwrap();
    assert_eq!(mode(&existing), 0o750);
}

/// Bytes after a backup's checksum are not a backup's: the file was damaged or two were
/// joined, and the restore refuses it, leaving nothing.
#[test]
fn a_backup_with_bytes_after_its_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) =
        Store::create_with_admin(dir.path().join("a"), "lk", support::config()).unwrap();
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    Store::check_backup(file.as_slice()).unwrap();
    file.push(b'\n');
    let err = Store::check_backup(file.as_slice()).unwrap_err();
    assert!(err.to_string().contains("after its checksum"), "{err}");
    let target = dir.path().join("b");
    let err = Store::restore(&target, file.as_slice(), support::config()).unwrap_err();
    assert!(err.to_string().contains("after its checksum"), "{err}");
    assert!(!target.exists(), "a refused restore leaves nothing");
}
