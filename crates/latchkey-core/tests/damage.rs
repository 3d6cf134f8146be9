//! A store never silently forgets: damaged, truncated, rolled-back or partly deleted files
//! are refused at open (and by `migrate`) with one line naming the path and the cause,
//! never opened older and never initialised over; a snapshot sled left unfinished does not stop an open.

/// Opens a just-closed store's files directly.
#[path = "support/tamper.rs"]
mod tamper;

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use latchkey_core::{Actor, KeyQuery, Location, NewUser, Store, StoreConfig, StoreError};

/// The stores here are closed, then their files copied or edited: no background thread may
/// hold one past `drop` (a usage flush or a job in flight would close its files after the
/// copy, over it; seen once with redb, whose file then no longer read).
fn config() -> StoreConfig {
    support::config()
        .usage_flush_interval(None)
        .background_jobs(false)
}

/// A store with `users` users (one audit event each) after `init`, closed.
fn store_with_users(dir: &Path, users: usize) -> PathBuf {
    let path = dir.join("store");
    let (store, _) = Store::create_with_admin(&path, "lk", config()).unwrap();
    add_users(&store, 0..users);
    drop(store);
    path
}

/// [`store_with_users`] in a temporary directory of its own, removed when dropped.
fn temp_store_with_users(users: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with_users(dir.path(), users);
    (dir, path)
}

fn add_users(store: &Store, range: std::ops::Range<usize>) {
    for i in range {
        let new = NewUser {
            name: format!("user-{i}"),
            ..NewUser::default()
        };
        store.create_user(&Actor::system(), new).unwrap();
    }
}

/// Opening must fail as damaged, in one line naming the path and pointing to `restore`;
/// so must `latchkey migrate` (`Store::migrate_at`).
#[track_caller]
fn check_refused(path: &Path, needle: &str) -> String {
    let migrated = Store::migrate_at(&Location::Dir(path.to_owned()));
    assert!(
        matches!(migrated, Err(StoreError::Damaged { .. })),
        "migrate: {migrated:?}"
    );
    let err = Store::open(path, config()).unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{line}");
    assert_eq!(err.code(), "store_damaged");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("latchkey restore"), "{line}");
    assert!(line.contains(needle), "{line:?} should say {needle:?}");
    assert!(
        !line.contains('\n') && !line.contains("backtrace"),
        "{line}"
    );
    line
}

/// `init` (and `serve`, which inits an empty path) must refuse it too, creating nothing.
#[track_caller]
fn check_not_initialised_over(path: &Path) {
    let before = listing(path);
    let err = Store::create_with_admin(path, "lk", config()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Damaged { .. } | StoreError::AlreadyInitialized { .. }
        ),
        "{err}"
    );
    assert_eq!(listing(path), before, "a refused init creates no file");
}

fn listing(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// [`listing`] without sled's snapshots: sled rewrites its snapshot (`snap.<log offset>`,
/// derived from its log) whenever it opens a store whose log went past the last one, which
/// the check of the mark needs; how far the log went depends on when sled's flusher ran.
fn our_files(path: &Path) -> Vec<String> {
    let mut names = listing(path);
    names.retain(|name| !name.starts_with("snap."));
    names
}

/// The file that holds the records: sled's `db`, redb's `latchkey.redb`.
fn db_file() -> &'static str {
    if support::on_redb() {
        "latchkey.redb"
    } else {
        "db"
    }
}

#[test]
fn a_deleted_db_or_conf_is_refused_and_never_reinitialised() {
    let files: &[(&str, &str)] = if support::on_redb() {
        &[("latchkey.redb", "missing its database (`latchkey.redb`")]
    } else {
        &[
            ("db", "missing its `db` file"),
            ("conf", "missing its `conf` file"),
        ]
    };
    for &(file, says) in files {
        let (_dir, path) = temp_store_with_users(3);
        fs::remove_file(path.join(file)).unwrap();
        let before = listing(&path);
        check_refused(&path, says);
        assert_eq!(
            listing(&path),
            before,
            "a refused open or migrate creates no file"
        );
        check_not_initialised_over(&path);
        assert!(!path.join(file).exists(), "nothing re-created {file}");
    }
}

/// Hunt (CLI) M1: one of sled's files copied alone into a directory, without the mark.
/// Opening it would have created the other (and over a `db` alone, written a new log over
/// its records); `init` and `serve` would have made a new store there.
#[test]
fn a_db_or_conf_alone_is_refused_and_never_initialised_over() {
    if support::on_redb() {
        return;
    }
    for (file, says) in [
        ("db", "missing its `conf` file beside its `db`"),
        ("conf", "missing its `db` file beside its `conf`"),
    ] {
        let (dir, path) = temp_store_with_users(3);
        let alone = dir.path().join("alone");
        fs::create_dir(&alone).unwrap();
        fs::copy(path.join(file), alone.join(file)).unwrap();
        let bytes = fs::read(alone.join(file)).unwrap();
        let before = listing(&alone);
        check_refused(&alone, says);
        assert_eq!(listing(&alone), before, "a refused open creates no file");
        check_not_initialised_over(&alone);
        assert_eq!(
            fs::read(alone.join(file)).unwrap(),
            bytes,
            "{file} untouched"
        );
    }
}

#[test]
fn an_emptied_or_zeroed_db_is_refused() {
    for zeroed in [false, true] {
        let (_dir, path) = temp_store_with_users(3);
        let db = path.join(db_file());
        let len = fs::metadata(&db).unwrap().len();
        let content = if zeroed {
            vec![0; len as usize]
        } else {
            vec![]
        };
        fs::write(&db, content).unwrap();
        check_refused(&path, "");
        check_not_initialised_over(&path);
    }
}

/// A file cut to its first 100 bytes, or with 4 bytes of its header garbled, is refused as
/// damaged, with its path and the restore advice (redb's short reads fell through as a bare
/// `failed to fill whole buffer`, one with no path).
#[test]
fn a_db_cut_short_or_with_a_garbled_header_is_refused() {
    for (cut, flip_at) in [(Some(100), None), (None, Some(32)), (None, Some(200))] {
        let (_dir, path) = temp_store_with_users(3);
        let db = path.join(db_file());
        let mut bytes = fs::read(&db).unwrap();
        if let Some(len) = cut {
            bytes.truncate(len);
        }
        if let Some(at) = flip_at {
            for b in &mut bytes[at..at + 4] {
                *b ^= 0xFF;
            }
        }
        fs::write(&db, bytes).unwrap();
        check_refused(&path, "");
    }
}

/// The offset just past the last non-zero byte: where sled's newest writes end (the rest
/// of a segment is zero padding).
fn end_of_data(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

#[test]
fn a_truncated_tail_is_refused_never_opened_older() {
    let (_dir, path) = temp_store_with_users(20);
    let db = path.join(db_file());
    let bytes = fs::read(&db).unwrap();
    let end = end_of_data(&bytes);
    // Cut the newest few hundred bytes: the last users' writes.
    let file = fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len((end - 300) as u64).unwrap();
    drop(file);
    check_refused(&path, "");
}

#[test]
fn a_flipped_bit_is_refused_never_opened_older() {
    // redb checks its pages' checksums only when it repairs a file after a crash, not at a
    // clean open: a flipped bit in a record is found by `verify_audit` (the chain), or
    // not at all in free space. This test is about sled's log.
    if support::on_redb() {
        return;
    }
    let (_dir, path) = temp_store_with_users(20);
    let db = path.join(db_file());
    let mut bytes = fs::read(&db).unwrap();
    let at = end_of_data(&bytes) - 200;
    bytes[at] ^= 0x10;
    fs::write(&db, bytes).unwrap();
    check_refused(&path, "");
}

#[test]
fn a_rolled_back_store_is_refused_and_names_what_is_missing() {
    let (dir, path) = temp_store_with_users(2);
    let saved = dir.path().join("saved");
    copy_dir(&path, &saved, |name| name != "latchkey.mark");
    let store = Store::open(&path, config()).unwrap();
    add_users(&store, 2..5);
    let newest = store.last_seq().unwrap();
    drop(store);
    // The store's files go back to the copy; the mark stays at the newest write.
    copy_dir(&saved, &path, |_| true);
    let before = our_files(&path);
    let line = check_refused(&path, "behind its last acknowledged write");
    assert_eq!(
        our_files(&path),
        before,
        "a refused open or migrate creates no file"
    );
    assert!(line.contains(&format!("change {newest}")), "{line}");
}

/// The head new events chain from must be the newest event's hash: a malformed one, or a
/// well-formed one of something else, is refused rather than chained from (and the mark
/// then rewritten to agree with it).
#[test]
fn a_damaged_audit_head_is_refused_never_chained_from() {
    for (head, says) in [
        (vec![7u8; 3], "bad audit head"),
        (vec![7u8; 32], "not the hash of its newest change"),
    ] {
        let (_dir, path) = temp_store_with_users(2);
        tamper::Raw::open(&path).apply(vec![(b"m:head".to_vec(), Some(head))]);
        check_refused(&path, says);
    }
    // The newest change itself unreadable: refused as damaged too, pointing to a restore.
    let (_dir, path) = temp_store_with_users(2);
    let raw = tamper::Raw::open(&path);
    let newest = raw.keys_with_prefix(b"a:").pop().unwrap();
    raw.apply(vec![(newest, Some(b"garbage".to_vec()))]);
    drop(raw);
    check_refused(&path, "unreadable newest change");
}

/// A count for `/metrics` that no longer reads is rebuilt from the records at the next
/// open, never read as 0 and counted on from there.
#[test]
fn a_damaged_count_is_rebuilt_never_read_as_zero() {
    let (_dir, path) = temp_store_with_users(3);
    let before = Store::open(&path, config()).unwrap().stats().unwrap();
    let raw = tamper::Raw::open(&path);
    raw.apply(vec![
        (b"m:n:users".to_vec(), Some(vec![1, 2, 3])),
        (b"m:n:groups".to_vec(), Some(b"garbage and more".to_vec())),
    ]);
    drop(raw);
    let store = Store::open(&path, config()).unwrap();
    add_users(&store, 3..4);
    let stats = store.stats().unwrap();
    assert!(before.users > 3 && before.groups > 0, "{before:?}");
    assert_eq!(
        (stats.users, stats.groups, stats.keys),
        (before.users + 1, before.groups, before.keys)
    );
}

/// Two new keys of `user-0`, named `damaged` and `sound`.
fn keys_of_user_0(store: &Store) -> [latchkey_core::Key; 2] {
    let user = store.user("user-0").unwrap();
    ["damaged", "sound"].map(|name| {
        let new = latchkey_core::NewKey {
            name: name.into(),
            user_id: user.id,
            ..Default::default()
        };
        store.create_key(&Actor::system(), new).unwrap().key
    })
}

/// Overwrites `key`'s record in the closed store at `path` with bytes that do not decode,
/// with `more` writes in the same batch.
fn damage_record(
    path: &std::path::Path,
    key: &latchkey_core::Key,
    more: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) {
    let raw = tamper::Raw::open(path);
    let public = key.prefix.rsplit('_').next().unwrap().as_bytes().to_vec();
    let record = raw
        .keys_with_prefix(b"k:")
        .into_iter()
        .find(|k| k.ends_with(&public))
        .expect("the damaged key's record");
    let mut writes = vec![(record, Some(b"not a record".to_vec()))];
    writes.extend(more);
    raw.apply(writes);
}

/// A store whose user `user-0` holds two keys, the first with a record that no longer
/// decodes, closed after the damage and opened again; with the keys (damaged, sound).
fn reopened_with_a_damaged_key() -> (tempfile::TempDir, Store, [latchkey_core::Key; 2]) {
    let (dir, path) = temp_store_with_users(1);
    let store = Store::open(&path, config()).unwrap();
    let keys = keys_of_user_0(&store);
    drop(store);
    damage_record(&path, &keys[0], Vec::new());
    (dir, Store::open(&path, config()).unwrap(), keys)
}

/// A key record that no longer decodes does not stop the store from opening when the open
/// rebuilds the indexes and counts (here for a damaged count): it is stepped over (logged),
/// and every other key is listed and counted.
#[test]
fn a_damaged_key_record_does_not_stop_a_rebuild() {
    let (_dir, path) = temp_store_with_users(1);
    let store = Store::open(&path, config()).unwrap();
    let [damaged, sound] = keys_of_user_0(&store);
    let keys_before = store.stats().unwrap().keys;
    drop(store);
    damage_record(
        &path,
        &damaged,
        vec![(b"m:n:users".to_vec(), Some(vec![1, 2, 3]))],
    );

    let store = Store::open(&path, config()).unwrap();
    let total = |keys: &std::collections::BTreeMap<&str, u64>| keys.values().sum::<u64>();
    assert_eq!(total(&store.stats().unwrap().keys), total(&keys_before) - 1);
    lists_only_the_sound_key(&store, &KeyQuery::default(), &damaged, &sound);
}

/// `query` lists the sound key and not the damaged one, whose own read is `Corrupt`.
fn lists_only_the_sound_key(
    store: &Store,
    query: &KeyQuery,
    damaged: &latchkey_core::Key,
    sound: &latchkey_core::Key,
) {
    let listed = store.list_keys(query).unwrap().items;
    assert!(listed.iter().any(|k| k.id == sound.id));
    assert!(listed.iter().all(|k| k.id != damaged.id));
    assert!(matches!(store.key(damaged.id), Err(StoreError::Corrupt(_))));
}

/// A key record that no longer decodes is left out of the key lists (logged), which list
/// every other key: a page that reached it failed whole (500) before.
#[test]
fn a_damaged_key_record_is_left_out_of_the_lists() {
    let (_dir, store, [damaged, sound]) = reopened_with_a_damaged_key();
    let user = store.user("user-0").unwrap();
    for query in [
        KeyQuery::default(),
        KeyQuery {
            user_id: Some(user.id),
            ..KeyQuery::default()
        },
    ] {
        lists_only_the_sound_key(&store, &query, &damaged, &sound);
    }
}

/// A key record that no longer decodes loses its own usage figures (logged), never every
/// other key's: the flush goes on without it.
#[test]
fn a_damaged_key_record_does_not_hold_back_the_others_usage() {
    let (_dir, store, [damaged, sound]) = reopened_with_a_damaged_key();
    let at = time::OffsetDateTime::now_utc();
    store.record_usage(damaged.id, 5, at);
    store.record_usage(sound.id, 3, at);
    store.flush().unwrap();
    assert_eq!(store.key(sound.id).unwrap().usage_count, 3);
    assert!(matches!(store.key(damaged.id), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_store_from_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with_users(dir.path(), 1);
    let other = store_with_users(&dir.path().join("other"), 1);
    fs::copy(other.join("latchkey.mark"), path.join("latchkey.mark")).unwrap();
    check_refused(&path, "another store");
}

#[test]
fn an_unfinished_snapshot_does_not_stop_an_open() {
    // sled's own snapshot files: redb has none.
    if support::on_redb() {
        return;
    }
    let (_dir, path) = temp_store_with_users(3);
    let leftover = path.join("snap.0000000000000000.generating");
    fs::write(&leftover, b"").unwrap();
    // sled itself cannot open it (which is why the store handles it)...
    let raw = sled::Config::new().path(&path).open();
    assert!(raw.is_err(), "sled 0.34.7 fails on an empty snapshot file");
    drop(raw);
    // ...the store removes the leftover and opens with everything in it.
    fs::write(&leftover, b"").unwrap();
    let store = Store::open(&path, config()).unwrap();
    assert_eq!(store.users().unwrap().len(), 4);
    assert!(!leftover.exists());
    assert!(store.verify_audit().unwrap().broken.is_none());
}

#[test]
fn init_refuses_a_directory_of_other_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = Store::create_with_admin(dir.path(), "lk", config()).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(listing(dir.path()), ["notes.txt"]);
}

fn copy_dir(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep(&name) && entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// A store written by a newer latchkey (a later schema) is refused, never opened, and
/// `migrate` says so rather than printing this build's version.
#[test]
fn a_store_of_a_newer_schema_is_refused() {
    let (_dir, path) = temp_store_with_users(1);
    assert_eq!(
        Store::migrate_at(&latchkey_core::Location::Dir(path.clone())).unwrap(),
        1
    );
    tamper::Raw::open(&path).apply(vec![(b"m:version".to_vec(), Some(b"2".to_vec()))]);
    let err = Store::open(&path, config()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 2, .. }),
        "{err:?}"
    );
    let err = Store::migrate_at(&latchkey_core::Location::Dir(path)).unwrap_err();
    assert_eq!(err.code(), "schema_too_new", "{err:?}");
}

/// The files of a store removed under the process that holds it open, its directory kept
/// (`rm -rf store/*`, or an `rm -rf store` that failed on the directory because the store
/// wrote its mark meanwhile): no write is acknowledged, the health check fails, nothing is
/// re-created, and what the process held is saved beside the store, whole.
#[test]
fn records_removed_under_an_open_store_refuse_writes_and_are_rescued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, _) = Store::create_with_admin(&path, "lk", config()).unwrap();
    add_users(&store, 0..3);
    for entry in fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.is_dir() {
            fs::remove_dir_all(&entry).unwrap();
        } else {
            fs::remove_file(&entry).unwrap();
        }
    }
    let refused = store.create_user(
        &Actor::system(),
        NewUser {
            name: "after".into(),
            ..NewUser::default()
        },
    );
    let refused = refused.unwrap_err();
    assert!(refused.is_displaced(), "{refused}");
    assert!(store.check_health().unwrap_err().is_displaced());
    assert!(
        !path.join(db_file()).exists(),
        "nothing re-created the records"
    );
    // The stop names the backup written beside the store, which holds every user.
    let stopped = store.flush().unwrap_err().to_string();
    let rescued: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".backup"))
        .collect();
    let [rescued] = rescued.as_slice() else {
        panic!("one rescued backup: {rescued:?}")
    };
    assert!(
        stopped.contains(&rescued.display().to_string()),
        "{stopped}"
    );
    drop(store);
    let restored = dir.path().join("restored");
    let backup = std::io::BufReader::new(fs::File::open(rescued).unwrap());
    let (store, _) = Store::restore(&restored, backup, config()).unwrap();
    let users = store.users_page(100, None).unwrap();
    let names: Vec<_> = users.items.iter().map(|u| u.name.as_str()).collect();
    assert!(
        names.contains(&"user-2") && !names.contains(&"after"),
        "{names:?}"
    );
}
