//! Input limits (each at the bound and one past it), the body's shape and size, names that
//! could spoof another, and usage reports.

use latchkey_core::limits::{
    MAX_BODY_BYTES, MAX_CURSOR_BYTES, MAX_DESCRIPTION_BYTES, MAX_GROUPS_PER_USER, MAX_LIST_LIMIT,
    MAX_NAME_BYTES, MAX_PERMISSION_BYTES, MAX_PERMISSIONS, MAX_PRINCIPAL_NAME_BYTES,
    MAX_SEARCH_BYTES, MAX_TENANT_BYTES,
};
use serde_json::{Value, json};

use crate::common::{Harness, post_with_headers, send};

/// `n` distinct permissions.
fn permissions(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}:read")).collect()
}

/// Sends each `(request, body, field)` as the admin (see [`Harness::field_problems`]) and
/// asserts a 400 `invalid_field` naming `field`, then that no audit event was recorded since
/// `seq`.
async fn refused(h: &Harness, seq: u64, cases: &[(&str, Value, &str)]) {
    h.field_problems(400, "invalid_field", cases).await;
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
}

#[tokio::test]
async fn permission_sets_are_bounded_in_count_and_length() {
    let h = Harness::new();
    let long = format!("a{}", "b".repeat(MAX_PERMISSION_BYTES - 1));
    let longer = format!("{long}c");
    h.created(
        "/v1/groups",
        json!({"name": "full", "permissions": permissions(MAX_PERMISSIONS)}),
    )
    .await;
    h.created("/v1/groups", json!({"name": "long", "permissions": [long]}))
        .await;
    h.created(
        "/v1/users",
        json!({"name": "u", "permissions": permissions(MAX_PERMISSIONS)}),
    )
    .await;
    let seq = h.store.last_seq().unwrap();
    let over = permissions(MAX_PERMISSIONS + 1);
    #[rustfmt::skip]
    refused(&h, seq, &[
        ("POST /v1/groups", json!({"name": "g1", "permissions": over}), "permissions"),
        ("POST /v1/groups", json!({"name": "g2", "permissions": [longer]}), "permissions"),
        ("POST /v1/users", json!({"name": "u1", "permissions": over}), "permissions"),
        ("POST /v1/keys", json!({"name": "k", "user_id": "u", "scopes": over}), "scopes"),
        ("PATCH /v1/groups/full", json!({"add_permissions": ["one:more"]}), "permissions"),
        ("PATCH /v1/groups/full", json!({"add_permissions": over}), "add_permissions"),
        ("PATCH /v1/users/u", json!({"add_permissions": ["one:more"]}), "permissions"),
        ("PATCH /v1/users/u", json!({"remove_permissions": [longer]}), "remove_permissions"),
    ]).await;
    h.created(
        "/v1/keys",
        json!({"name": "k", "user_id": "u", "scopes": permissions(MAX_PERMISSIONS)}),
    )
    .await;
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_groups() {
    let h = Harness::new();
    let groups: Vec<String> = (0..=MAX_GROUPS_PER_USER).map(|i| format!("g{i}")).collect();
    for g in &groups {
        h.created("/v1/groups", json!({"name": g})).await;
    }
    let (all, max) = (&groups[..], &groups[..MAX_GROUPS_PER_USER]);
    h.created("/v1/users", json!({"name": "member", "groups": max}))
        .await;
    let seq = h.store.last_seq().unwrap();
    let last = &groups[MAX_GROUPS_PER_USER];
    #[rustfmt::skip]
    refused(&h, seq, &[
        ("POST /v1/users", json!({"name": "m2", "groups": all}), "groups"),
        ("PATCH /v1/users/member", json!({"groups": all}), "groups"),
        ("PATCH /v1/users/member", json!({"add_groups": [last]}), "groups"),
        ("PATCH /v1/users/member", json!({"add_groups": all}), "add_groups"),
    ]).await;
}

#[tokio::test]
async fn names_descriptions_and_tenants_are_bounded() {
    let h = Harness::new();
    let principal = "u".repeat(MAX_PRINCIPAL_NAME_BYTES);
    let tenant = "t".repeat(MAX_TENANT_BYTES);
    h.created(
        "/v1/users",
        json!({"name": principal, "tenant_id": tenant, "organization_id": tenant}),
    )
    .await;
    // Multi-byte text counts in bytes: 64 × "é" is 128 bytes.
    let name = "é".repeat(MAX_NAME_BYTES / 2);
    let description = "d".repeat(MAX_DESCRIPTION_BYTES);
    let key = h
        .created(
            "/v1/keys",
            json!({"name": name, "user_id": principal, "description": description}),
        )
        .await;
    let key_uri = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let seq = h.store.last_seq().unwrap();
    let too_long_principal = format!("{principal}u");
    let too_long_tenant = format!("{tenant}t");
    let too_long_name = format!("{name}x");
    let too_long_description = format!("{description}d");
    let patch_key = format!("PATCH {key_uri}");
    #[rustfmt::skip]
    refused(&h, seq, &[
        ("POST /v1/users", json!({"name": too_long_principal}), "name"),
        ("POST /v1/groups", json!({"name": too_long_principal}), "name"),
        ("POST /v1/users", json!({"name": "t1", "tenant_id": too_long_tenant}), "tenant_id"),
        ("POST /v1/users", json!({"name": "t2", "organization_id": too_long_tenant}), "organization_id"),
        ("POST /v1/keys", json!({"name": too_long_name, "user_id": principal}), "name"),
        ("POST /v1/keys", json!({"name": "k", "user_id": principal, "description": too_long_description}), "description"),
        (&patch_key, json!({"name": too_long_name}), "name"),
        (&patch_key, json!({"description": too_long_description}), "description"),
    ]).await;
}

#[tokio::test]
async fn names_refuse_control_and_bidi_characters() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "bot"})).await;
    let seq = h.store.last_seq().unwrap();
    for bad in [
        "invoice\u{202E}fdp.exe",
        "a\u{2066}b",
        "\u{200F}x",
        "a\u{061C}",
        "tab\there",
        "a\u{2069}",
    ] {
        #[rustfmt::skip]
        refused(&h, seq, &[
            ("POST /v1/keys", json!({"name": bad, "user_id": "bot"}), "name"),
            ("POST /v1/keys", json!({"name": "k", "user_id": "bot", "description": bad}), "description"),
            ("POST /v1/users", json!({"name": "x", "tenant_id": bad}), "tenant_id"),
            ("POST /v1/groups", json!({"name": bad}), "name"),
        ]).await;
    }
    // Other non-ASCII text is fine.
    h.created(
        "/v1/keys",
        json!({"name": "Bestellungen (Zürich) 東京", "user_id": "bot"}),
    )
    .await;
}

#[tokio::test]
async fn verify_checks_at_most_so_many_permissions() {
    let h = Harness::new();
    let key = h.admin.clone();
    h.post(
        "/v1/verify",
        json!({"key": key, "permissions": permissions(MAX_PERMISSIONS)}),
    )
    .await
    .ok(200);
    let r = h
        .post(
            "/v1/verify",
            json!({"key": key, "permissions": permissions(MAX_PERMISSIONS + 1)}),
        )
        .await;
    assert_eq!(r.problem(400, "invalid_field")["field"], "permissions");
}

#[tokio::test]
async fn list_pages_are_bounded() {
    let h = Harness::new();
    let q = "q".repeat(MAX_SEARCH_BYTES);
    h.get(&format!("/v1/keys?q={q}")).await.ok(200);
    let r = h.get(&format!("/v1/keys?q={q}q")).await;
    assert_eq!(r.problem(400, "invalid_field")["field"], "q");
    let r = h
        .get(&format!(
            "/v1/keys?cursor={}",
            "0".repeat(MAX_CURSOR_BYTES + 2)
        ))
        .await;
    assert_eq!(r.problem(400, "invalid_field")["field"], "cursor");
    for uri in ["/v1/keys", "/v1/audit"] {
        h.get(&format!("{uri}?limit={MAX_LIST_LIMIT}"))
            .await
            .ok(200);
        let r = h.get(&format!("{uri}?limit={}", MAX_LIST_LIMIT + 1)).await;
        assert_eq!(r.problem(400, "invalid_field")["field"], "limit");
    }
}

/// A `POST /v1/groups` body of exactly `len` bytes: a valid object padded with blanks.
fn padded_group(name: &str, len: usize) -> String {
    let body = json!({"name": name}).to_string();
    format!("{body}{}", " ".repeat(len - body.len()))
}

#[tokio::test]
async fn bodies_are_json_objects_of_at_most_64_kib() {
    let h = Harness::new();
    let admin = h.admin.clone();
    let post = |body: String| {
        let (h, admin) = (&h, admin.clone());
        async move {
            send(
                &h.app,
                "POST",
                "/v1/groups",
                Some(&admin),
                Some(&body),
                Some("application/json"),
            )
            .await
        }
    };
    post(padded_group("at-limit", MAX_BODY_BYTES)).await.ok(201);
    let seq = h.store.last_seq().unwrap();
    post(padded_group("over", MAX_BODY_BYTES + 1))
        .await
        .problem(413, "payload_too_large");
    // serde would read a struct from an array, field by field.
    for body in [
        r#"["arrgrp",["orders:read"]]"#,
        "null",
        "\"g\"",
        "42",
        "  [\"x\"]",
    ] {
        post(body.to_owned()).await.problem(400, "invalid_json");
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    assert!(h.store.group("arrgrp").is_err());
    // Nor a key renamed by position.
    let id = h.store.verify(&h.admin).unwrap().key_id;
    send(
        &h.app,
        "PATCH",
        &format!("/v1/keys/{id}"),
        Some(&admin),
        Some(r#"["renamed"]"#),
        Some("application/json"),
    )
    .await
    .problem(400, "invalid_json");
}

/// A body declared longer than the limit is refused from its headers alone, and one in a
/// content coding is refused rather than read as JSON: 413 and 415, nothing written.
#[tokio::test]
async fn a_body_declared_too_long_or_encoded_is_refused_from_its_headers() {
    let h = Harness::new();
    let seq = h.store.last_seq().unwrap();
    let body = json!({"name": "declared"});
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let (h, body) = (&h, body.clone());
        async move { post_with_headers(&h.app, "/v1/groups", &h.admin, &body, headers).await }
    };
    // Its few bytes would be read and taken if the declared length were not looked at.
    post(&[("content-length", "10000000")])
        .await
        .problem(413, "payload_too_large");
    let codings: [&'static [(&str, &str)]; 3] = [
        &[("content-encoding", "gzip")],
        &[("content-encoding", "br")],
        &[
            ("content-encoding", "identity"),
            ("content-encoding", "gzip"),
        ],
    ];
    for headers in codings {
        post(headers).await.problem(415, "unsupported_media_type");
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    post(&[("content-encoding", "identity")]).await.ok(201);
}

#[tokio::test]
async fn usage_reports_are_validated_and_saturate() {
    let h = Harness::new();
    let (_, service) = h.user_with_key("edge", &["latchkey:verify"]).await;
    h.created("/v1/users", json!({"name": "app"})).await;
    let key = h.key_for("app").await;
    let id = key["id"].as_str().unwrap();
    let created = key["created_at"].as_str().unwrap().to_owned();
    let report = |items: Value| {
        let (h, service) = (&h, service.clone());
        async move {
            h.request_as(&service, "POST /v1/usage", &json!({"items": items}))
                .await
        }
    };
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (at, count, field) in [
        (future.as_str(), json!(1), "items[1].last_used_at"),
        ("1600-01-01T00:00:00Z", json!(1), "items[1].last_used_at"),
        ("2000-01-01T00:00:00Z", json!(1), "items[1].last_used_at"),
        // Type errors name the top-level member.
        (created.as_str(), json!(-1), "items"),
    ] {
        let items = json!([
            {"key_id": id, "count": 1, "last_used_at": created},
            {"key_id": id, "count": count, "last_used_at": at},
        ]);
        let r = report(items).await;
        assert_eq!(r.problem(400, "invalid_field")["field"], field);
    }
    // One bad item refused the whole report: nothing was counted.
    let seen = h.get(&format!("/v1/keys/{id}")).await.ok(200);
    assert_eq!(
        (seen["usage_count"].clone(), seen["last_used_at"].clone()),
        (json!(0), Value::Null)
    );

    // Counts saturate instead of wrapping; an older time never moves last_used_at back.
    let max = json!([{"key_id": id, "count": u64::MAX, "last_used_at": created}]);
    assert_eq!(report(max.clone()).await.status, 204);
    assert_eq!(report(max).await.status, 204);
    h.store.flush().unwrap();
    let seen = h.get(&format!("/v1/keys/{id}")).await.ok(200);
    assert_eq!(seen["usage_count"], json!(u64::MAX));
    h.store.verify(key["secret"].as_str().unwrap()).unwrap();
    let seen = h.get(&format!("/v1/keys/{id}")).await.ok(200);
    assert_eq!(seen["usage_count"], json!(u64::MAX));
    let used = seen["last_used_at"].clone();
    let older = json!([{"key_id": id, "count": 1, "last_used_at": created}]);
    assert_eq!(report(older).await.status, 204);
    h.store.flush().unwrap();
    assert_eq!(
        h.get(&format!("/v1/keys/{id}")).await.ok(200)["last_used_at"],
        used
    );
    // More items than one report may carry.
    let many: Vec<Value> = (0..=latchkey_core::limits::MAX_USAGE_ITEMS)
        .map(|_| json!({"key_id": id, "count": 1, "last_used_at": created}))
        .collect();
    let r = report(json!(many)).await;
    assert_eq!(r.problem(400, "invalid_field")["field"], "items");
}
