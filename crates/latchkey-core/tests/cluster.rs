//! Several stores on one PostgreSQL database, as several daemons run: every change reaches
//! every store's cache and change feed, one audit chain, the schema's version, and an
//! unreachable database. PostgreSQL only: each test returns at once unless
//! `LATCHKEY_TEST_POSTGRES` names a server.

mod support;

use std::time::Duration;

use latchkey_core::*;
use tokio::sync::broadcast;

fn config() -> StoreConfig {
    StoreConfig::default().usage_flush_interval(None)
}

fn user_and_key(store: &Store) -> (User, CreatedKey) {
    let admin = Actor::system();
    let user = store
        .create_user(
            &admin,
            NewUser {
                name: format!("u{}", uuid::Uuid::now_v7().simple()),
                permissions: PermissionSet::parse(["orders:read"]).unwrap(),
                ..NewUser::default()
            },
        )
        .unwrap();
    let key = store
        .create_key(
            &admin,
            NewKey {
                name: "k".into(),
                user_id: user.id,
                ..NewKey::default()
            },
        )
        .unwrap();
    (user, key)
}

/// Waits for the event with `seq` on a subscription, bounded.
fn wait_for(events: &mut broadcast::Receiver<AuditEvent>, seq: u64) -> AuditEvent {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match events.try_recv() {
            Ok(event) if event.seq == seq => return event,
            Ok(event) => assert!(event.seq < seq, "skipped past {seq}: {event:?}"),
            Err(broadcast::error::TryRecvError::Empty) => {
                assert!(std::time::Instant::now() < deadline, "no event {seq}");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_change_on_one_store_reaches_the_others_cache_and_feed() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let a = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let b = Store::open_at(&location.location, config()).unwrap();
    assert_eq!(a.lineage(), b.lineage());
    let mut on_b = b.subscribe();
    let mut on_a = a.subscribe();

    // Created on A, verified on B.
    let (_, key) = user_and_key(&a);
    let text = key.secret.expose().to_owned();
    b.verify(&text).unwrap();
    assert!(b.verify_known(text.as_bytes()).is_some(), "cached on B");

    // Revoked on A: once that returns, B refuses the key, and B's feed carries the event.
    a.revoke_key(&Actor::system(), key.key.id).unwrap();
    assert!(b.verify_known(text.as_bytes()).is_none());
    assert_eq!(b.verify(&text).unwrap_err().code(), "key_revoked");
    let event = wait_for(&mut on_b, a.last_seq().unwrap());
    assert_eq!(event.action, Action::KeyRevoke);

    // The other way round: a key verified on A, revoked on B.
    let (_, other) = user_and_key(&a);
    let other_text = other.secret.expose().to_owned();
    a.verify(&other_text).unwrap();
    b.revoke_key(&Actor::system(), other.key.id).unwrap();
    assert_eq!(a.verify(&other_text).unwrap_err().code(), "key_revoked");
    let seq = b.last_seq().unwrap();
    wait_for(&mut on_a, seq);

    // Both feeds carry every change of the cluster, in one order.
    let all_a = a.events_since(0, 100).unwrap();
    let all_b = b.events_since(0, 100).unwrap();
    assert_eq!(all_a, all_b);
    assert_eq!(all_a.len() as u64, seq);
}

#[test]
fn concurrent_writers_on_two_stores_keep_one_audit_chain() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let a = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let b = Store::open_at(&location.location, config()).unwrap();
    std::thread::scope(|scope| {
        for store in [&a, &b, &a, &b] {
            scope.spawn(move || {
                for _ in 0..10 {
                    user_and_key(store);
                }
            });
        }
    });
    let report = b.verify_audit().unwrap();
    assert_eq!(report.broken, None);
    assert_eq!(report.events, 80);
    assert_eq!(a.stats().unwrap().users, 40);
    assert_eq!(b.stats().unwrap().keys.get("active"), Some(&40));
}

#[test]
fn a_newer_schema_is_refused_and_migrate_reports_the_version() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    assert_eq!(Store::migrate_at(&location.location).unwrap(), 2);
    assert_eq!(Store::migrate_at(&location.location).unwrap(), 2);
    drop(Store::create_empty_at(&location.location, "lk", config()).unwrap());
    support::sql(
        &support::url_of(&location),
        "UPDATE latchkey_schema SET version = 99",
    );
    let err = Store::open_at(&location.location, config()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "schema_too_new");
    assert!(Store::migrate_at(&location.location).is_err());
}

#[test]
fn creating_twice_is_refused_and_opening_nothing_says_so() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let err = Store::open_at(&location.location, config()).unwrap_err();
    assert_eq!(err.code(), "not_initialized");
    let (_store, admin) =
        Store::create_with_admin_at(&location.location, "acme", config()).unwrap();
    let err = Store::create_empty_at(&location.location, "lk", config()).unwrap_err();
    assert_eq!(err.code(), "already_initialized");
    let again = Store::open_at(&location.location, config()).unwrap();
    assert_eq!(
        again.verify(admin.secret.expose()).unwrap().user_name,
        "admin"
    );
}

#[test]
fn an_unreachable_database_is_unavailable_never_invalid() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let store = Store::create_empty_at(
        &location.location,
        "lk",
        config().max_staleness(Duration::from_millis(300)),
    )
    .unwrap();
    let (user, key) = user_and_key(&store);
    let text = key.secret.expose().to_owned();
    store.verify(&text).unwrap();
    // Never verified, so never cached: only the database could answer for it.
    let (_, cold) = user_and_key(&store);
    let reconnect = cut_off(&location);
    // Writes: unavailable, nothing changed.
    let err = disable(&store, &user).unwrap_err();
    assert_eq!(err.code(), "keystore_unavailable", "{err:?}");
    // Verification: the cached answer until max_staleness, then 503, never 401.
    std::thread::sleep(Duration::from_millis(1_500));
    for presented in [&text, cold.secret.expose()] {
        let err = store.verify(presented).unwrap_err();
        assert!(matches!(err, VerifyError::Unavailable(_)), "{err:?}");
    }
    // Back: it recovers without a restart.
    reconnect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.verify(&text) {
            Ok(_) => break,
            Err(VerifyError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    disable(&store, &user).unwrap();
}

/// Ends every connection to the database of `location` and accepts no new one, until the
/// returned function is called.
fn cut_off(location: &support::TestLocation) -> impl FnOnce() {
    let url = support::url_of(location);
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin_url = std::env::var(support::POSTGRES_ENV).unwrap();
    support::sql(
        &admin_url,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    );
    move || {
        support::sql(
            &admin_url,
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        );
    }
}

#[test]
fn a_warm_verification_and_its_expiry_read_nothing_from_the_database() {
    // What `POST /v1/verify` asks of the store for a key it verified before: the
    // verification and the key's expiry (which it answers, for remote verifiers' caches).
    let Some(location) = support::postgres_location() else {
        return;
    };
    let store = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let (user, _) = user_and_key(&store);
    let expires_at = time::OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    let key = store
        .create_key(
            &Actor::system(),
            NewKey {
                name: "expiring".into(),
                user_id: user.id,
                expires_at: Some(expires_at),
                ..NewKey::default()
            },
        )
        .unwrap();
    let text = key.secret.expose();
    let principal = store.verify(text).unwrap();
    let stored = store.key(key.key.id).unwrap().expires_at;
    assert!(stored.is_some());
    assert_eq!(store.expiry(&principal).unwrap(), stored);

    let reconnect = cut_off(&location);
    // What needs the database fails now...
    assert_eq!(
        store.key(key.key.id).unwrap_err().code(),
        "keystore_unavailable"
    );
    // ... and a warm verification with its expiry does not (within max_staleness).
    for _ in 0..1_000 {
        let again = store.verify(text).unwrap();
        assert_eq!(store.expiry(&again).unwrap(), stored);
    }
    reconnect();
}

fn disable(store: &Store, user: &User) -> Result<User, StoreError> {
    let patch = UserPatch {
        enabled: Some(false),
        ..UserPatch::default()
    };
    store.update_user(&Actor::system(), user.id, patch)
}

#[test]
fn a_cold_verification_on_a_tokio_worker_neither_panics_nor_fails() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let store = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let (_, key) = user_and_key(&store);
    let text = key.secret.expose().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let principal = runtime.block_on(async move {
        tokio::spawn(async move {
            let principal = store.verify(&text);
            // A write from a worker too, and the store dropped there.
            store.flush().unwrap();
            principal
        })
        .await
        .unwrap()
    });
    assert!(principal.unwrap().has("orders:read"));
}

#[test]
fn a_backup_of_a_database_store_restores_into_a_directory() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let store = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let (_, key) = user_and_key(&store);
    let mut file = Vec::new();
    let header = store.backup(&mut file).unwrap();
    assert_eq!(header.seq, 2);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("restored");
    let (restored, _) = Store::restore(&target, file.as_slice(), config()).unwrap();
    assert_eq!(restored.verify_audit().unwrap().broken, None);
    assert!(
        restored
            .verify(key.secret.expose())
            .unwrap()
            .has("orders:read")
    );

    // And back into an empty database; never onto one that holds a store.
    let mut again = Vec::new();
    restored.backup(&mut again).unwrap();
    let err = Store::restore_at(&location.location, again.as_slice(), config()).unwrap_err();
    assert!(err.to_string().contains("empty database"), "{err}");
    let empty = support::postgres_location().unwrap();
    let (back, _) = Store::restore_at(&empty.location, again.as_slice(), config()).unwrap();
    assert_eq!(back.verify_audit().unwrap().broken, None);
    assert!(back.verify(key.secret.expose()).unwrap().has("orders:read"));
    assert_ne!(back.lineage(), store.lineage());
    // A damaged file leaves the database empty.
    let other = support::postgres_location().unwrap();
    let cut = &again[..again.len() - 40];
    assert!(Store::restore_at(&other.location, cut, config()).is_err());
    let err = Store::open_at(&other.location, config()).unwrap_err();
    assert_eq!(err.code(), "not_initialized");
}

#[test]
fn two_processes_creating_one_store_at_once_make_one_store() {
    let Some(location) = support::postgres_location() else {
        return;
    };
    let created: Vec<_> = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| Store::create_with_admin_at(&location.location, "lk", config()))
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let keys: Vec<_> = created.iter().filter_map(|c| c.as_ref().ok()).collect();
    assert!(!keys.is_empty(), "{created:?}");
    let store = Store::open_at(&location.location, config()).unwrap();
    // Whichever won, its admin key verifies on a store opened afterwards.
    for (_, admin) in keys {
        assert_eq!(
            store.verify(admin.secret.expose()).unwrap().user_name,
            "admin"
        );
    }
    assert_eq!(store.verify_audit().unwrap().broken, None);
}
