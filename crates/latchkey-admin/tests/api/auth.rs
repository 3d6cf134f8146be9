//! Authentication in front of `/v1`, per-route permissions, and the operator router.

use serde_json::json;

use crate::common::{Harness, post_json, send, send_with_header, send_with_headers};

#[tokio::test]
async fn no_key_is_401_missing_key_with_a_realm_challenge() {
    let h = Harness::new();
    for (method, uri) in [
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/nowhere"),
    ] {
        let r = h.send(method, uri, None, None).await;
        r.problem(401, "missing_key");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"latchkey\"")
        );
    }
    let r = send(&h.app, "GET", "/v1/keys", None, None, None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_key_that_does_not_authenticate_is_401_invalid_token() {
    let h = Harness::new();
    let (_, secret) = h.user_with_key("bot", &["latchkey:keys:read"]).await;
    let wrong_secret = {
        let mut s = secret.clone();
        // Same id, another well-formed secret: still the same answer as an unknown id.
        let key = latchkey_core::ApiKey::generate(h.store.prefix(), latchkey_core::Env::Live);
        s.truncate(s.rfind('_').unwrap());
        format!(
            "{s}_{}",
            &key.expose()[key.expose().rfind('_').unwrap() + 1..]
        )
    };
    for presented in [
        "garbage",
        "lk_live_AAAAAAAAAAAA_BBBB",
        wrong_secret.as_str(),
    ] {
        let r = h.send("GET", "/v1/keys", Some(presented), None).await;
        r.problem(401, "invalid_key");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"latchkey\", error=\"invalid_token\"")
        );
    }
    let id = h.store.verify(&secret).unwrap().key_id;
    h.admin("POST", &format!("/v1/keys/{id}/revoke"), None)
        .await
        .ok(200);
    let r = h.send("GET", "/v1/keys", Some(&secret), None).await;
    r.problem(401, "key_revoked");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = Harness::new();
    let (mixed_case, basic) = (format!("bEaReR {}", h.admin), format!("Basic {}", h.admin));
    let r = send_with_header(&h.app, "/v1/keys", "authorization", &mixed_case).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send_with_header(&h.app, "/v1/keys", "authorization", &basic).await;
    r.problem(401, "missing_key");
}

#[tokio::test]
async fn several_authorization_headers_are_400_invalid_request() {
    let h = Harness::new();
    let bearer = format!("Bearer {}", h.admin);
    let twice = [("authorization", bearer.as_str()); 2];
    let r = send_with_headers(&h.app, "/v1/keys", &twice).await;
    r.problem(400, "invalid_request");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"latchkey\", error=\"invalid_request\"")
    );
}

#[tokio::test]
async fn each_route_requires_its_permission() {
    let h = Harness::new();
    let (_, reader) = h.user_with_key("reader", &["latchkey:keys:read"]).await;
    assert_eq!(
        h.send("GET", "/v1/keys", Some(&reader), None).await.status,
        200
    );
    let cases = [
        ("POST", "/v1/keys", "latchkey:keys:write"),
        ("GET", "/v1/users", "latchkey:users:read"),
        ("POST", "/v1/users", "latchkey:users:write"),
        ("GET", "/v1/groups", "latchkey:groups:read"),
        ("DELETE", "/v1/groups/admin", "latchkey:groups:write"),
        ("GET", "/v1/audit", "latchkey:audit:read"),
        ("GET", "/v1/audit/verify", "latchkey:audit:read"),
        ("POST", "/v1/verify", "latchkey:verify"),
        ("POST", "/v1/keys/x/revoke", "latchkey:keys:write"),
    ];
    for (method, uri, permission) in cases {
        let r = h.send(method, uri, Some(&reader), Some(json!({}))).await;
        r.problem(403, "insufficient_permission");
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!("Bearer error=\"insufficient_scope\", scope=\"{permission}\"").as_str()),
            "{method} {uri}"
        );
    }
    // The group still exists: the 403 came before any change.
    h.get("/v1/groups/admin").await.ok(200);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems_too() {
    let h = Harness::new();
    h.get("/v1/nowhere").await.problem(404, "not_found");
    h.admin("PUT", "/v1/keys", None)
        .await
        .problem(405, "method_not_allowed");
    h.admin("DELETE", "/v1/verify", None)
        .await
        .problem(405, "method_not_allowed");
    h.send("POST", "/healthz", None, None)
        .await
        .problem(405, "method_not_allowed");
}

#[tokio::test]
async fn the_operator_router_acts_as_the_system_without_a_key() {
    let h = Harness::new();
    let operator = &latchkey_admin::operator_router(h.store.clone());
    let post = |uri, body| post_json(operator, uri, body);
    let r = post(
        "/v1/users",
        json!({"name": "ops-bot", "permissions": ["*"]}),
    )
    .await;
    assert_eq!(r.ok(201)["name"], "ops-bot");
    let key = post("/v1/keys", json!({"name": "k", "user_id": "ops-bot"}))
        .await
        .ok(201);
    // The operator has no key: created_by is null, and so is the audit event's actor.
    assert_eq!(key["created_by"], json!(null));
    let audit = send(operator, "GET", "/v1/audit", None, None, None)
        .await
        .ok(200);
    let last = audit["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "key.create");
    assert_eq!(last["actor"], json!(null));
    // Same handlers, same validation.
    let bad = post("/v1/keys", json!({"name": "k"})).await;
    assert_eq!(bad.problem(400, "invalid_field")["field"], "user_id");
    // A key sent to the operator router changes nothing: it still acts as the operator.
    let r = send(operator, "GET", "/v1/keys", Some("garbage"), None, None).await;
    assert_eq!(r.status, 200);
}
