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
    h.user("orders-admin", &["orders:*"]).await;
    let keys_before = h.store.stats().unwrap().keys.values().sum::<u64>();

    for (user, lacks) in [("admin", "*"), ("orders-admin", "orders:*")] {
        let r = h
            .request_as(
                &deployer,
                "POST /v1/keys",
                &json!({"name": "mine now", "user_id": user}),
            )
            .await;
        let problem = r.problem(403, "insufficient_permission");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer error=\"insufficient_scope\"")
        );
        assert_eq!(problem["detail"], lacking(lacks));
        assert_eq!(problem["permission"], lacks);
    }
    // Nor revoke the keys of a stronger user, told in words that fit the act.
    let r = h
        .request_as(
            &deployer,
            "POST /v1/users/orders-admin/revoke-keys",
            &json!({}),
        )
        .await;
    assert_eq!(
        r.problem(403, "insufficient_permission")["detail"],
        lacking("orders:*")
    );
    // Not with scopes that only look narrow on a stronger user either.
    let r = h
        .request_as(
            &deployer,
            "POST /v1/keys",
            &json!({"name": "k", "user_id": "orders-admin", "scopes": ["orders:write"]}),
        )
        .await;
    r.problem(403, "insufficient_permission");
    assert_eq!(
        h.store.stats().unwrap().keys.values().sum::<u64>(),
        keys_before
    );

    // Within its own permissions it may: a key for a user no stronger than itself.
    h.user("reader", &["orders:read"]).await;
    let r = h
        .request_as(
            &deployer,
            "POST /v1/keys",
            &json!({"name": "k", "user_id": "reader"}),
        )
        .await;
    assert_eq!(
        r.ok(201)["user_id"],
        h.get("/v1/users/reader").await.ok(200)["id"]
    );
    // And a narrowed key for the stronger user, when the narrowing is within itself.
    let r = h
        .request_as(
            &deployer,
            "POST /v1/keys",
            &json!({"name": "k", "user_id": "orders-admin", "scopes": ["orders:read"]}),
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
    #[rustfmt::skip]
    h.problems_as(&manager, 403, "insufficient_permission", &[
        ("POST /v1/users", json!({"name": "root2", "permissions": ["*"]})),
        ("POST /v1/users", json!({"name": "root3", "groups": ["admin"]})),
        ("POST /v1/groups", json!({"name": "wide", "permissions": ["orders:*"]})),
        // Widening its own user, directly or through a group.
        ("PATCH /v1/users/manager", json!({"add_permissions": ["orders:write"]})),
        ("PATCH /v1/users/manager", json!({"add_groups": ["admin"]})),
        // Widening the admin group, or renaming / disabling the admin user.
        ("PATCH /v1/groups/admin", json!({"name": "mine"})),
        ("PATCH /v1/users/admin", json!({"enabled": false})),
        ("DELETE /v1/users/admin", json!({})),
    ]).await;

    assert_eq!(h.store.users().unwrap().len(), users_before);
    assert_eq!(h.store.groups().unwrap().len(), groups_before);
    let me = h.get("/v1/users/manager").await.ok(200);
    assert_eq!(me["groups"], json!([]));
    assert!(!h.store.verify(&manager).unwrap().has("orders:write"));
    assert!(h.store.verify(&h.admin).is_ok());

    // Within itself it may.
    for request in ["POST /v1/users", "POST /v1/groups"] {
        let body = json!({"name": "readers", "permissions": ["orders:read"]});
        h.request_as(&manager, request, &body).await.ok(201);
    }
}

#[tokio::test]
async fn a_delegated_key_stays_capped_when_its_user_is_widened_later() {
    let h = Harness::new();
    let (_, deployer) = h
        .user_with_key("deployer", &["latchkey:keys:write", "orders:read"])
        .await;
    h.user("bot", &["orders:read"]).await;
    let minted = h
        .request_as(
            &deployer,
            "POST /v1/keys",
            &json!({"name": "delegated", "user_id": "bot"}),
        )
        .await
        .ok(201);
    // Unrestricted was asked; the creator's permissions were stored.
    assert_eq!(
        minted["scopes"],
        json!(["latchkey:keys:write", "orders:read"])
    );
    let secret = minted["secret"].as_str().unwrap();
    // Requested scopes are intersected with the creator's too.
    let narrowed = h
        .request_as(
            &deployer,
            "POST /v1/keys",
            &json!({"name": "n", "user_id": "bot", "scopes": ["orders:*"]}),
        )
        .await
        .ok(201);
    assert_eq!(narrowed["scopes"], json!(["orders:read"]));

    // Someone stronger widens the user later: the delegated key does not follow beyond
    // what its creator held.
    h.patch(
        "/v1/users/bot",
        json!({"add_permissions": ["orders:write", "billing:*"]}),
    )
    .await
    .ok(200);
    let principal = h.store.verify(secret).unwrap();
    assert!(principal.has("orders:read"));
    assert!(!principal.has("orders:write"));
    assert!(!principal.has("billing:read"));
    // A rotation by the same creator keeps the cap; the admin's own keys are not capped.
    let rotated = h
        .send(
            "POST",
            &format!("/v1/keys/{}/rotate", minted["id"].as_str().unwrap()),
            Some(&deployer),
            Some(json!({"grace_seconds": 0})),
        )
        .await
        .ok(201);
    let principal = h.store.verify(rotated["secret"].as_str().unwrap()).unwrap();
    assert!(!principal.has("orders:write"));
    let admins = h
        .created("/v1/keys", json!({"name": "a", "user_id": "bot"}))
        .await;
    assert_eq!(admins["scopes"], json!(null));
    assert!(
        h.store
            .verify(admins["secret"].as_str().unwrap())
            .unwrap()
            .has("orders:write")
    );
}

#[tokio::test]
async fn group_changes_cannot_reach_a_stronger_member() {
    let h = Harness::new();
    let (_, manager) = h
        .user_with_key(
            "manager",
            &[
                "latchkey:groups:write",
                "latchkey:users:write",
                "orders:read",
            ],
        )
        .await;
    h.group("readers", &["orders:read"]).await;
    h.created(
        "/v1/users",
        json!({"name": "boss", "permissions": ["billing:*"], "groups": ["readers"]}),
    )
    .await;
    let seq = h.store.last_seq().unwrap();
    // The group itself is within the manager's permissions, but a member is stronger.
    #[rustfmt::skip]
    h.problems_as(&manager, 403, "insufficient_permission", &[
        ("PATCH /v1/groups/readers", json!({"remove_permissions": ["orders:read"]})),
        ("PATCH /v1/groups/readers", json!({"name": "renamed"})),
        ("DELETE /v1/groups/readers", json!(null)),
        ("PATCH /v1/users/boss", json!({"remove_groups": ["readers"]})),
    ]).await;
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    assert_eq!(
        h.get("/v1/groups/readers").await.ok(200)["permissions"],
        json!(["orders:read"])
    );
    assert_eq!(
        h.get("/v1/users/boss").await.ok(200)["groups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Without the stronger member, the same edit is the manager's to make.
    h.patch("/v1/users/boss", json!({"groups": []}))
        .await
        .ok(200);
    h.created("/v1/users", json!({"name": "weak", "groups": ["readers"]}))
        .await;
    let rename = json!({"name": "renamed"});
    h.request_as(&manager, "PATCH /v1/groups/readers", &rename)
        .await
        .ok(200);
    h.request_as(&manager, "DELETE /v1/groups/renamed", &json!(null))
        .await;
    assert!(h.store.group("renamed").is_err());
}

#[tokio::test]
async fn rotating_a_disabled_key_gives_a_disabled_key() {
    let h = Harness::new();
    h.user("bot", &["x"]).await;
    let key = h.key_for("bot").await;
    let id = key["id"].as_str().unwrap();
    h.patch(&format!("/v1/keys/{id}"), json!({"enabled": false}))
        .await
        .ok(200);
    let rotated = h.rotate(id, 60).await;
    assert_eq!(rotated["enabled"], false);
    assert_eq!(rotated["status"], "disabled");
    let refused = h
        .store
        .verify(rotated["secret"].as_str().unwrap())
        .unwrap_err();
    assert_eq!(refused.code(), "key_disabled");
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_taken_away() {
    let h = Harness::new();
    let admin_key = h.store.verify(&h.admin).unwrap().key_id;
    let admin_group = h.get("/v1/groups/admin").await.ok(200)["id"].clone();
    let seq = h.store.last_seq().unwrap();
    for (method, uri, body) in [
        ("POST", format!("/v1/keys/{admin_key}/revoke"), None),
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"enabled": false})),
        ),
        // Credits at 0 refuse it as surely as disabling it would, and credits of any amount
        // once they are spent.
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"credits": {"remaining": 0}})),
        ),
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"credits": {"remaining": 1}})),
        ),
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"credits": {"remaining": 1_000_000}})),
        ),
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"credits": {"remaining": 0, "refill": {"amount": 10, "interval": "day"}}})),
        ),
        // So does a rate limit that lets it through less than once a minute, its own or
        // its user's: spent, it would stop the key for up to 31 days.
        (
            "PATCH",
            format!("/v1/keys/{admin_key}"),
            Some(json!({"rate_limits": [{"name": "slow", "limit": 1, "window_seconds": 61}]})),
        ),
        (
            "PATCH",
            "/v1/users/admin".to_owned(),
            Some(json!({"rate_limits": [{"name": "d", "limit": 10, "window_seconds": 86400}]})),
        ),
        (
            "PATCH",
            "/v1/users/admin".to_owned(),
            Some(json!({"enabled": false})),
        ),
        (
            "PATCH",
            "/v1/users/admin".to_owned(),
            Some(json!({"groups": []})),
        ),
        ("DELETE", "/v1/users/admin".to_owned(), None),
        ("POST", "/v1/users/admin/revoke-keys".to_owned(), None),
        (
            "PATCH",
            "/v1/groups/admin".to_owned(),
            Some(json!({"permissions": ["orders:read"]})),
        ),
        ("DELETE", "/v1/groups/admin".to_owned(), None),
    ] {
        h.admin(method, &uri, body)
            .await
            .problem(409, "last_admin_key");
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    assert!(h.store.verify(&h.admin).unwrap().has("*"));

    // Changes that keep it, and a second admin key, are fine.
    h.patch("/v1/groups/admin", json!({"name": "root"}))
        .await
        .ok(200);
    h.patch(
        "/v1/users/admin",
        json!({"add_permissions": ["orders:read"]}),
    )
    .await
    .ok(200);
    let uri = format!("/v1/keys/{admin_key}");
    h.patch(&uri, json!({"credits": null})).await.ok(200);
    let once_a_minute = json!([{"name": "m", "limit": 5, "window_seconds": 300}]);
    h.patch(&uri, json!({"rate_limits": once_a_minute}))
        .await
        .ok(200);
    h.patch("/v1/users/admin", json!({"rate_limits": once_a_minute}))
        .await
        .ok(200);
    h.patch(&uri, json!({"rate_limits": []})).await.ok(200);
    h.patch("/v1/users/admin", json!({"rate_limits": []}))
        .await
        .ok(200);
    // A second `*` key its usage control can stop counts for none: credits (spent or not),
    // a rate limit of its own or of its user's slower than once a minute.
    h.user("admin2", &[]).await;
    h.patch("/v1/users/admin2", json!({"add_groups": ["root"]}))
        .await
        .ok(200);
    let slow = json!([{"name": "slow", "limit": 1, "window_seconds": 2_678_400}]);
    for (name, controls) in [
        ("spent", json!({"credits": {"remaining": 0}})),
        ("metered", json!({"credits": {"remaining": 1_000_000}})),
        ("slow", json!({"rate_limits": slow})),
    ] {
        let mut body = json!({"name": name, "user_id": "admin2"});
        body.as_object_mut()
            .unwrap()
            .extend(controls.as_object().unwrap().clone());
        h.created("/v1/keys", body).await;
        h.admin("POST", &format!("/v1/keys/{admin_key}/revoke"), None)
            .await
            .problem(409, "last_admin_key");
    }
    h.created("/v1/keys", json!({"name": "its own", "user_id": "admin2"}))
        .await;
    h.patch("/v1/users/admin2", json!({"rate_limits": slow}))
        .await
        .ok(200);
    h.admin("POST", &format!("/v1/keys/{admin_key}/revoke"), None)
        .await
        .problem(409, "last_admin_key");
    assert_eq!(h.delete("/v1/users/admin2").await.status, 204);
    assert!(h.store.verify(&h.admin).unwrap().has("*"));

    let second = h
        .created("/v1/keys", json!({"name": "second", "user_id": "admin"}))
        .await;
    let second_id = second["id"].as_str().unwrap();
    h.post(&format!("/v1/keys/{admin_key}/revoke"), json!({}))
        .await
        .ok(200);
    // Now the second is the last one.
    let second_secret = second["secret"].as_str().unwrap();
    let r = h
        .send(
            "POST",
            &format!("/v1/keys/{second_id}/revoke"),
            Some(second_secret),
            None,
        )
        .await;
    r.problem(409, "last_admin_key");
    assert_eq!(
        admin_group,
        h.get_as(second_secret, "/v1/groups/root").await["id"]
    );
}

/// A tenant's `*` key manages its tenant only: it keeps no store administrable, so the
/// last global one stays, and the global admin cannot be moved into a tenant either.
#[tokio::test]
async fn a_tenant_bound_star_key_is_not_an_admin_key() {
    let h = Harness::new();
    let admin_key = h.store.verify(&h.admin).unwrap().key_id;
    let root = json!({"name": "acme-root", "permissions": ["*"], "tenant_id": "acme"});
    h.created("/v1/users", root).await;
    let acme = json!({"name": "acme", "user_id": "acme-root"});
    let acme = h.created("/v1/keys", acme).await;
    let seq = h.store.last_seq().unwrap();
    h.admin("POST", &format!("/v1/keys/{admin_key}/revoke"), None)
        .await
        .problem(409, "last_admin_key");
    h.patch("/v1/users/admin", json!({"tenant_id": "acme"}))
        .await
        .problem(409, "last_admin_key");
    assert_eq!(h.store.last_seq().unwrap(), seq, "nothing was written");
    // The tenant's own `*` key goes freely: it was never the last admin key.
    let acme_id = acme["id"].as_str().unwrap();
    h.post(&format!("/v1/keys/{acme_id}/revoke"), json!({}))
        .await
        .ok(200);
}

#[tokio::test]
async fn a_patch_that_changes_nothing_records_nothing() {
    let h = Harness::new();
    h.created("/v1/groups", json!({"name": "g", "permissions": ["x"]}))
        .await;
    h.created(
        "/v1/users",
        json!({"name": "bot", "permissions": ["x"], "groups": ["g"], "tenant_id": "t"}),
    )
    .await;
    let key = h
        .created(
            "/v1/keys",
            json!({"name": "k", "user_id": "bot", "description": "d"}),
        )
        .await;
    let id = key["id"].as_str().unwrap();
    let seq = h.store.last_seq().unwrap();
    let user_before = h.get("/v1/users/bot").await.ok(200);
    let key_uri = format!("/v1/keys/{id}");
    for (uri, body) in [
        (
            key_uri.as_str(),
            json!({"name": "k", "description": "d", "enabled": true}),
        ),
        (key_uri.as_str(), json!({})),
        (
            "/v1/users/bot",
            json!({"name": "bot", "enabled": true, "add_permissions": ["x"], "add_groups": ["g"], "tenant_id": "t"}),
        ),
        ("/v1/users/bot", json!({})),
        ("/v1/groups/g", json!({"name": "g", "permissions": ["x"]})),
    ] {
        h.patch(uri, body).await.ok(200);
    }
    assert_eq!(h.store.last_seq().unwrap(), seq, "no audit event");
    assert_eq!(h.get("/v1/users/bot").await.ok(200), user_before);
    // A real change still records one.
    h.patch(&key_uri, json!({"name": "k2"})).await.ok(200);
    assert_eq!(h.store.last_seq().unwrap(), seq + 1);
}

/// The detail of a 403 `insufficient_permission` whatever the act: granting, or changing a
/// record that holds what the caller lacks.
fn lacking(permission: &str) -> String {
    format!(
        "the caller does not hold {permission:?}, so it can neither grant it nor change a \
         user, group or key that holds it"
    )
}
