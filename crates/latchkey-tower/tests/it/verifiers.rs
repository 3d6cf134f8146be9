use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use latchkey_tower::latchkey_core::{Actor, Principal};
use latchkey_tower::{ApiKey, ApiKeyAuthLayer, Store, VerifyError};
use tower::{Layer, Service, ServiceExt};

use crate::support::*;

type Verifying = std::pin::Pin<Box<dyn Future<Output = Result<Principal, VerifyError>> + Send>>;

/// A verifier that answers only on its second poll, as a remote one would.
fn pending_verifier(store: Store) -> impl Fn(&ApiKey) -> Verifying + Send + Sync + 'static {
    move |key: &ApiKey| {
        let store = store.clone();
        let key = key.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            store.verify_key(&key)
        })
    }
}

#[tokio::test]
async fn a_verifier_that_is_not_ready_at_once() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let app = app(ApiKeyAuthLayer::new(pending_verifier(fx.store.clone()))
        .realm(latchkey_tower::Realm::from_static(REALM)));
    let reply = get_orders(&app, &key).await;
    assert_eq!(reply.assert_ok()["user"], "reader");
    post_orders(&app, &key)
        .await
        .assert_forbidden("orders:write");
    // A key in the query: the answer that comes on a later poll is `private` too.
    let query = crate::support::app(
        ApiKeyAuthLayer::new(pending_verifier(fx.store.clone())).allow_query_param("k"),
    );
    let reply = send(&query, get(&format!("/orders?k={}", key.secret.expose()))).await;
    reply.assert_ok();
    assert_eq!(reply.headers["cache-control"], "private");
    fx.store.revoke_key(&Actor::system(), key.key.id).unwrap();
    get_orders(&app, &key).await.assert_invalid("key_revoked");
}

#[tokio::test]
async fn an_unavailable_keystore_is_503_never_401() {
    let layer = ApiKeyAuthLayer::new(|_: &ApiKey| async {
        Err(VerifyError::Unavailable("disk on fire".into()))
    })
    .realm(latchkey_tower::Realm::from_static(REALM));
    let app = app(layer);
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let reply = get_orders(&app, &key).await;
    reply.assert_refused(503, None, "keystore_unavailable");
    assert_eq!(reply.headers["retry-after"], "1");
    // The cause goes to the logs, not to the client.
    assert!(!String::from_utf8_lossy(&reply.body).contains("disk"));
    // A malformed key is still refused offline, without asking the verifier.
    send(&app, get_with("/orders", "nope"))
        .await
        .assert_invalid("invalid_key");
}

/// A service that counts its clones.
#[derive(Debug)]
struct Counting(Arc<AtomicUsize>);

impl Clone for Counting {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counting(self.0.clone())
    }
}

impl Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let status = if request
            .extensions()
            .get::<latchkey_tower::Principal>()
            .is_some()
        {
            200
        } else {
            500
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status.try_into().unwrap();
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn a_store_authenticates_without_cloning_the_inner_service() {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &[]);
    let clones = Arc::new(AtomicUsize::new(0));

    let mut service = fx.layer().layer(Counting(clones.clone()));
    for _ in 0..3 {
        call_ok(&mut service, key.secret.expose()).await;
    }
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    // A pending verifier moves the ready service into the future and keeps a clone.
    let mut service =
        ApiKeyAuthLayer::new(pending_verifier(fx.store.clone())).layer(Counting(clones.clone()));
    call_ok(&mut service, key.secret.expose()).await;
    assert_eq!(clones.load(Ordering::SeqCst), 1);
}

/// Calls `service` once, as a server would (ready, then call), and expects a 200.
async fn call_ok<S>(service: &mut S, key: &str)
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get_with("/", key))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A verifier that keeps the keys' usage control itself, as a remote one does, and whose
/// every extra charge finds the key revoked since the layer admitted it: at once, or from a
/// task (a request to the daemon).
struct RevokedMeanwhile {
    store: Store,
    from_a_task: bool,
}

impl latchkey_tower::Verifier for RevokedMeanwhile {
    type Future = Verifying;

    fn verify(&self, key: &ApiKey) -> Verifying {
        Box::pin(std::future::ready(self.store.verify_key(key)))
    }

    fn charges_extra(&self) -> bool {
        true
    }

    fn charge_extra(
        &self,
        _presented: &str,
        _client_ip: Option<std::net::IpAddr>,
        _cost: u32,
    ) -> latchkey_tower::Charged {
        if self.from_a_task {
            latchkey_tower::Charged::Waiting(tokio::spawn(async { Err(VerifyError::Revoked) }))
        } else {
            latchkey_tower::Charged::Done(Err(VerifyError::Revoked))
        }
    }
}

#[tokio::test]
async fn a_key_revoked_before_a_route_s_extra_cost_is_refused_in_the_layer_s_realm() {
    use axum::routing::get;
    use latchkey_tower::{Permission, RequirePermission, RouteCost};
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    for from_a_task in [false, true] {
        let verifier = RevokedMeanwhile {
            store: fx.store.clone(),
            from_a_task,
        };
        let app = axum::Router::new()
            .route("/orders", get(|| async { "[]" }))
            .route_layer(
                RequirePermission::layer(Permission::from_static("orders:read"))
                    .cost(const { RouteCost::new(5).unwrap() }),
            )
            .layer(ApiKeyAuthLayer::new(verifier).realm(latchkey_tower::Realm::from_static(REALM)));
        // The challenge names the layer's realm, `orders`, not the default `api`.
        get_orders(&app, &key).await.assert_invalid("key_revoked");
    }
}

/// A store's verifier that checks what the `Verifier` docs promise it: every text it is
/// handed is ASCII.
struct AsciiOnly(Store);

impl latchkey_tower::Verifier for AsciiOnly {
    type Future = Verifying;

    fn verify(&self, key: &ApiKey) -> Verifying {
        Box::pin(std::future::ready(self.0.verify_key(key)))
    }

    fn verify_known(&self, presented: &[u8]) -> Option<Principal> {
        assert!(
            presented.is_ascii(),
            "verify_known was handed a text that is not ASCII"
        );
        self.0.verify_known(presented)
    }

    fn verify_foreign(&self, text: &str) -> Option<Verifying> {
        assert!(
            text.is_ascii(),
            "verify_foreign was handed a text that is not ASCII"
        );
        None
    }
}

#[tokio::test]
async fn a_verifier_is_handed_ascii_text_only() {
    use axum::http::HeaderValue;
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let secret = key.secret.expose();
    let layer = || {
        ApiKeyAuthLayer::new(AsciiOnly(fx.store.clone()))
            .realm(latchkey_tower::Realm::from_static(REALM))
    };
    // Reading `Authorization` alone, and another place too.
    for layer in [layer(), layer().header(X_API_KEY)] {
        let app = app(layer);
        // Known, so that the fast path is tried first.
        get_orders(&app, &key).await.assert_ok();
        // The key with obs-text bytes that are not UTF-8, and with UTF-8 that is not ASCII.
        let not_utf8 = [&secret.as_bytes()[..secret.len() - 2], b"\xff\xfe"].concat();
        let not_ascii = format!("{}é", &secret[..secret.len() - 2]).into_bytes();
        for text in [not_utf8, not_ascii] {
            let value = HeaderValue::from_bytes(&[b"Bearer ", &text[..]].concat()).unwrap();
            let mut request = get_with("/orders", secret);
            request.headers_mut().insert("authorization", value);
            send(&app, request).await.assert_invalid("invalid_key");
        }
    }
}
