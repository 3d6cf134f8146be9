//! No escalation: a limited caller cannot mint or widen anything beyond itself.

use serde_json::json;

use crate::common::Harness;

#[tokio::test]
async fn a_limited_key_cannot_mint_a_key_for_a_stronger_user() {
    let h = Harness::new();
    let (_, deployer) = h
        .user_with_key(
            "deployer",
            &["latchkey:keys:write", "latchkey:keys:read", "orders:read"],
        )
        .await;
    h.post(
        "/v1/users",
        json!({"name": "orders-admin", "permissions": ["orders:*"]}),
    )
    .await
    .ok(201);
    let keys_before = h.store.stats().unwrap().keys.values().sum::<u64>();

    for user in ["admin", "orders-admin"] {
        let r = h
            .send(
                "POST",
                "/v1/keys",
                Some(&deployer),
                Some(json!({"name": "mine now", "user_id": user})),
            )
            .await;
        let problem = r.problem(403, "insufficient_permission");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer error=\"insufficient_scope\"")
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("cannot grant"),
            "{problem}"
        );
    }
    // Not with scopes that only look narrow on a stronger user either.
    let r = h
        .send(
            "POST",
            "/v1/keys",
            Some(&deployer),
            Some(json!({"name": "k", "user_id": "orders-admin", "scopes": ["orders:write"]})),
        )
        .await;
    r.problem(403, "insufficient_permission");
    assert_eq!(
        h.store.stats().unwrap().keys.values().sum::<u64>(),
        keys_before
    );

    // Within its own permissions it may: a key for a user no stronger than itself.
    h.post(
        "/v1/users",
        json!({"name": "reader", "permissions": ["orders:read"]}),
    )
    .await
    .ok(201);
    let r = h
        .send(
            "POST",
            "/v1/keys",
            Some(&deployer),
            Some(json!({"name": "k", "user_id": "reader"})),
        )
        .await;
    assert_eq!(
        r.ok(201)["user_id"],
        h.get("/v1/users/reader").await.ok(200)["id"]
    );
    // And a narrowed key for the stronger user, when the narrowing is within itself.
    let r = h
        .send(
            "POST",
            "/v1/keys",
            Some(&deployer),
            Some(json!({"name": "k", "user_id": "orders-admin", "scopes": ["orders:read"]})),
        )
        .await;
    r.ok(201);
    // It cannot revoke or disable a key stronger than itself.
    let admin_key = h.store.verify(&h.admin).unwrap().key_id;
    h.send(
        "POST",
        &format!("/v1/keys/{admin_key}/revoke"),
        Some(&deployer),
        None,
    )
    .await
    .problem(403, "insufficient_permission");
    h.send(
        "PATCH",
        &format!("/v1/keys/{admin_key}"),
        Some(&deployer),
        Some(json!({"enabled": false})),
    )
    .await
    .problem(403, "insufficient_permission");
    assert!(h.store.verify(&h.admin).is_ok());
}

#[tokio::test]
async fn a_limited_key_cannot_create_or_widen_users_and_groups_beyond_itself() {
    let h = Harness::new();
    let (_, manager) = h
        .user_with_key(
            "manager",
            &[
                "latchkey:users:write",
                "latchkey:users:read",
                "latchkey:groups:write",
                "orders:read",
            ],
        )
        .await;
    let users_before = h.store.users().unwrap().len();
    let groups_before = h.store.groups().unwrap().len();
    let send = |method: &'static str, uri: &'static str, body: serde_json::Value| {
        let manager = manager.clone();
        let h = &h;
        async move { h.send(method, uri, Some(&manager), Some(body)).await }
    };

    send(
        "POST",
        "/v1/users",
        json!({"name": "root2", "permissions": ["*"]}),
    )
    .await
    .problem(403, "insufficient_permission");
    send(
        "POST",
        "/v1/users",
        json!({"name": "root3", "groups": ["admin"]}),
    )
    .await
    .problem(403, "insufficient_permission");
    send(
        "POST",
        "/v1/groups",
        json!({"name": "wide", "permissions": ["orders:*"]}),
    )
    .await
    .problem(403, "insufficient_permission");
    // Widening its own user, directly or through a group.
    send(
        "PATCH",
        "/v1/users/manager",
        json!({"add_permissions": ["orders:write"]}),
    )
    .await
    .problem(403, "insufficient_permission");
    send(
        "PATCH",
        "/v1/users/manager",
        json!({"add_groups": ["admin"]}),
    )
    .await
    .problem(403, "insufficient_permission");
    // Widening the admin group, or renaming / disabling the admin user.
    send("PATCH", "/v1/groups/admin", json!({"name": "mine"}))
        .await
        .problem(403, "insufficient_permission");
    send("PATCH", "/v1/users/admin", json!({"enabled": false}))
        .await
        .problem(403, "insufficient_permission");
    send("DELETE", "/v1/users/admin", json!({}))
        .await
        .problem(403, "insufficient_permission");

    assert_eq!(h.store.users().unwrap().len(), users_before);
    assert_eq!(h.store.groups().unwrap().len(), groups_before);
    let me = h.get("/v1/users/manager").await.ok(200);
    assert_eq!(me["groups"], json!([]));
    assert!(!h.store.verify(&manager).unwrap().has("orders:write"));
    assert!(h.store.verify(&h.admin).is_ok());

    // Within itself it may.
    send(
        "POST",
        "/v1/users",
        json!({"name": "reader", "permissions": ["orders:read"]}),
    )
    .await
    .ok(201);
    send(
        "POST",
        "/v1/groups",
        json!({"name": "readers", "permissions": ["orders:read"]}),
    )
    .await
    .ok(201);
}
