//! Rate limits that hold across several stores on one PostgreSQL database, as several
//! daemons run: a key's limit and a user's limit admit no more requests through two stores
//! together than through one, alternated or concurrent, and a change to either starts it
//! afresh in both. PostgreSQL only: on sled each test prints why and returns.
//!
//! Both stores run on one stopped [`ManualClock`], so no request is won back during a test:
//! exactly what one limiter would admit is the bound, however slow the machine.

mod support;

use std::sync::Arc;

use latchkey_core::*;

/// The stores' shared clock, stopped at an arbitrary instant.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        time::macros::datetime!(2026-06-01 12:00 UTC),
    ))
}

/// Two stores on one fresh PostgreSQL database and one clock; `None` (printing why) on sled.
fn two_stores(clock: &Arc<ManualClock>) -> Option<(support::TestLocation, Store, Store)> {
    let Some(location) = support::postgres_location() else {
        eprintln!(
            "skipped: rate limits are shared by stores on one PostgreSQL database; set {}",
            support::POSTGRES_ENV
        );
        return None;
    };
    let config = || {
        StoreConfig::default()
            .usage_flush_interval(None)
            .clock(clock.clone())
    };
    let a = Store::create_empty_at(&location.location, "lk", config()).unwrap();
    let b = Store::open_at(&location.location, config()).unwrap();
    Some((location, a, b))
}

fn per_minute(name: &str, limit: u32) -> Vec<RateLimit> {
    vec![RateLimit {
        name: name.into(),
        limit,
        window_seconds: 60,
    }]
}

fn limited(limits: Vec<RateLimit>) -> KeyPatch {
    KeyPatch {
        rate_limits: Some(limits),
        ..KeyPatch::default()
    }
}

/// One request with `text` on `store`: `Ok` when admitted, else the refusal.
fn request(store: &Store, text: &str) -> Result<(), VerifyError> {
    admit(&store.verify(text).unwrap(), &Admission::default())
}

/// Sends `n` requests alternately through `stores`; answers how many were admitted, and
/// checks every refusal is the limit `name`'s with a `Retry-After`.
fn alternated(stores: [&Store; 2], text: &str, n: usize, name: &str) -> usize {
    (0..n)
        .filter(|i| match request(stores[i % 2], text) {
            Ok(()) => true,
            Err(VerifyError::RateLimited(refused)) => {
                assert_eq!(refused.limit.name, name);
                assert!(refused.retry_after_seconds >= 1);
                false
            }
            Err(e) => panic!("{e}"),
        })
        .count()
}

/// Sends `per_thread` requests from each of `threads` threads on each store at once;
/// answers how many were admitted.
fn concurrent(stores: [&Store; 2], text: &str, threads: usize, per_thread: usize) -> usize {
    std::thread::scope(|scope| {
        let senders: Vec<_> = stores
            .iter()
            .flat_map(|store| (0..threads).map(move |_| store))
            .map(|store| {
                scope.spawn(move || {
                    (0..per_thread)
                        .filter(|_| match request(store, text) {
                            Ok(()) => true,
                            Err(VerifyError::RateLimited(_)) => false,
                            Err(e) => panic!("{e}"),
                        })
                        .count()
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).sum()
    })
}

#[track_caller]
fn within_limit(admitted: usize, limit: usize, how: &str) {
    // Each store may hold a slice (1 request at this limit) it never used.
    assert!(
        admitted <= limit && admitted + 2 >= limit,
        "{how}: {admitted} admitted through two stores, limit {limit}"
    );
}

#[test]
fn a_key_s_rate_limit_holds_across_two_stores() {
    let clock = clock();
    let Some((_location, a, b)) = two_stores(&clock) else {
        return;
    };
    let admin = Actor::system();
    let user = support::user(&a, "alice", &["orders:read"]);
    let one = support::key(&a, &user, "alternated");
    let two = support::key(&a, &user, "concurrent");
    for key in [&one, &two] {
        a.update_key(&admin, key.key.id, limited(per_minute("default", 20)))
            .unwrap();
    }

    let admitted = alternated([&a, &b], one.secret.expose(), 60, "default");
    within_limit(admitted, 20, "alternated");
    let admitted = concurrent([&a, &b], two.secret.expose(), 3, 15);
    within_limit(admitted, 20, "concurrent");

    // The limit wins one request back every 3 s, for both stores together.
    clock.advance(time::Duration::seconds(3));
    let text = one.secret.expose();
    assert_eq!(request(&b, text), Ok(()));
    match request(&a, text) {
        Err(VerifyError::RateLimited(refused)) => assert_eq!(refused.retry_after_seconds, 3),
        other => panic!("{other:?}"),
    }

    // A change made on A starts the limit afresh on both, at its new figure.
    a.update_key(&admin, one.key.id, limited(per_minute("default", 5)))
        .unwrap();
    let admitted = alternated([&b, &a], text, 20, "default");
    within_limit(admitted, 5, "after the change");
    match request(&b, text) {
        Err(VerifyError::RateLimited(refused)) => assert_eq!(refused.limit.limit, 5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_change_that_keeps_a_key_s_limits_keeps_their_state_in_both_stores() {
    let clock = clock();
    let Some((_location, a, b)) = two_stores(&clock) else {
        return;
    };
    let admin = Actor::system();
    let user = support::user(&a, "alice", &["orders:read"]);
    let key = support::key(&a, &user, "limited");
    a.update_key(&admin, key.key.id, limited(per_minute("default", 4)))
        .unwrap();
    let text = key.secret.expose();
    let admitted = alternated([&a, &b], text, 8, "default");
    within_limit(admitted, 4, "before the change");

    let meta = KeyPatch {
        meta: Some(Some(serde_json::json!({"plan": "pro"}))),
        ..KeyPatch::default()
    };
    a.update_key(&admin, key.key.id, meta).unwrap();
    assert_eq!(
        alternated([&b, &a], text, 8, "default"),
        0,
        "after a change of meta"
    );

    a.update_key(&admin, key.key.id, limited(per_minute("default", 3)))
        .unwrap();
    let admitted = alternated([&b, &a], text, 8, "default");
    within_limit(admitted, 3, "after a change of the limits");
}

#[test]
fn a_user_s_rate_limit_holds_across_two_stores_and_all_its_keys() {
    let clock = clock();
    let Some((_location, a, b)) = two_stores(&clock) else {
        return;
    };
    let admin = Actor::system();
    let user = support::user(&a, "bob", &["orders:read"]);
    let first = support::key(&a, &user, "first");
    let second = support::key(&a, &user, "second");
    let patch = |limits| UserPatch {
        rate_limits: Some(limits),
        ..UserPatch::default()
    };
    b.update_user(&admin, user.id, patch(per_minute("default", 20)))
        .unwrap();

    // The first key through A, the second through B, in turns, then both at once.
    let (one, two) = (first.secret.expose(), second.secret.expose());
    let admitted = (0..30)
        .filter(|i| {
            let (store, text) = if i % 2 == 0 { (&a, one) } else { (&b, two) };
            match request(store, text) {
                Ok(()) => true,
                Err(VerifyError::RateLimited(refused)) => {
                    assert_eq!(refused.limit.name, "user:default");
                    false
                }
                Err(e) => panic!("{e}"),
            }
        })
        .count();
    within_limit(admitted, 20, "alternated");
    assert_eq!(concurrent([&a, &b], one, 2, 5), 0, "nothing is left");

    // Changed on B: afresh on both, at the new figure, for every key of the user.
    b.update_user(&admin, user.id, patch(per_minute("default", 6)))
        .unwrap();
    let admitted = concurrent([&a, &b], two, 2, 5) + concurrent([&a, &b], one, 2, 5);
    within_limit(admitted, 6, "after the change");
}
