//! `/v1/users`.

use serde_json::json;

use crate::common::{Harness, keys_of};

#[tokio::test]
async fn create_show_list_update_delete() {
    let h = Harness::new();
    let group = h.group("readers", &["orders:read"]).await;
    let created = h
        .post(
            "/v1/users",
            json!({"name": "billing-bot", "groups": ["readers"], "permissions": ["invoices:write"],
                   "tenant_id": "t1", "organization_id": "o1"}),
        )
        .await
        .ok(201);
    assert_eq!(
        keys_of(&created),
        [
            "created_at",
            "enabled",
            "groups",
            "id",
            "name",
            "organization_id",
            "permissions",
            "rate_limits",
            "tenant_id",
            "updated_at"
        ]
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["groups"], json!([group["id"]]));
    assert_eq!(created["permissions"], json!(["invoices:write"]));
    assert_eq!(created["tenant_id"], "t1");
    assert_eq!(created["organization_id"], "o1");
    let id = created["id"].as_str().unwrap();

    assert_eq!(h.get(&format!("/v1/users/{id}")).await.ok(200), created);
    assert_eq!(h.get("/v1/users/billing-bot").await.ok(200), created);
    let list = h.get("/v1/users").await.ok(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["next_cursor"], json!(null));

    // By group id as well as by name; null clears the tenant; absent leaves the organization.
    h.created("/v1/groups", json!({"name": "writers"})).await;
    let updated = h
        .patch(
            "/v1/users/billing-bot",
            json!({"name": "billing", "add_groups": ["writers"], "remove_groups": [group["id"]],
                   "add_permissions": ["invoices:read"], "tenant_id": null, "enabled": false}),
        )
        .await
        .ok(200);
    assert_eq!(updated["name"], "billing");
    assert_eq!(updated["groups"].as_array().unwrap().len(), 1);
    assert_ne!(updated["groups"][0], group["id"]);
    assert_eq!(
        updated["permissions"],
        json!(["invoices:read", "invoices:write"])
    );
    assert_eq!(updated["tenant_id"], json!(null));
    assert_eq!(updated["organization_id"], "o1");
    assert_eq!(updated["enabled"], false);
    let replaced = h
        .patch(
            &format!("/v1/users/{id}"),
            json!({"groups": [], "permissions": [], "enabled": true}),
        )
        .await
        .ok(200);
    assert_eq!(replaced["groups"], json!([]));
    assert_eq!(replaced["permissions"], json!([]));

    let key = h.key_for("billing").await;
    let r = h.delete("/v1/users/billing").await;
    assert_eq!(r.status, 204);
    h.get(&format!("/v1/users/{id}"))
        .await
        .problem(404, "not_found");
    // Deleting a user revokes its keys in the same transaction.
    let secret = key["secret"].as_str().unwrap();
    assert!(h.store.verify(secret).is_err());
    let key = h
        .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
        .await
        .ok(200);
    assert_eq!(key["status"], "revoked");
}

#[tokio::test]
async fn disabling_a_user_stops_its_keys_at_once() {
    let h = Harness::new();
    let (_, secret) = h.user_with_key("bot", &["orders:read"]).await;
    assert!(h.store.verify(&secret).is_ok());
    h.patch("/v1/users/bot", json!({"enabled": false}))
        .await
        .ok(200);
    assert_eq!(h.store.verify(&secret).unwrap_err().code(), "user_disabled");
    h.patch("/v1/users/bot", json!({"enabled": true}))
        .await
        .ok(200);
    assert!(h.store.verify(&secret).is_ok());
}

#[tokio::test]
async fn errors() {
    let h = Harness::new();
    h.created("/v1/users", json!({"name": "bot"})).await;
    h.post("/v1/users", json!({"name": "bot"}))
        .await
        .problem(409, "name_taken");
    #[rustfmt::skip]
    h.field_problems(404, "not_found", &[
        ("POST /v1/users", json!({"name": "x", "groups": ["nope"]}), "groups"),
        ("PATCH /v1/users/bot", json!({"add_groups": ["nope"]}), "add_groups"),
    ]).await;
    h.patch("/v1/users/nobody", json!({"enabled": false}))
        .await
        .problem(404, "not_found");
    h.get("/v1/users/01890000-0000-7000-8000-000000000000")
        .await
        .problem(404, "not_found");
    h.delete("/v1/users/nobody").await.problem(404, "not_found");
    #[rustfmt::skip]
    h.field_problems(400, "invalid_field", &[
        ("POST /v1/users", json!({"name": "y", "enabled": "yes"}), "enabled"),
        ("POST /v1/users", json!({"name": "y", "permissions": ["a::b"]}), "permissions"),
        ("PATCH /v1/users/bot", json!({"tenant": "t"}), "tenant"),
        ("POST /v1/users", json!({"permissions": []}), "name"),
        ("POST /v1/users", json!({"name": "01890000-0000-7000-8000-000000000000"}), "name"),
        ("PATCH /v1/users/bot", json!({"tenant_id": ""}), "tenant_id"),
    ]).await;
    assert_eq!(h.store.users().unwrap().len(), 2);
}

/// Users and groups come in pages like keys: every record once, in creation order.
#[tokio::test]
async fn users_and_groups_are_listed_page_by_page() {
    let h = Harness::new();
    let mut created = vec!["admin".to_owned()];
    for i in 0..7 {
        let name = format!("user-{i}");
        h.created("/v1/users", json!({"name": name})).await;
        h.created("/v1/groups", json!({"name": format!("group-{i}")}))
            .await;
        created.push(name);
    }
    for (collection, expected) in [
        ("users", created.clone()),
        ("groups", {
            let mut groups = vec!["admin".to_owned()];
            groups.extend((0..7).map(|i| format!("group-{i}")));
            groups
        }),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let after = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let page = h
                .get(&format!("/v1/{collection}?limit=3{after}"))
                .await
                .ok(200);
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 3);
            seen.extend(items.iter().map(|u| u["name"].as_str().unwrap().to_owned()));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, expected, "{collection}");
    }
    // A cursor of one collection is not one of the other.
    let page = h.get("/v1/users?limit=1").await.ok(200);
    let cursor = page["next_cursor"].as_str().unwrap();
    #[rustfmt::skip]
    h.field_problems(400, "invalid_field", &[
        (&format!("GET /v1/groups?cursor={cursor}"), json!(null), "cursor"),
        ("GET /v1/users?limit=0", json!(null), "limit"),
    ]).await;
}

#[tokio::test]
async fn revoke_keys_revokes_every_key_of_the_user_and_nothing_else() {
    let h = Harness::new();
    let (user, first) = h.user_with_key("bot", &["orders:read"]).await;
    let second = h
        .created("/v1/keys", json!({"name": "second", "user_id": "bot"}))
        .await;
    let (_, other) = h.user_with_key("other", &["orders:read"]).await;
    let done = h.post("/v1/users/bot/revoke-keys", json!({})).await.ok(200);
    assert_eq!(done["user_id"], user["id"]);
    assert_eq!(done["revoked_now"], 2);
    assert_eq!(done["in_background"], false);
    assert_eq!(h.store.verify(&first).unwrap_err().code(), "key_revoked");
    let second = second["secret"].as_str().unwrap();
    assert_eq!(h.store.verify(second).unwrap_err().code(), "key_revoked");
    assert!(
        h.store.verify(&other).is_ok(),
        "another user's key is untouched"
    );
    let listed = h.get("/v1/keys?user_id=bot&status=revoked").await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    // The user stays, and its new keys work.
    let third = h
        .created("/v1/keys", json!({"name": "third", "user_id": "bot"}))
        .await;
    assert!(h.store.verify(third["secret"].as_str().unwrap()).is_ok());
    let events = h.store.events_since(0, 100).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == latchkey_core::Action::UserRevokeKeys)
    );

    h.post("/v1/users/nobody/revoke-keys", json!({}))
        .await
        .problem(404, "not_found");
    // A caller weaker than the user cannot revoke its keys.
    let (_, weak) = h.user_with_key("weak", &["latchkey:keys:write"]).await;
    h.request_as(&weak, "POST /v1/users/bot/revoke-keys", &json!({}))
        .await
        .problem(403, "insufficient_permission");
}

#[tokio::test]
async fn users_by_id_in_one_answer() {
    let h = Harness::new();
    let a = h.created("/v1/users", json!({"name": "a"})).await;
    let b = h.created("/v1/users", json!({"name": "b"})).await;
    let unknown = "00000000-0000-7000-8000-000000000000";
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let list = h
        .get(&format!("/v1/users?ids={b},{unknown},{a},{b}"))
        .await
        .ok(200);
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["b", "a"],
        "in the order asked, once each, the unknown left out"
    );
    assert_eq!(list["next_cursor"], json!(null));
    let many = vec![unknown; 101].join(",");
    for query in [
        "ids=x".to_owned(),
        format!("ids={a}&limit=1"),
        format!("ids={a}&cursor=abc"),
        format!("ids={many}"),
    ] {
        let bad = h
            .get(&format!("/v1/users?{query}"))
            .await
            .problem(400, "invalid_field");
        assert_eq!(bad["field"], "ids", "{query}");
    }
}
