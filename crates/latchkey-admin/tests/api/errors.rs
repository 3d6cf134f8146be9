//! Malformed requests: every one a problem+json 4xx, never a 500 nor a plain-text body.

use serde_json::{Value, json};

use crate::common::{Harness, send};

#[tokio::test]
async fn bodies_that_are_not_the_expected_json() {
    let h = Harness::new();
    let admin = h.admin.clone();
    for (body, content_type, status, code) in [
        ("{\"name\": ", Some("application/json"), 400, "invalid_json"),
        (
            "{\"name\": \"x\"} trailing",
            Some("application/json"),
            400,
            "invalid_json",
        ),
        ("", Some("application/json"), 400, "invalid_json"),
        ("[]", Some("application/json"), 400, "invalid_json"),
        ("null", Some("application/json"), 400, "invalid_json"),
        ("\"x\"", Some("application/json"), 400, "invalid_json"),
        (
            "name=x",
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
        ),
        (
            "{\"name\": \"x\"}",
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        ("{\"name\": \"x\"}", None, 415, "unsupported_media_type"),
    ] {
        let r = send(
            &h.app,
            "POST",
            "/v1/groups",
            Some(&admin),
            Some(body),
            content_type,
        )
        .await;
        r.problem(status, code);
    }
    // A JSON content type with parameters, or a +json subtype, is accepted.
    let accepted = [
        ("a", "application/json; charset=utf-8"),
        ("b", "application/merge-patch+json"),
    ];
    for (name, content_type) in accepted {
        let body = format!("{{\"name\": \"{name}\"}}");
        let r = send(
            &h.app,
            "POST",
            "/v1/groups",
            Some(&admin),
            Some(&body),
            Some(content_type),
        )
        .await;
        assert_eq!(r.status, 201, "{content_type}: {}", r.text);
    }
    // Too large.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    send(
        &h.app,
        "POST",
        "/v1/groups",
        Some(&admin),
        Some(&big),
        Some("application/json"),
    )
    .await
    .problem(413, "payload_too_large");
    assert_eq!(h.store.groups().unwrap().len(), 3);
}

#[tokio::test]
async fn members_of_the_wrong_type_name_the_field() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "bot"})).await;
    for (uri, body, field) in [
        ("/v1/groups", json!({"name": ["x"]}), "name"),
        (
            "/v1/groups",
            json!({"name": "x", "permissions": [1]}),
            "permissions",
        ),
        (
            "/v1/users",
            json!({"name": "x", "groups": "admin"}),
            "groups",
        ),
        (
            "/v1/users",
            json!({"name": "x", "tenant_id": 7}),
            "tenant_id",
        ),
        (
            "/v1/keys",
            json!({"name": "x", "user_id": "bot", "expires_at": 1700000000}),
            "expires_at",
        ),
        (
            "/v1/keys",
            json!({"name": "x", "user_id": "bot", "scopes": "a"}),
            "scopes",
        ),
        ("/v1/keys", json!({"name": "x", "user_id": 1}), "user_id"),
    ] {
        let problem = h
            .post(uri, body.clone())
            .await
            .problem(400, "invalid_field");
        assert_eq!(problem["field"], field, "{uri} {body}");
        assert!(
            !problem["detail"].as_str().unwrap().contains(" at line "),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn references_that_match_nothing_are_404() {
    let h = Harness::new();
    for uri in [
        "/v1/groups/nope",
        "/v1/users/nope",
        "/v1/keys/nope",
        "/v1/keys/lk_live_AAAAAAAAAAAA",
        "/v1/keys/01890000-0000-7000-8000-000000000000",
        "/v1/users/01890000-0000-7000-8000-000000000000",
        "/v1/groups/%F0%9F%94%91",
    ] {
        h.get(uri).await.problem(404, "not_found");
    }
    // A path segment that is not UTF-8 is a 400 naming it.
    let bad = h.get("/v1/groups/%FF").await.problem(400, "invalid_field");
    assert_eq!(bad["field"], "id");
}

/// A key's full text pasted where a value (or a name) goes is never echoed in a problem's
/// detail or field, nor stored as a name, a tenant or a description: it is a secret.
#[tokio::test]
async fn a_key_given_as_a_value_is_never_echoed_nor_stored() {
    let h = Harness::new();
    let key = &h.admin;
    let mut answers = Vec::new();
    for uri in [
        format!("/v1/audit?target={key}"),
        format!("/v1/audit?after={key}"),
        format!("/v1/keys?sort={key}"),
        format!("/v1/keys?status={key}"),
        format!("/v1/users?ids={key}"),
        // As a parameter's name: refused as unknown, its name in `field`.
        format!("/v1/keys?{key}=1"),
    ] {
        answers.push(h.get(&uri).await.problem(400, "invalid_field"));
    }
    for (uri, body) in [
        ("/v1/users", json!({"name": key})),
        ("/v1/users", json!({"name": "u", "tenant_id": key})),
        ("/v1/users", json!({"name": "u", "permissions": [key]})),
        ("/v1/groups", json!({"name": key})),
        ("/v1/keys", json!({"name": key, "user_id": "admin"})),
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "admin", "description": format!("for {key}")}),
        ),
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "admin", "scopes": [key]}),
        ),
        ("/v1/keys", json!({"name": "k", "user_id": "admin", key: 1})),
    ] {
        answers.push(h.post(uri, body).await.problem(400, "invalid_field"));
    }
    // An import's refused items say why without it either.
    let items = json!([{key: 1}, {"key": "sk_live_0123456789abcdef0123", "scopes": key}]);
    let body = json!({"user_id": "admin", "items": items});
    let report = h.post("/v1/keys/import", body).await.ok(200);
    assert_eq!(report["rejected"].as_array().unwrap().len(), 2, "{report}");
    answers.push(report);
    for answer in answers {
        let text = answer.to_string();
        assert!(!text.contains(key.as_str()), "{text}");
    }
    let users = h.get("/v1/users").await.ok(200).to_string();
    assert!(!users.contains(key.as_str()));
}

/// An import's item refused while parsed names the member at fault (it said `item`) and
/// never quotes the item's own text, which `without_keys` cannot know (import hunt L2).
#[tokio::test]
async fn an_import_item_refused_names_its_field_and_not_its_text() {
    let h = Harness::new();
    let text = "sk_live_SECRETSECRETSECRET01";
    // A text with a quote and a backslash, which serde escapes where it quotes it.
    let quoting = r#"sk_live_QUOTE"QU\OTE0123456789"#;
    let items = json!([
        {"key": text, "scopes": text},
        {"key": "x_0123456789abcdef", "scopes": ["ORDERS:read"]},
        {"key": "x_0123456789abcdeg", "expires_at": "soon"},
        {"key": "x_0123456789abcdeh", "colour": "red"},
        text,
        {"key": quoting, "scopes": quoting},
        // A key's text as a member's name (review s55 M3).
        {"key": text, (text): 1},
        {(text): {"name": "billing"}},
    ]);
    let body = json!({"user_id": "admin", "items": items});
    let report = h.post("/v1/keys/import", body).await.ok(200);
    let said = report.to_string();
    assert!(
        !said.contains("SECRETSECRET") && !said.contains("QUOTE"),
        "{report}"
    );
    let fields = rejected_fields(&report);
    // An unknown member is named in the reason when it cannot be a key: `field` names the
    // item's own members.
    assert!(said.contains("unknown field `colour`"), "{report}");
    assert_eq!(
        fields,
        [
            "scopes",
            "scopes",
            "expires_at",
            "item",
            "item",
            "scopes",
            "item",
            "item"
        ],
        "{report}"
    );
}

/// A body that names a member by a key's text, or puts one where another type goes, is
/// refused without the text said back, in `detail` or `field` (re-check s55 M3); a short
/// unknown member (a typo) is still named.
#[tokio::test]
async fn a_refused_body_never_says_back_a_key_it_holds() {
    let h = Harness::new();
    let text = "sk_live_SECRETSECRETSECRET01";
    let item = json!({"key": text});
    for (path, body) in [
        (
            "/v1/keys/import",
            json!({"user_id": "admin", "items": [item], (text): 1}),
        ),
        (
            "/v1/keys/import",
            json!({"user_id": "admin", "items": text}),
        ),
        (
            "/v1/keys",
            json!({"name": "k", "user_id": "admin", (text): 1}),
        ),
        (
            "/v1/keys",
            json!({"name": text, "user_id": "admin", "scopes": text}),
        ),
    ] {
        let problem = h.post(path, body).await.problem(400, "invalid_field");
        assert!(!problem.to_string().contains("SECRETSECRET"), "{problem}");
    }
    // Nor in a query string, as a parameter's name or value (re-check s55b L2).
    let asked = [text, "limit", "env", "sort", "status"].map(|name| ("keys", name));
    for (list, name) in asked.into_iter().chain([("audit", "target")]) {
        let value = if name == text { "1" } else { text };
        let uri = format!("/v1/{list}?{name}={value}");
        let problem = h.get(&uri).await.problem(400, "invalid_field");
        assert!(!problem.to_string().contains("SECRETSECRET"), "{problem}");
    }
    // A short value is still said back: it is what the caller needs to see.
    let short = h.get("/v1/keys?limit=lots").await;
    let detail = short.problem(400, "invalid_field")["detail"].to_string();
    assert!(detail.contains("lots"), "{detail}");
    let typo = json!({"name": "k", "user_id": "admin", "colour": "red"});
    let problem = h.post("/v1/keys", typo).await.problem(400, "invalid_field");
    assert_eq!(problem["field"], "colour", "{problem}");
    // An item is an object: serde would read an array member by member (re-check s55 I1).
    let body = json!({"user_id": "admin", "items": [[text]]});
    let report = h.post("/v1/keys/import", body).await.ok(200);
    assert_eq!(rejected_fields(&report), ["item"], "{report}");
}

/// An import refuses an item whose prefix, name or `meta` holds its key, which would be
/// stored and shown in plain: the key but its first character passed as its prefix
/// (import hunt H1, M1).
#[tokio::test]
async fn an_import_never_stores_its_key_beside_it() {
    let h = Harness::new();
    let text = "Xq7vR2mK9pL4sT8wY3nB6cF1hJ5gD0zA";
    let items = json!([
        {"key": text, "prefix": &text[1..]},
        {"key": text, "name": format!("old {text}")},
        {"key": text, "meta": {"was": text.to_lowercase()}},
        {"key": text, "prefix": "partner-acme", "name": "acme"},
    ]);
    let body = json!({"user_id": "admin", "items": items});
    let report = h.post("/v1/keys/import", body).await.ok(200);
    let fields = rejected_fields(&report);
    assert_eq!(fields, ["prefix", "name", "meta"], "{report}");
    assert_eq!(report["imported"][0]["index"], 3, "{report}");
    let keys = h.get("/v1/keys?limit=1000").await.ok(200).to_string();
    assert!(!keys.contains(&text[1..9]), "{keys}");
}

/// A time UTC puts past year 9999 (`9999-12-31T23:59:59-23:59`) is refused, naming
/// `expires_at`: converting it panicked, a 500 for a key, and for an import the whole
/// request, its good items included (import hunt M2).
#[tokio::test]
async fn a_time_past_year_9999_in_utc_is_refused_alone() {
    let h = Harness::new();
    let far = "9999-12-31T23:59:59-23:59";
    let body = json!({"name": "k", "user_id": "admin", "expires_at": far});
    let problem = h.post("/v1/keys", body).await.problem(400, "invalid_field");
    assert_eq!(problem["field"], "expires_at", "{problem}");
    let items = json!([
        {"key": "okokokokokok00000001"},
        {"key": "farfarfarfarfar00001", "expires_at": far},
        {"key": "okokokokokok00000002", "expires_at": "9999-12-31T23:59:59Z"},
    ]);
    let body = json!({"user_id": "admin", "items": items});
    let report = h.post("/v1/keys/import", body).await.ok(200);
    assert_eq!(report["imported"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["rejected"][0]["index"], 1, "{report}");
    assert_eq!(report["rejected"][0]["field"], "expires_at", "{report}");
}

/// The `field` of each item an import's report refused, in order.
fn rejected_fields(report: &Value) -> Vec<&str> {
    let rejected = report["rejected"].as_array().expect("a report");
    rejected
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect()
}
