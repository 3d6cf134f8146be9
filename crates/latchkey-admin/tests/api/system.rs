//! `/healthz`, `/metrics`, `/openapi.json`: no authentication.

use serde_json::json;

use crate::common::Harness;

#[tokio::test]
async fn healthz_answers_ok_without_a_key() {
    let h = Harness::new();
    let r = h.send("GET", "/healthz", None, None).await;
    assert_eq!(r.ok(200), json!({"status": "ok"}));
}

#[tokio::test]
async fn openapi_document_parses_and_lists_every_path() {
    let h = Harness::new();
    let r = h.send("GET", "/openapi.json", None, None).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/groups", &["get", "post"][..]),
        ("/v1/groups/{id}", &["get", "patch", "delete"]),
        ("/v1/users", &["get", "post"]),
        ("/v1/users/{id}", &["get", "patch", "delete"]),
        ("/v1/users/{id}/revoke-keys", &["post"]),
        ("/v1/keys", &["get", "post"]),
        ("/v1/keys/{id}", &["get", "patch", "delete"]),
        ("/v1/keys/{id}/revoke", &["post"]),
        ("/v1/keys/{id}/rotate", &["post"]),
        ("/v1/verify", &["post"]),
        ("/v1/leases", &["post"]),
        ("/v1/leases/return", &["post"]),
        ("/v1/usage", &["post"]),
        ("/v1/audit", &["get"]),
        ("/v1/audit/verify", &["get"]),
        ("/v1/events", &["get"]),
        ("/v1/backup", &["get"]),
        ("/v1/keys/import", &["post"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), expected.len(), "paths: {:?}", paths.keys());
    let mut operation_ids = std::collections::HashSet::new();
    for (path, methods) in expected {
        for method in methods {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()));
            if path.starts_with("/v1/") {
                let scopes = &op["security"][0]["bearer"];
                assert!(
                    scopes[0].as_str().unwrap().starts_with("latchkey:"),
                    "{method} {path}: {scopes}"
                );
            }
        }
    }
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["scheme"], "bearer");
    // The models come from core's schemas, with PRODUCT.md's field names.
    let key = &doc["components"]["schemas"]["Key"]["properties"];
    for field in [
        "id",
        "name",
        "description",
        "user_id",
        "env",
        "prefix",
        "scopes",
        "expires_at",
        "enabled",
        "revoked_at",
        "status",
        "created_at",
        "created_by",
        "last_used_at",
        "usage_count",
    ] {
        assert!(
            key[field].is_object(),
            "Key.{field} missing from the schema"
        );
    }
    // The served document is the one `openapi()` builds.
    assert_eq!(
        doc,
        serde_json::to_value(latchkey_admin::openapi()).unwrap()
    );
}

#[tokio::test]
async fn metrics_expose_requests_verifications_latency_and_store_counts() {
    let h = Harness::new();
    h.get("/v1/keys").await.ok(200);
    // Refused by the authentication layer: malformed (no store read), then missing.
    h.send("GET", "/v1/keys", Some("lk_live_nope"), None).await;
    h.send("GET", "/v1/keys", None, None).await;
    // Well-formed, unknown: a verification that fails.
    let stranger = latchkey_core::ApiKey::generate(h.store.prefix(), latchkey_core::Env::Live);
    h.send("GET", "/v1/keys", Some(stranger.expose()), None)
        .await;
    h.get("/v1/keys/00000000-0000-0000-0000-000000000000").await;
    let r = h.send("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text;
    for line in [
        "# TYPE latchkey_http_requests_total counter",
        "latchkey_http_requests_total{code=\"ok\"} 1",
        "latchkey_http_requests_total{code=\"invalid_key\"} 2",
        "latchkey_http_requests_total{code=\"missing_key\"} 1",
        "latchkey_http_requests_total{code=\"not_found\"} 1",
        "# TYPE latchkey_verifications_total counter",
        "latchkey_verifications_total{code=\"ok\"} 2",
        "latchkey_verifications_total{code=\"invalid_key\"} 1",
        "latchkey_verifications_total{code=\"key_revoked\"} 0",
        "# TYPE latchkey_verification_duration_seconds histogram",
        "latchkey_verification_duration_seconds_bucket{le=\"+Inf\"} 3",
        "latchkey_verification_duration_seconds_count 3",
        "# TYPE latchkey_keys gauge",
        "latchkey_keys{status=\"active\"} 1",
        "latchkey_keys{status=\"revoked\"} 0",
        "latchkey_users 1",
        "latchkey_groups 1",
        "latchkey_keystore_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("latchkey_verification_duration_seconds_sum "));
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample {line:?}");
    }
}

/// `GET /v1/backup` with the admin key, to send with `oneshot` (its answer unread).
fn backup_request(h: &Harness) -> http::Request<axum::body::Body> {
    http::Request::builder()
        .uri("/v1/backup")
        .header("authorization", format!("Bearer {}", h.admin))
        .body(axum::body::Body::empty())
        .unwrap()
}

/// One backup at a time, from its copy to the end of its answer: another meanwhile is
/// 429 `backup_in_progress`; once the first answer is gone (read, or its client gone),
/// the next is taken.
#[tokio::test]
async fn one_backup_is_taken_at_a_time() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let h = Harness::new();
    let request = || backup_request(&h);
    let first = h.app.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), 200);
    // The whole store: kept by no cache on the way.
    assert_eq!(first.headers()["cache-control"], "no-store");
    let second = h.send("GET", "/v1/backup", Some(&h.admin), None).await;
    second.problem(429, "backup_in_progress");
    drop(first);
    for turn in ["after the first client went", "after an answer read whole"] {
        let answer = h.app.clone().oneshot(request()).await.unwrap();
        assert_eq!(answer.status(), 200, "{turn}");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{"), "{turn}: a backup header");
    }
}

/// A client that takes nothing of its backup for a minute is cut off: the turn is given
/// back (the next backup is taken) and the stalled answer, read at last, fails rather than
/// end as if whole.
#[tokio::test(start_paused = true)]
async fn a_backup_client_that_stalls_is_cut_off_and_the_turn_given_back() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let h = Harness::new();
    let request = || backup_request(&h);
    let stalled = h.app.clone().oneshot(request()).await.unwrap();
    assert_eq!(stalled.status(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    let early = h.send("GET", "/v1/backup", Some(&h.admin), None).await;
    early.problem(429, "backup_in_progress");

    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    let next = h.app.clone().oneshot(request()).await.unwrap();
    assert_eq!(next.status(), 200);
    let body = next.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "a backup header");
    assert!(stalled.into_body().collect().await.is_err());
}
