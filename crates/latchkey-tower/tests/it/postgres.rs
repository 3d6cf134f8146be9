//! The layer on an embedded store on PostgreSQL: a key the verify cache does not hold is a
//! round trip to the database, made on tokio's blocking pool, never on the async worker.
//! PostgreSQL only: each test returns at once unless `LATCHKEY_TEST_POSTGRES` names a
//! server.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use latchkey_tower::latchkey_core::{Actor, NewKey, NewUser};
use latchkey_tower::{ApiKey, ApiKeyAuthLayer, Realm, Store, StoreConfig, Verifier};

use crate::support::{REALM, app, get_with, perms, send, with_wrong_secret};

// The core tests' database per test (created on the server, dropped after).
#[path = "../../../latchkey-core/tests/support/mod.rs"]
mod database;

/// How many keys verify cold at once.
const KEYS: usize = 64;

/// Polls `future` once: whether it answered at once.
async fn answers_at_once<F: Future>(future: F) -> bool {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

#[test]
fn cold_verifications_leave_a_current_thread_runtime_free_and_all_complete() {
    let Some(location) = database::postgres_location() else {
        eprintln!("skipped: PostgreSQL only (set LATCHKEY_TEST_POSTGRES)");
        return;
    };
    let config = StoreConfig::default().usage_flush_interval(None);
    let store = Store::create_empty_at(&location.location, "lk", config).unwrap();
    assert!(store.reads_over_network());
    let user = store
        .create_user(
            &Actor::system(),
            NewUser {
                name: "reader".into(),
                permissions: perms(&["orders:read"]),
                ..NewUser::default()
            },
        )
        .unwrap();
    let keys: Vec<ApiKey> = (0..KEYS)
        .map(|i| {
            let new = NewKey {
                name: format!("k{i}"),
                user_id: user.id,
                ..NewKey::default()
            };
            store.create_key(&Actor::system(), new).unwrap().secret
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A key never verified goes off the worker; once verified, it answers at once.
        assert!(!answers_at_once(Verifier::verify(&store, &keys[0])).await);
        assert!(Verifier::verify(&store, &keys[0]).await.is_ok());
        assert!(answers_at_once(Verifier::verify(&store, &keys[0])).await);

        // Through the layer, every other key at once, cold, on the one thread; and as many
        // wrong secrets, which the cache does not hold either.
        let app = app(ApiKeyAuthLayer::new(store.clone()).realm(Realm::from_static(REALM)));
        let mut tasks = Vec::new();
        for key in &keys[1..] {
            for (text, valid) in [
                (key.expose().to_owned(), true),
                (with_wrong_secret(key), false),
            ] {
                let app = app.clone();
                tasks.push(tokio::spawn(async move {
                    (send(&app, get_with("/orders", &text)).await, valid)
                }));
            }
        }
        for task in tasks {
            let (reply, valid) = task.await.unwrap();
            if valid {
                reply.assert_ok();
            } else {
                reply.assert_invalid("invalid_key");
            }
        }
    });
}
