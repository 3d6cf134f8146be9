//! `/v1/groups`.

use serde_json::json;

use crate::common::{Harness, keys_of, names};

#[tokio::test]
async fn create_show_list_update_delete() {
    let h = Harness::new();
    let created = h
        .created(
            "/v1/groups",
            json!({"name": "readers", "permissions": ["orders:read", "invoices:read"]}),
        )
        .await;
    assert_eq!(
        keys_of(&created),
        ["created_at", "id", "name", "permissions", "updated_at"]
    );
    assert_eq!(created["name"], "readers");
    assert_eq!(
        created["permissions"],
        json!(["invoices:read", "orders:read"])
    );
    let id = created["id"].as_str().unwrap();

    assert_eq!(h.get(&format!("/v1/groups/{id}")).await.ok(200), created);
    assert_eq!(h.get("/v1/groups/readers").await.ok(200), created);

    let list = h.get("/v1/groups").await.ok(200);
    assert_eq!(keys_of(&list), ["items", "next_cursor"]);
    assert_eq!(list["next_cursor"], json!(null));
    assert_eq!(names(&list), ["admin", "readers"]);

    let updated = h
        .patch(
            "/v1/groups/readers",
            json!({"name": "viewers", "add_permissions": ["users:read"], "remove_permissions": ["invoices:read"]}),
        )
        .await
        .ok(200);
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["name"], "viewers");
    assert_eq!(updated["permissions"], json!(["orders:read", "users:read"]));
    let replaced = h
        .patch(&format!("/v1/groups/{id}"), json!({"permissions": ["a:b"]}))
        .await
        .ok(200);
    assert_eq!(replaced["permissions"], json!(["a:b"]));
    h.get("/v1/groups/readers").await.problem(404, "not_found");

    let r = h.delete("/v1/groups/viewers").await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    let uri = format!("/v1/groups/{id}");
    for method in ["GET", "DELETE"] {
        h.admin(method, &uri, None).await.problem(404, "not_found");
    }
}

#[tokio::test]
async fn a_group_change_reaches_its_members_keys_at_once() {
    let h = Harness::new();
    h.created(
        "/v1/groups",
        json!({"name": "ops", "permissions": ["deploy:read"]}),
    )
    .await;
    h.created("/v1/users", json!({"name": "bot", "groups": ["ops"]}))
        .await;
    let key = h.key_for("bot").await;
    let secret = key["secret"].as_str().unwrap();
    assert!(!h.store.verify(secret).unwrap().has("deploy:write"));
    h.patch(
        "/v1/groups/ops",
        json!({"add_permissions": ["deploy:write"]}),
    )
    .await
    .ok(200);
    assert!(h.store.verify(secret).unwrap().has("deploy:write"));
    h.delete("/v1/groups/ops").await;
    let after = h.get("/v1/users/bot").await.ok(200);
    assert_eq!(after["groups"], json!([]));
    assert!(!h.store.verify(secret).unwrap().has("deploy:read"));
}

#[tokio::test]
async fn errors() {
    let h = Harness::new();
    h.created("/v1/groups", json!({"name": "ops"})).await;
    let dup = h
        .post("/v1/groups", json!({"name": "ops"}))
        .await
        .problem(409, "name_taken");
    assert!(dup["detail"].as_str().unwrap().contains("ops"));
    #[rustfmt::skip]
    h.field_problems(400, "invalid_field", &[
        ("POST /v1/groups", json!({"name": "x", "permissions": ["orders:read", "Orders"]}), "permissions"),
        ("POST /v1/groups", json!({"name": "bad name!"}), "name"),
        ("POST /v1/groups", json!({"name": "x", "colour": "red"}), "colour"),
        ("PATCH /v1/groups/ops", json!({"permissions": "orders:read"}), "permissions"),
        ("GET /v1/groups?limit=5000", json!(null), "limit"),
        ("GET /v1/groups?cursor=zz", json!(null), "cursor"),
    ]).await;
    h.patch("/v1/groups/nope", json!({"name": "x"}))
        .await
        .problem(404, "not_found");
    h.created("/v1/groups", json!({"name": "other"})).await;
    h.patch("/v1/groups/other", json!({"name": "ops"}))
        .await
        .problem(409, "name_taken");
    assert_eq!(h.store.groups().unwrap().len(), 3);
}
