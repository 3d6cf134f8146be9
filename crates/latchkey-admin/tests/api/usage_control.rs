//! Usage control through the management API: create, PATCH, read back, bad input, and
//! `/v1/verify`'s codes and limits' state.

use serde_json::{Value, json};

use crate::common::Harness;

#[tokio::test]
async fn a_key_carries_meta_limits_credits_and_an_allowlist() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "partner"})).await;
    let created = h
        .post(
            "/v1/keys",
            json!({"name": "partner key", "user_id": "partner",
                   "meta": {"plan": "pro"},
                   "rate_limits": [{"name": "default", "limit": 100, "window_seconds": 60}],
                   "credits": {"remaining": 10, "refill": {"amount": 10, "interval": "month", "day_of_month": 1}},
                   "allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}),
        )
        .await
        .ok(201);
    assert_eq!(created["meta"], json!({"plan": "pro"}));
    assert_eq!(
        created["rate_limits"],
        json!([{"name": "default", "limit": 100, "window_seconds": 60}])
    );
    assert_eq!(created["credits"]["remaining"], 10);
    assert_eq!(created["credits"]["refill"]["interval"], "month");
    assert_eq!(
        created["allowed_ips"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    let uri = format!("/v1/keys/{}", created["id"].as_str().unwrap());

    let added = h.patch(&uri, json!({"credits": {"add": 5}})).await.ok(200);
    assert_eq!(added["credits"]["remaining"], 15);
    let set = h
        .patch(&uri, json!({"credits": {"remaining": 3}}))
        .await
        .ok(200);
    assert_eq!(set["credits"]["remaining"], 3);
    assert_eq!(set["credits"]["refill"]["amount"], 10, "kept");
    let cleared = h
        .patch(
            &uri,
            json!({"meta": null, "rate_limits": null, "allowed_ips": null}),
        )
        .await
        .ok(200);
    assert_eq!(cleared["meta"], Value::Null);
    assert_eq!(cleared["rate_limits"], json!([]));
    assert_eq!(cleared["allowed_ips"], json!([]));
    assert_eq!(h.get(&uri).await.ok(200), cleared);
    // The refill alone: the balance stays.
    let refill = json!({"amount": 50, "interval": "month", "day_of_month": 15});
    let refilled = h
        .patch(&uri, json!({"credits": {"refill": refill}}))
        .await
        .ok(200);
    assert_eq!(refilled["credits"]["remaining"], 3, "{refilled}");
    assert_eq!(
        refilled["credits"]["refill"]["day_of_month"], 15,
        "{refilled}"
    );
    let kept = h
        .patch(&uri, json!({"credits": {"refill": null}}))
        .await
        .ok(200);
    assert_eq!(kept["credits"], json!({"remaining": 3, "refill": null}));
    let no_credits = h.patch(&uri, json!({"credits": null})).await.ok(200);
    assert_eq!(no_credits["credits"], Value::Null);
    // Without credits, no refill to change.
    let answer = h.patch(&uri, json!({"credits": {"refill": refill}})).await;
    answer.problem(400, "invalid_field");
    // One address is the network of it alone; host bits are cleared; a network given twice
    // is kept once.
    let ips = json!([
        "203.0.113.7",
        "10.1.2.3/8",
        "2001:db8::1",
        "::ffff:192.0.2.1/120",
        "10.0.0.0/8"
    ]);
    let set = h.patch(&uri, json!({"allowed_ips": ips})).await.ok(200);
    assert_eq!(
        set["allowed_ips"],
        json!([
            "203.0.113.7/32",
            "10.0.0.0/8",
            "2001:db8::1/128",
            "192.0.2.0/24"
        ])
    );
}

#[tokio::test]
async fn bad_usage_control_is_400_and_changes_nothing() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "partner"})).await;
    let (uri, before) = key_with_one_credit(&h).await;
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("l{i}"), "limit": 1, "window_seconds": 1}))
        .collect();
    let bad = [
        json!({"meta": {"a": "x".repeat(5000)}}),
        json!({"meta": [1]}),
        json!({"rate_limits": nine}),
        json!({"rate_limits": [{"name": "a", "limit": 0, "window_seconds": 1}]}),
        json!({"allowed_ips": ["10.0.0.0/33"]}),
        json!({"allowed_ips": ["not an address"]}),
        // Not "no address", nor "any" (usage hunt s56 M8: it was taken as no allowlist).
        json!({"allowed_ips": []}),
        json!({"credits": {"remaining": -1}}),
        json!({"credits": {"add": -5}}),
        json!({"credits": {"remaining": 1, "add": 1}}),
        json!({"name": "renamed", "credits": {"refill": {"amount": 1, "interval": "month", "day_of_month": 31}, "remaining": 1}}),
        json!({"credits": {"remaining": 1, "refill": {"amount": 0, "interval": "day"}}}),
    ];
    for body in bad {
        let answer = h.patch(&uri, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.json());
        assert_eq!(h.get(&uri).await.ok(200), before, "{body}");
    }
    let problem = h.patch(&uri, json!({"allowed_ips": []})).await;
    let problem = problem.problem(400, "invalid_field");
    assert_eq!(problem["field"], "allowed_ips", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("or null for no allowlist"),
        "{problem}"
    );
    // Each wrong shape of `credits` is told what it lacks, not another shape's fault.
    let refill = json!({"amount": 1, "interval": "day"});
    for (credits, said) in [
        (json!({}), "give `remaining`, `refill` or both"),
        (json!({"add": 1, "refill": refill}), "not with `add`"),
        (json!({"remaining": 1, "add": 1}), "not both"),
    ] {
        let answer = h.patch(&uri, json!({"credits": credits})).await;
        let problem = answer.problem(400, "invalid_field");
        assert!(
            problem["detail"].as_str().unwrap().contains(said),
            "{problem}"
        );
    }
    let keys = h.get("/v1/keys?user_id=partner").await.ok(200)["items"]
        .as_array()
        .unwrap()
        .len();
    for body in [
        json!({"name": "k2", "user_id": "partner", "meta": "text"}),
        json!({"name": "k2", "user_id": "partner", "credits": {"remaining": -3}}),
        json!({"name": "k2", "user_id": "partner", "allowed_ips": ["300.0.0.1/8"]}),
        json!({"name": "k2", "user_id": "partner", "allowed_ips": []}),
        json!({"name": "k2", "user_id": "partner", "credits": {"remaining": 0, "refill": {"amount": 0, "interval": "month"}}}),
    ] {
        let answer = h.post("/v1/keys", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
    }
    let after = h.get("/v1/keys?user_id=partner").await.ok(200)["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, keys);
}

/// A misspelt member inside `credits`, `refill` or a rate limit is refused naming the
/// body's member, as at the top level: never dropped, which would make a key without the
/// refill or limit asked for.
#[tokio::test]
async fn unknown_members_of_nested_objects_are_refused() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "partner"})).await;
    let refill = json!({"amount": 100, "interval": "day"});
    let limit = json!({"name": "default", "limit": 1, "window_seconds": 1});
    let misspelt = |mut object: Value, member: &str| {
        object[member] = json!(1);
        object
    };
    for (uri, body, field) in [
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "partner", "credits": {"remaining": 100, "refil": refill}}),
            "credits",
        ),
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "partner",
                   "credits": {"remaining": 100, "refill": misspelt(refill.clone(), "day_of_mont")}}),
            "credits",
        ),
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "partner", "rate_limits": [misspelt(limit.clone(), "burst")]}),
            "rate_limits",
        ),
        (
            "/v1/users",
            json!({"name": "u", "rate_limits": [misspelt(limit.clone(), "window")]}),
            "rate_limits",
        ),
    ] {
        let problem = h
            .post(uri, body.clone())
            .await
            .problem(400, "invalid_field");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let keys = h.get("/v1/keys?user_id=partner").await.ok(200);
    assert_eq!(keys["items"], json!([]), "nothing was created");
    let (uri, before) = key_with_one_credit(&h).await;
    let change = json!({"credits": {"remaining": 5, "refill": misspelt(refill, "amout")}});
    let problem = h.patch(&uri, change).await.problem(400, "invalid_field");
    assert_eq!(problem["field"], "credits", "{problem}");
    assert_eq!(h.get(&uri).await.ok(200), before);
}

/// Credits given to a revoked or expired key could never be spent: a top-up, a set or a
/// refill is a 409 naming why, and changes nothing (usage hunt s56 L3: 200, the credits
/// stranded). Removing them, and what is no purchase (its name), still go.
#[tokio::test]
async fn credits_are_not_given_to_a_key_that_can_never_spend_them() {
    let clock = std::sync::Arc::new(latchkey_core::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let h = Harness::configured(|c| c.clock(clock.clone()));
    h.created("/v1/users", json!({"name": "partner"})).await;
    let refill = json!({"refill": {"amount": 5, "interval": "day"}});
    let purchases = [json!({"add": 100}), json!({"remaining": 100}), refill];
    let (revoked, _) = key_with_one_credit(&h).await;
    h.post(&format!("{revoked}/revoke"), json!({}))
        .await
        .ok(200);
    let expires = latchkey_core::Clock::now(&*clock) + time::Duration::hours(1);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({"name": "k", "user_id": "partner", "credits": {"remaining": 1}, "expires_at": expires});
    let expired = format!(
        "/v1/keys/{}",
        h.created("/v1/keys", body).await["id"].as_str().unwrap()
    );
    clock.advance(time::Duration::hours(2));
    for (uri, code) in [(&revoked, "key_revoked"), (&expired, "key_expired")] {
        let before = h.get(uri).await.ok(200);
        for credits in &purchases {
            let answer = h.patch(uri, json!({"credits": credits})).await;
            let problem = answer.problem(409, code);
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("could never be spent"), "{problem}");
            assert_eq!(h.get(uri).await.ok(200), before, "{uri} {credits}");
        }
        h.patch(uri, json!({"name": "old"})).await.ok(200);
        // What gives nothing goes: the balance set to 0, the refill removed, nothing added.
        for credits in [
            json!({"remaining": 0}),
            json!({"refill": null}),
            json!({"add": 0}),
        ] {
            h.patch(uri, json!({"credits": credits})).await.ok(200);
        }
        let cleared = h.patch(uri, json!({"credits": null})).await.ok(200);
        assert_eq!(cleared["credits"], Value::Null, "{cleared}");
    }
    // A key rotated already: its credits went to its successor, which takes more; given to
    // it, they would be stranded at the end of its grace (review s56 L4).
    let (rotated, _) = key_with_one_credit(&h).await;
    let successor = h.rotate(rotated.rsplit('/').next().unwrap(), 600).await;
    let before = h.get(&rotated).await.ok(200);
    for credits in &purchases {
        let answer = h.patch(&rotated, json!({"credits": credits})).await;
        let problem = answer.problem(409, "key_rotated");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("give them to that key"), "{problem}");
        assert_eq!(h.get(&rotated).await.ok(200), before, "{credits}");
    }
    let next = format!("/v1/keys/{}", successor["id"].as_str().unwrap());
    let added = h
        .patch(&next, json!({"credits": {"add": 100}}))
        .await
        .ok(200);
    assert_eq!(added["credits"]["remaining"], 101, "{added}");
}

/// A key of the user `partner` with one credit: its URI and its record as GET answers it.
async fn key_with_one_credit(h: &Harness) -> (String, Value) {
    let created = h
        .created(
            "/v1/keys",
            json!({"name": "k", "user_id": "partner", "credits": {"remaining": 1}}),
        )
        .await;
    let uri = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    let record = h.get(&uri).await.ok(200);
    (uri, record)
}

#[tokio::test]
async fn verify_answers_the_usage_codes_in_order_with_the_limits_state() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 2, 5).await;
    let secret = created["secret"].as_str().unwrap();
    let verify = |body: Value| h.post_as(&service, "/v1/verify", body);
    let answer = verify(json!({"key": secret})).await;
    assert_eq!(answer["code"], "ip_not_allowed");
    assert_eq!(answer["valid"], false);
    // IP before permissions, permissions before limits.
    let answer =
        verify(json!({"key": secret, "client_ip": "192.0.2.1", "permissions": ["orders:write"]}))
            .await;
    assert_eq!(answer["code"], "ip_not_allowed");
    let answer =
        verify(json!({"key": secret, "client_ip": "10.0.0.1", "permissions": ["orders:write"]}))
            .await;
    assert_eq!(answer["code"], "insufficient_permission");
    let answer = verify(json!({"key": secret, "client_ip": "10.0.0.1"})).await;
    assert_eq!(answer["code"], "ok");
    assert_eq!(
        answer["limits"],
        json!([{"name": "default", "limit": 2, "window_seconds": 60, "remaining": 1, "reset_seconds": 30},
               {"name": "credits", "remaining": 4}])
    );
    verify(json!({"key": secret, "client_ip": "10.0.0.1"})).await;
    let answer = verify(json!({"key": secret, "client_ip": "10.0.0.1"})).await;
    assert_eq!(answer["code"], "rate_limited");
    assert!(answer["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(
        answer["limits"],
        json!([{"name": "default", "limit": 2, "window_seconds": 60, "remaining": 0, "reset_seconds": 60}])
    );
    // A disabled key over its limit: key_disabled.
    let uri = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    h.patch(&uri, json!({"enabled": false})).await.ok(200);
    let answer = verify(json!({"key": secret, "client_ip": "10.0.0.1"})).await;
    assert_eq!(answer["code"], "key_disabled");
}

/// A cost a limit refuses takes nothing from it: the answer reports what the limit still
/// holds (the whole of it for a cost above the limit), not 0.
#[tokio::test]
async fn a_refused_cost_reports_what_the_limit_still_holds() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 5, 100).await;
    let secret = created["secret"].as_str().unwrap();
    let verify = |cost: u32| {
        let body = json!({"key": secret, "client_ip": "10.0.0.1", "cost": cost});
        h.post_as(&service, "/v1/verify", body)
    };
    let state = |remaining: u32, reset_seconds: u32| {
        json!([{"name": "default", "limit": 5, "window_seconds": 60,
                "remaining": remaining, "reset_seconds": reset_seconds}])
    };
    let answer = verify(6).await;
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    assert_eq!(answer["limits"], state(5, 0));
    let answer = verify(3).await;
    assert_eq!(answer["code"], "ok", "{answer}");
    assert_eq!(answer["limits"][0], state(2, 36)[0]);
    let answer = verify(3).await;
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    assert_eq!(answer["limits"], state(2, 36));
}

#[tokio::test]
async fn user_rate_limits_are_set_bounded_and_cleared() {
    let h = Harness::new();
    let limits = json!([{"name": "default", "limit": 10, "window_seconds": 60}]);
    let created = h
        .post(
            "/v1/users",
            json!({"name": "partner", "permissions": ["orders:read"], "rate_limits": limits}),
        )
        .await
        .ok(201);
    assert_eq!(created["rate_limits"], limits);
    let before = h.get("/v1/users/partner").await.ok(200);
    assert_eq!(before["rate_limits"], limits);
    let listed = h.get("/v1/users").await.ok(200);
    assert!(listed["items"].as_array().unwrap().contains(&before));

    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("l{i}"), "limit": 1, "window_seconds": 1}))
        .collect();
    let bad = [
        json!(nine),
        json!([{"name": "a", "limit": 0, "window_seconds": 1}]),
        json!([{"name": "a", "limit": 1, "window_seconds": 0}]),
        json!([{"name": "a b", "limit": 1, "window_seconds": 1}]),
        json!([{"name": "a", "limit": 1, "window_seconds": 1}, {"name": "a", "limit": 2, "window_seconds": 2}]),
        json!([{"name": "a", "limit": -1, "window_seconds": 1}]),
        json!("10/60s"),
    ];
    for limits in bad {
        let answer = h
            .patch("/v1/users/partner", json!({"rate_limits": limits.clone()}))
            .await;
        assert_eq!(answer.status, 400, "{limits}: {}", answer.json());
        assert_eq!(h.get("/v1/users/partner").await.ok(200), before, "{limits}");
        let answer = h
            .post(
                "/v1/users",
                json!({"name": "other", "rate_limits": limits.clone()}),
            )
            .await;
        assert_eq!(answer.status, 400, "{limits}");
    }
    h.get("/v1/users/other").await.ok(404);

    // A caller that may not manage the user changes nothing, limits included.
    let (_, weak) = h
        .user_with_key("weak", &["latchkey:users:write", "latchkey:users:read"])
        .await;
    let answer = h
        .send(
            "PATCH",
            "/v1/users/partner",
            Some(&weak),
            Some(json!({"rate_limits": null})),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.json());
    assert_eq!(h.get("/v1/users/partner").await.ok(200), before);

    let cleared = h
        .patch("/v1/users/partner", json!({"rate_limits": null}))
        .await
        .ok(200);
    assert_eq!(cleared["rate_limits"], json!([]));
    assert_eq!(
        h.get("/v1/users/partner").await.ok(200)["rate_limits"],
        json!([])
    );
}

#[tokio::test]
async fn leases_grant_slices_of_each_bucket_and_never_more_than_is_left() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 4, 100).await;
    let secret = created["secret"].as_str().unwrap();
    let buckets = json!([{"kind": "rate_limit", "name": "default", "want": 3},
                         {"kind": "credits", "want": 50}]);
    let lease = |body: Value| h.post_as(&service, "/v1/leases", body);
    let answer = lease(json!({"key": secret, "buckets": buckets})).await;
    assert_eq!(answer["code"], "ok");
    assert_eq!(answer["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(answer["grants"][0]["granted"], 3);
    // Three of four: valid for the 45 s the limit takes to win them back.
    assert_eq!(answer["grants"][0]["valid_ms"], 45_000);
    // A twentieth of the 100 credits left.
    assert_eq!(answer["grants"][1]["granted"], 5);
    let answer = lease(json!({"key": secret, "buckets": buckets})).await;
    assert_eq!(answer["grants"][0]["granted"], 1);
    let answer = lease(json!({"key": secret, "buckets": buckets})).await;
    assert_eq!(answer["grants"][0]["granted"], 0);
    assert!(answer["grants"][0]["retry_after"].as_u64().unwrap() >= 1);
    // What was leased is consumed at the daemon: 5 + 5 + 5 credits.
    let uri = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 85);
    // The client's address, when given, is checked; a bad request is 400.
    let answer = lease(json!({"key": secret, "client_ip": "192.0.2.1", "buckets": []})).await;
    assert_eq!(answer["code"], "ip_not_allowed");
    let bad = json!({"key": secret, "buckets": [{"kind": "credits", "want": 0}]});
    h.send("POST", "/v1/leases", Some(&service), Some(bad))
        .await
        .problem(400, "invalid_field");
    // Hostile hunt INFO 6: a bucket twice (twice the slice), or a name no limit can have.
    let credits = json!({"kind": "credits", "want": 5});
    let twice = json!({"key": secret, "buckets": [credits, credits]});
    let long = json!({"key": secret, "buckets": [{"kind": "rate_limit", "name": "n".repeat(38), "want": 1}]});
    let named = json!({"kind": "credits", "name": "x", "want": 5});
    let named_apart = json!({"key": secret, "buckets": [credits, named]});
    for (bad, field) in [(twice, "buckets"), (long, "name"), (named_apart, "name")] {
        let refused = h
            .send("POST", "/v1/leases", Some(&service), Some(bad))
            .await;
        assert_eq!(refused.problem(400, "invalid_field")["field"], field);
    }
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 85);
    let answer = lease(json!({"key": "lk_live_nope", "buckets": []})).await;
    assert_eq!(answer["valid"], false);
}

#[tokio::test]
async fn a_return_gives_back_only_what_this_caller_leased_from_the_key_s_current_credits() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 4, 100).await;
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}");
    let remaining = || async { h.get(&uri).await.ok(200)["credits"]["remaining"].clone() };
    assert_eq!(
        lease_credits(&h, &service, secret).await["grants"][0]["granted"],
        5
    );
    assert_eq!(remaining().await, 95);
    // More than was leased: only what was leased goes back, once.
    assert_eq!(
        give_back(&h, &service, id, 40).await,
        json!({"returned": 5})
    );
    assert_eq!(remaining().await, 100);
    assert_eq!(give_back(&h, &service, id, 1).await["returned"], 0);
    assert_eq!(remaining().await, 100);

    // Another caller gets nothing back of this one's lease.
    assert_eq!(
        lease_credits(&h, &service, secret).await["grants"][0]["granted"],
        5
    );
    let (_, other) = h.user_with_key("svc2", &["latchkey:verify"]).await;
    assert_eq!(give_back(&h, &other, id, 5).await["returned"], 0);
    assert_eq!(remaining().await, 95);

    // Setting the balance voids every slice reserved before, leased ones included.
    h.patch(&uri, json!({"credits": {"remaining": 50}}))
        .await
        .ok(200);
    assert_eq!(give_back(&h, &service, id, 5).await["returned"], 0);
    assert_eq!(remaining().await, 50);

    // A key without credits, an unknown id: nothing.
    let (user, plain_secret) = h.user_with_key("plain", &["orders:read"]).await;
    let plain = h
        .get(&format!(
            "/v1/keys?user_id={}",
            user["id"].as_str().unwrap()
        ))
        .await
        .ok(200);
    let plain = plain["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(give_back(&h, &service, &plain, 5).await["returned"], 0);
    assert_eq!(
        give_back(&h, &service, "0190b2a4-0000-7000-8000-000000000000", 5).await["returned"],
        0
    );
    // Bad input is a 400 and changes nothing.
    for bad in [
        json!({"key_id": id, "credits": 0}),
        json!({"key_id": id, "credits": 100_001}),
        json!({"key_id": id}),
        json!({"key_id": "not-a-uuid", "credits": 1}),
        json!({"key": secret, "credits": 1}),
    ] {
        h.send("POST", "/v1/leases/return", Some(&service), Some(bad))
            .await
            .problem(400, "invalid_field");
    }
    assert_eq!(remaining().await, 50);
    // A caller without `latchkey:verify` is refused.
    h.send(
        "POST",
        "/v1/leases/return",
        Some(&plain_secret),
        Some(json!({"key_id": id, "credits": 1})),
    )
    .await
    .problem(403, "insufficient_permission");
}

#[tokio::test]
async fn a_return_reaches_a_key_whose_user_has_limits_of_its_own() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 4, 100).await;
    // The lease is taken under the key's and its user's meters joined; the credits it
    // gives back belong to the key alone.
    h.patch(
        "/v1/users/partner",
        json!({"rate_limits": [{"name": "user", "limit": 1000, "window_seconds": 60}]}),
    )
    .await
    .ok(200);
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}");
    assert_eq!(
        lease_credits(&h, &service, secret).await["grants"][0]["granted"],
        5
    );
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 95);
    assert_eq!(give_back(&h, &service, id, 5).await["returned"], 5);
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 100);
}

/// Re-check s50 R1: a remote verifier admits the request that missed its cache on a `POST
/// /v1/verify`, and when the route then refuses its extra cost, gives that request's
/// credit back with its lease's unspent credits: the return takes it, for the caller that
/// verified only.
#[tokio::test]
async fn a_credit_a_verification_took_goes_back_with_the_caller_s_return() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 100, 100).await;
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}");
    let verify = json!({"key": secret, "client_ip": "10.1.2.3"});
    let answer = h.post_as(&service, "/v1/verify", verify.clone()).await;
    assert_eq!(answer["valid"], true, "{answer}");
    let (_, other) = h.user_with_key("svc2", &["latchkey:verify"]).await;
    assert_eq!(give_back(&h, &other, id, 1).await["returned"], 0);
    assert_eq!(give_back(&h, &service, id, 5).await, json!({"returned": 1}));
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 100);
    assert_eq!(give_back(&h, &service, id, 1).await["returned"], 0);
    // A refused verification took nothing, and gives nothing back.
    let outside = json!({"key": secret, "client_ip": "192.0.2.1"});
    let answer = h.post_as(&service, "/v1/verify", outside).await;
    assert_eq!(answer["code"], "ip_not_allowed", "{answer}");
    assert_eq!(give_back(&h, &service, id, 1).await["returned"], 0);
    assert_eq!(h.get(&uri).await.ok(200)["credits"]["remaining"], 100);
}

/// `POST /v1/leases` of up to 50 credits of `key` by `caller`; the answer.
async fn lease_credits(h: &Harness, caller: &str, key: &str) -> Value {
    let body = json!({"key": key, "buckets": [{"kind": "credits", "want": 50}]});
    h.post_as(caller, "/v1/leases", body).await
}

/// `POST /v1/leases/return` of `credits` credits of the key `key_id` by `caller`; the
/// answer.
async fn give_back(h: &Harness, caller: &str, key_id: &str, credits: u64) -> Value {
    let body = json!({"key_id": key_id, "credits": credits});
    h.post_as(caller, "/v1/leases/return", body).await
}

/// A verification its credits refuse counts against no limit (usage hunt s56 M1): a key
/// out of credits was `rate_limited` after its limit's worth of refusals, and stayed so
/// once credits were added, with nothing served.
#[tokio::test]
async fn a_request_refused_for_credits_uses_up_no_limit() {
    let h = Harness::new();
    let (service, created) = service_and_limited_key(&h, 3, 0).await;
    let secret = created["secret"].as_str().unwrap();
    let verify = || {
        h.post_as(
            &service,
            "/v1/verify",
            json!({"key": secret, "client_ip": "10.0.0.1"}),
        )
    };
    for _ in 0..5 {
        let answer = verify().await;
        assert_eq!(answer["code"], "usage_exceeded", "{answer}");
        assert_eq!(answer["limits"][0]["remaining"], 3, "{answer}");
        assert_eq!(answer["limits"][0]["reset_seconds"], 0, "{answer}");
    }
    let uri = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    h.patch(&uri, json!({"credits": {"add": 10}})).await.ok(200);
    for left in [2, 1, 0] {
        let answer = verify().await;
        assert_eq!(answer["code"], "ok", "{answer}");
        assert_eq!(answer["limits"][0]["remaining"], left, "{answer}");
    }
    assert_eq!(verify().await["code"], "rate_limited");
}

/// A service `svc` (`latchkey:verify`) and a key `k` for a user `partner` (`orders:read`),
/// from 10.0.0.0/8 only, with a limit of `limit` requests a minute and `credits` credits;
/// returns the service's secret and the key's record.
async fn service_and_limited_key(h: &Harness, limit: u32, credits: u32) -> (String, Value) {
    let (_, service) = h.user_with_key("svc", &["latchkey:verify"]).await;
    h.user("partner", &["orders:read"]).await;
    let created = h
        .created(
            "/v1/keys",
            json!({"name": "k", "user_id": "partner",
                   "rate_limits": [{"name": "default", "limit": limit, "window_seconds": 60}],
                   "credits": {"remaining": credits},
                   "allowed_ips": ["10.0.0.0/8"]}),
        )
        .await;
    (service, created)
}
