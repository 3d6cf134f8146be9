//! How changes to a key's usage control meet the state its limits and credits are in: a
//! change that leaves the rate limits as they are keeps their state, and a request that
//! costs nothing is refused where one that costs would be. On sled, or on PostgreSQL when
//! `LATCHKEY_TEST_POSTGRES` is set.

mod support;

use latchkey_core::meter::admit_reporting;
use latchkey_core::*;
use time::macros::datetime;

fn per_minute(limit: u32) -> Vec<RateLimit> {
    vec![RateLimit {
        name: "default".into(),
        limit,
        window_seconds: 60,
    }]
}

/// One request of `cost` with `text`: `Ok` when admitted, else the refusal's code.
fn request(store: &Store, text: &str, cost: u32) -> Result<(), &'static str> {
    let admission = Admission {
        client_ip: Some([203, 0, 113, 7].into()),
        cost,
        ..Admission::default()
    };
    admit(&store.verify(text).unwrap(), &admission).map_err(|e| e.code())
}

#[test]
fn a_change_that_keeps_the_rate_limits_keeps_their_state() {
    let (_location, store, _clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let admin = Actor::system();
    let user = support::user(&store, "alice", &[]);
    let key = support::key(&store, &user, "limited");
    let limits = KeyPatch {
        rate_limits: Some(per_minute(3)),
        ..KeyPatch::default()
    };
    store.update_key(&admin, key.key.id, limits).unwrap();
    let text = key.secret.expose();
    for _ in 0..3 {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));

    for patch in [
        KeyPatch {
            meta: Some(Some(serde_json::json!({"plan": "pro"}))),
            ..KeyPatch::default()
        },
        KeyPatch {
            allowed_ips: Some(vec!["0.0.0.0/0".parse().unwrap()]),
            ..KeyPatch::default()
        },
        KeyPatch {
            allowed_ips: Some(Vec::new()),
            credits: Some(CreditsPatch::Set {
                remaining: 100,
                refill: None,
            }),
            ..KeyPatch::default()
        },
        KeyPatch {
            credits: Some(CreditsPatch::Add(5)),
            ..KeyPatch::default()
        },
    ] {
        store.update_key(&admin, key.key.id, patch.clone()).unwrap();
        assert_eq!(
            request(&store, text, 1),
            Err("rate_limited"),
            "after {patch:?}"
        );
    }

    // A change of the limits themselves starts them afresh.
    let limits = KeyPatch {
        rate_limits: Some(per_minute(4)),
        ..KeyPatch::default()
    };
    store.update_key(&admin, key.key.id, limits).unwrap();
    for _ in 0..4 {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
}

/// What a request of cost 0 reports of each limit and the credits, or its refusal's code.
fn check_only(store: &Store, text: &str) -> Result<Vec<u64>, &'static str> {
    let admission = Admission {
        cost: 0,
        ..Admission::default()
    };
    let mut report = Vec::new();
    let principal = store.verify(text).unwrap();
    admit_reporting(&principal, &admission, Some(&mut report)).map_err(|e| e.code())?;
    Ok(report.iter().map(|state| state.remaining).collect())
}

#[test]
fn a_request_of_cost_0_takes_nothing_and_is_refused_where_one_would_be() {
    let (_location, store, _clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let user = support::user(&store, "alice", &[]);
    let key = support::key_with(
        &store,
        NewKey {
            name: "metered".into(),
            user_id: user.id,
            rate_limits: per_minute(2),
            credits: Some(Credits {
                remaining: 5,
                refill: None,
            }),
            ..NewKey::default()
        },
    );
    let text = key.secret.expose();
    assert_eq!(check_only(&store, text), Ok(vec![2, 5]));
    assert_eq!(check_only(&store, text), Ok(vec![2, 5]), "nothing taken");
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Ok(vec![1, 4]));
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Err("rate_limited"));

    let spent = support::key_with(
        &store,
        NewKey {
            name: "spent".into(),
            user_id: user.id,
            credits: Some(Credits {
                remaining: 1,
                refill: None,
            }),
            ..NewKey::default()
        },
    );
    let text = spent.secret.expose();
    assert_eq!(check_only(&store, text), Ok(vec![1]));
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Err("usage_exceeded"));
}

#[test]
fn an_allowlist_range_of_ipv4_mapped_addresses_is_kept_as_its_ipv4_range() {
    let (_location, store, _clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let user = support::user(&store, "alice", &[]);
    let key = support::key_with(
        &store,
        NewKey {
            name: "mapped".into(),
            user_id: user.id,
            allowed_ips: vec!["::ffff:203.0.113.0/120".parse().unwrap()],
            ..NewKey::default()
        },
    );
    assert_eq!(
        store.key(key.key.id).unwrap().allowed_ips,
        ["203.0.113.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(request(&store, key.secret.expose(), 1), Ok(()));
    let patch = KeyPatch {
        allowed_ips: Some(vec!["::ffff:198.51.100.0/120".parse().unwrap()]),
        ..KeyPatch::default()
    };
    let key = store
        .update_key(&Actor::system(), key.key.id, patch)
        .unwrap();
    assert_eq!(
        key.allowed_ips,
        ["198.51.100.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
}
