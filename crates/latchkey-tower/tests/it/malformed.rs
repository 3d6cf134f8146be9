//! Hostile or broken requests get a clear 400 or 401, never a panic or a 500.

use axum::body::Body;
use axum::http::{HeaderValue, Request};

use crate::support::*;

/// A request to `/orders` with a header of raw bytes.
fn with_raw(name: &str, bytes: &[u8]) -> Request<Body> {
    Request::get("/orders")
        .header(name, HeaderValue::from_bytes(bytes).unwrap())
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn several_authorization_headers_are_refused() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let value = format!("Bearer {}", key.secret.expose());
    let app = app(fx.layer().header(X_API_KEY));
    let request = get_with_headers(
        "/orders",
        &[("authorization", &value), ("authorization", &value)],
    );
    send(&app, request).await.assert_several_credentials();
    let request = get_with_headers(
        "/orders",
        &[
            ("x-api-key", key.secret.expose()),
            ("x-api-key", key.secret.expose()),
        ],
    );
    send(&app, request).await.assert_several_credentials();
}

#[tokio::test]
async fn a_non_utf8_value_is_refused() {
    let fx = Fixture::new();
    let app = app(fx.layer().header(X_API_KEY));
    let mut bytes = b"Bearer lk_live_".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x80]);
    let reply = send(&app, with_raw("authorization", &bytes)).await;
    reply.assert_invalid("invalid_key");
    assert_eq!(reply.json()["detail"], "The credential is not valid UTF-8.");
    send(&app, with_raw("x-api-key", &bytes[7..]))
        .await
        .assert_invalid("invalid_key");
}

#[tokio::test]
async fn a_64_kib_value_is_refused() {
    let fx = Fixture::new();
    let app = app(fx.layer().header(X_API_KEY).allow_query_param("k"));
    let huge = "A".repeat(64 * 1024);
    let reply = send(&app, get_with("/orders", &huge)).await;
    reply.assert_invalid("invalid_key");
    assert_eq!(
        reply.json()["detail"],
        "The credential is longer than any API key."
    );
    let request = get_with_headers("/orders", &[("x-api-key", &huge)]);
    send(&app, request).await.assert_invalid("invalid_key");
    // A URI is at most 64 KiB in all (http's limit).
    send(&app, get(&format!("/orders?k={}", &huge[..60 * 1024])))
        .await
        .assert_invalid("invalid_key");
    // A huge header with another scheme is simply not a key.
    let request = get_with_headers("/orders", &[("authorization", &format!("Basic {huge}"))]);
    send(&app, request).await.assert_missing();
}

#[tokio::test]
async fn a_key_sized_non_utf8_value_is_refused_as_such_by_the_default_layer() {
    let (_fx, key, app) = reader_app();
    get_orders(&app, &key).await.assert_ok();
    // The known key with its last byte made invalid UTF-8: the fast path does not
    // recognise it, and the full path names the reason.
    let mut bytes = format!("Bearer {}", key.secret.expose()).into_bytes();
    *bytes.last_mut().unwrap() = 0xff;
    let reply = send(&app, with_raw("authorization", &bytes)).await;
    reply.assert_invalid("invalid_key");
    assert_eq!(reply.json()["detail"], "The credential is not valid UTF-8.");
}
