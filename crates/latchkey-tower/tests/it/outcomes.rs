use latchkey_tower::latchkey_core::{Actor, KeyPatch, NewKey, NewUser, Prefix, UserPatch};
use latchkey_tower::{ApiKey, Env};
use time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_valid_key_reaches_the_handler() {
    let (_fx, key, app) = reader_app();
    let reply = get_orders(&app, &key).await;
    assert_eq!(reply.assert_ok()["user"], "reader");
}

/// The extractor, `Extension<Principal>` and a plain read of the extensions all find the
/// one `Principal` the layer put there.
#[tokio::test]
async fn the_extractor_and_extension_find_the_same_principal() {
    use axum::Extension;
    use axum::extract::Request;
    use latchkey_tower::Principal;

    async fn both(
        extracted: Principal,
        Extension(extension): Extension<Principal>,
        request: Request,
    ) -> String {
        let read = request
            .extensions()
            .get::<Principal>()
            .expect("in the extensions");
        assert_eq!(extracted, extension);
        assert_eq!(&extension, read);
        extension.user_name.clone()
    }
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let app = axum::Router::new()
        .route("/both", axum::routing::get(both))
        .layer(fx.layer());
    let reply = get_as(&app, "/both", &key).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "reader");
}

#[tokio::test]
async fn no_header_is_401_missing_key() {
    let fx = Fixture::new();
    let reply = send(&app(fx.layer()), get("/orders")).await;
    reply.assert_missing();
}

#[tokio::test]
async fn another_scheme_is_401_missing_key() {
    let (_fx, key, app) = reader_app();
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Token {}", key.secret.expose()),
        format!("Bearer{}", key.secret.expose()),
    ] {
        let request = get_with_headers("/orders", &[("authorization", &value)]);
        send(&app, request).await.assert_missing();
    }
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let (_fx, key, app) = reader_app();
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let request = get_with_headers(
            "/orders",
            &[(
                "authorization",
                &format!("{scheme}  {}", key.secret.expose()),
            )],
        );
        send(&app, request).await.assert_ok();
    }
}

#[tokio::test]
async fn a_malformed_key_is_401_invalid_key() {
    let (_fx, key, app) = reader_app();
    let text = key.secret.expose();
    let typo = format!("{}x{}", &text[..20], &text[21..]);
    let truncated = &text[..text.len() - 1];
    for malformed in ["nope", "lk_live_", truncated, &typo, "Bearer"] {
        send(&app, get_with("/orders", malformed))
            .await
            .assert_invalid("invalid_key");
    }
    // `Authorization: Bearer` with nothing after it.
    let request = get_with_headers("/orders", &[("authorization", "Bearer")]);
    send(&app, request).await.assert_invalid("invalid_key");
}

#[tokio::test]
async fn an_unknown_id_and_a_wrong_secret_are_the_same_answer() {
    let (_fx, key, app) = reader_app();
    let unknown = ApiKey::generate(&Prefix::default(), Env::Live);
    let other_store = ApiKey::generate(&Prefix::new("zz").unwrap(), Env::Live);
    let wrong = with_wrong_secret(&key.secret);

    let unknown = send(&app, get_with("/orders", unknown.expose())).await;
    let wrong = send(&app, get_with("/orders", &wrong)).await;
    let other_store = send(&app, get_with("/orders", other_store.expose())).await;
    unknown.assert_invalid("invalid_key");
    wrong.assert_invalid("invalid_key");
    other_store.assert_invalid("invalid_key");
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.headers, wrong.headers);
    assert_eq!(other_store.body, wrong.body);
}

#[tokio::test]
async fn disabled_then_re_enabled() {
    let (fx, key, app) = reader_app();
    let disable = |enabled| KeyPatch {
        enabled: Some(enabled),
        ..KeyPatch::default()
    };
    get_orders(&app, &key).await.assert_ok();
    fx.store
        .update_key(&Actor::system(), key.key.id, disable(false))
        .unwrap();
    get_orders(&app, &key).await.assert_invalid("key_disabled");
    // Only the holder of the secret learns why.
    send(&app, get_with("/orders", &with_wrong_secret(&key.secret)))
        .await
        .assert_invalid("invalid_key");
    fx.store
        .update_key(&Actor::system(), key.key.id, disable(true))
        .unwrap();
    get_orders(&app, &key).await.assert_ok();
}

#[tokio::test]
async fn revoked_is_401_key_revoked() {
    let (fx, key, app) = reader_app();
    get_orders(&app, &key).await.assert_ok();
    fx.store.revoke_key(&Actor::system(), key.key.id).unwrap();
    get_orders(&app, &key).await.assert_invalid("key_revoked");
}

#[tokio::test]
async fn expired_is_401_key_expired() {
    let fx = Fixture::new();
    let user = fx.user("reader", &["orders:read"]);
    let key = fx.key_with(NewKey {
        expires_at: Some(fx.clock_now() + Duration::hours(1)),
        ..new_key(&user, Env::Live)
    });
    let app = app(fx.layer());
    get_orders(&app, &key).await.assert_ok();
    fx.clock.advance(Duration::minutes(59));
    get_orders(&app, &key).await.assert_ok();
    fx.clock.advance(Duration::minutes(1));
    get_orders(&app, &key).await.assert_invalid("key_expired");
}

#[tokio::test]
async fn a_disabled_user_is_401_user_disabled() {
    let fx = Fixture::new();
    let (user, key) = fx.key_for("reader", &["orders:read"]);
    let app = app(fx.layer());
    let enable = |enabled| UserPatch {
        enabled: Some(enabled),
        ..UserPatch::default()
    };
    fx.store
        .update_user(&Actor::system(), user.id, enable(false))
        .unwrap();
    get_orders(&app, &key).await.assert_invalid("user_disabled");
    fx.store
        .update_user(&Actor::system(), user.id, enable(true))
        .unwrap();
    get_orders(&app, &key).await.assert_ok();
}

#[tokio::test]
async fn a_deleted_user_s_key_no_longer_authenticates() {
    let fx = Fixture::new();
    let (user, key) = fx.key_for("reader", &["orders:read"]);
    let app = app(fx.layer());
    get_orders(&app, &key).await.assert_ok();
    fx.store.delete_user(&Actor::system(), user.id).unwrap();
    // Deleting a user revokes its keys in the same transaction.
    get_orders(&app, &key).await.assert_invalid("key_revoked");
}

#[tokio::test]
async fn the_principal_carries_every_field() {
    let fx = Fixture::new();
    let group = fx.group("clerks", &["orders:read"]);
    let user = fx.user_with(NewUser {
        name: "acme-bot".into(),
        groups: vec![group.id],
        permissions: perms(&["invoices:read"]),
        tenant_id: Some("t-1".into()),
        organization_id: Some("acme".into()),
        ..NewUser::default()
    });
    let key = fx.key_with(NewKey {
        name: "nightly".into(),
        ..new_key(&user, Env::Test)
    });
    let reply = send(&app(fx.layer()), get_with("/whoami", key.secret.expose())).await;
    let principal = reply.assert_ok();
    assert_eq!(principal["key_id"], key.key.id.to_string());
    assert_eq!(principal["prefix"], key.secret.display_prefix());
    assert_eq!(principal["key_name"], "nightly");
    assert_eq!(principal["env"], "test");
    assert_eq!(principal["user_id"], user.id.to_string());
    assert_eq!(principal["user_name"], "acme-bot");
    assert_eq!(principal["tenant_id"], "t-1");
    assert_eq!(principal["organization_id"], "acme");
    let mut permissions: Vec<String> =
        serde_json::from_value(principal["permissions"].clone()).unwrap();
    permissions.sort();
    assert_eq!(permissions, ["invoices:read", "orders:read"]);
}

impl Fixture {
    fn clock_now(&self) -> time::OffsetDateTime {
        use latchkey_tower::latchkey_core::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_key_seen_before_is_recognised_with_the_same_principal() {
    let (fx, key, app) = reader_app();
    let text = key.secret.expose();
    assert!(fx.store.verify_known(text.as_bytes()).is_none());
    let first = send(&app, get_with("/whoami", text)).await.assert_ok();
    // The second request takes the layer's fast path: recognised by the store's tag.
    assert!(fx.store.verify_known(text.as_bytes()).is_some());
    let second = send(&app, get_with("/whoami", text)).await.assert_ok();
    assert_eq!(first, second);
    send(&app, get_with("/whoami", &with_wrong_secret(&key.secret)))
        .await
        .assert_invalid("invalid_key");
    send(&app, get_with("/whoami", text)).await.assert_ok();
}
