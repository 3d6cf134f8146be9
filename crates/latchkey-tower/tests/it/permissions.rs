use latchkey_tower::latchkey_core::{Actor, GroupPatch, NewKey, NewUser};
use latchkey_tower::{Env, Permission, RequirePermission};

use crate::support::*;

#[tokio::test]
async fn a_missing_permission_is_403_with_the_scope() {
    let fx = Fixture::new();
    let (_, reader) = fx.key_for("reader", &["orders:read"]);
    let (_, other) = fx.key_for("billing", &["invoices:read"]);
    let app = app(fx.layer());
    // RequirePermission as a route layer.
    get_orders(&app, &other)
        .await
        .assert_forbidden("orders:read");
    // `principal.require` in the handler.
    post_orders(&app, &reader)
        .await
        .assert_forbidden("orders:write");
}

#[tokio::test]
async fn a_group_permission_removed_is_403_on_the_next_request() {
    let fx = Fixture::new();
    let group = fx.group("clerks", &["orders:read", "orders:write"]);
    let user = fx.user_with(NewUser {
        name: "clerk".into(),
        groups: vec![group.id],
        ..NewUser::default()
    });
    let key = fx.key(&user);
    let app = app(fx.layer());
    get_orders(&app, &key).await.assert_ok();
    fx.store
        .update_group(
            &Actor::system(),
            group.id,
            GroupPatch {
                permissions: latchkey_core::PermissionEdit::removing(perms(&["orders:read"])),
                ..GroupPatch::default()
            },
        )
        .unwrap();
    get_orders(&app, &key).await.assert_forbidden("orders:read");
    let created = post_orders(&app, &key).await;
    assert_eq!(created.status, 201);
}

#[tokio::test]
async fn scopes_narrow_the_user_s_permissions() {
    let fx = Fixture::new();
    let user = fx.user("clerk", &["orders:*"]);
    let key = fx.key_with(NewKey {
        scopes: Some(perms(&["orders:read"])),
        ..new_key(&user, Env::Live)
    });
    let app = app(fx.layer());
    get_orders(&app, &key).await.assert_ok();
    post_orders(&app, &key)
        .await
        .assert_forbidden("orders:write");
    // A scope the user does not hold grants nothing.
    let user = fx.user("reader", &["orders:read"]);
    let key = fx.key_with(NewKey {
        scopes: Some(perms(&["orders:read", "orders:write"])),
        ..new_key(&user, Env::Live)
    });
    post_orders(&app, &key)
        .await
        .assert_forbidden("orders:write");
}

#[tokio::test]
async fn wildcards_cover_what_is_under_them() {
    let fx = Fixture::new();
    let (_, orders) = fx.key_for("clerk", &["orders:*"]);
    let (_, admin) = fx.key_for("admin", &["*"]);
    let (_, items) = fx.key_for("items", &["orders:items:*"]);
    let app = app(fx.layer());
    for key in [&orders, &admin] {
        get_orders(&app, key).await.assert_ok();
        let created = post_orders(&app, key).await;
        assert_eq!(created.status, 201);
    }
    get_orders(&app, &items)
        .await
        .assert_forbidden("orders:read");
}

#[tokio::test]
async fn without_the_layer_the_extractor_and_require_answer_401() {
    let app = routes();
    // The extractor: 401 in the default realm, never a 500.
    let reply = send(&app, get("/whoami")).await;
    reply.assert_refused(401, Some(r#"Bearer realm="api""#), "missing_key");
    // RequirePermission without a principal.
    let reply = send(&app, get("/orders")).await;
    reply.assert_refused(401, Some(r#"Bearer realm="api""#), "missing_key");
    // `Option<Principal>` is simply `None`.
    let reply = send(&app, get("/health")).await;
    assert_eq!(reply.assert_ok()["authenticated"], false);
}

#[test]
#[should_panic(expected = "invalid permission")]
fn an_invalid_permission_literal_is_refused_at_configuration() {
    let _ = RequirePermission::layer(Permission::from_static("Orders Read"));
}

#[test]
fn a_permission_read_at_run_time_is_a_result() {
    assert!(Permission::parse("Orders Read").is_err());
    let layer = RequirePermission::layer(Permission::parse("orders:read").unwrap());
    assert_eq!(layer.permission().as_str(), "orders:read");
}
