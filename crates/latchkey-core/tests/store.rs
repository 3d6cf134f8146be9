//! The keystore's behaviour through its public API: lifecycle, permissions, no escalation,
//! the cache, usage, the change feed and the audit chain.

mod support;
/// sled's on-disk audit layout, for the tampering test (sled only: not in `support`, which
/// other crates' tests include).
#[path = "support/tamper.rs"]
mod tamper;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use latchkey_core::*;
use support::perms;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

struct Fixture {
    _dir: support::TestLocation,
    store: Store,
    clock: Arc<ManualClock>,
    admin: Actor,
}

fn fixture() -> Fixture {
    let (dir, store, clock) = support::clocked_store(T0, |c| c.index_chunk_positions(2));
    Fixture {
        _dir: dir,
        store,
        clock,
        admin: Actor::system(),
    }
}

impl Fixture {
    fn group(&self, name: &str, permissions: &[&str]) -> Group {
        self.store
            .create_group(
                &self.admin,
                NewGroup {
                    name: name.into(),
                    permissions: perms(permissions),
                },
            )
            .unwrap()
    }

    fn user(&self, name: &str, groups: &[&Group], permissions: &[&str]) -> User {
        let new = NewUser {
            name: name.into(),
            groups: groups.iter().map(|g| g.id).collect(),
            permissions: perms(permissions),
            tenant_id: Some("t-1".into()),
            ..NewUser::default()
        };
        self.store.create_user(&self.admin, new).unwrap()
    }

    fn key(&self, user: &User, scopes: Option<&[&str]>) -> CreatedKey {
        let new = NewKey {
            name: "k".into(),
            user_id: user.id,
            scopes: scopes.map(perms),
            ..NewKey::default()
        };
        self.store.create_key(&self.admin, new).unwrap()
    }

    /// Enables or disables a key, as the admin.
    fn set_key_enabled(&self, id: Uuid, enabled: bool) -> Result<Key, StoreError> {
        let patch = KeyPatch {
            enabled: Some(enabled),
            ..KeyPatch::default()
        };
        self.store.update_key(&self.admin, id, patch)
    }

    /// Enables or disables a user, as the admin.
    fn set_user_enabled(&self, id: Uuid, enabled: bool) {
        let patch = UserPatch {
            enabled: Some(enabled),
            ..UserPatch::default()
        };
        self.store.update_user(&self.admin, id, patch).unwrap();
    }

    /// The principal `key` verifies as (panics when it is refused).
    #[track_caller]
    fn principal(&self, key: &CreatedKey) -> Principal {
        self.store.verify(key.secret.expose()).unwrap()
    }

    #[track_caller]
    fn code(&self, key: &CreatedKey) -> &'static str {
        match self.store.verify(key.secret.expose()) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }
}

#[test]
fn a_key_lives_and_dies_by_its_lifecycle() {
    let f = fixture();
    let user = f.user("bot", &[], &["orders:read"]);
    let key = f.key(&user, None);
    let id = key.key.id;
    assert_eq!(key.key.status, KeyStatus::Active);
    assert_eq!(f.code(&key), "ok");

    let disabled = f.set_key_enabled(id, false).unwrap();
    assert_eq!(disabled.status, KeyStatus::Disabled);
    assert_eq!(f.code(&key), "key_disabled");

    f.set_key_enabled(id, true).unwrap();
    assert_eq!(f.code(&key), "ok");

    let err = f.store.delete_key(&f.admin, id).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::KeyNotRevoked)),
        "{err}"
    );
    assert_eq!(f.code(&key), "ok", "a refused delete changes nothing");

    let revoked = f.store.revoke_key(&f.admin, id).unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert_eq!(revoked.revoked_at, Some(T0));
    assert_eq!(f.code(&key), "key_revoked");
    // Idempotent, and irreversible.
    assert_eq!(
        f.store.revoke_key(&f.admin, id).unwrap().revoked_at,
        Some(T0)
    );
    // Neither enabled nor disabled again: its revocation is final, and nothing is written.
    let events = f.store.audit_as(&f.admin, 0, 1_000).unwrap().0.len();
    for enabled in [true, false] {
        let err = f.set_key_enabled(id, enabled).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(Conflict::KeyRevoked)),
            "{enabled}: {err}"
        );
    }
    assert_eq!(
        f.store.audit_as(&f.admin, 0, 1_000).unwrap().0.len(),
        events
    );
    assert!(f.store.key(id).unwrap().enabled);
    assert!(matches!(
        f.store.rotate_key(&f.admin, id, Duration::ZERO),
        Err(StoreError::Conflict(Conflict::KeyRevoked))
    ));

    f.store.delete_key(&f.admin, id).unwrap();
    assert!(matches!(
        f.store.key(id),
        Err(StoreError::NotFound {
            entity: Entity::Key,
            ..
        })
    ));
    assert_eq!(f.code(&key), "invalid_key");
}

#[test]
fn statuses_are_told_only_to_a_caller_holding_the_secret() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    // Same id, another (well-formed) secret.
    let forged = forge(&key.secret, "test", true);
    assert_eq!(f.store.verify(&forged).unwrap_err(), VerifyError::Invalid);
    // Unknown id.
    let other = ApiKey::generate(&Prefix::default(), Env::Live);
    assert_eq!(
        f.store.verify(other.expose()).unwrap_err(),
        VerifyError::Invalid
    );
    // Another store's prefix.
    let foreign = ApiKey::generate(&Prefix::new("zz").unwrap(), Env::Live);
    assert_eq!(
        f.store.verify(foreign.expose()).unwrap_err(),
        VerifyError::Invalid
    );
    // Malformed never reaches the store.
    assert!(matches!(
        f.store.verify("lk_live_short"),
        Err(VerifyError::Malformed(_))
    ));
}

/// The key's text with its env changed (and, if `new_secret`, another secret), re-checksummed.
fn forge(key: &ApiKey, env: &str, new_secret: bool) -> String {
    let secret = if new_secret {
        "A".repeat(32)
    } else {
        key.secret().to_owned()
    };
    let body = format!("{}_{}_{}_{}", key.prefix(), env, key.id(), secret);
    let sum = latchkey_core::key::checksum(body.as_bytes());
    format!("{body}{}", std::str::from_utf8(&sum).unwrap())
}

#[test]
fn a_key_presented_under_another_env_does_not_authenticate() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    assert_eq!(
        f.store
            .verify(&forge(&key.secret, "test", false))
            .unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(f.code(&key), "ok");
}

#[test]
fn expiry_and_rotation_follow_the_clock() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let new = NewKey {
        name: "exp".into(),
        user_id: user.id,
        expires_at: Some(T0 + Duration::hours(1)),
        ..NewKey::default()
    };
    let key = f.store.create_key(&f.admin, new).unwrap();
    assert_eq!(f.code(&key), "ok");
    f.clock.advance(Duration::hours(1));
    assert_eq!(f.code(&key), "key_expired");
    assert_eq!(f.store.key(key.key.id).unwrap().status, KeyStatus::Expired);

    let past = NewKey {
        name: "p".into(),
        user_id: user.id,
        expires_at: Some(T0),
        ..NewKey::default()
    };
    assert!(matches!(
        f.store.create_key(&f.admin, past),
        Err(StoreError::Invalid {
            field: "expires_at",
            ..
        })
    ));

    // Rotation with a grace period: both work until it ends, then only the new one.
    let old = f.key(&user, Some(&["x"]));
    let rotated = f
        .store
        .rotate_key(&f.admin, old.key.id, Duration::minutes(10))
        .unwrap();
    assert_eq!(rotated.key.rotated_from, Some(old.key.id));
    assert_eq!(rotated.key.user_id, user.id);
    assert_eq!(rotated.key.scopes, old.key.scopes);
    assert_eq!(rotated.key.name, old.key.name);
    assert_ne!(rotated.secret.expose(), old.secret.expose());
    assert_eq!(f.code(&old), "ok");
    assert_eq!(f.code(&rotated), "ok");
    f.clock.advance(Duration::minutes(10));
    assert_eq!(f.code(&old), "key_expired");
    assert_eq!(f.code(&rotated), "ok");

    // Grace zero: the old key stops at once.
    let again = f
        .store
        .rotate_key(&f.admin, rotated.key.id, Duration::ZERO)
        .unwrap();
    assert_eq!(f.code(&rotated), "key_expired");
    assert_eq!(f.code(&again), "ok");
    assert!(matches!(
        f.store
            .rotate_key(&f.admin, again.key.id, Duration::seconds(-1)),
        Err(StoreError::Invalid { .. })
    ));

    // A key rotates once: its successor keeps the expiry and the credits it had.
    for id in [old.key.id, rotated.key.id] {
        assert!(matches!(
            f.store.rotate_key(&f.admin, id, Duration::minutes(10)),
            Err(StoreError::Conflict(Conflict::KeyRotated))
        ));
    }
    assert_eq!(f.code(&again), "ok");
    f.clock.advance(Duration::days(1));
    assert_eq!(f.code(&again), "ok");

    // An expired key does not rotate: its successor would never expire.
    let expiring = f
        .store
        .create_key(
            &f.admin,
            NewKey {
                name: "expiring".into(),
                user_id: user.id,
                expires_at: Some(f.clock.now() + Duration::hours(1)),
                ..NewKey::default()
            },
        )
        .unwrap();
    f.clock.advance(Duration::hours(2));
    assert!(matches!(
        f.store
            .rotate_key(&f.admin, expiring.key.id, Duration::ZERO),
        Err(StoreError::Conflict(Conflict::KeyExpired))
    ));
    let keys = f.store.list_keys(&KeyQuery::default()).unwrap().items;
    assert!(keys.iter().all(|k| k.rotated_from != Some(expiring.key.id)));
}

#[test]
fn user_and_group_changes_reach_every_key_at_once() {
    let f = fixture();
    let readers = f.group("readers", &["orders:read", "users:read"]);
    let user = f.user("bot", &[&readers], &[]);
    let a = f.key(&user, None);
    let b = f.key(&user, Some(&["orders:*"]));
    let principal = f.principal(&a);
    assert_eq!(principal.permissions, perms(&["orders:read", "users:read"]));
    assert_eq!(principal.tenant_id.as_deref(), Some("t-1"));
    assert_eq!(principal.user_name, "bot");
    assert_eq!(principal.prefix, a.key.prefix);
    // Scopes narrow, wildcards on either side.
    assert_eq!(f.principal(&b).permissions, perms(&["orders:read"]));

    // Both keys are warm in the cache; a group edit must still be seen at once.
    let patch = GroupPatch {
        permissions: latchkey_core::PermissionEdit::removing(perms(&["orders:read"])),
        ..GroupPatch::default()
    };
    f.store.update_group(&f.admin, readers.id, patch).unwrap();
    assert!(!f.principal(&a).has("orders:read"));
    assert!(f.principal(&b).permissions.is_empty());

    f.set_user_enabled(user.id, false);
    assert_eq!(f.code(&a), "user_disabled");
    f.set_user_enabled(user.id, true);
    assert_eq!(f.code(&a), "ok");

    f.store.delete_group(&f.admin, readers.id).unwrap();
    assert!(f.store.user("bot").unwrap().groups.is_empty());
    assert!(f.principal(&a).permissions.is_empty());

    // Deleting the user revokes its keys in the same transaction.
    f.store.delete_user(&f.admin, user.id).unwrap();
    assert_eq!(f.code(&a), "key_revoked");
    assert_eq!(f.store.key(b.key.id).unwrap().status, KeyStatus::Revoked);
    assert!(matches!(
        f.store.user(&user.id.to_string()),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn names_are_unique_and_never_uuids() {
    let f = fixture();
    f.group("ops", &[]);
    let dup = f
        .store
        .create_group(
            &f.admin,
            NewGroup {
                name: "ops".into(),
                ..NewGroup::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            dup,
            StoreError::Conflict(Conflict::NameTaken {
                entity: Entity::Group,
                ..
            })
        ),
        "{dup}"
    );
    let uuid = Uuid::now_v7().to_string();
    for bad in ["", "has space", uuid.as_str(), &"x".repeat(65)] {
        let err = f
            .store
            .create_user(
                &f.admin,
                NewUser {
                    name: bad.into(),
                    ..NewUser::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid { field: "name", .. }),
            "{bad:?}: {err}"
        );
    }
    let a = f.user("a", &[], &[]);
    f.user("b", &[], &[]);
    let rename = f.store.update_user(
        &f.admin,
        a.id,
        UserPatch {
            name: Some("b".into()),
            ..UserPatch::default()
        },
    );
    assert!(matches!(
        rename,
        Err(StoreError::Conflict(Conflict::NameTaken { .. }))
    ));
    f.store
        .update_user(
            &f.admin,
            a.id,
            UserPatch {
                name: Some("c".into()),
                ..UserPatch::default()
            },
        )
        .unwrap();
    assert_eq!(f.store.user("c").unwrap().id, a.id);
    assert!(f.store.user("a").is_err());
    // Records are found by id or name.
    assert_eq!(f.store.group("ops").unwrap().name, "ops");
    let missing_group = NewUser {
        name: "d".into(),
        groups: vec![Uuid::now_v7()],
        ..NewUser::default()
    };
    assert!(matches!(
        f.store.create_user(&f.admin, missing_group),
        Err(StoreError::NotFound {
            entity: Entity::Group,
            ..
        })
    ));
}

#[test]
fn a_caller_can_never_grant_more_than_it_holds() {
    let f = fixture();
    let root = f.user("root", &[], &["*"]);
    let ops = f.user("ops", &[], &["latchkey:keys:write", "orders:*"]);
    let ops_key = f.key(&ops, None);
    let caller = Actor::from_principal(&f.principal(&ops_key));
    let before = f.store.last_seq().unwrap();

    // Its users are in a tenant, which writes no group at all: the same grant, unbound.
    let unbound = Actor::new(None, caller.permissions().clone());
    let escalations: Vec<Result<(), StoreError>> = vec![
        f.store
            .create_group(
                &unbound,
                NewGroup {
                    name: "g".into(),
                    permissions: perms(&["billing:read"]),
                },
            )
            .map(drop),
        f.store
            .create_user(
                &caller,
                NewUser {
                    name: "u".into(),
                    permissions: perms(&["*"]),
                    ..NewUser::default()
                },
            )
            .map(drop),
        f.store
            .create_key(
                &caller,
                NewKey {
                    name: "k".into(),
                    user_id: root.id,
                    ..NewKey::default()
                },
            )
            .map(drop),
        f.store
            .update_user(
                &caller,
                ops.id,
                UserPatch {
                    permissions: latchkey_core::PermissionEdit::adding(perms(&["users:write"])),
                    ..UserPatch::default()
                },
            )
            .map(drop),
        f.store
            .update_user(
                &caller,
                root.id,
                UserPatch {
                    enabled: Some(false),
                    ..UserPatch::default()
                },
            )
            .map(drop),
        f.store.delete_user(&caller, root.id),
    ];
    for result in escalations {
        assert!(
            matches!(result, Err(StoreError::Escalation { .. })),
            "{result:?}"
        );
    }
    assert_eq!(
        f.store.last_seq().unwrap(),
        before,
        "refused writes change nothing"
    );
    assert!(f.store.user("root").unwrap().enabled);

    // Within its own permissions it may act, even on a stronger user through scopes.
    let scoped = NewKey {
        name: "k".into(),
        user_id: root.id,
        scopes: Some(perms(&["orders:read"])),
        ..NewKey::default()
    };
    let created = f.store.create_key(&caller, scoped).unwrap();
    assert_eq!(created.key.created_by, Some(ops_key.key.id));
    let within = || NewGroup {
        name: "g".into(),
        permissions: perms(&["orders:items:*"]),
    };
    f.store.create_group(&unbound, within()).unwrap();
    // Bound to a tenant, it writes no group even within its permissions: groups are global.
    assert!(matches!(
        f.store.create_group(&caller, within()),
        Err(StoreError::GlobalOnly(_))
    ));
}

/// Names refuse the characters that make one text display as another (bidirectional
/// controls, separators), tenants every format character and white space at either end
/// too; a key whose name was stored before a rule was made stricter still rotates, its
/// successor carrying the name.
#[test]
fn look_alike_text_is_refused_yet_a_name_stored_before_still_rotates() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let named = |name: &str| NewKey {
        name: name.into(),
        user_id: user.id,
        ..NewKey::default()
    };
    for name in ["a\u{2028}b", "evil\u{202e}txt", "a\u{2029}"] {
        let refused = f.store.create_key(&f.admin, named(name)).unwrap_err();
        assert!(
            matches!(refused, StoreError::Invalid { field: "name", .. }),
            "{name:?}"
        );
    }
    // Joiners, which Persian spelling and emoji need, are a name's.
    let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
    f.store.create_key(&f.admin, named(persian)).unwrap();
    for tenant in [
        "acme\u{200b}",
        "\u{feff}a",
        "soft\u{ad}",
        "tag\u{e0041}",
        " acme",
        "acme\u{a0}",
        "\u{a0}",
    ] {
        let new = NewUser {
            name: "t".into(),
            tenant_id: Some(tenant.into()),
            ..NewUser::default()
        };
        let refused = f.store.create_user(&f.admin, new).unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::Invalid {
                    field: "tenant_id",
                    ..
                }
            ),
            "{tenant:?}"
        );
    }
    // Edits the store's files: a store in a directory only.
    if support::on_postgres() {
        return;
    }
    let key = f.store.create_key(&f.admin, named("abcd")).unwrap().key;
    let path = f.store.path().to_owned();
    let Fixture { _dir, store, .. } = f;
    drop(store);
    // "abcd" becomes "a" and a line separator: as long, as a store written before held it.
    let raw = tamper::Raw::open(&path);
    let mut writes = Vec::new();
    for record in raw.keys_with_prefix(b"k:") {
        let value = raw.get(&record).unwrap();
        let Some(at) = value.windows(5).position(|w| w == b"\x04abcd") else {
            continue;
        };
        let mut edited = value.clone();
        edited[at + 1..at + 5].copy_from_slice("a\u{2028}".as_bytes());
        writes.push((record, Some(edited)));
    }
    assert_eq!(writes.len(), 1, "one key record holds the name");
    raw.apply(writes);
    drop(raw);
    let store = Store::open(&path, support::config()).unwrap();
    assert_eq!(store.key(key.id).unwrap().name, "a\u{2028}");
    let rotated = store
        .rotate_key(&Actor::system(), key.id, Duration::ZERO)
        .unwrap();
    assert_eq!(rotated.key.name, "a\u{2028}");
}

#[test]
fn usage_is_counted_in_memory_and_persisted_on_flush() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    for _ in 0..3 {
        f.store.verify(key.secret.expose()).unwrap();
    }
    f.clock.advance(Duration::seconds(5));
    f.store.verify(key.secret.expose()).unwrap();
    // Failed verifications are not usage.
    f.set_key_enabled(key.key.id, false).unwrap();
    let _ = f.store.verify(key.secret.expose());
    let seen = f.store.key(key.key.id).unwrap();
    assert_eq!(
        (seen.usage_count, seen.last_used_at),
        (4, Some(T0 + Duration::seconds(5)))
    );

    // Usage counted elsewhere (a remote verifier) adds up; a future time is taken as now,
    // and figures for an unknown key go nowhere.
    f.store.record_usage(key.key.id, 10, T0 + Duration::days(1));
    f.store.record_usage(Uuid::now_v7(), 3, T0);
    let seen = f.store.key(key.key.id).unwrap();
    assert_eq!(
        (seen.usage_count, seen.last_used_at),
        (14, Some(T0 + Duration::seconds(5)))
    );

    let location = f.store.location().clone();
    f.store.flush().unwrap();
    // A report of a use with a count of 0 (the API takes counts from 0) still moves the
    // last use, and is persisted by a flush of its own.
    f.clock.advance(Duration::seconds(10));
    f.store
        .record_usage(key.key.id, 0, T0 + Duration::seconds(6));
    f.store.flush().unwrap();
    let Fixture { _dir, store, .. } = f;
    drop(store);
    let reopened = Store::open_at(&location, support::config()).unwrap();
    let seen = reopened.key(key.key.id).unwrap();
    assert_eq!(
        (seen.usage_count, seen.last_used_at),
        (14, Some(T0 + Duration::seconds(6)))
    );
}

/// Sets its flag when dropped: a test's reading thread stops the others when it ends,
/// failed or not (a scope would otherwise wait for them forever).
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

#[test]
fn the_audit_chain_verifies_while_writes_commit() {
    let f = fixture();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _stop = Stop(&done);
            for n in 0..300 {
                let new = NewGroup {
                    name: format!("g{n}"),
                    permissions: perms(&["x"]),
                };
                f.store.create_group(&f.admin, new).unwrap();
            }
        });
        let mut rounds = 0;
        while !done.load(Relaxed) {
            let report = f.store.verify_audit().unwrap();
            assert_eq!(
                report.broken, None,
                "round {rounds}, {} events",
                report.events
            );
            rounds += 1;
        }
        eprintln!("{rounds} checks while 300 writes committed");
    });
}

/// Usage reported for an id that only carries a key's public id (another creation time)
/// is no one's: it never lands on that key's record.
#[test]
fn usage_of_a_made_up_id_never_lands_on_a_real_key() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    let made_up = Uuid::from_u128(key.key.id.as_u128() ^ (1 << 100));
    f.store.record_usage(made_up, 5, T0);
    f.store.flush().unwrap();
    assert_eq!(f.store.key(key.key.id).unwrap().usage_count, 0);
}

#[test]
fn a_key_s_usage_never_dips_while_its_figures_are_flushed() {
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    let id = key.key.id;
    let done = AtomicBool::new(false);
    let recorded = AtomicU64::new(0);
    std::thread::scope(|s| {
        // Uses counted in memory, and flushes moving them into the record, meanwhile.
        s.spawn(|| {
            while !done.load(Relaxed) {
                f.store.record_usage(id, 1, T0);
                recorded.fetch_add(1, Relaxed);
            }
        });
        s.spawn(|| {
            while !done.load(Relaxed) {
                f.store.flush().unwrap();
            }
        });
        let _stop = Stop(&done);
        let mut last = 0;
        for round in 0..3_000 {
            // A key read alone, in a list page, and as a write answers it.
            let seen = match round % 3 {
                0 => f.store.key(id).unwrap(),
                1 => f.store.list_keys(&KeyQuery::default()).unwrap().items[0].clone(),
                _ => f
                    .store
                    .update_key(&Actor::system(), id, KeyPatch::default())
                    .unwrap(),
            };
            assert!(
                seen.usage_count >= last,
                "read {round}: {} after {last}",
                seen.usage_count
            );
            last = seen.usage_count;
        }
    });
    // And none was lost or counted twice by the flushes it raced.
    f.store.flush().unwrap();
    assert_eq!(f.store.key(id).unwrap().usage_count, recorded.into_inner());
}

#[test]
fn every_change_is_in_the_feed_and_the_chain_holds() {
    let f = fixture();
    let mut feed = f.store.subscribe();
    let user = f.user("bot", &[], &["x"]);
    let key = f.key(&user, None);
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    let events = f.store.events_since(0, 100).unwrap();
    let actions: Vec<_> = events.iter().map(|e| (e.seq, e.action, e.target)).collect();
    assert_eq!(
        actions,
        vec![
            (1, Action::UserCreate, user.id),
            (2, Action::KeyCreate, key.key.id),
            (3, Action::KeyRevoke, key.key.id)
        ]
    );
    assert_eq!(events[2].user_id, Some(user.id));
    assert_eq!(f.store.last_seq().unwrap(), 3);
    assert_eq!(f.store.events_since(2, 100).unwrap().len(), 1);
    assert_eq!(feed.try_recv().unwrap().seq, 1);
    assert_eq!(
        f.store.verify_audit().unwrap(),
        AuditReport {
            events: 3,
            broken: None
        }
    );
}

#[test]
fn tampering_with_the_audit_log_is_found() {
    // Edits the store's files: a store in a directory only.
    if support::on_postgres() {
        return;
    }
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    for _ in 0..3 {
        f.key(&user, None);
    }
    let path = f.store.path().to_owned();
    let Fixture { _dir, store, .. } = f;
    drop(store);
    // Event 3 replaced by a copy of event 2: well-formed, but it does not fit the chain.
    tamper::copy_audit_event(&path, 2, 3);
    let store = Store::open(&path, support::config()).unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(report.broken.map(|b| b.seq), Some(3));
    drop(store);
    // Event 2 made unreadable: the report names it, rather than the check failing.
    tamper::Raw::open(&path).apply(vec![(
        [b"a:".as_slice(), &2u64.to_be_bytes()].concat(),
        Some(b"garbage".to_vec()),
    )]);
    let store = Store::open(&path, support::config()).unwrap();
    let broken = store.verify_audit().unwrap().broken.unwrap();
    assert_eq!(broken.seq, 2, "{}", broken.reason);
    assert!(
        broken.reason.contains("cannot be read"),
        "{}",
        broken.reason
    );
    drop(store);

    // An event appended past the last one the store counts is named as the break.
    let f = fixture();
    let user = f.user("bot", &[], &["x"]);
    f.key(&user, None);
    let last = f.store.last_seq().unwrap();
    let path = f.store.path().to_owned();
    let Fixture { _dir, store, .. } = f;
    drop(store);
    tamper::copy_audit_event(&path, last, last + 1);
    let store = Store::open(&path, support::config()).unwrap();
    let broken = store.verify_audit().unwrap().broken.unwrap();
    assert_eq!(broken.seq, last + 1, "{}", broken.reason);
}

#[test]
fn listing_filters_searches_sorts_and_pages() {
    let f = fixture();
    let a = f.user("a", &[], &["x"]);
    let b = f.user("b", &[], &["x"]);
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    for (i, name) in ["delta", "alpha", "charlie", "bravo", "echo"]
        .iter()
        .enumerate()
    {
        let user = if i % 2 == 0 { &a } else { &b };
        let new = NewKey {
            name: (*name).into(),
            user_id: user.id,
            description: Some(format!("desc {i}")),
            ..NewKey::default()
        };
        let created = f.store.create_key(&f.admin, new).unwrap();
        ids.push(created.key.id);
        texts.push(created.secret.expose().to_owned());
        f.clock.advance(Duration::seconds(1));
    }
    f.store.revoke_key(&f.admin, ids[4]).unwrap();

    let list = |q: KeyQuery| f.store.list_keys(&q).unwrap();
    let names = |page: &Page<Key>| {
        page.items
            .iter()
            .map(|k| k.name.clone())
            .collect::<Vec<_>>()
    };

    let all = list(KeyQuery {
        sort: "name".parse().unwrap(),
        ..KeyQuery::default()
    });
    assert_eq!(names(&all), ["alpha", "bravo", "charlie", "delta", "echo"]);
    let desc = list(KeyQuery {
        sort: "-created_at".parse().unwrap(),
        ..KeyQuery::default()
    });
    assert_eq!(names(&desc), ["echo", "bravo", "charlie", "alpha", "delta"]);
    let of_b = list(KeyQuery {
        user_id: Some(b.id),
        ..KeyQuery::default()
    });
    assert_eq!(names(&of_b), ["alpha", "bravo"]);
    let revoked = list(KeyQuery {
        status: Some(KeyStatus::Revoked),
        ..KeyQuery::default()
    });
    assert_eq!(names(&revoked), ["echo"]);
    let searched = list(KeyQuery {
        search: Some("DESC 2".into()),
        ..KeyQuery::default()
    });
    assert_eq!(names(&searched), ["charlie"]);
    let by_prefix = list(KeyQuery {
        search: Some(all.items[0].prefix.clone()),
        ..KeyQuery::default()
    });
    assert_eq!(names(&by_prefix), ["alpha"]);
    // A whole key's text (pasted, spaces around it, even mistyped) finds its key by
    // display prefix.
    let text = &texts[1];
    let last = if text.ends_with('A') { "B" } else { "A" };
    let mistyped = format!("{}{last}", &text[..text.len() - 1]);
    for pasted in [format!(" {text} "), mistyped] {
        let by_text = list(KeyQuery {
            search: Some(pasted),
            ..KeyQuery::default()
        });
        assert_eq!(names(&by_text), ["alpha"]);
    }

    // Pages of two cover everything exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = list(KeyQuery {
            sort: "-name".parse().unwrap(),
            limit: 2,
            cursor: cursor.clone(),
            ..KeyQuery::default()
        });
        seen.extend(names(&page));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["echo", "delta", "charlie", "bravo", "alpha"]);

    assert!(matches!(
        f.store.list_keys(&KeyQuery {
            limit: 0,
            ..KeyQuery::default()
        }),
        Err(StoreError::Invalid { field: "limit", .. })
    ));
    assert!(matches!(
        f.store.list_keys(&KeyQuery {
            cursor: Some("zz".into()),
            ..KeyQuery::default()
        }),
        Err(StoreError::Invalid {
            field: "cursor",
            ..
        })
    ));
    assert!(matches!(
        "size".parse::<KeySort>(),
        Err(StoreError::Invalid { field: "sort", .. })
    ));
    // Keys are found by display prefix too.
    assert_eq!(
        f.store.key_id(&all.items[0].prefix).unwrap(),
        all.items[0].id
    );
}

#[test]
fn opening_fails_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = Store::open(&missing, support::config()).unwrap_err();
    assert!(matches!(err, StoreError::NotInitialized { .. }), "{err}");
    assert!(!missing.exists(), "open must not create a store");

    let path = dir.path().join("store");
    let (store, admin_key) = Store::create_with_admin(&path, "acme", support::config()).unwrap();
    assert!(admin_key.secret.expose().starts_with("acme_live_"));
    assert!(
        store
            .verify(admin_key.secret.expose())
            .unwrap()
            .has("anything:at:all")
    );

    let err = Store::open(&path, support::config()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("another process"), "{err}");

    drop(store);
    let err = Store::create_with_admin(&path, "acme", support::config()).unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyInitialized { .. }),
        "{err}"
    );
    let store = Store::open(&path, support::config()).unwrap();
    assert_eq!(
        store.users().unwrap().len(),
        1,
        "a refused init changes nothing"
    );
    assert!(store.verify(admin_key.secret.expose()).is_ok());
    assert!(matches!(
        Store::create_empty(dir.path().join("x"), "NO", support::config()),
        Err(StoreError::Invalid {
            field: "prefix",
            ..
        })
    ));
}

#[test]
fn no_verification_that_starts_after_a_revoke_returns_succeeds() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_empty(dir.path(), "lk", support::config()).unwrap();
    let admin = Actor::system();
    let user = support::user(&store, "u", &["x"]);
    for round in 0..20 {
        let key = support::key(&store, &user, &format!("k{round}"));
        let text = key.secret.expose().to_owned();
        // Set (Release) once `revoke_key` has returned: a worker that reads it set (Acquire)
        // before a verification starts knows that verification started after the return.
        let revoked = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (store, text) = (store.clone(), text.clone());
                let (revoked, done, after) = (revoked.clone(), done.clone(), after.clone());
                std::thread::spawn(move || {
                    // Bounded: 10 s per worker and round at most.
                    let until = Instant::now() + Duration::from_secs(10);
                    while !done.load(Ordering::Acquire) && Instant::now() < until {
                        let started_after = revoked.load(Ordering::Acquire);
                        let outcome = store.verify(&text);
                        if started_after {
                            assert_eq!(
                                outcome.unwrap_err(),
                                VerifyError::Revoked,
                                "round {round}: a verification started after the revoke returned"
                            );
                            after.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        store.revoke_key(&admin, key.key.id).unwrap();
        revoked.store(true, Ordering::Release);
        // Refused here too, and by the workers: wait (bounded) until they verified after it.
        assert_eq!(store.verify(&text).unwrap_err(), VerifyError::Revoked);
        let deadline = Instant::now() + Duration::from_secs(10);
        while after.load(Ordering::Acquire) < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        done.store(true, Ordering::Release);
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(
            after.load(Ordering::Acquire) >= 2,
            "round {round}: no verification started after the revoke returned"
        );
    }
}

#[test]
fn a_store_closed_and_reopened_in_one_process_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::create_empty(&path, "lk", support::config()).unwrap());
    for round in 0..20 {
        let store =
            Store::open(&path, support::config()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        support::user(&store, &format!("u{round}"), &[]);
    }
    assert_eq!(
        Store::open(&path, support::config())
            .unwrap()
            .users()
            .unwrap()
            .len(),
        20
    );
}

/// `close` waits for the last handle: while another is alive it answers `false` after its
/// bound, and the last one's close answers `true` once the store has closed.
#[test]
fn close_answers_once_the_last_handle_has_closed_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_empty(dir.path().join("store"), "lk", support::config()).unwrap();
    let other = store.clone();
    assert!(!store.close(std::time::Duration::from_millis(50)));
    assert!(other.users().is_ok(), "the other handle still works");
    assert!(other.close(std::time::Duration::from_secs(10)));
}

/// A directory opens with the engine whose files it holds, whatever the configuration
/// names (which chooses a new store's engine only), and an `init` over an open store of
/// either engine is refused as locked.
#[test]
fn a_store_opens_with_the_engine_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    for (engine, other, file) in [
        (Engine::Sled, Engine::Redb, "conf"),
        (Engine::Redb, Engine::Sled, "latchkey.redb"),
    ] {
        let path = dir.path().join(format!("{engine:?}"));
        let config = || support::config().engine(engine);
        let (store, admin_key) = Store::create_with_admin(&path, "lk", config()).unwrap();
        assert_eq!(store.engine(), Some(engine));
        assert!(path.join(file).is_file(), "{engine:?} keeps {file}");
        let err = Store::create_with_admin(&path, "lk", config()).unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { .. }),
            "{engine:?}: {err}"
        );
        drop(store);

        let store = Store::open(&path, support::config().engine(other)).unwrap();
        assert_eq!(store.engine(), Some(engine));
        assert!(store.verify(admin_key.secret.expose()).is_ok());
        assert!(store.verify_audit().unwrap().broken.is_none());
    }
}

#[test]
fn the_trail_reads_newest_first_and_users_by_id_as_the_caller_sees_them() {
    let f = fixture();
    let bot = f.user("bot", &[], &["x"]);
    let key = f.key(&bot, None);
    f.store.revoke_key(&f.admin, key.key.id).unwrap();
    let other = f
        .store
        .create_user(
            &f.admin,
            NewUser {
                name: "other".into(),
                tenant_id: Some("t-2".into()),
                ..NewUser::default()
            },
        )
        .unwrap();
    let seqs = |(events, next): (Vec<AuditEvent>, Option<u64>)| {
        (events.iter().map(|e| e.seq).collect::<Vec<_>>(), next)
    };
    let newest = AuditRange {
        newest_first: true,
        ..AuditRange::default()
    };
    let all = Actor::new(None, perms(&["*"]));
    assert_eq!(
        seqs(f.store.audit_in_as(&all, newest, 2).unwrap()),
        (vec![4, 3], Some(3))
    );
    let back = AuditRange {
        before: Some(3),
        ..newest
    };
    assert_eq!(
        seqs(f.store.audit_in_as(&all, back, 2).unwrap()),
        (vec![2, 1], None)
    );
    // A tenant-bound caller: its tenant's events only, newest first.
    let t1 = Actor::new(None, perms(&["*"])).with_tenant(Some("t-1".into()), None);
    assert_eq!(
        seqs(f.store.audit_in_as(&t1, newest, 10).unwrap()),
        (vec![3, 2, 1], None)
    );
    // The events about one record: the key's creation and revocation, a page at a time.
    assert_eq!(
        seqs(
            f.store
                .audit_about_as(&all, key.key.id, newest, 10)
                .unwrap()
        ),
        (vec![3, 2], None)
    );
    assert_eq!(
        seqs(f.store.audit_about_as(&all, key.key.id, newest, 1).unwrap()),
        (vec![3], Some(3))
    );
    assert_eq!(
        seqs(f.store.audit_about_as(&t1, key.key.id, back, 10).unwrap()),
        (vec![2], None)
    );
    // Another tenant's record: seen by a global caller, not by a tenant-bound one.
    assert_eq!(
        seqs(
            f.store
                .audit_about_as(&all, other.id, AuditRange::default(), 10)
                .unwrap()
        ),
        (vec![4], None)
    );
    assert_eq!(
        seqs(f.store.audit_about_as(&t1, other.id, newest, 10).unwrap()),
        (vec![], None)
    );
    // A group's events: a global caller's; a tenant-bound one gets none, at once.
    let group = f.group("ops", &[]);
    assert_eq!(
        seqs(f.store.audit_about_as(&all, group.id, newest, 10).unwrap()),
        (vec![5], None)
    );
    assert_eq!(
        seqs(f.store.audit_about_as(&t1, group.id, newest, 10).unwrap()),
        (vec![], None)
    );

    let ids = [other.id, Uuid::now_v7(), bot.id];
    let names = |users: Vec<User>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(
        names(f.store.users_by_id_as(&all, &ids).unwrap()),
        ["other", "bot"]
    );
    assert_eq!(names(f.store.users_by_id_as(&t1, &ids).unwrap()), ["bot"]);
    let too_many = vec![bot.id; limits::MAX_USERS_BY_ID + 1];
    assert!(f.store.users_by_id_as(&all, &too_many).is_err());
}

/// One record's events found across the chunks a page reads (1,000 events each), in both
/// orders, for a global and a tenant-bound caller, and paged by `limit`.
#[test]
fn a_record_s_events_are_found_across_the_chunks_a_page_reads() {
    let f = fixture();
    let bot = f.user("bot", &[], &["x"]);
    let key = f.key(&bot, None);
    let first = key.key.id;
    for n in 0..2_500 {
        f.group(&format!("g{n}"), &[]);
    }
    f.store.revoke_key(&f.admin, first).unwrap();
    let seqs = |(events, next): (Vec<AuditEvent>, Option<u64>)| {
        (events.iter().map(|e| e.seq).collect::<Vec<_>>(), next)
    };
    let (created, revoked) = (2, 2_503);
    let newest = AuditRange {
        newest_first: true,
        ..AuditRange::default()
    };
    let all = Actor::new(None, perms(&["*"]));
    let t1 = Actor::new(None, perms(&["*"])).with_tenant(Some("t-1".into()), None);
    for actor in [&all, &t1] {
        assert_eq!(
            seqs(f.store.audit_about_as(actor, first, newest, 10).unwrap()),
            (vec![revoked, created], None)
        );
        assert_eq!(
            seqs(
                f.store
                    .audit_about_as(actor, first, AuditRange::default(), 10)
                    .unwrap()
            ),
            (vec![created, revoked], None)
        );
        // One a page: the cursor stops before the next match, which the next page finds.
        let (page, next) = seqs(f.store.audit_about_as(actor, first, newest, 1).unwrap());
        assert_eq!(page, [revoked]);
        let back = AuditRange {
            before: next,
            ..newest
        };
        assert_eq!(
            seqs(f.store.audit_about_as(actor, first, back, 1).unwrap()),
            (vec![created], None)
        );
    }
    // A tenant-bound caller's whole trail: its events only, across the chunks.
    assert_eq!(
        seqs(f.store.audit_in_as(&t1, newest, 10).unwrap()),
        (vec![revoked, created, 1], None)
    );
}

/// `Store::open` and `create_*` take a path or a PostgreSQL URL, as `--db` does: a URL is
/// never a directory named `postgres:` (created in the working directory, or named with
/// its password in an error).
#[test]
fn a_postgres_url_given_as_a_path_is_a_database_and_its_password_is_never_printed() {
    let url = "postgres://u:secret@127.0.0.1:1/x";
    let config = || support::config().background_jobs(false);
    let err = Store::open(url, config()).unwrap_err();
    assert!(!matches!(err, StoreError::NotInitialized { .. }), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = Store::create_empty(url, "lk", config()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = Store::create_with_admin(url, "lk", config()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(
        !std::path::Path::new("postgres:").exists(),
        "a URL made a directory"
    );
}

/// A second process opening a sled store held by another (a CLI command beside the
/// daemon) must not remove the snapshot the holder may be writing: it is refused as
/// locked, and the file stays.
#[test]
fn opening_a_held_store_leaves_its_snapshot_in_progress() {
    // sled's own snapshot files: redb has none.
    if support::on_redb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::create_empty(dir.path(), "lk", support::config()).unwrap();
    let generating = dir.path().join("snap.0000000000000000.generating");
    std::fs::write(&generating, b"").unwrap();
    let err = Store::open(dir.path(), support::config()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(generating.exists(), "the holder's snapshot was removed");
}

/// Makes `n` keys of `user` scoped to `orders:read`: none an admin key.
fn pad_with_scoped_keys(store: &Store, user: Uuid, n: usize) {
    let scoped: Vec<NewKey> = (0..n)
        .map(|i| NewKey {
            name: format!("s{i}"),
            user_id: user,
            scopes: Some(perms(&["orders:read"])),
            ..NewKey::default()
        })
        .collect();
    store.create_keys(&Actor::system(), &scoped).unwrap();
}

/// Whoever may make keys for an admin user (any scopes its own permissions cover) cannot
/// pad it with newer keys until no admin key of it may be revoked: the last-admin check
/// reads on past its depth (10,000 by default, 20 here) and finds the second admin key.
#[test]
fn padding_an_admin_user_with_keys_never_stops_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config().admin_scan_keys(20);
    let (store, stolen) = Store::create_with_admin(dir.path(), "lk", config).unwrap();
    let new = NewKey {
        name: "replacement".into(),
        user_id: stolen.key.user_id,
        ..NewKey::default()
    };
    let replacement = store.create_key(&Actor::system(), new).unwrap();
    pad_with_scoped_keys(&store, stolen.key.user_id, 50);
    let revoked = store.revoke_key(&Actor::system(), stolen.key.id).unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert!(store.verify(replacement.secret.expose()).is_ok());
}

/// An admin user with exactly as many keys as the last-admin check reads, none of them an
/// admin key, was read whole: there is no admin key to keep, and disabling the user is not
/// refused as if some might lie deeper.
#[test]
fn a_user_read_whole_by_the_last_admin_check_holds_no_unread_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config().admin_scan_keys(20);
    let store = Store::create_empty(dir.path(), "lk", config).unwrap();
    let user = support::user(&store, "ops", &["*"]);
    pad_with_scoped_keys(&store, user.id, 20);
    let patch = UserPatch {
        enabled: Some(false),
        ..UserPatch::default()
    };
    let disabled = store.update_user(&Actor::system(), user.id, patch).unwrap();
    assert!(!disabled.enabled);
}

/// An admin user whose one `*` key lies deeper than the last-admin check's depth (behind
/// more newer scoped keys: 10,000 by default, 20 here) keeps it: the check reads on and
/// finds it the last.
#[test]
fn the_last_admin_key_stays_behind_many_newer_scoped_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config().admin_scan_keys(20);
    let (store, admin) = Store::create_with_admin(dir.path(), "lk", config).unwrap();
    pad_with_scoped_keys(&store, admin.key.user_id, 21);
    let err = store
        .revoke_key(&Actor::system(), admin.key.id)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::LastAdminKey)),
        "{err:?}"
    );
    assert_eq!(store.key(admin.key.id).unwrap().status, KeyStatus::Active);
}

/// Review s51 F1: a store whose every admin key has credits (one an older build could
/// leave, when only credits at 0 took a key out of the count) stays guarded by that older
/// rule: its last such key is not revoked, nor its credits set to 0; more credits are fine.
#[test]
fn a_store_whose_admin_keys_all_have_credits_stays_guarded() {
    let dir = support::location();
    let clock = Arc::new(ManualClock::new(T0));
    let config = support::config().clock(clock.clone());
    let (store, first) = Store::create_with_admin_at(&dir.location, "lk", config).unwrap();
    let system = Actor::system();
    let key = |name: &str, expires_at, credits| {
        store
            .create_key(
                &system,
                NewKey {
                    name: name.into(),
                    user_id: first.key.user_id,
                    expires_at,
                    credits,
                    ..NewKey::default()
                },
            )
            .unwrap()
    };
    // An unmetered key that expires (expiry is not guarded), and a metered one.
    key("expiring", Some(T0 + Duration::hours(1)), None);
    let metered = key(
        "metered",
        None,
        Some(Credits {
            remaining: 100,
            refill: None,
        }),
    );
    store.revoke_key(&system, first.key.id).unwrap();
    clock.advance(Duration::hours(2));

    let refused = |result: Result<Key, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Conflict(Conflict::LastAdminKey))),
            "{result:?}"
        );
    };
    refused(store.revoke_key(&system, metered.key.id));
    let credits = |remaining| KeyPatch {
        credits: Some(CreditsPatch::Set {
            remaining,
            refill: None,
        }),
        ..KeyPatch::default()
    };
    refused(store.update_key(&system, metered.key.id, credits(0)));
    store
        .update_key(&system, metered.key.id, credits(500))
        .unwrap();
    assert!(store.verify(metered.secret.expose()).unwrap().has("*"));
}
