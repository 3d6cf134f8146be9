//! The routes: what an app guarded by latchkey looks like.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey_tower::{
    ApiKeyAuthLayer, Permission, Principal, Realm, RequirePermission, RouteCost, Verifier,
};
use serde::{Deserialize, Serialize};

/// An order, kept in memory: the point is the keys, not the orders.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Order {
    id: u64,
    item: String,
    quantity: u32,
    /// The user whose key created it.
    created_by: String,
    /// The display prefix of that key, never the key.
    key: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewOrder {
    item: String,
    quantity: u32,
}

/// `GET /orders/summary`: what a costlier route answers.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    orders: usize,
    quantity: u64,
}

/// What a request to `GET /orders/summary` costs against a key's rate limits and credits:
/// a route that does more work than a plain read may charge more.
pub const SUMMARY_COST: RouteCost = RouteCost::new(10).unwrap();

type Orders = Arc<Mutex<Vec<Order>>>;

/// The app: every `/orders` route behind the layer, each method behind its permission
/// (`/orders/summary` costs [`SUMMARY_COST`] requests); `/health` is added after the layer,
/// so it is public. Any verifier: a store on disk, or a remote one.
pub fn app<V: Verifier>(verifier: V) -> Router {
    let orders: Orders = Arc::default();
    Router::new()
        .route(
            "/orders",
            get(list_orders).route_layer(RequirePermission::layer(Permission::from_static(
                "orders:read",
            ))),
        )
        .route(
            "/orders",
            post(create_order).route_layer(RequirePermission::layer(Permission::from_static(
                "orders:write",
            ))),
        )
        .route(
            "/orders/summary",
            get(summary).route_layer(
                RequirePermission::layer(Permission::from_static("orders:read")).cost(SUMMARY_COST),
            ),
        )
        .with_state(orders)
        .layer(ApiKeyAuthLayer::new(verifier).realm(Realm::from_static("orders")))
        .route("/health", get(health))
}

async fn list_orders(State(orders): State<Orders>) -> Json<Vec<Order>> {
    Json(orders.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn create_order(
    State(orders): State<Orders>,
    principal: Principal,
    Json(new): Json<NewOrder>,
) -> (StatusCode, Json<Order>) {
    let mut orders = orders.lock().unwrap_or_else(|e| e.into_inner());
    let order = Order {
        id: orders.len() as u64 + 1,
        item: new.item,
        quantity: new.quantity,
        created_by: principal.user_name.clone(),
        key: principal.prefix.clone(),
    };
    orders.push(order.clone());
    (StatusCode::CREATED, Json(order))
}

async fn summary(State(orders): State<Orders>) -> Json<Summary> {
    let orders = orders.lock().unwrap_or_else(|e| e.into_inner());
    Json(Summary {
        orders: orders.len(),
        quantity: orders.iter().map(|o| u64::from(o.quantity)).sum(),
    })
}

async fn health() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use latchkey_tower::latchkey_core::{Principal as CorePrincipal, VerifyError};
    use latchkey_tower::{ApiKey, Env, PermissionSet, PrincipalInfo, Store, StoreConfig};
    use tower::ServiceExt;

    use super::*;
    use crate::demo;

    /// A verifier that accepts every key as a reader, except `test` keys: the keystore is
    /// "unavailable" for those.
    fn reader(key: &ApiKey) -> impl Future<Output = Result<CorePrincipal, VerifyError>> + use<> {
        let env = key.env();
        async move {
            if env == Env::Test {
                return Err(VerifyError::Unavailable("down".into()));
            }
            Ok(CorePrincipal::new(PrincipalInfo {
                key_id: Default::default(),
                prefix: "lk_live_000000000000".into(),
                key_name: "reader".into(),
                env: Env::Live,
                user_id: Default::default(),
                user_name: "reader".into(),
                tenant_id: None,
                organization_id: None,
                permissions: PermissionSet::parse(["orders:read"]).unwrap(),
                meta: None,
                meter: None,
            }))
        }
    }

    async fn status(app: &Router, method: &str, uri: &str, key: Option<&str>) -> (u16, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = if method == "POST" {
            Body::from(r#"{"item":"tea","quantity":2}"#)
        } else {
            Body::empty()
        };
        let response = app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_curl_lines_answer_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
        let keys = demo::seed_if_empty(&store).unwrap().unwrap();
        assert!(demo::seed_if_empty(&store).unwrap().is_none());
        let (rw, ro) = (keys.read_write.expose(), keys.read_only.expose());
        let app = app(store);

        assert_eq!(status(&app, "GET", "/health", None).await.0, 200);
        let (code, body) = status(&app, "GET", "/orders", None).await;
        assert_eq!(code, 401);
        assert!(body.contains(r#""code":"missing_key""#), "{body}");
        assert_eq!(status(&app, "GET", "/orders", Some(rw)).await.0, 200);
        assert_eq!(status(&app, "GET", "/orders", Some(ro)).await.0, 200);
        let (code, body) = status(&app, "POST", "/orders", Some(rw)).await;
        assert_eq!(code, 201);
        assert!(body.contains(r#""created_by":"demo""#), "{body}");
        let (code, body) = status(&app, "GET", "/orders/summary", Some(ro)).await;
        assert_eq!(code, 200);
        assert_eq!(body, r#"{"orders":1,"quantity":2}"#);
        assert!(!body.contains(rw), "the key leaked into a response: {body}");
        let (code, body) = status(&app, "POST", "/orders", Some(ro)).await;
        assert_eq!(code, 403);
        assert!(
            body.contains(r#""code":"insufficient_permission""#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn routes_need_their_permission_and_health_none() {
        let app = app(reader);
        let prefix = latchkey_tower::latchkey_core::Prefix::new("lk").unwrap();
        let live = ApiKey::generate(&prefix, Env::Live);
        let test = ApiKey::generate(&prefix, Env::Test);
        assert_eq!(status(&app, "GET", "/health", None).await.0, 200);
        assert_eq!(status(&app, "GET", "/orders", None).await.0, 401);
        assert_eq!(
            status(&app, "GET", "/orders", Some(live.expose())).await.0,
            200
        );
        let (code, body) = status(&app, "POST", "/orders", Some(live.expose())).await;
        assert_eq!(code, 403);
        assert!(
            body.contains(r#""code":"insufficient_permission""#),
            "{body}"
        );
        let (code, body) = status(&app, "GET", "/orders", Some(test.expose())).await;
        assert_eq!(code, 503);
        assert!(body.contains(r#""code":"keystore_unavailable""#), "{body}");
    }
}
