use axum::body::Body;
use axum::http::Request;
use latchkey_tower::{ApiKeyAuthLayer, Env};

use crate::support::*;

fn with_header(path: &str, name: &str, value: &str) -> Request<Body> {
    get_with_headers(path, &[(name, value)])
}

#[tokio::test]
async fn an_extra_header_is_read_only_when_configured() {
    let (fx, key, plain) = reader_app();
    let key = key.secret.expose();
    send(&plain, with_header("/orders", "x-api-key", key))
        .await
        .assert_missing();
    let app = app(fx.layer().header("X-API-Key".parse().unwrap()));
    send(&app, with_header("/orders", "x-api-key", key))
        .await
        .assert_ok();
    send(&app, get_with("/orders", key)).await.assert_ok();
    // Both at once: one method per request (RFC 6750 §2).
    let both = get_with_headers(
        "/orders",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("x-api-key", key),
        ],
    );
    send(&app, both).await.assert_several_credentials();
}

#[tokio::test]
async fn the_query_string_is_read_only_when_enabled() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let key = key.secret.expose();
    let uri = format!("/orders?page=2&api_key={key}");
    send(&app(fx.layer()), get(&uri)).await.assert_missing();
    let app = app(fx.layer().allow_query_param("api_key"));
    send(&app, get(&uri)).await.assert_ok();
    send(&app, get("/orders?api_key=nope"))
        .await
        .assert_invalid("invalid_key");
    send(&app, get(&format!("/orders?api_key={key}&api_key={key}")))
        .await
        .assert_several_credentials();
    send(&app, get_with(&uri, key))
        .await
        .assert_several_credentials();
}

/// RFC 6750 §2.3: a success answer to a request whose key came in the query is `private`,
/// so no shared cache keeps it; other answers keep the inner service's headers.
#[tokio::test]
async fn a_success_answer_to_a_key_in_the_query_is_private() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let key = key.secret.expose();
    let app = app(fx.layer().allow_query_param("api_key"));
    let cache_control = |reply: &Reply| reply.headers.get("cache-control").cloned();
    let reply = send(&app, get(&format!("/orders?api_key={key}"))).await;
    reply.assert_ok();
    assert_eq!(cache_control(&reply).unwrap(), "private");
    // Once known, the key takes the verifier's fast path: the same answer.
    let reply = send(&app, get(&format!("/whoami?api_key={key}"))).await;
    reply.assert_ok();
    assert_eq!(cache_control(&reply).unwrap(), "private");
    // The header, or a refusal: nothing added.
    let reply = send(&app, get_with("/orders", key)).await;
    reply.assert_ok();
    assert_eq!(cache_control(&reply), None);
    let reply = send(&app, get("/orders?api_key=nope")).await;
    reply.assert_invalid("invalid_key");
    assert_eq!(cache_control(&reply), None);
}

#[tokio::test]
async fn hide_credentials_strips_the_key_before_the_inner_service() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &[]);
    let key = key.secret.expose();
    let layer = || fx.layer().header(X_API_KEY).allow_query_param("api_key");

    let shown = app(layer());
    let seen = send(&shown, get_with("/echo", key)).await.assert_ok();
    assert_eq!(seen["authorization"], format!("Bearer {key}"));

    let hidden = app(layer().hide_credentials(true));
    let seen = send(&hidden, get_with("/echo", key)).await.assert_ok();
    assert_eq!(seen["authorization"], serde_json::Value::Null);
    let seen = send(&hidden, with_header("/echo", "x-api-key", key))
        .await
        .assert_ok();
    assert_eq!(seen["x_api_key"], serde_json::Value::Null);
    let seen = send(&hidden, get(&format!("/echo?a=1&api_key={key}&b=2")))
        .await
        .assert_ok();
    assert_eq!(seen["uri"], "/echo?a=1&b=2");
    // axum's `OriginalUri` too, which the router inserted before the layer ran.
    assert_eq!(seen["original_uri"], "/echo?a=1&b=2");
    let seen = send(&hidden, get(&format!("/echo?api_key={key}")))
        .await
        .assert_ok();
    assert_eq!(seen["uri"], "/echo");
    assert_eq!(seen["original_uri"], "/echo");
}

#[tokio::test]
async fn a_service_can_refuse_test_keys() {
    let fx = Fixture::new();
    let user = fx.user("reader", &["orders:read"]);
    let live = fx.key_with(new_key(&user, Env::Live));
    let test = fx.key_with(new_key(&user, Env::Test));
    let live_only = app(fx.layer().refuse_test_keys());
    get_orders(&live_only, &live).await.assert_ok();
    get_orders(&live_only, &test)
        .await
        .assert_invalid("invalid_key");
    let test_only = app(fx.layer().accept_only(Env::Test));
    get_orders(&test_only, &test).await.assert_ok();
    get_orders(&test_only, &live)
        .await
        .assert_invalid("invalid_key");
}

#[tokio::test]
async fn public_paths_skip_authentication() {
    let fx = Fixture::new();
    let app = app(fx.layer().public_paths(["/health", "/ech*"]));
    let reply = send(&app, get("/health")).await;
    assert_eq!(reply.assert_ok()["authenticated"], false);
    send(&app, get("/echo")).await.assert_ok();
    send(&app, get("/orders")).await.assert_missing();
    send(&app, get("/health/more")).await.assert_missing();
}

#[tokio::test]
async fn the_default_realm_is_api() {
    let fx = Fixture::new();
    let app = app(ApiKeyAuthLayer::new(fx.store.clone()));
    send(&app, get("/orders")).await.assert_refused(
        401,
        Some(r#"Bearer realm="api""#),
        "missing_key",
    );
    send(&app, get_with("/orders", "nope"))
        .await
        .assert_refused(
            401,
            Some(r#"Bearer realm="api", error="invalid_token""#),
            "invalid_key",
        );
}

#[test]
fn a_realm_with_a_quote_or_a_control_character_is_refused() {
    for bad in ["a\"b", "a\\b", "a\nb", "é"] {
        let err = latchkey_tower::Realm::try_from(bad).unwrap_err();
        assert!(err.to_string().contains("realm"), "{err}");
    }
    assert_eq!(
        latchkey_tower::Realm::try_from("my api").unwrap().as_str(),
        "my api"
    );
}

#[test]
fn the_layer_s_debug_shows_no_key_material() {
    let fx = Fixture::new();
    let debug = format!("{:?}", fx.layer().header(X_API_KEY));
    assert!(debug.contains("Store"), "{debug}");
    assert!(debug.contains("x-api-key"), "{debug}");
}

#[tokio::test]
async fn a_recognised_key_of_a_refused_env_is_still_refused() {
    let fx = Fixture::new();
    let user = fx.user("reader", &["orders:read"]);
    let test = fx.key_with(new_key(&user, Env::Test));
    let text = test.secret.expose();
    send(&app(fx.layer()), get_with("/orders", text))
        .await
        .assert_ok();
    assert!(fx.store.verify_known(text.as_bytes()).is_some());
    let reply = send(
        &app(fx.layer().refuse_test_keys()),
        get_with("/orders", text),
    )
    .await;
    reply.assert_invalid("invalid_key");
    assert_eq!(
        reply.json()["detail"],
        "This service does not accept keys of this environment."
    );
}
