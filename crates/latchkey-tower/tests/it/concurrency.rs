//! Tasks hammer a route while another revokes the key: no request that starts after the
//! revoke returned may succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use latchkey_tower::latchkey_core::Actor;
use tokio::sync::OnceCell;

use crate::support::*;

const TASKS: usize = 4;
/// Each task stops after this many requests that started after the revoke…
const AFTER_REVOKE: usize = 50;
/// …or after this many in all: the loop is bounded even if the revoke never comes.
const MAX_REQUESTS: usize = 20_000;
/// The revoke waits for this many successes first, so requests are in flight around it.
const SUCCESSES_FIRST: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_that_starts_after_a_revoke_succeeds() {
    let (fx, key, app) = reader_app();
    let secret: Arc<str> = key.secret.expose().into();
    let successes = Arc::new(AtomicUsize::new(0));
    let revoked_at: Arc<OnceCell<Instant>> = Arc::new(OnceCell::new());

    let mut hammers = Vec::new();
    for _ in 0..TASKS {
        let (app, secret) = (app.clone(), secret.clone());
        let (successes, revoked_at) = (successes.clone(), revoked_at.clone());
        hammers.push(tokio::spawn(async move {
            let mut log = Vec::new();
            let mut after = 0;
            while after < AFTER_REVOKE && log.len() < MAX_REQUESTS {
                let started = Instant::now();
                let reply = send(&app, get_with("/orders", &secret)).await;
                let code = match reply.status.as_u16() {
                    200 => {
                        successes.fetch_add(1, Ordering::SeqCst);
                        "ok".to_owned()
                    }
                    _ => reply.json()["code"].as_str().unwrap_or("?").to_owned(),
                };
                if revoked_at.get().is_some_and(|at| started > *at) {
                    after += 1;
                }
                log.push((started, code));
                // The app never waits on I/O, so without this a task would run all its
                // requests in one poll and never interleave with the others.
                tokio::task::yield_now().await;
            }
            log
        }));
    }

    // On its own thread, so the revoke runs truly alongside the requests.
    let revoker = {
        let store = fx.store.clone();
        let id = key.key.id;
        tokio::task::spawn_blocking(move || {
            let mut waited = 0;
            while successes.load(Ordering::SeqCst) < SUCCESSES_FIRST {
                waited += 1;
                assert!(waited < 100_000_000, "the hammers never succeeded");
                std::thread::yield_now();
            }
            store.revoke_key(&Actor::system(), id).unwrap();
            revoked_at.set(Instant::now()).unwrap();
            *revoked_at.get().unwrap()
        })
    };

    let revoked = revoker.await.unwrap();
    let mut before_ok = 0;
    let mut after_total = 0;
    for hammer in hammers {
        for (started, code) in hammer.await.unwrap() {
            if started > revoked {
                after_total += 1;
                assert_eq!(code, "key_revoked", "a request started after the revoke");
            } else if code == "ok" {
                before_ok += 1;
            }
        }
    }
    assert!(
        before_ok >= SUCCESSES_FIRST,
        "only {before_ok} successes first"
    );
    assert!(
        after_total >= TASKS * AFTER_REVOKE,
        "only {after_total} requests after the revoke"
    );
}
