//! Usage control through the real daemon and the CLI: the flags round-trip, and the daemon's
//! own API (behind the same layer) refuses with 429 and 403 as PRODUCT.md says.

use serde_json::json;

use crate::harness::{Daemon, Fixture, until_next_month};

#[test]
fn cli_flags_round_trip_and_the_daemon_enforces_them() {
    let fx = Fixture::new();
    fx.user("partner", "latchkey:keys:read");
    let (created, secret) = fx.key(
        "partner",
        "metered",
        &[
            "--meta",
            r#"{"plan":"pro"}"#,
            "--rate-limit",
            "2/60s",
            "--rate-limit",
            "100/1h,hourly",
            "--credits",
            "3",
            "--refill",
            "3/month",
            "--allow-ip",
            "127.0.0.0/8,::1/128",
        ],
    );
    assert_eq!(created["meta"]["plan"], "pro");
    assert_eq!(created["rate_limits"][0]["limit"], 2);
    assert_eq!(created["rate_limits"][0]["window_seconds"], 60);
    assert_eq!(created["rate_limits"][1]["name"], "hourly");
    assert_eq!(created["credits"]["remaining"], 3);
    assert_eq!(created["credits"]["refill"]["interval"], "month");
    assert_eq!(created["allowed_ips"][1], "::1/128");
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = fx.cli(&["keys", "show", &id]).ok();
    assert!(shown.stdout.contains("rate_limits"), "{shown:#?}");
    assert!(shown.stdout.contains("3 (refill 3/month)"), "{shown:#?}");
    // The refill alone changes, the balance stays; a day of the month shows as typed.
    let refilled = fx.json(&["keys", "update", &id, "--refill", "3/month@9"]);
    assert_eq!(refilled["credits"]["remaining"], 3, "{refilled}");
    assert_eq!(
        refilled["credits"]["refill"]["day_of_month"], 9,
        "{refilled}"
    );
    let shown = fx.cli(&["keys", "show", &id]).ok();
    assert!(shown.stdout.contains("3 (refill 3/month@9)"), "{shown:#?}");
    fx.cli(&[
        "keys", "add", "--name", "n", "--user", "partner", "--refill", "1/day",
    ])
    .fails(1, "--credits");
    let back = fx.json(&["keys", "update", &id, "--refill", "3/month"]);
    assert_eq!(back["credits"]["remaining"], 3, "{back}");
    // `--clear-refill` removes the refill and keeps the balance (audit s60 L2: only the
    // API could); the refill put back.
    let cleared = fx.json(&["keys", "update", &id, "--clear-refill"]);
    assert_eq!(cleared["credits"]["remaining"], 3, "{cleared}");
    assert!(cleared["credits"]["refill"].is_null(), "{cleared}");
    let shown = fx.cli(&["keys", "show", &id]).ok();
    assert!(!shown.stdout.contains("refill"), "{shown:#?}");
    let back = fx.json(&["keys", "update", &id, "--refill", "3/month"]);
    assert_eq!(back["credits"]["remaining"], 3, "{back}");

    // `latchkey verify` checks as a request from an address would; at cost 0 it spends
    // nothing of the limits and credits used below.
    let refused = fx.cli(&["verify", &secret]);
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stdout.contains("ip_not_allowed"), "{refused:#?}");
    for _ in 0..3 {
        let checked = fx.cli(&["verify", &secret, "--client-ip", "127.0.0.1", "--cost", "0"]);
        assert_eq!(checked.code, 0, "{checked:#?}");
    }
    let call = || fx.daemon.http("GET", "/v1/keys", Some(&secret), None);
    assert_eq!(call().status, 200);
    assert_eq!(call().status, 200);
    let limited = call();
    limited.problem(429, "rate_limited");
    assert_eq!(limited.headers["ratelimit-policy"], "\"default\";q=2;w=60");
    assert!(limited.headers.contains_key("retry-after"));
    assert!(limited.headers.contains_key("ratelimit"));

    // Lift the short limit: one credit left, then none.
    fx.json(&["keys", "update", &id, "--rate-limit", "100/60s"]);
    assert_eq!(call().status, 200);
    // Used up until the 1st of next month, 00:00 UTC: the answer says when.
    let used_up = call();
    let body = used_up.problem(429, "usage_exceeded");
    let retry: u64 = used_up.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry.abs_diff(until_next_month()) <= 5, "{used_up:#?}");
    assert_eq!(body["retry_after"], retry, "{used_up:#?}");
    let verified = fx.http(
        "POST",
        "/v1/verify",
        Some(json!({"key": secret, "cost": 0, "client_ip": "127.0.0.1"})),
    );
    assert_eq!(verified.body["code"], "usage_exceeded", "{verified:#?}");
    let refill = verified.body["retry_after"].as_u64().unwrap();
    assert!(refill.abs_diff(retry) <= 5, "{verified:#?}");
    let credits = &verified.body["limits"].as_array().unwrap().last().unwrap();
    assert_eq!(credits["name"], "credits", "{verified:#?}");
    assert_eq!(credits["remaining"], 0, "{verified:#?}");
    assert_eq!(credits["reset_seconds"], refill, "{verified:#?}");
    let added = fx.json(&["keys", "update", &id, "--add-credits", "2"]);
    assert_eq!(added["credits"]["remaining"], 2);
    assert_eq!(call().status, 200);

    // An allowlist elsewhere refuses 127.0.0.1.
    fx.json(&["keys", "update", &id, "--allow-ip", "10.0.0.0/8"]);
    call().problem(403, "ip_not_allowed");
    // One control cleared, the others kept.
    let kept = fx.json(&["keys", "show", &id]);
    let one = fx.json(&["keys", "update", &id, "--clear-rate-limits"]);
    assert_eq!(one["rate_limits"], serde_json::json!([]), "{one}");
    for field in ["allowed_ips", "meta", "credits"] {
        assert_eq!(one[field], kept[field], "{field}");
    }
    call().problem(403, "ip_not_allowed");
    let open = fx.json(&["keys", "update", &id, "--clear-allowed-ips"]);
    assert_eq!(open["allowed_ips"], serde_json::json!([]), "{open}");
    assert_eq!(open["credits"], kept["credits"]);
    let cleared = fx.json(&["keys", "update", &id, "--clear-usage-control"]);
    assert!(cleared["meta"].is_null() && cleared["credits"].is_null());
    assert_eq!(call().status, 200);

    // Bad flags: a clear error and nothing changed.
    let before = fx.json(&["keys", "show", &id]);
    fx.cli(&["keys", "update", &id, "--meta", "{not json"])
        .fails(1, "--meta");
    fx.cli(&["keys", "update", &id, "--rate-limit", "100"])
        .fails(1, "--rate-limit");
    fx.cli(&["keys", "update", &id, "--allow-ip", "10.0.0.0/40"])
        .fails(1, "allowed_ips");
    assert_eq!(fx.json(&["keys", "show", &id]), before);
}

#[test]
fn user_rate_limits_round_trip_and_bind_all_its_keys() {
    let fx = Fixture::new();
    let created = fx.json(&[
        "users",
        "add",
        "--name",
        "partner",
        "--permissions",
        "latchkey:keys:read",
        "--rate-limit",
        "3/60s",
    ]);
    assert_eq!(
        created["rate_limits"],
        json!([{"name": "default", "limit": 3, "window_seconds": 60}])
    );
    let shown = fx.cli(&["users", "show", "partner"]).ok();
    assert!(shown.stdout.contains("3/60s default"), "{shown:#?}");
    let (_, a) = fx.key("partner", "a", &[]);
    let (_, b) = fx.key("partner", "b", &[]);
    // A cost above the whole limit is refused and takes nothing: the limit is full.
    let refused = fx.http("POST", "/v1/verify", Some(json!({"key": a, "cost": 4})));
    assert_eq!(refused.body["code"], "rate_limited", "{refused:#?}");
    assert_eq!(
        refused.body["limits"],
        json!([{"name": "user:default", "limit": 3, "window_seconds": 60,
                "remaining": 3, "reset_seconds": 0}])
    );
    let call = |key: &str| fx.daemon.http("GET", "/v1/keys", Some(key), None);
    assert_eq!(call(&a).status, 200);
    assert_eq!(call(&b).status, 200);
    // `/v1/verify` reports the user's limit as the request leaves it: one left.
    let verified = fx.http("POST", "/v1/verify", Some(json!({"key": a})));
    assert_eq!(verified.status, 200, "{verified:#?}");
    assert_eq!(verified.body["code"], "ok");
    assert_eq!(verified.body["limits"][0]["name"], "user:default");
    assert_eq!(verified.body["limits"][0]["remaining"], 0);
    // Three in all, whichever key: the next is refused for both.
    for key in [&b, &a] {
        let limited = call(key);
        limited.problem(429, "rate_limited");
        assert_eq!(
            limited.headers["ratelimit-policy"],
            "\"user:default\";q=3;w=60"
        );
    }

    // Bad input over HTTP and the CLI: 400 / exit 1, and the user unchanged.
    let before = fx.json(&["users", "show", "partner"]);
    let bad = json!({"rate_limits": [{"name": "a b", "limit": 1, "window_seconds": 1}]});
    fx.http("PATCH", "/v1/users/partner", Some(bad))
        .problem(400, "invalid_field");
    let zero = json!({"rate_limits": [{"name": "x", "limit": 0, "window_seconds": 60}]});
    fx.http("PATCH", "/v1/users/partner", Some(zero))
        .problem(400, "invalid_field");
    fx.cli(&["users", "update", "partner", "--rate-limit", "3"])
        .fails(1, "--rate-limit");
    assert_eq!(fx.json(&["users", "show", "partner"]), before);

    // `null` clears them: both keys pass again at once.
    let cleared = fx.http(
        "PATCH",
        "/v1/users/partner",
        Some(json!({"rate_limits": null})),
    );
    assert_eq!(cleared.status, 200, "{cleared:#?}");
    assert_eq!(cleared.body["rate_limits"], json!([]));
    assert_eq!(call(&a).status, 200);
    assert_eq!(call(&b).status, 200);
    // The CLI sets and clears them too.
    let set = fx.json(&["users", "update", "partner", "--rate-limit", "1/1h,hourly"]);
    assert_eq!(set["rate_limits"][0]["name"], "hourly");
    assert_eq!(call(&b).status, 200);
    call(&a).problem(429, "rate_limited");
    let cleared = fx.json(&["users", "update", "partner", "--clear-rate-limits"]);
    assert_eq!(cleared["rate_limits"], json!([]));
    assert_eq!(call(&a).status, 200);
}

/// Credits through a `kill -9`: the daemon spends reserved slices, so what it had granted
/// stays spent and what it held unspent is lost, never granted twice; a graceful stop gives
/// the unspent slice back.
#[test]
fn credits_are_never_granted_twice_across_a_kill_9() {
    let fx = Fixture::new();
    fx.user("partner", "latchkey:keys:read");
    let bought = 100;
    let (created, secret) = fx.key("partner", "metered", &["--credits", &bought.to_string()]);
    let id = created["id"].as_str().unwrap().to_owned();
    let (admin, db) = (fx.admin.clone(), fx.db());
    let Fixture { dir, daemon, .. } = fx;
    let remaining = |daemon: &Daemon| {
        let shown = daemon.http("GET", &format!("/v1/keys/{id}"), Some(&admin), None);
        shown.body["credits"]["remaining"].as_u64().unwrap()
    };
    let spend = |daemon: &Daemon, at_most: u64| {
        let mut accepted = 0;
        while accepted < at_most {
            let answer = daemon.http("GET", "/v1/keys?limit=1", Some(&secret), None);
            if answer.status == 429 {
                answer.problem(429, "usage_exceeded");
                break;
            }
            assert_eq!(answer.status, 200, "{answer:#?}");
            accepted += 1;
        }
        accepted
    };

    let mut accepted = spend(&daemon, 30);
    assert_eq!(accepted, 30);
    daemon.kill();
    let daemon = Daemon::start(&db);
    let left = remaining(&daemon);
    let lost = bought - accepted - left;
    assert!(
        left <= bought - accepted,
        "{left} left after {accepted} accepted"
    );
    // At most the unspent slice, which is smaller than what was spent before it.
    assert!(lost < accepted, "{lost} lost");

    // A graceful stop gives the unspent slice back: nothing lost.
    accepted += spend(&daemon, 10);
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    let daemon = Daemon::start(&db);
    assert_eq!(remaining(&daemon), bought - accepted - lost);

    // Spent to the end: every credit granted once, those lost to the crash never.
    accepted += spend(&daemon, bought);
    assert_eq!(accepted, bought - lost);
    assert_eq!(remaining(&daemon), 0);
    drop(daemon);
    drop(dir);
}

/// A key's `meta` nests at most 16 levels. Deeper, it was taken (4 KiB holds 126 levels),
/// and then every client that read the key stopped at its JSON parser's depth limit:
/// `keys list`, the console's key list and `latchkey verify`.
#[test]
fn meta_nested_too_deep_is_refused_and_what_is_taken_stays_readable() {
    let fx = Fixture::new();
    fx.user("partner", "latchkey:keys:read");
    // An object `levels` deep.
    let nested = |levels: usize| {
        let mut meta = json!({"end": true});
        for _ in 1..levels {
            meta = json!({ "a": meta });
        }
        meta
    };
    let create = |meta| json!({"name": "deep", "user_id": "partner", "meta": meta});
    for levels in [17, 126] {
        let refused = fx.http("POST", "/v1/keys", Some(create(nested(levels))));
        assert_eq!(refused.problem(400, "invalid_field")["field"], "meta");
    }
    let meta = nested(16).to_string();
    let (created, secret) = fx.key("partner", "deep", &["--meta", &meta]);
    let id = created["id"].as_str().unwrap();
    let patch = json!({ "meta": nested(126) });
    let refused = fx.http("PATCH", &format!("/v1/keys/{id}"), Some(patch));
    assert_eq!(refused.problem(400, "invalid_field")["field"], "meta");

    // The key as taken: 16 levels, unchanged, read by every client.
    let listed = fx.json(&["keys", "list", "--user", "partner"]);
    assert_eq!(listed["items"][0]["meta"], nested(16), "{listed}");
    fx.cli(&["keys", "list"]).ok();
    assert!(fx.verifies(&secret, &["latchkey:keys:read"]));

    // A key's full text in `meta`, as a value or a member's name, nested or not: refused
    // as in a name (a secret is never stored in plain), and not echoed.
    for meta in [
        json!({"note": format!("backup {secret}")}),
        json!({"a": [{"b": secret}]}),
        json!({ secret.clone(): 1 }),
    ] {
        let refused = fx.http("POST", "/v1/keys", Some(create(meta.clone())));
        assert_eq!(refused.problem(400, "invalid_field")["field"], "meta");
        assert!(!refused.text.contains(&secret), "{}", refused.text);
        let refused = fx.http(
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(json!({ "meta": meta })),
        );
        assert_eq!(refused.problem(400, "invalid_field")["field"], "meta");
    }
}
