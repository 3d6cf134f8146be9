//! Background work over many keys: deleting a user or revoking all its keys returns with
//! none of them authenticating, the records follow in chunks, and a process killed in the
//! middle resumes the work at the next open.

mod support;
/// Edits a closed store's files: a damaged key record.
#[path = "support/tamper.rs"]
mod tamper;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use latchkey_core::*;
use time::OffsetDateTime;

const CHILD_ENV: &str = "LATCHKEY_JOBS_CHILD";
const KEYS: usize = 400;

fn slow_jobs() -> StoreConfig {
    support::config()
        .index_chunk_positions(2)
        .job_chunk_keys(10)
        .job_pause(Duration::from_millis(40))
}

fn code(store: &Store, secret: &str) -> &'static str {
    match store.verify(secret) {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

fn count(store: &Store, action: Action) -> usize {
    store
        .events_since(0, 100_000)
        .unwrap()
        .iter()
        .filter(|e| e.action == action)
        .count()
}

fn revoked_records(store: &Store, user: uuid::Uuid) -> usize {
    let query = KeyQuery {
        user_id: Some(user),
        status: Some(KeyStatus::Revoked),
        limit: 1000,
        ..KeyQuery::default()
    };
    store.list_keys(&query).unwrap().items.len()
}

/// Asserts that enabling the key is refused as `key_revoked`.
#[track_caller]
fn is_never_enabled_again(store: &Store, key: uuid::Uuid) {
    let enable = KeyPatch {
        enabled: Some(true),
        ..KeyPatch::default()
    };
    let refused = store.update_key(&Actor::system(), key, enable);
    assert!(
        matches!(refused, Err(StoreError::Conflict(Conflict::KeyRevoked))),
        "{refused:?}"
    );
}

/// A user named "big" with `keys` keys, created in one transaction.
fn big_user(store: &Store, keys: usize) -> (User, Vec<CreatedKey>) {
    big_user_named(store, "big", keys)
}

/// [`big_user`] named `name`.
fn big_user_named(store: &Store, name: &str, keys: usize) -> (User, Vec<CreatedKey>) {
    let admin = Actor::system();
    let new = NewUser {
        name: name.into(),
        permissions: PermissionSet::parse(["x"]).unwrap(),
        ..NewUser::default()
    };
    let user = store.create_user(&admin, new).unwrap();
    let new: Vec<NewKey> = (0..keys)
        .map(|i| NewKey {
            name: format!("k{i}"),
            user_id: user.id,
            ..NewKey::default()
        })
        .collect();
    let created = store.create_keys(&admin, &new).unwrap();
    (user, created)
}

/// The child: creates a user with many keys, prints their secrets, deletes the user with
/// slow background work, checks that no key authenticates, and waits to be killed.
#[test]
fn jobs_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::create_empty(&path, "lk", slow_jobs()).unwrap();
    let admin = Actor::system();
    let (user, created) = big_user(&store, KEYS);
    let mut out = std::io::stdout().lock();
    // libtest has printed "test jobs_child ... " without a newline.
    writeln!(out).unwrap();
    writeln!(out, "user {}", user.id).unwrap();
    for key in &created {
        writeln!(out, "key {}", key.secret.expose()).unwrap();
    }
    store.delete_user(&admin, user.id).unwrap();
    for key in &created {
        assert_eq!(code(&store, key.secret.expose()), "key_revoked");
    }
    writeln!(out, "deleted").unwrap();
    out.flush().unwrap();
    // Bounded: the parent kills us once the first chunks are in, long before this ends.
    for _ in 0..6_000 {
        if revoked_records(&store, user.id) > 0 {
            writeln!(out, "progress").unwrap();
            out.flush().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_deleted_users_keys_are_revoked_in_the_background_across_a_crash() {
    // On sled (a directory the child process opens), whatever backend the others run on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut child = support::spawn_child("jobs_child", CHILD_ENV, &path);
    let mut user = None;
    let mut secrets = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("user ") {
            user = Some(id.parse::<uuid::Uuid>().unwrap());
        } else if let Some(secret) = line.strip_prefix("key ") {
            secrets.push(secret.to_owned());
        } else if line == "progress" {
            break;
        }
    }
    // Chunks of 10 keys, 40 ms apart: SIGKILL lands in the middle of the work.
    child.kill().unwrap();
    child.wait().unwrap();
    let user = user.expect("the child reported its user");
    assert_eq!(secrets.len(), KEYS);

    {
        let store = Store::open(&path, slow_jobs().background_jobs(false)).unwrap();
        assert_eq!(
            store.pending_jobs().unwrap(),
            1,
            "the job survived the crash"
        );
        let revoked = revoked_records(&store, user);
        assert!(
            revoked > 0 && revoked < KEYS,
            "killed in the middle: {revoked} of {KEYS} records revoked"
        );
        for secret in &secrets {
            assert_eq!(code(&store, secret), "key_revoked");
        }
        assert_eq!(count(&store, Action::UserDelete), 1);
        assert_eq!(count(&store, Action::UserKeysRevoked), 0);
    }

    // The next open resumes the work by itself.
    let store = Store::open(&path, support::config().index_chunk_positions(2)).unwrap();
    let started = Instant::now();
    while store.pending_jobs().unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never finished"
        );
        for secret in secrets.iter().step_by(37) {
            assert_eq!(code(&store, secret), "key_revoked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(revoked_records(&store, user), KEYS);
    for secret in &secrets {
        assert_eq!(code(&store, secret), "key_revoked");
    }
    assert_eq!(count(&store, Action::KeyRevoke), KEYS);
    assert_eq!(count(&store, Action::UserKeysRevoked), 1);
    assert_eq!(store.verify_audit().unwrap().broken, None);
    assert_eq!(store.stats().unwrap().keys["revoked"], KEYS as u64);
}

#[test]
fn revoking_all_keys_refuses_them_at_once_and_spares_later_keys() {
    let dir = support::location();
    let config = slow_jobs().background_jobs(false);
    let store = Store::create_empty_at(&dir.location, "lk", config).unwrap();
    let admin = Actor::system();
    let (user, created) = big_user(&store, 35);

    let done = store.revoke_user_keys(&admin, user.id).unwrap();
    assert!(done.in_background);
    assert_eq!(done.revoked_now, 0);
    let new = NewKey {
        name: "later".into(),
        user_id: user.id,
        ..NewKey::default()
    };
    let later = store.create_key(&admin, new).unwrap();
    for key in &created {
        assert_eq!(code(&store, key.secret.expose()), "key_revoked");
    }
    assert_eq!(code(&store, later.secret.expose()), "ok");
    assert_eq!(revoked_records(&store, user.id), 0, "records follow later");

    assert_eq!(store.run_jobs().unwrap(), 4, "35 keys in chunks of 10");
    assert_eq!(store.pending_jobs().unwrap(), 0);
    assert_eq!(revoked_records(&store, user.id), 35);
    for key in &created {
        assert_eq!(code(&store, key.secret.expose()), "key_revoked");
    }
    assert_eq!(code(&store, later.secret.expose()), "ok");
    assert_eq!(count(&store, Action::UserRevokeKeys), 1);
    assert_eq!(count(&store, Action::UserKeysRevoked), 1);
    assert_eq!(store.verify_audit().unwrap().broken, None);

    // Again: the later key goes too.
    let done = store.revoke_user_keys(&admin, user.id).unwrap();
    assert!(done.in_background);
    assert_eq!(code(&store, later.secret.expose()), "key_revoked");
    store.run_jobs().unwrap();
    assert_eq!(revoked_records(&store, user.id), 36);

    // A user whose keys fit in one chunk has them revoked in the call itself.
    let small = support::user(&store, "small", &[]);
    let key = support::key(&store, &small, "one");
    let done = store.revoke_user_keys(&admin, small.id).unwrap();
    assert_eq!((done.revoked_now, done.in_background), (1, false));
    assert_eq!(store.key(key.key.id).unwrap().status, KeyStatus::Revoked);
    assert_eq!(store.pending_jobs().unwrap(), 0);
}

#[test]
fn a_key_under_its_user_s_revocation_is_not_rotated_and_a_later_key_is_never_under_it() {
    let t0 = time::macros::datetime!(2026-12-02 12:00 UTC);
    let (_dir, store, clock) = support::clocked_store(t0, |c| {
        c.index_chunk_positions(2)
            .job_chunk_keys(10)
            .background_jobs(false)
    });
    let admin = Actor::system();
    let (user, created) = big_user(&store, 15);
    clock.advance(time::Duration::seconds(1));
    assert!(
        store
            .revoke_user_keys(&admin, user.id)
            .unwrap()
            .in_background
    );
    // Its record is not revoked yet; its successor would escape the mark. Nor is it
    // enabled again; it is deleted as a revoked key is.
    let first = created[0].key.id;
    assert!(matches!(
        store.rotate_key(&admin, first, time::Duration::ZERO),
        Err(StoreError::Conflict(Conflict::KeyRevoked))
    ));
    is_never_enabled_again(&store, created[1].key.id);
    store.delete_key(&admin, created[2].key.id).unwrap();
    // A clock behind the revocation (another daemon's, or stepped back) still makes a key
    // that works, before and after the background work.
    clock.set(t0 - time::Duration::minutes(5));
    let later = store
        .create_key(
            &admin,
            NewKey {
                name: "later".into(),
                user_id: user.id,
                ..NewKey::default()
            },
        )
        .unwrap();
    assert_eq!(code(&store, later.secret.expose()), "ok");
    // Stamped just after the mark, ahead of this clock: its uses, counted elsewhere (a
    // remote verifier's), come before its stamp, and are taken all the same.
    assert!(later.key.created_at > clock.now());
    store.check_usage(Some(later.key.id), clock.now()).unwrap();
    store.run_jobs().unwrap();
    assert_eq!(code(&store, later.secret.expose()), "ok");
    for (i, key) in created.iter().enumerate() {
        let expected = if i == 2 { "invalid_key" } else { "key_revoked" };
        assert_eq!(code(&store, key.secret.expose()), expected);
    }
    assert_eq!(revoked_records(&store, user.id), 14);
}

/// The same for a deleted user's keys: revoked to every rule before the background work
/// reaches them, not only to verification.
#[test]
fn a_deleted_user_s_key_is_revoked_to_every_rule_before_its_chunk_runs() {
    let (_dir, store, _clock) = support::clocked_store(OffsetDateTime::now_utc(), |c| {
        c.index_chunk_positions(2)
            .job_chunk_keys(10)
            .background_jobs(false)
    });
    let admin = Actor::system();
    let (user, created) = big_user(&store, 15);
    store.delete_user(&admin, user.id).unwrap();
    is_never_enabled_again(&store, created[1].key.id);
    store.delete_key(&admin, created[2].key.id).unwrap();
    store.run_jobs().unwrap();
    assert_eq!(store.pending_jobs().unwrap(), 0);
    assert_eq!(revoked_records(&store, user.id), 14);
}

/// A key record that does not decode (damaged) is stepped over by the background work,
/// logged: the job finishes, and so does the next one, instead of stopping them for good.
#[test]
fn a_damaged_key_record_does_not_stop_the_background_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        support::config()
            .index_chunk_positions(2)
            .job_chunk_keys(10)
            .background_jobs(false)
    };
    let store = Store::create_empty(dir.path(), "lk", config()).unwrap();
    let (user, created) = big_user(&store, 15);
    drop(store);
    let public = created[3].key.prefix.rsplit('_').next().unwrap().as_bytes();
    let raw = tamper::Raw::open(dir.path());
    let record = raw
        .keys_with_prefix(b"k:")
        .into_iter()
        .find(|k| k.ends_with(public))
        .expect("the key's record");
    raw.apply(vec![(record, Some(b"not a record".to_vec()))]);
    drop(raw);

    let store = Store::open(dir.path(), config()).unwrap();
    let admin = Actor::system();
    store.revoke_user_keys(&admin, user.id).unwrap();
    let (other, _) = big_user_named(&store, "other", 15);
    store.delete_user(&admin, other.id).unwrap();
    store.run_jobs().unwrap();
    assert_eq!(store.pending_jobs().unwrap(), 0, "both jobs finished");
    for (i, key) in created.iter().enumerate().filter(|(i, _)| *i != 3) {
        let status = store.key(key.key.id).unwrap().status;
        assert_eq!(status, KeyStatus::Revoked, "key {i}");
    }
}

/// The keys revoked in the background are revoked by whoever asked: every event names the
/// key that deleted the user (or revoked its keys), as the inline revocations do.
#[test]
fn background_revocations_name_the_key_that_asked() {
    let (_dir, store, _clock) =
        support::clocked_store(time::macros::datetime!(2026-12-02 12:00 UTC), |c| {
            c.index_chunk_positions(2)
                .job_chunk_keys(2)
                .background_jobs(false)
        });
    let asker = uuid::Uuid::now_v7();
    let actor = Actor::new(Some(asker), PermissionSet::parse(["*"]).unwrap());
    for revoke_keys in [true, false] {
        let (user, _) = big_user(&store, 5);
        if revoke_keys {
            assert!(
                store
                    .revoke_user_keys(&actor, user.id)
                    .unwrap()
                    .in_background
            );
        } else {
            store.delete_user(&actor, user.id).unwrap();
        }
        let before = store.last_seq().unwrap();
        assert!(store.run_jobs().unwrap() > 1);
        let events = store.events_since(before, 100).unwrap();
        assert!(events.iter().any(|e| e.action == Action::KeyRevoke));
        for event in events {
            assert_eq!(event.actor, Some(asker), "{event:?}");
        }
        if revoke_keys {
            store.delete_user(&actor, user.id).unwrap();
        }
    }
}
