//! `/v1/keys`: the whole life of a key, lists, and the secret shown once.

use serde_json::{Value, json};

use crate::common::{Harness, keys_of, names, send};

const KEY_FIELDS: [&str; 20] = [
    "allowed_ips",
    "created_at",
    "credits",
    "created_by",
    "description",
    "enabled",
    "env",
    "expires_at",
    "id",
    "last_used_at",
    "meta",
    "name",
    "rate_limits",
    "prefix",
    "revoked_at",
    "rotated_from",
    "scopes",
    "status",
    "user_id",
    "usage_count",
];

fn sorted(fields: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn create_answers_the_record_and_the_secret_once() {
    let h = Harness::new();
    let user = h.user("bot", &["orders:*"]).await;
    let created = h
        .post(
            "/v1/keys",
            json!({"name": "ci", "user_id": "bot", "description": "nightly", "scopes": ["orders:read"],
                   "expires_at": "2999-01-02T03:04:05Z", "env": "test"}),
        )
        .await
        .ok(201);
    let mut fields = sorted(&KEY_FIELDS);
    fields.push("secret".into());
    fields.sort();
    assert_eq!(keys_of(&created), fields);
    assert_eq!(created["name"], "ci");
    assert_eq!(created["description"], "nightly");
    assert_eq!(created["user_id"], user["id"]);
    assert_eq!(created["env"], "test");
    assert_eq!(created["scopes"], json!(["orders:read"]));
    assert_eq!(created["expires_at"], "2999-01-02T03:04:05Z");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["revoked_at"], json!(null));
    assert_eq!(created["status"], "active");
    assert_eq!(created["last_used_at"], json!(null));
    assert_eq!(created["usage_count"], 0);
    assert_eq!(created["rotated_from"], json!(null));
    // created_by is the admin key that made it.
    let admin = h.store.verify(&h.admin).unwrap();
    assert_eq!(created["created_by"], json!(admin.key_id));
    let secret = created["secret"].as_str().unwrap();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(prefix.starts_with("lk_test_"));
    assert!(secret.starts_with(&format!("{prefix}_")));
    let principal = h.store.verify(secret).unwrap();
    assert!(principal.has("orders:read") && !principal.has("orders:write"));

    // Defaults: live, unrestricted (scopes null), no expiry, no description.
    let plain = h
        .created("/v1/keys", json!({"name": "plain", "user_id": user["id"]}))
        .await;
    assert_eq!(plain["env"], "live");
    assert_eq!(plain["scopes"], json!(null));
    assert_eq!(plain["expires_at"], json!(null));
    assert_eq!(plain["description"], json!(null));

    // Times given with an offset are answered in UTC.
    let offset = h
        .created(
            "/v1/keys",
            json!({"name": "o", "user_id": "bot", "expires_at": "2999-01-02T05:04:05.5+02:00"}),
        )
        .await;
    assert_eq!(offset["expires_at"], "2999-01-02T03:04:05.5Z");
}

/// Every 201 names the record it made in `Location` (RFC 9110 §15.3.2), which reads it.
#[tokio::test]
async fn a_created_record_is_named_by_its_location() {
    let h = Harness::new();
    let user = h.post("/v1/users", json!({"name": "bot"})).await;
    let group = h.post("/v1/groups", json!({"name": "ops"})).await;
    let key = h
        .post("/v1/keys", json!({"name": "k", "user_id": "bot"}))
        .await;
    let key_id = key.json()["id"].as_str().unwrap().to_owned();
    let rotated = h
        .post(
            &format!("/v1/keys/{key_id}/rotate"),
            json!({"grace_seconds": 60}),
        )
        .await;
    for (answer, collection) in [
        (user, "/v1/users"),
        (group, "/v1/groups"),
        (key, "/v1/keys"),
        (rotated, "/v1/keys"),
    ] {
        let body = answer.ok(201);
        let id = body["id"].as_str().unwrap();
        let location = answer.header("location").expect("a Location");
        assert_eq!(location, format!("{collection}/{id}"));
        assert_eq!(h.get(location).await.ok(200)["id"], id);
    }
}

/// An app that nests the admin router under a prefix gets `Location`s under the path it
/// was asked by (they named the root's `/v1/...`, which such an app does not serve), a
/// prefix with a parameter included.
#[tokio::test]
async fn a_nested_router_names_its_records_under_its_prefix() {
    let h = Harness::new();
    let app = axum::Router::new().nest("/{tenant}/admin", latchkey_admin::router(h.store.clone()));
    let post = |uri: String, body: Value| {
        let (app, admin) = (app.clone(), h.admin.clone());
        async move {
            let body = body.to_string();
            let json = Some("application/json");
            send(&app, "POST", &uri, Some(&admin), Some(&body), json).await
        }
    };
    let base = "/t1/admin/v1";
    let user = post(format!("{base}/users"), json!({"name": "bot"})).await;
    let group = post(format!("{base}/groups"), json!({"name": "ops"})).await;
    let key = post(
        format!("{base}/keys"),
        json!({"name": "k", "user_id": "bot"}),
    )
    .await;
    let old = key.json()["id"].as_str().unwrap().to_owned();
    let rotated = post(
        format!("{base}/keys/{old}/rotate"),
        json!({"grace_seconds": 60}),
    )
    .await;
    for (answer, collection) in [
        (user, "users"),
        (group, "groups"),
        (key, "keys"),
        (rotated, "keys"),
    ] {
        let id = answer.ok(201)["id"].as_str().unwrap().to_owned();
        let location = answer.header("location").expect("a Location");
        assert_eq!(location, format!("{base}/{collection}/{id}"));
        let read = send(&app, "GET", location, Some(&h.admin), None, None).await;
        assert_eq!(read.ok(200)["id"], id.as_str());
    }
}

#[tokio::test]
async fn the_secret_appears_only_in_create_and_rotate_answers() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "bot"})).await;
    let created = h.key_for("bot").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["secret"].as_str().unwrap().to_owned();
    let rotated = h.rotate(&id, 60).await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // No cache between keeps either answer.
    for answer in [
        h.post("/v1/keys", json!({"name": "k2", "user_id": "bot"}))
            .await,
        h.post(
            &format!("/v1/keys/{}/rotate", rotated["id"].as_str().unwrap()),
            json!({"grace_seconds": 0}),
        )
        .await,
    ] {
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{answer:?}"
        );
    }
    let new_id = rotated["id"].as_str().unwrap().to_owned();

    let mut texts = Vec::new();
    for uri in [
        "/v1/keys".to_owned(),
        format!("/v1/keys/{id}"),
        format!("/v1/keys/{new_id}"),
        format!("/v1/keys?q={}", &created["prefix"].as_str().unwrap()),
        "/v1/audit".to_owned(),
        "/v1/users/bot".to_owned(),
    ] {
        texts.push(h.get(&uri).await.text);
    }
    texts.push(
        h.patch(&format!("/v1/keys/{id}"), json!({"name": "renamed"}))
            .await
            .text,
    );
    texts.push(
        h.admin("POST", &format!("/v1/keys/{id}/revoke"), None)
            .await
            .text,
    );
    texts.push(h.post("/v1/verify", json!({"key": second})).await.text);
    texts.push(h.send("GET", "/metrics", None, None).await.text);
    for secret in [&first, &second] {
        // The secret part alone (after the display prefix) never shows either.
        let secret_part = &secret[secret.rfind('_').unwrap() + 1..];
        for text in &texts {
            assert!(!text.contains(secret_part), "secret leaked in {text}");
        }
    }
    for text in &texts[..3] {
        assert!(!text.contains("\"secret\""), "{text}");
    }
}

#[tokio::test]
async fn show_update_disable_enable_revoke_delete() {
    let h = Harness::new();
    let (_, secret) = h.user_with_key("bot", &["orders:read"]).await;
    let key = h.get("/v1/keys?user_id=bot").await.ok(200)["items"][0].clone();
    assert_eq!(keys_of(&key), sorted(&KEY_FIELDS));
    let id = key["id"].as_str().unwrap();
    let prefix = key["prefix"].as_str().unwrap();
    // By id and by display prefix.
    assert_eq!(
        h.get(&format!("/v1/keys/{id}")).await.ok(200)["id"],
        key["id"]
    );
    assert_eq!(
        h.get(&format!("/v1/keys/{prefix}")).await.ok(200)["id"],
        key["id"]
    );

    let updated = h
        .patch(
            &format!("/v1/keys/{prefix}"),
            json!({"name": "renamed", "description": "about"}),
        )
        .await
        .ok(200);
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["description"], "about");
    let cleared = h
        .patch(&format!("/v1/keys/{id}"), json!({"description": null}))
        .await
        .ok(200);
    assert_eq!(cleared["description"], json!(null));
    assert_eq!(cleared["name"], "renamed");

    let disabled = h
        .patch(&format!("/v1/keys/{id}"), json!({"enabled": false}))
        .await
        .ok(200);
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(h.store.verify(&secret).unwrap_err().code(), "key_disabled");
    let enabled = h
        .patch(&format!("/v1/keys/{id}"), json!({"enabled": true}))
        .await
        .ok(200);
    assert_eq!(enabled["status"], "active");
    assert!(h.store.verify(&secret).is_ok());

    h.delete(&format!("/v1/keys/{id}"))
        .await
        .problem(409, "key_not_revoked");
    assert!(h.store.verify(&secret).is_ok());

    let revoked = h
        .admin("POST", &format!("/v1/keys/{id}/revoke"), None)
        .await
        .ok(200);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(h.store.verify(&secret).unwrap_err().code(), "key_revoked");
    // Idempotent.
    let again = h
        .admin("POST", &format!("/v1/keys/{id}/revoke"), None)
        .await
        .ok(200);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    // Irreversible.
    h.patch(&format!("/v1/keys/{id}"), json!({"enabled": true}))
        .await
        .problem(409, "key_revoked");
    h.post(
        &format!("/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 0}),
    )
    .await
    .problem(409, "key_revoked");

    let r = h.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(r.status, 204);
    let uri = format!("/v1/keys/{id}");
    for method in ["GET", "DELETE"] {
        h.admin(method, &uri, None).await.problem(404, "not_found");
    }
    h.admin("POST", &format!("/v1/keys/{id}/revoke"), None)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn rotate_keeps_user_scopes_and_name_and_ends_the_old_key_after_the_grace() {
    let h = Harness::new();
    h.user("bot", &["a:*"]).await;
    let old = h
        .created(
            "/v1/keys",
            json!({"name": "k", "user_id": "bot", "scopes": ["a:read"], "env": "test"}),
        )
        .await;
    let old_id = old["id"].as_str().unwrap();
    let new = h.rotate(old_id, 3600).await;
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["rotated_from"], old["id"]);
    for field in ["user_id", "scopes", "name", "env"] {
        assert_eq!(new[field], old[field], "{field}");
    }
    assert!(h.store.verify(new["secret"].as_str().unwrap()).is_ok());
    // Within the grace period the old key still works, and now has an expiry.
    assert!(h.store.verify(old["secret"].as_str().unwrap()).is_ok());
    let old_now = h.get(&format!("/v1/keys/{old_id}")).await.ok(200);
    assert!(old_now["expires_at"].is_string());

    // A grace of 0 ends the old key at once.
    let newer = h
        .post(
            &format!("/v1/keys/{}/rotate", new["id"].as_str().unwrap()),
            json!({"grace_seconds": 0}),
        )
        .await
        .ok(201);
    assert_eq!(
        h.store
            .verify(new["secret"].as_str().unwrap())
            .unwrap_err()
            .code(),
        "key_expired"
    );
    assert!(h.store.verify(newer["secret"].as_str().unwrap()).is_ok());

    let rotate_old = format!("/v1/keys/{old_id}/rotate");
    for grace in [
        json!({}),
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": 99_999_999_999u64}),
    ] {
        let bad = h
            .post(&rotate_old, grace.clone())
            .await
            .problem(400, "invalid_field");
        assert_eq!(bad["field"], "grace_seconds", "{grace}");
    }
    h.post(
        "/v1/keys/lk_live_000000000000/rotate",
        json!({"grace_seconds": 0}),
    )
    .await
    .problem(404, "not_found");
}

#[tokio::test]
async fn create_errors() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "bot"})).await;
    let before = h.store.stats().unwrap().keys.values().sum::<u64>();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"name": "k", "user_id": "nobody"}),
            404,
            "not_found",
            "user_id",
        ),
        (
            json!({"name": "k", "user_id": "01890000-0000-7000-8000-000000000000"}),
            404,
            "not_found",
            "user_id",
        ),
        (
            json!({"name": "k", "user_id": "bot", "expires_at": "tomorrow"}),
            400,
            "invalid_field",
            "expires_at",
        ),
        (
            json!({"name": "k", "user_id": "bot", "expires_at": "2999-01-02 03:04:05"}),
            400,
            "invalid_field",
            "expires_at",
        ),
        (
            json!({"name": "k", "user_id": "bot", "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_field",
            "expires_at",
        ),
        (
            json!({"name": "k", "user_id": "bot", "scopes": ["ORDERS"]}),
            400,
            "invalid_field",
            "scopes",
        ),
        (
            json!({"name": "k", "user_id": "bot", "env": "prod"}),
            400,
            "invalid_field",
            "env",
        ),
        (
            json!({"name": "", "user_id": "bot"}),
            400,
            "invalid_field",
            "name",
        ),
        (json!({"name": "k"}), 400, "invalid_field", "user_id"),
        (
            json!({"name": "k", "user_id": "bot", "secret": "mine"}),
            400,
            "invalid_field",
            "secret",
        ),
        (
            json!({"name": 5, "user_id": "bot"}),
            400,
            "invalid_field",
            "name",
        ),
        (
            json!({"name": "k", "user_id": "bot", "description": "x".repeat(2000)}),
            400,
            "invalid_field",
            "description",
        ),
    ];
    for (body, status, code, field) in cases {
        let problem = h.post("/v1/keys", body.clone()).await.problem(status, code);
        assert_eq!(problem["field"], field, "{body}");
    }
    assert_eq!(h.store.stats().unwrap().keys.values().sum::<u64>(), before);
}

#[tokio::test]
async fn list_filters_searches_sorts_and_pages() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "alice"})).await;
    h.created("/v1/users", json!({"name": "bob"})).await;
    let mut ids = Vec::new();
    for (name, user, description) in [
        ("charlie", "alice", "billing export"),
        ("alpha", "alice", "reporting"),
        ("bravo", "bob", "billing import"),
        ("delta", "bob", "other"),
    ] {
        let k = h
            .created(
                "/v1/keys",
                json!({"name": name, "user_id": user, "description": description}),
            )
            .await;
        ids.push(k["id"].as_str().unwrap().to_owned());
    }
    // The admin key exists too: 5 in all, creation order by default.
    let all = h.get("/v1/keys").await.ok(200);
    assert_eq!(names(&all), ["admin", "charlie", "alpha", "bravo", "delta"]);
    assert_eq!(all["next_cursor"], json!(null));
    assert_eq!(
        names(&h.get("/v1/keys?user_id=alice").await.ok(200)),
        ["charlie", "alpha"]
    );
    let bob = h.get("/v1/users/bob").await.ok(200);
    let by_id = h
        .get(&format!("/v1/keys?user_id={}", bob["id"].as_str().unwrap()))
        .await
        .ok(200);
    assert_eq!(names(&by_id), ["bravo", "delta"]);
    assert_eq!(
        names(&h.get("/v1/keys?q=BILLING").await.ok(200)),
        ["charlie", "bravo"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?q=billing&user_id=bob").await.ok(200)),
        ["bravo"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?sort=name").await.ok(200)),
        ["admin", "alpha", "bravo", "charlie", "delta"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?sort=-name").await.ok(200)),
        ["delta", "charlie", "bravo", "alpha", "admin"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?sort=-created_at&limit=2").await.ok(200)),
        ["delta", "bravo"]
    );
    // Search by display prefix.
    let alpha = h.get(&format!("/v1/keys/{}", ids[1])).await.ok(200);
    let by_prefix = h
        .get(&format!("/v1/keys?q={}", alpha["prefix"].as_str().unwrap()))
        .await
        .ok(200);
    assert_eq!(names(&by_prefix), ["alpha"]);

    // Status filter.
    h.admin("POST", &format!("/v1/keys/{}/revoke", ids[2]), None)
        .await
        .ok(200);
    h.patch(&format!("/v1/keys/{}", ids[3]), json!({"enabled": false}))
        .await
        .ok(200);
    assert_eq!(
        names(&h.get("/v1/keys?status=revoked").await.ok(200)),
        ["bravo"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?status=disabled").await.ok(200)),
        ["delta"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?status=active&sort=name").await.ok(200)),
        ["admin", "alpha", "charlie"]
    );
    assert_eq!(
        names(&h.get("/v1/keys?status=expired").await.ok(200)),
        Vec::<String>::new()
    );
    // An empty value counts as absent.
    assert_eq!(
        names(&h.get("/v1/keys?status=&q=&user_id=").await.ok(200)).len(),
        5
    );

    // Cursor pagination walks every key once, in order.
    let mut seen = Vec::new();
    let mut uri = "/v1/keys?sort=name&limit=2".to_owned();
    for _ in 0..10 {
        let page = h.get(&uri).await.ok(200);
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/keys?sort=name&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["admin", "alpha", "bravo", "charlie", "delta"]);
}

#[tokio::test]
async fn list_errors_name_the_parameter() {
    let h = Harness::new();
    for (query, status, code, field) in [
        ("status=gone", 400, "invalid_field", "status"),
        ("env=prod", 400, "invalid_field", "env"),
        ("sort=size", 400, "invalid_field", "sort"),
        ("limit=0", 400, "invalid_field", "limit"),
        ("limit=1001", 400, "invalid_field", "limit"),
        ("limit=ten", 400, "invalid_field", "limit"),
        ("cursor=zz", 400, "invalid_field", "cursor"),
        ("colour=red", 400, "invalid_field", "colour"),
        (
            "status=active&status=revoked",
            400,
            "invalid_field",
            "status",
        ),
        ("user_id=nobody", 404, "not_found", "user_id"),
    ] {
        let problem = h
            .get(&format!("/v1/keys?{query}"))
            .await
            .problem(status, code);
        assert_eq!(problem["field"], field, "{query}");
    }
    // Bytes that are no UTF-8 once decoded: refused, not searched for as U+FFFD.
    let problem = h
        .get("/v1/keys?q=%FF%FE")
        .await
        .problem(400, "invalid_field");
    assert!(
        problem["detail"].as_str().unwrap().contains("UTF-8"),
        "{problem}"
    );
    h.get("/v1/keys?q=%EF%BF%BD").await.ok(200);
}

#[tokio::test]
async fn list_filters_by_env() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "alice"})).await;
    for (name, env) in [("one", "live"), ("two", "test"), ("three", "test")] {
        h.created(
            "/v1/keys",
            json!({"name": name, "user_id": "alice", "env": env}),
        )
        .await;
    }
    assert_eq!(
        names(&h.get("/v1/keys?env=test").await.ok(200)),
        ["two", "three"]
    );
    // The admin key is live too.
    assert_eq!(
        names(&h.get("/v1/keys?env=live").await.ok(200)),
        ["admin", "one"]
    );
    // With the other filters and a sort.
    assert_eq!(
        names(
            &h.get("/v1/keys?env=test&user_id=alice&sort=-name")
                .await
                .ok(200)
        ),
        ["two", "three"]
    );
}
