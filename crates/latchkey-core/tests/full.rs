//! A full disk under sled itself: with no free-space reserve, the write that hits ENOSPC is
//! answered `StorageFull`, changes nothing (sled had applied it in memory: the store
//! reopens sled from its files), verification goes on, and writes work again once space
//! is freed. Needs a small tmpfs: skipped, saying why, when mounting is refused (not root).

mod support;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::fs;
use std::io::{BufRead, BufReader, Write};

use latchkey_core::{Actor, NewGroup, PermissionSet, Store, StoreError};
use tmpfs::Tmpfs;

/// A 24 MiB tmpfs, or `None` after saying why the test is skipped.
fn mounted() -> Option<Tmpfs> {
    Tmpfs::mount_or_skip("24m")
}

#[test]
fn a_full_disk_refuses_writes_changes_nothing_and_recovers() {
    let Some(tmpfs) = mounted() else { return };
    let path = tmpfs.path().join("store");
    let config = support::config().min_free_bytes(0);
    let (store, admin_key) = Store::create_with_admin(&path, "lk", config.clone()).unwrap();
    let admin = Actor::system();
    let user = support::user(&store, "bot", &[]);
    let before = support::key(&store, &user, "before");
    let seq = store.last_seq().unwrap();

    let filler = tmpfs.fill();
    // sled applies the write in memory, then fails to write it to its log. The write is
    // tens of KiB on purpose: a small record can still fit in the last page sled's log
    // already holds on the tmpfs, and then nothing fails.
    let big =
        PermissionSet::parse((0..200).map(|i| format!("p{i:03}:{}", "x".repeat(100)))).unwrap();
    let err = store
        .create_group(
            &admin,
            NewGroup {
                name: "big".into(),
                permissions: big,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::StorageFull { .. }), "{err}");
    assert_eq!(err.code(), "storage_full");
    // Nothing changed, and verification goes on.
    assert_eq!(store.last_seq().unwrap(), seq);
    assert!(store.group("big").is_err());
    assert!(store.verify(before.secret.expose()).is_ok());
    assert!(store.verify(admin_key.secret.expose()).is_ok());
    assert_eq!(store.key(before.key.id).unwrap().revoked_at, None);

    // A restart while the disk is still full: the store opens, with everything in it.
    drop(store);
    let store = Store::open(&path, config.clone()).unwrap();
    assert!(store.verify(before.secret.expose()).is_ok());
    assert_eq!(store.last_seq().unwrap(), seq);

    // Space comes back: writes work again, by themselves.
    fs::remove_file(&filler).unwrap();
    let after = support::key(&store, &user, "after");
    assert!(store.verify(after.secret.expose()).is_ok());
    store.revoke_key(&admin, before.key.id).unwrap();
    assert!(store.verify(before.secret.expose()).is_err());
    assert!(store.verify_audit().unwrap().broken.is_none());

    // And the store reopens with every acknowledged write.
    drop(store);
    let store = Store::open(&path, config).unwrap();
    assert!(store.verify(after.secret.expose()).is_ok());
    assert_eq!(store.last_seq().unwrap(), seq + 2);
}

/// A write that fails outside a management write (here the usage flush) leaves redb
/// refusing every read of its file (`PreviousIo`): the store must reopen it by itself, as
/// it does after a failed management write, and not answer 503 to every verification that
/// misses the cache until an administrator happens to write.
#[test]
fn a_failed_usage_flush_on_a_full_disk_does_not_keep_reads_failing() {
    let Some(tmpfs) = mounted() else { return };
    let path = tmpfs.path().join("store");
    let interval = std::time::Duration::from_secs(2);
    let config = support::config()
        .min_free_bytes(0)
        .usage_flush_interval(Some(interval))
        // Reads go to the file, not to the engine's cache.
        .cache_capacity_bytes(256);
    let store = Store::create_empty(&path, "lk", config).unwrap();
    let user = support::user(&store, "bot", &[]);
    // Enough keys that writing their usage needs pages the engine never wrote before.
    let keys: Vec<_> = (0..600)
        .map(|i| support::key(&store, &user, &format!("k{i}")))
        .collect();
    let (used, unseen) = keys.split_at(500);
    for key in used {
        assert!(store.verify(key.secret.expose()).is_ok());
    }

    let filler = tmpfs.fill();
    // The usage figures cannot be written: redb's write fails (sled's log may still have
    // room for them).
    match store.flush() {
        Err(StoreError::StorageFull { .. }) => {}
        Ok(()) if !support::on_redb() => {}
        other => panic!("expected StorageFull, got {other:?}"),
    }

    // Space comes back: within a flush interval or so, reads work again without any
    // management write, and so do writes.
    fs::remove_file(&filler).unwrap();
    let mut verified = false;
    for _ in 0..100 {
        if store.verify(unseen[0].secret.expose()).is_ok() {
            verified = true;
            break;
        }
        std::thread::sleep(interval / 10);
    }
    assert!(verified, "a verification still fails after space came back");
    for key in unseen {
        assert!(store.verify(key.secret.expose()).is_ok());
    }
    let after = support::key(&store, &user, "after");
    assert!(store.verify(after.secret.expose()).is_ok());
}

const CHILD_ENV: &str = "LATCHKEY_FULL_CHILD";

/// The child: writes to the store named in the environment until it is killed, printing a
/// line after each acknowledged write. Does nothing otherwise.
#[test]
fn full_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&path, support::config().min_free_bytes(0)).expect("child opens");
    let user = store.user("bot").expect("user exists");
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this ends.
    for i in 0..10_000 {
        support::key(&store, &user, &format!("k{i}"));
        writeln!(out, "written").unwrap();
        out.flush().unwrap();
    }
}

/// A store killed mid-work opens again on a full disk: the engine's work at open (sled's
/// snapshot, redb's repair after an unclean shutdown) takes the store's reserve.
#[test]
fn a_store_killed_mid_work_opens_on_a_full_disk() {
    let Some(tmpfs) = mounted() else { return };
    let path = tmpfs.path().join("store");
    let config = support::config().min_free_bytes(0);
    {
        let store = Store::create_empty(&path, "lk", config.clone()).unwrap();
        support::user(&store, "bot", &[]);
    }
    assert!(path.join("latchkey.reserve").exists());
    let mut child = support::spawn_child("full_child", CHILD_ENV, &path);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..20 {
        lines.next().expect("the child ended early").unwrap();
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let _filler = tmpfs.fill();
    let store = Store::open(&path, config).unwrap();
    assert_eq!(store.user("bot").unwrap().name, "bot");
}

/// A store whose mark trails it (the mark write after a commit failed on a full disk,
/// which is safe: a mark only ever trails) opens on a full disk: with its reserve, which
/// it releases to advance the mark, and without one (sled's snapshot is already written by
/// the open before), keeping the older mark until there is room.
#[test]
fn a_store_whose_mark_trails_opens_on_a_full_disk() {
    let Some(tmpfs) = mounted() else { return };
    let path = tmpfs.path().join("store");
    let (mark, reserve) = (path.join("latchkey.mark"), path.join("latchkey.reserve"));
    let config = support::config().min_free_bytes(0);
    let older = {
        let store = Store::create_empty(&path, "lk", config.clone()).unwrap();
        support::user(&store, "bot", &[]);
        let older = fs::read(&mark).unwrap();
        support::user(&store, "app", &[]);
        older
    };
    let newer = fs::read(&mark).unwrap();
    assert_ne!(older, newer);
    for with_reserve in [true, false] {
        // The mark as a failed write leaves it: one change behind the store.
        fs::write(&mark, &older).unwrap();
        if !with_reserve {
            fs::remove_file(&reserve).unwrap();
        }
        assert_eq!(reserve.exists(), with_reserve);
        let filler = tmpfs.fill();
        let store = Store::open(&path, config.clone()).unwrap();
        assert_eq!(store.user("app").unwrap().name, "app");
        drop(store);
        let kept = fs::read(&mark).unwrap();
        assert_eq!(&kept, if with_reserve { &newer } else { &older });
        // Room again: the mark catches up at the next open, and the reserve comes back.
        fs::remove_file(&filler).unwrap();
        drop(Store::open(&path, config.clone()).unwrap());
        assert_eq!(fs::read(&mark).unwrap(), newer);
        assert!(reserve.exists());
    }
}

/// A restore that runs out of disk midway says the disk is full, naming the store (not the
/// engine's debug dump of the OS error), and leaves nothing behind.
#[test]
fn a_restore_onto_a_disk_that_fills_says_so_and_leaves_nothing() {
    let Some(tmpfs) = mounted() else { return };
    let source = tempfile::tempdir().unwrap();
    let config = support::config().min_free_bytes(0);
    let store = Store::create_empty(source.path().join("store"), "lk", config.clone()).unwrap();
    // About 2 MiB of records, twice the room left below.
    for g in 0..100 {
        let permissions =
            PermissionSet::parse((0..200).map(|i| format!("p{i:03}:{}", "x".repeat(100))));
        let group = NewGroup {
            name: format!("g{g}"),
            permissions: permissions.unwrap(),
        };
        store.create_group(&Actor::system(), group).unwrap();
    }
    let mut backup = Vec::new();
    store.backup(&mut backup).unwrap();
    tmpfs.fill_leaving(1 << 20);
    let target = tmpfs.path().join("restored");
    let err = Store::restore(&target, &backup[..], config).unwrap_err();
    assert!(matches!(err, StoreError::StorageFull { .. }), "{err}");
    assert!(err.to_string().contains(target.to_str().unwrap()), "{err}");
    let left: Vec<_> = fs::read_dir(tmpfs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["filler"]);
}
