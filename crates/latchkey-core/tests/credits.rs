//! Credits are durable like usage counts: consumption counted in memory is persisted by the
//! usage flush, and no PATCH or refill ever adds back consumption not yet persisted.

mod support;

use std::sync::Arc;

use latchkey_core::meter::{Admitted, admit_reporting, try_admit};
use latchkey_core::{
    Actor, Admission, Credits, CreditsPatch, KeyPatch, ManualClock, NewKey, Refill, RefillInterval,
    Store, StoreConfig, VerifyError, admit,
};
use time::{Duration, macros::datetime};

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::new(datetime!(2026-03-10 12:00 UTC))),
        }
    }

    fn config(&self) -> StoreConfig {
        support::config()
            .clock(self.clock.clone())
            .usage_flush_interval(None)
    }

    fn create(&self) -> Store {
        Store::create_empty(self.dir.path(), "lk", self.config()).unwrap()
    }

    fn reopen(&self, store: Store) -> Store {
        drop(store);
        Store::open(self.dir.path(), self.config()).unwrap()
    }
}

fn key_with_credits(store: &Store, credits: Credits) -> (uuid::Uuid, String) {
    let user = support::user(store, "partner", &[]);
    let created = support::key_with(
        store,
        NewKey {
            name: "metered".into(),
            user_id: user.id,
            credits: Some(credits),
            ..NewKey::default()
        },
    );
    (created.key.id, created.secret.expose().to_owned())
}

/// `remaining` credits that are never refilled.
fn no_refill(remaining: u64) -> Credits {
    Credits {
        remaining,
        refill: None,
    }
}

/// A key with `remaining` credits and no refill, and `spent` of them spent in memory.
fn key_with_spent_credits(store: &Store, remaining: u64, spent: u64) -> (uuid::Uuid, String) {
    let (id, text) = key_with_credits(store, no_refill(remaining));
    for _ in 0..spent {
        assert_eq!(request(store, &text), "ok");
    }
    (id, text)
}

/// One request: verified and admitted at cost 1; its code.
fn request(store: &Store, text: &str) -> &'static str {
    let principal = store.verify(text).unwrap();
    match admit(&principal, &Admission::default()) {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

fn remaining(store: &Store, id: uuid::Uuid) -> u64 {
    store.key(id).unwrap().credits.unwrap().remaining
}

#[test]
fn consumption_is_persisted_by_the_flush_and_survives_a_reopen() {
    let fx = Fixture::new();
    let store = fx.create();
    let (id, text) = key_with_spent_credits(&store, 10, 3);
    assert_eq!(remaining(&store, id), 7);
    store.flush().unwrap();
    let store = fx.reopen(store);
    assert_eq!(remaining(&store, id), 7);
    for _ in 0..7 {
        assert_eq!(request(&store, &text), "ok");
    }
    assert_eq!(request(&store, &text), "usage_exceeded");
    let store = fx.reopen(store);
    assert_eq!(request(&store, &text), "usage_exceeded");
}

#[test]
fn a_patch_never_adds_back_consumption_not_yet_persisted() {
    let fx = Fixture::new();
    let store = fx.create();
    let admin = Actor::system();
    let (id, text) = key_with_spent_credits(&store, 10, 3);
    // Three consumed in memory only; adding 5 gives 12, not 15.
    let add = KeyPatch {
        credits: Some(CreditsPatch::Add(5)),
        ..KeyPatch::default()
    };
    assert_eq!(
        store
            .update_key(&admin, id, add)
            .unwrap()
            .credits
            .unwrap()
            .remaining,
        12
    );
    assert_eq!(request(&store, &text), "ok");
    // A flush after the PATCH writes what the new meter counted, never the old balance.
    store.flush().unwrap();
    let store = fx.reopen(store);
    assert_eq!(remaining(&store, id), 11);
    // Setting is setting: consumption before it is not taken from the new balance.
    assert_eq!(request(&store, &text), "ok");
    let set = KeyPatch {
        credits: Some(CreditsPatch::Set {
            remaining: 4,
            refill: None,
        }),
        ..KeyPatch::default()
    };
    store.update_key(&admin, id, set).unwrap();
    store.flush().unwrap();
    let store = fx.reopen(store);
    assert_eq!(remaining(&store, id), 4);
    // Changing anything else keeps what was consumed since the last flush.
    assert_eq!(request(&store, &text), "ok");
    let limits = KeyPatch {
        meta: Some(Some(serde_json::json!({"plan": "pro"}))),
        ..KeyPatch::default()
    };
    store.update_key(&admin, id, limits).unwrap();
    assert_eq!(remaining(&store, id), 3);
    assert_eq!(request(&store, &text), "ok");
    let store = fx.reopen(store);
    assert_eq!(remaining(&store, id), 2);
}

#[test]
fn a_monthly_refill_happens_on_its_day_once() {
    let fx = Fixture::new();
    let store = fx.create();
    let (id, text) = key_with_credits(
        &store,
        Credits {
            remaining: 1,
            refill: Some(Refill {
                amount: 2,
                interval: RefillInterval::Month,
                day_of_month: Some(15),
            }),
        },
    );
    assert_eq!(request(&store, &text), "ok");
    assert_eq!(request(&store, &text), "usage_exceeded");
    // The 14th: not yet.
    fx.clock.set(datetime!(2026-03-14 23:59 UTC));
    assert_eq!(request(&store, &text), "usage_exceeded");
    fx.clock.set(datetime!(2026-03-15 00:00 UTC));
    assert_eq!(request(&store, &text), "ok");
    store.flush().unwrap();
    // Persisted with its schedule: a reopen does not refill again this month.
    let store = fx.reopen(store);
    assert_eq!(remaining(&store, id), 1);
    fx.clock.advance(Duration::days(20));
    assert_eq!(request(&store, &text), "ok");
    assert_eq!(request(&store, &text), "usage_exceeded");
    fx.clock.set(datetime!(2026-04-15 00:00:01 UTC));
    assert_eq!(request(&store, &text), "ok");
    assert_eq!(remaining(&store, id), 1);
}

/// What `try_admit` came to for one request: "inline" (answered from the slice) or
/// "reserve" (a reservation, finished here), with the answer's code.
fn try_request(store: &Store, text: &str) -> (&'static str, &'static str) {
    let principal = store.verify(text).unwrap();
    let (how, answer) = match try_admit(&principal, &Admission::default()) {
        Admitted::Done(answer) => ("inline", answer),
        Admitted::Reserve(reservation) => ("reserve", reservation.finish()),
    };
    (how, answer.map_or_else(|e| e.code(), |()| "ok"))
}

#[test]
fn try_admit_defers_only_what_needs_a_reservation_and_finishing_it_admits() {
    let fx = Fixture::new();
    let store = fx.create();
    let (id, text) = key_with_credits(&store, no_refill(100));
    // Slices of 1, 2, 4 (they double while the key is busy): a request reserves only when
    // the slice is empty, and the others are answered from it.
    let hows: Vec<_> = (0..7).map(|_| try_request(&store, &text)).collect();
    let reserve = ("reserve", "ok");
    let inline = ("inline", "ok");
    assert_eq!(
        hows,
        [reserve, reserve, inline, reserve, inline, inline, inline]
    );
    // 7 spent and 0 of the slice left.
    assert_eq!(remaining(&store, id), 93);
    // A key without credits never reserves.
    let plain = support::key(&store, &support::user(&store, "plain", &[]), "plain");
    assert_eq!(try_request(&store, plain.secret.expose()), inline);

    // The last credit, then none: the reservation that finds none refuses.
    let fx = Fixture::new();
    let store = fx.create();
    let (id, text) = key_with_credits(&store, no_refill(1));
    assert_eq!(try_request(&store, &text), reserve);
    assert_eq!(try_request(&store, &text), ("reserve", "usage_exceeded"));
    assert_eq!(remaining(&store, id), 0);
}

/// Leased credits given back join the slice and reach the store's balance at close; never
/// into another refill period, never into a meter replaced by a `set`. On both backends.
#[test]
fn returned_credits_go_back_only_to_the_meter_and_period_they_came_from() {
    let t0 = datetime!(2026-03-10 12:00 UTC);
    let (location, store, clock) = support::clocked_store(t0, |c| c);
    let admin = Actor::system();
    let (id, text) = key_with_credits(&store, no_refill(100));
    let meter = store.verify(&text).unwrap().meter.clone().unwrap();
    let period = meter.credit_period().unwrap();
    assert_eq!(meter.lease_credits(5).unwrap(), 5);
    assert_eq!(remaining(&store, id), 95);
    assert!(!meter.return_credits(3, period - 1), "another period");
    assert!(meter.return_credits(3, period));
    assert_eq!(remaining(&store, id), 98);
    drop(store);
    let config = support::config().clock(clock).usage_flush_interval(None);
    let store = Store::open_at(&location.location, config).unwrap();
    assert_eq!(remaining(&store, id), 98, "given back at close");
    // After a `set`, the old meter's credits are void: the new meter is another one.
    let meter = store.verify(&text).unwrap().meter.clone().unwrap();
    assert_eq!(meter.lease_credits(2).unwrap(), 2);
    let set = KeyPatch {
        credits: Some(CreditsPatch::Set {
            remaining: 10,
            refill: None,
        }),
        ..KeyPatch::default()
    };
    store.update_key(&admin, id, set).unwrap();
    let current = store.verify(&text).unwrap().meter.clone().unwrap();
    assert!(current != meter);
    assert_eq!(remaining(&store, id), 10);
}

/// A backup holds the balance and the use count the API shows, although part of them was
/// only in this process's memory (the slice it reserved, the uses not yet flushed).
#[test]
fn a_backup_holds_the_credits_and_uses_counted_in_memory() {
    let fx = Fixture::new();
    let store = fx.create();
    let (id, _) = key_with_spent_credits(&store, 10_000, 50);
    assert_eq!(remaining(&store, id), 9_950);
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    let target = fx.dir.path().join("restored");
    let (restored, _) = Store::restore(&target, file.as_slice(), fx.config()).unwrap();
    assert_eq!(remaining(&restored, id), 9_950);
    assert_eq!(restored.key(id).unwrap().usage_count, 50);
}

#[test]
fn a_rotation_moves_the_unspent_slice_once_and_one_that_fails_keeps_it() {
    let fx = Fixture::new();
    let store = fx.create();
    let (id, text) = key_with_spent_credits(&store, 100, 2);
    assert_eq!(remaining(&store, id), 98, "the balance and the slice held");
    let admin = Actor::system();
    let refused = store.rotate_key(&admin, id, Duration::MAX);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(remaining(&store, id), 98, "the slice is still the key's");
    assert_eq!(request(&store, &text), "ok");
    assert_eq!(remaining(&store, id), 97);

    let rotated = store.rotate_key(&admin, id, Duration::ZERO).unwrap();
    assert_eq!(remaining(&store, rotated.key.id), 97);
    assert_eq!(request(&store, rotated.secret.expose()), "ok");
    assert_eq!(remaining(&store, rotated.key.id), 96);
}

/// Credits used up say when they are refilled: in the refusal and in the report
/// `/v1/verify` answers from (what is left, and when the next refill comes), for a request
/// and for a `cost: 0` check alike. No retry is promised when no refill covers the cost.
/// On both backends.
#[test]
fn credits_used_up_say_when_they_are_refilled_if_ever() {
    let t0 = datetime!(2026-03-10 12:00 UTC);
    let (_location, store, clock) = support::clocked_store(t0, |c| c);
    let daily = Credits {
        remaining: 1,
        refill: Some(Refill {
            amount: 5,
            interval: RefillInterval::Day,
            day_of_month: None,
        }),
    };
    let (id, text) = key_with_credits(&store, daily);
    assert_eq!(request(&store, &text), "ok");
    // The answer to a request of `cost`: the refusal's retry, and the credits reported.
    let answer = |cost| {
        let principal = store.verify(&text).unwrap();
        let admission = Admission {
            cost,
            ..Admission::default()
        };
        let mut report = Vec::new();
        let retry = match admit_reporting(&principal, &admission, Some(&mut report)) {
            Err(VerifyError::UsageExceeded {
                retry_after_seconds,
            }) => retry_after_seconds,
            other => panic!("cost {cost}: {other:?}"),
        };
        let credits = report.pop().expect("the credits reported");
        assert_eq!(credits.name, "credits");
        (retry, credits.remaining, credits.reset_seconds)
    };
    let until_midnight = Some(12 * 3_600);
    for cost in [1, 0] {
        assert_eq!(
            answer(cost),
            (until_midnight, 0, until_midnight),
            "cost {cost}"
        );
    }
    clock.set(datetime!(2026-03-10 23:59:59.5 UTC));
    assert_eq!(answer(1), (Some(1), 0, Some(1)));
    clock.set(datetime!(2026-03-11 00:00 UTC));
    assert_eq!(request(&store, &text), "ok");
    // A cost above the 4 left: they are reported, and no retry is promised, since a
    // refill of 5 never covers 10.
    assert_eq!(answer(10), (None, 4, Some(24 * 3_600)));

    // Idle past the next refill: a check reports the refill it came to, and the next one.
    clock.set(datetime!(2026-03-12 06:00 UTC));
    let principal = store.verify(&text).unwrap();
    let check = Admission {
        cost: 0,
        ..Admission::default()
    };
    let mut report = Vec::new();
    assert_eq!(
        admit_reporting(&principal, &check, Some(&mut report)),
        Ok(())
    );
    let credits = report.pop().unwrap();
    assert_eq!(
        (credits.remaining, credits.reset_seconds),
        (5, Some(18 * 3_600))
    );

    // The refill removed and the credits set to 0: only another change helps.
    let never = KeyPatch {
        credits: Some(CreditsPatch::Set {
            remaining: 0,
            refill: Some(None),
        }),
        ..KeyPatch::default()
    };
    store.update_key(&Actor::system(), id, never).unwrap();
    assert_eq!(answer(1), (None, 0, None));
}
