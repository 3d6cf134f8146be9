//! `POST /v1/verify`.

use serde_json::{Value, json};

use crate::common::{Harness, Resp, keys_of, post_with_headers};

#[tokio::test]
async fn outcomes() {
    let h = Harness::new();
    let (_, service) = h
        .user_with_key("orders-service", &["latchkey:verify"])
        .await;
    let user = h
        .created(
            "/v1/users",
            json!({"name": "app", "permissions": ["orders:*"], "tenant_id": "t1"}),
        )
        .await;
    let key = h
        .created(
            "/v1/keys",
            json!({"name": "app key", "user_id": "app", "scopes": ["orders:read"]}),
        )
        .await;
    let secret = key["secret"].as_str().unwrap();
    let verify = |body| h.post_as(&service, "/v1/verify", body);

    let valid = verify(json!({"key": secret})).await;
    assert_eq!(keys_of(&valid), ["code", "principal", "valid"]);
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "ok");
    let principal = &valid["principal"];
    assert_eq!(
        keys_of(principal),
        [
            "env",
            "key_id",
            "key_name",
            "organization_id",
            "permissions",
            "prefix",
            "tenant_id",
            "user_id",
            "user_name"
        ]
    );
    assert_eq!(principal["key_id"], key["id"]);
    assert_eq!(principal["prefix"], key["prefix"]);
    assert_eq!(principal["key_name"], "app key");
    assert_eq!(principal["env"], "live");
    assert_eq!(principal["user_id"], user["id"]);
    assert_eq!(principal["user_name"], "app");
    assert_eq!(principal["tenant_id"], "t1");
    assert_eq!(principal["organization_id"], json!(null));
    assert_eq!(principal["permissions"], json!(["orders:read"]));

    let held = verify(json!({"key": secret, "permissions": ["orders:read"]})).await;
    assert_eq!(
        (held["valid"].clone(), held["code"].clone()),
        (json!(true), json!("ok"))
    );

    let lacking =
        verify(json!({"key": secret, "permissions": ["orders:read", "orders:write"]})).await;
    assert_eq!(lacking["valid"], false);
    assert_eq!(lacking["code"], "insufficient_permission");
    assert_eq!(lacking["principal"]["key_id"], key["id"]);

    let key_uri = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    for garbage in ["", "nope", "lk_live_AAAAAAAAAAAA_BBBB"] {
        let r = verify(json!({"key": garbage})).await;
        assert_eq!(r, json!({"valid": false, "code": "invalid_key"}));
    }

    h.patch(&key_uri, json!({"enabled": false})).await.ok(200);
    assert_eq!(
        verify(json!({"key": secret})).await,
        json!({"valid": false, "code": "key_disabled"})
    );
    h.patch("/v1/users/app", json!({"enabled": false}))
        .await
        .ok(200);
    h.patch(&key_uri, json!({"enabled": true})).await.ok(200);
    assert_eq!(
        verify(json!({"key": secret})).await,
        json!({"valid": false, "code": "user_disabled"})
    );
    h.revoke(&key).await;
    assert_eq!(
        verify(json!({"key": secret})).await,
        json!({"valid": false, "code": "key_revoked"})
    );

    let expiring = h
        .created(
            "/v1/keys",
            json!({"name": "short", "user_id": "orders-service"}),
        )
        .await;
    h.post(
        &format!("/v1/keys/{}/rotate", expiring["id"].as_str().unwrap()),
        json!({"grace_seconds": 0}),
    )
    .await
    .ok(201);
    let r = verify(json!({"key": expiring["secret"]})).await;
    assert_eq!(r, json!({"valid": false, "code": "key_expired"}));
}

#[tokio::test]
async fn errors() {
    let h = Harness::new();
    #[rustfmt::skip]
    h.field_problems(400, "invalid_field", &[
        ("POST /v1/verify", json!({"key": "x", "permissions": ["Orders"]}), "permissions"),
        ("POST /v1/verify", json!({}), "key"),
        ("POST /v1/verify", json!({"key": "x", "scope": "a"}), "scope"),
        // Over the bound the OpenAPI document gives, even for a key that is not valid.
        ("POST /v1/verify", json!({"key": "x", "cost": 1_000_001}), "cost"),
    ]).await;
    let (_, reader) = h.user_with_key("reader", &["latchkey:keys:read"]).await;
    h.request_as(&reader, "POST /v1/verify", &json!({"key": h.admin}))
        .await
        .problem(403, "insufficient_permission");
}

#[tokio::test]
async fn usage_reports_add_to_a_keys_figures() {
    let h = Harness::new();
    let (_, service) = h.user_with_key("edge", &["latchkey:verify"]).await;
    h.user("app", &["x"]).await;
    let key = h.key_for("app").await;
    let id = key["id"].as_str().unwrap();
    // A use can be no older than the key: its creation time is the earliest accepted.
    let created = key["created_at"].clone();
    let report = json!({"items": [
        {"key_id": id, "count": 7, "last_used_at": created},
        {"key_id": "01900000-0000-7000-8000-000000000000", "count": 1, "last_used_at": "2026-01-02T03:04:05Z"},
    ]});
    let accepted = h
        .send("POST", "/v1/usage", Some(&service), Some(report))
        .await;
    assert_eq!(accepted.status.as_u16(), 204, "{}", accepted.text);
    let seen = h.get(&format!("/v1/keys/{id}")).await.ok(200);
    assert_eq!(seen["usage_count"], 7);
    assert_eq!(seen["last_used_at"], created);

    let zero =
        json!({"items": [{"key_id": id, "count": 0, "last_used_at": "2026-01-02T03:04:05Z"}]});
    let bad = h
        .send("POST", "/v1/usage", Some(&service), Some(zero))
        .await
        .problem(400, "invalid_field");
    assert_eq!(bad["field"], "items[0].count");
    // The admin key holds `*`, but a key without latchkey:verify may not report.
    let (_, reader) = h.user_with_key("reader", &["latchkey:keys:read"]).await;
    h.request_as(&reader, "POST /v1/usage", &json!({"items": []}))
        .await
        .problem(403, "insufficient_permission");
    assert_eq!(
        h.get(&format!("/v1/keys/{id}")).await.ok(200)["usage_count"],
        7
    );
}

/// A report sent again under its `Idempotency-Key` (its answer was lost) is recorded once,
/// per caller; another report under the key is refused; one that was refused is not
/// remembered; a malformed key is refused.
#[tokio::test]
async fn a_usage_report_sent_again_under_its_idempotency_key_is_recorded_once() {
    let h = Harness::new();
    let (_, service) = h.user_with_key("edge", &["latchkey:verify"]).await;
    let (_, other) = h.user_with_key("edge2", &["latchkey:verify"]).await;
    h.user("app", &["x"]).await;
    let key = h.key_for("app").await;
    let id = key["id"].as_str().unwrap();
    let report = json!({"items": [{"key_id": id, "count": 2, "last_used_at": key["created_at"]}]});
    let uses = || async { h.get(&format!("/v1/keys/{id}")).await.ok(200)["usage_count"].clone() };
    for _ in 0..3 {
        recorded(&h, &service, "report-1", &report).await;
    }
    assert_eq!(uses().await, 2);
    // The key with another report: refused, not taken for the first (RFC hunt L6).
    let other_report =
        json!({"items": [{"key_id": id, "count": 5, "last_used_at": key["created_at"]}]});
    report_as(&h, &service, "report-1", &other_report)
        .await
        .problem(422, "idempotency_key_reused");
    assert_eq!(uses().await, 2);
    // Another caller's key of the same text is its own report.
    recorded(&h, &other, "report-1", &report).await;
    assert_eq!(uses().await, 4);
    // A refused report (a use from before the key existed) leaves its key free.
    let early =
        json!({"items": [{"key_id": id, "count": 1, "last_used_at": "2020-01-01T00:00:00Z"}]});
    let refused = report_as(&h, &service, "report-2", &early).await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.text);
    recorded(&h, &service, "report-2", &report).await;
    assert_eq!(uses().await, 6);
    let malformed = report_as(&h, &service, "two words", &report)
        .await
        .problem(400, "invalid_field");
    assert_eq!(malformed["field"], "Idempotency-Key");
    assert_eq!(uses().await, 6);
}

/// `POST /v1/usage` of `report` as `caller`, under the `Idempotency-Key` `key`.
async fn report_as(h: &Harness, caller: &str, key: &str, report: &Value) -> Resp {
    let headers = [("idempotency-key", key)];
    post_with_headers(&h.app, "/v1/usage", caller, report, &headers).await
}

/// [`report_as`], answered 204.
async fn recorded(h: &Harness, caller: &str, key: &str, report: &Value) {
    let answer = report_as(h, caller, key, report).await;
    assert_eq!(answer.status.as_u16(), 204, "{}", answer.text);
}
