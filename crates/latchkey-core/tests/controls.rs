//! How changes to a key's usage control meet the state its limits and credits are in: a
//! change that leaves the rate limits as they are keeps their state, and a request that
//! costs nothing is refused where one that costs would be. On sled, or on PostgreSQL when
//! `LATCHKEY_TEST_POSTGRES` is set.

mod support;

use std::sync::Arc;

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

/// Credits of `remaining`, without a refill.
fn credits(remaining: u64) -> Option<Credits> {
    Some(Credits {
        remaining,
        refill: None,
    })
}

/// One request of `cost` with `text`: `Ok` when admitted, else the refusal's code.
/// `PATCH {"credits": {"add": n}}`.
fn add(n: u64) -> KeyPatch {
    KeyPatch {
        credits: Some(CreditsPatch::Add(n)),
        ..KeyPatch::default()
    }
}

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
        add(5),
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

/// A key of `user` with these limits and credits.
fn metered(
    store: &Store,
    user: &User,
    name: &str,
    rate_limits: Vec<RateLimit>,
    credits: Option<Credits>,
) -> CreatedKey {
    let new = NewKey {
        name: name.into(),
        user_id: user.id,
        rate_limits,
        credits,
        ..NewKey::default()
    };
    support::key_with(store, new)
}

/// A store on a manual clock, with a key of alice limited to `limit` requests a minute.
fn limited(limit: u32) -> (support::TestLocation, Store, Arc<ManualClock>, CreatedKey) {
    let (location, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let user = support::user(&store, "alice", &[]);
    let key = metered(&store, &user, "limited", per_minute(limit), None);
    (location, store, clock, key)
}

/// A wall clock set back (an NTP step, a virtual machine restored) holds no key back for
/// as long as the step: in one process the limits run on the monotonic clock. On a shared
/// database, whose processes have only the wall clock in common, the state the key used
/// up before the step holds until the clock is back there (never above the limit).
#[test]
fn a_wall_clock_set_back_an_hour_holds_a_limited_key_back_no_longer_in_one_process() {
    let (_location, store, clock, key) = limited(3);
    let text = key.secret.expose();
    for _ in 0..3 {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
    clock.advance(time::Duration::hours(-1));
    assert_eq!(
        request(&store, text, 1),
        Err("rate_limited"),
        "still used up"
    );
    // One request's share of the window later (20 s), one more passes, as time went.
    clock.advance(time::Duration::seconds(20));
    if support::on_postgres() {
        assert_eq!(request(&store, text, 1), Err("rate_limited"));
        clock.advance(time::Duration::hours(1));
    }
    assert_eq!(request(&store, text, 1), Ok(()));
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
    let key = metered(&store, &user, "metered", per_minute(2), credits(5));
    let text = key.secret.expose();
    assert_eq!(check_only(&store, text), Ok(vec![2, 5]));
    assert_eq!(check_only(&store, text), Ok(vec![2, 5]), "nothing taken");
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Ok(vec![1, 4]));
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Err("rate_limited"));

    let spent = metered(&store, &user, "spent", Vec::new(), credits(1));
    let text = spent.secret.expose();
    assert_eq!(check_only(&store, text), Ok(vec![1]));
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(check_only(&store, text), Err("usage_exceeded"));
}

/// A request refused by a later check counts against none of the limits checked before
/// it (usage hunt s56 M1): a key out of credits did use up its limits, and once credits
/// were added was refused `rate_limited` with nothing served; a request that a second
/// limit refused used up the first.
#[test]
fn a_refused_request_counts_against_no_limit() {
    let (_location, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let admin = Actor::system();
    let user = support::user(&store, "alice", &[]);
    let key = metered(&store, &user, "broke", per_minute(3), credits(0));
    let text = key.secret.expose();
    for _ in 0..5 {
        assert_eq!(request(&store, text, 1), Err("usage_exceeded"));
    }
    // What a refused request reports: the limit as whole as before it.
    let mut report = Vec::new();
    let principal = store.verify(text).unwrap();
    let refused = admit_reporting(&principal, &Admission::default(), Some(&mut report));
    assert_eq!(refused.map_err(|e| e.code()), Err("usage_exceeded"));
    let left: Vec<u64> = report.iter().map(|state| state.remaining).collect();
    assert_eq!(left, [3, 0], "{report:?}");
    assert_eq!(report[0].reset_seconds, Some(0), "{report:?}");

    store.update_key(&admin, key.key.id, add(10)).unwrap();
    for _ in 0..3 {
        assert_eq!(request(&store, text, 1), Ok(()), "served once credits came");
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));

    // Two limits: what the second refuses takes nothing from the first.
    let limit = |name: &str, limit, window_seconds| RateLimit {
        name: name.into(),
        limit,
        window_seconds,
    };
    let limits = vec![limit("default", 5, 60), limit("burst", 2, 1)];
    let key = metered(&store, &user, "bursty", limits, None);
    let text = key.secret.expose();
    for _ in 0..2 {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    for _ in 0..6 {
        assert_eq!(request(&store, text, 1), Err("rate_limited"));
    }
    clock.advance(time::Duration::seconds(1));
    for _ in 0..2 {
        assert_eq!(request(&store, text, 1), Ok(()), "default still holds 3");
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
    clock.advance(time::Duration::seconds(1));
    assert_eq!(request(&store, text, 1), Ok(()), "the last of default");
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
}

/// What a refused request gives back stays given when no request comes to use it soon:
/// on a shared database it goes back to the limit's shared state, not into a slice that
/// lapses (re-check s57b F1: the limit then admitted fewer than it allows).
#[test]
fn a_cost_given_back_is_not_lost_when_its_slice_lapses() {
    let (_location, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let admin = Actor::system();
    let user = support::user(&store, "alice", &[]);
    let key = metered(&store, &user, "metered", per_minute(5), credits(1));
    let text = key.secret.expose();
    assert_eq!(request(&store, text, 1), Ok(()));
    for _ in 0..3 {
        assert_eq!(request(&store, text, 1), Err("usage_exceeded"));
        // Past any slice's validity (one request's share of the window: 12 s).
        clock.advance(time::Duration::seconds(13));
    }
    store.update_key(&admin, key.key.id, add(100)).unwrap();
    // One used 39 s ago and won back: the whole limit.
    for _ in 0..5 {
        assert_eq!(request(&store, text, 1), Ok(()), "the limit is whole");
    }
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
}

/// A limit used up says when it is whole again, counting down while it refuses (usage
/// hunt s56 L1: `reset_seconds` said the whole window on every refusal).
#[test]
fn a_used_up_limit_says_when_it_is_whole_again() {
    let (_location, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let user = support::user(&store, "alice", &[]);
    let hourly = RateLimit {
        name: "hourly".into(),
        limit: 2,
        window_seconds: 3600,
    };
    let key = metered(&store, &user, "hourly", vec![hourly], None);
    let text = key.secret.expose();
    let refused = || {
        let mut report = Vec::new();
        let principal = store.verify(text).unwrap();
        let answer = admit_reporting(&principal, &Admission::default(), Some(&mut report));
        assert_eq!(answer.map_err(|e| e.code()), Err("rate_limited"));
        assert_eq!(report.len(), 1, "{report:?}");
        (report[0].remaining, report[0].reset_seconds)
    };
    for _ in 0..2 {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    assert_eq!(refused(), (0, Some(3600)));
    clock.advance(time::Duration::seconds(1000));
    assert_eq!(refused(), (0, Some(2600)));
    clock.advance(time::Duration::seconds(800));
    // One came back: taken, and the rest is back an interval later.
    assert_eq!(request(&store, text, 1), Ok(()));
    assert_eq!(refused(), (0, Some(3600)));
}

/// A request costing more than a limit's whole `limit` never passes: refused with a retry
/// of one window (as Unkey answers), taking nothing, so cheaper requests still pass.
#[test]
fn a_request_costing_more_than_a_whole_limit_is_refused_and_takes_nothing() {
    let (_location, store, _clock, key) = limited(5);
    let text = key.secret.expose();
    let admission = Admission {
        cost: 6,
        ..Admission::default()
    };
    for _ in 0..2 {
        match admit(&store.verify(text).unwrap(), &admission) {
            Err(VerifyError::RateLimited(refused)) => {
                assert_eq!(refused.retry_after_seconds, 60);
                assert_eq!(refused.limit.name, "default");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(request(&store, text, 5), Ok(()), "the whole limit is left");
    assert_eq!(request(&store, text, 1), Err("rate_limited"));
}

/// The same for a route's cost: its extra cost comes after the request's own 1, so a
/// route costing 6 never passes a limit of 5 (it was told to retry in 12 s, again and
/// again), and a refill to 5 never covers it (it was told to wait for the refill).
#[test]
fn a_route_costing_more_than_a_whole_limit_or_refill_is_refused_for_good() {
    let (_location, store, _clock, key) = limited(5);
    let text = key.secret.expose();
    let principal = store.verify(text).unwrap();
    admit(&principal, &Admission::default()).unwrap();
    let meter = principal.meter.as_ref().unwrap();
    match meter.charge(5) {
        Err(VerifyError::RateLimited(refused)) => {
            assert_eq!(refused.retry_after_seconds, 60, "one window");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(meter.charge(4), Ok(()), "a route costing 5 passes");

    let (_location, store, _clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let user = support::user(&store, "alice", &[]);
    let refill = Refill {
        amount: 5,
        interval: RefillInterval::Day,
        day_of_month: None,
    };
    let credits = Credits {
        remaining: 3,
        refill: Some(refill),
    };
    let key = metered(&store, &user, "refilled", Vec::new(), Some(credits));
    let principal = store.verify(key.secret.expose()).unwrap();
    admit(&principal, &Admission::default()).unwrap();
    let meter = principal.meter.as_ref().unwrap();
    let refusal = |cost| match meter.charge(cost) {
        Err(VerifyError::UsageExceeded {
            retry_after_seconds,
        }) => retry_after_seconds,
        other => panic!("{other:?}"),
    };
    assert_eq!(refusal(5), None, "6 of a refill of 5: never");
    assert!(refusal(4).is_some(), "5 of a refill of 5: at the refill");
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

/// A rotated key's successor goes on from where the key's rate limits stand, with or
/// without credits (which rotation moves to it): three of five a minute used, two back
/// 24 s later (one every 12 s), the successor has four, and its own successor none (usage
/// hunt s56 M4: each started afresh, a whole burst more at every rotation). The old key in
/// its grace keeps its own: it shares nothing with its successor.
#[test]
fn a_rotated_key_s_successor_goes_on_from_its_limits() {
    let (_location, store, clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let admin = Actor::system();
    let user = support::user(&store, "alice", &[]);
    for balance in [None, credits(100)] {
        let key = metered(&store, &user, "limited", per_minute(5), balance);
        let text = key.secret.expose();
        for _ in 0..3 {
            assert_eq!(request(&store, text, 1), Ok(()));
        }
        clock.advance(time::Duration::seconds(24));
        let grace = time::Duration::minutes(10);
        let next = store.rotate_key(&admin, key.key.id, grace).unwrap();
        for _ in 0..4 {
            assert_eq!(
                request(&store, next.secret.expose(), 1),
                Ok(()),
                "{balance:?}"
            );
        }
        assert_eq!(
            request(&store, next.secret.expose(), 1),
            Err("rate_limited"),
            "{balance:?}"
        );
        let last = store.rotate_key(&admin, next.key.id, grace).unwrap();
        assert_eq!(
            request(&store, last.secret.expose(), 1),
            Err("rate_limited"),
            "{balance:?}"
        );
        // The old key's own four: credits moved with the rotation, so only a key without
        // any is admitted.
        let expected = if balance.is_some() {
            Err("usage_exceeded")
        } else {
            Ok(())
        };
        assert_eq!(request(&store, text, 1), expected, "{balance:?}");
        // A minute later the successor's limit is whole again.
        clock.advance(time::Duration::minutes(1));
        for _ in 0..5 {
            assert_eq!(
                request(&store, last.secret.expose(), 1),
                Ok(()),
                "{balance:?}"
            );
        }
    }
}

/// A user's rate limit is shared by all its keys, a rotated key's successor included: it
/// bounds the two together through the grace, where each has a copy of the key's own
/// limits (README, *Rotation*).
#[test]
fn a_user_s_limit_bounds_a_key_and_its_successor_together() {
    let (_location, store, _clock) = support::clocked_store(datetime!(2026-06-01 12:00 UTC), |c| c);
    let new = NewUser {
        name: "bob".into(),
        rate_limits: per_minute(4),
        ..NewUser::default()
    };
    let user = support::user_with(&store, new);
    let key = support::key(&store, &user, "rotated");
    let old = key.secret.expose();
    for _ in 0..2 {
        assert_eq!(request(&store, old, 1), Ok(()));
    }
    let grace = time::Duration::minutes(10);
    let next = store
        .rotate_key(&Actor::system(), key.key.id, grace)
        .unwrap();
    for text in [old, next.secret.expose()] {
        assert_eq!(request(&store, text, 1), Ok(()));
    }
    for text in [old, next.secret.expose()] {
        assert_eq!(request(&store, text, 1), Err("rate_limited"));
    }
}
