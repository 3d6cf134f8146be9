use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::routing;
use axum::{Json, Router};
use http_body_util::BodyExt;
use latchkey_tower::latchkey_core::key::checksum;
use latchkey_tower::latchkey_core::{
    Actor, CreatedKey, Group, ManualClock, NewGroup, NewKey, NewUser, Prefix, User,
};
use latchkey_tower::{
    ApiKey, ApiKeyAuthLayer, Env, Permission, PermissionSet, Principal, Realm, Rejection,
    RequirePermission, Store, StoreConfig, Verifier,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt;

pub(crate) const REALM: &str = "orders";
/// The extra header some tests read the key from.
pub(crate) const X_API_KEY: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-api-key");

/// A store in a temporary directory, on a clock that moves only when told.
pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let config = StoreConfig::default()
            .clock(clock.clone())
            .usage_flush_interval(None);
        let store = Store::create_empty(dir.path(), "lk", config).unwrap();
        Fixture {
            store,
            clock,
            _dir: dir,
        }
    }

    pub(crate) fn group(&self, name: &str, permissions: &[&str]) -> Group {
        self.store
            .create_group(
                &Actor::system(),
                NewGroup {
                    name: name.into(),
                    permissions: perms(permissions),
                },
            )
            .unwrap()
    }

    pub(crate) fn user(&self, name: &str, permissions: &[&str]) -> User {
        self.user_with(NewUser {
            name: name.into(),
            permissions: perms(permissions),
            ..NewUser::default()
        })
    }

    pub(crate) fn user_with(&self, new: NewUser) -> User {
        self.store.create_user(&Actor::system(), new).unwrap()
    }

    pub(crate) fn key(&self, user: &User) -> CreatedKey {
        self.key_with(NewKey {
            name: "test key".into(),
            user_id: user.id,
            ..NewKey::default()
        })
    }

    pub(crate) fn key_with(&self, new: NewKey) -> CreatedKey {
        self.store.create_key(&Actor::system(), new).unwrap()
    }

    /// A user holding `permissions` and one live key of it.
    pub(crate) fn key_for(&self, name: &str, permissions: &[&str]) -> (User, CreatedKey) {
        let user = self.user(name, permissions);
        let key = self.key(&user);
        (user, key)
    }

    pub(crate) fn layer(&self) -> ApiKeyAuthLayer {
        ApiKeyAuthLayer::new(self.store.clone()).realm(Realm::from_static(REALM))
    }
}

/// A fixture with the user `reader` (`orders:read`), its key, and [`app`] behind the
/// fixture's default layer.
pub(crate) fn reader_app() -> (Fixture, CreatedKey, Router) {
    let fx = Fixture::new();
    let (_, key) = fx.key_for("reader", &["orders:read"]);
    let app = app(fx.layer());
    (fx, key, app)
}

pub(crate) fn perms(permissions: &[&str]) -> PermissionSet {
    PermissionSet::parse(permissions.iter().copied()).unwrap()
}

pub(crate) fn new_key(user: &User, env: Env) -> NewKey {
    NewKey {
        name: format!("{env:?} key"),
        user_id: user.id,
        env,
        ..NewKey::default()
    }
}

/// The test app:
/// - `GET /orders` needs `orders:read` (RequirePermission as a route layer);
/// - `POST /orders` needs `orders:write` (`principal.require` in the handler);
/// - `GET /whoami` answers the principal as JSON;
/// - `GET /echo` answers what the inner service saw of the credentials;
/// - `GET /health` answers without a principal (public when the layer says so).
pub(crate) fn app<V: Verifier>(layer: ApiKeyAuthLayer<V>) -> Router {
    routes().layer(layer)
}

/// The routes without the layer.
pub(crate) fn routes() -> Router {
    Router::new()
        .route(
            "/orders",
            routing::get(list_orders)
                .route_layer(RequirePermission::layer(Permission::from_static(
                    "orders:read",
                )))
                .post(create_order),
        )
        .route("/whoami", routing::get(whoami))
        .route("/echo", routing::get(echo))
        .route("/health", routing::get(health))
}

async fn list_orders(principal: Principal) -> Json<Value> {
    Json(json!({ "orders": [], "user": principal.user_name }))
}

async fn create_order(principal: Principal) -> Result<(StatusCode, Json<Value>), Rejection> {
    principal.require("orders:write")?;
    Ok((StatusCode::CREATED, Json(json!({ "id": 1 }))))
}

async fn whoami(principal: Principal) -> Json<Value> {
    Json(serde_json::to_value(&*principal.0).unwrap())
}

async fn echo(request: Request) -> Json<Value> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Json(json!({
        "authorization": header("authorization"),
        "x_api_key": header("x-api-key"),
        "uri": request.uri().to_string(),
        "original_uri": request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map(|original| original.0.to_string()),
    }))
}

async fn health(principal: Option<Principal>) -> Json<Value> {
    Json(json!({ "ok": true, "authenticated": principal.is_some() }))
}

/// A request builder with a bearer key.
pub(crate) fn get_with(path: &str, key: &str) -> Request {
    get_with_headers(path, &[("authorization", &format!("Bearer {key}"))])
}

pub(crate) fn post_with(path: &str, key: &str) -> Request {
    Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap()
}

/// Sends `GET path` with `key` as a bearer token through `app`.
pub(crate) async fn get_as(app: &Router, path: &str, key: &CreatedKey) -> Reply {
    send(app, get_with(path, key.secret.expose())).await
}

/// Sends `GET /orders` (needs `orders:read`) with `key` as a bearer token through `app`.
pub(crate) async fn get_orders(app: &Router, key: &CreatedKey) -> Reply {
    get_as(app, "/orders", key).await
}

/// Sends `POST /orders` (needs `orders:write`) with `key` as a bearer token through `app`.
pub(crate) async fn post_orders(app: &Router, key: &CreatedKey) -> Reply {
    send(app, post_with("/orders", key.secret.expose())).await
}

/// A GET request with these headers, in order (a name may repeat).
pub(crate) fn get_with_headers(path: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = Request::get(path);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.body(Body::empty()).unwrap()
}

pub(crate) fn get(path: &str) -> Request {
    Request::get(path).body(Body::empty()).unwrap()
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: bytes::Bytes,
}

pub(crate) async fn send(app: &Router, request: Request) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    #[track_caller]
    pub(crate) fn assert_ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// Asserts a problem+json rejection: status, `WWW-Authenticate` exactly (or absent),
    /// content type, and the body's `type`, `status` and `code`.
    #[track_caller]
    pub(crate) fn assert_refused(&self, status: u16, challenge: Option<&str>, code: &str) {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status.as_u16(), status, "body: {body}");
        assert_eq!(
            self.headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            challenge,
            "body: {body}"
        );
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "body: {body}"
        );
        let json = self.json();
        assert_eq!(json["code"], code, "body: {body}");
        assert_eq!(json["status"], status, "body: {body}");
        assert_eq!(
            json["type"],
            format!("urn:latchkey:problem:{code}"),
            "body: {body}"
        );
        assert!(json["title"].is_string(), "body: {body}");
    }

    #[track_caller]
    pub(crate) fn assert_missing(&self) {
        self.assert_refused(401, Some(MISSING), "missing_key");
    }

    #[track_caller]
    pub(crate) fn assert_invalid(&self, code: &str) {
        self.assert_refused(401, Some(INVALID), code);
    }

    /// Asserts RFC 6750 §3.1's answer to several credentials: 400 `invalid_request`.
    #[track_caller]
    pub(crate) fn assert_several_credentials(&self) {
        self.assert_refused(400, Some(INVALID_REQUEST), "invalid_request");
    }

    #[track_caller]
    pub(crate) fn assert_forbidden(&self, permission: &str) {
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{permission}\"");
        self.assert_refused(403, Some(&challenge), "insufficient_permission");
    }
}

pub(crate) const MISSING: &str = r#"Bearer realm="orders""#;
pub(crate) const INVALID: &str = r#"Bearer realm="orders", error="invalid_token""#;
pub(crate) const INVALID_REQUEST: &str = r#"Bearer realm="orders", error="invalid_request""#;

/// The key's id with another key's secret and a valid checksum: well-formed, wrong.
pub(crate) fn with_wrong_secret(key: &ApiKey) -> String {
    let prefix = Prefix::new(key.prefix()).unwrap();
    let other = ApiKey::generate(&prefix, key.env());
    let body = format!("{}_{}", key.display_prefix(), other.secret());
    let sum = checksum(body.as_bytes());
    let wrong = format!("{body}{}", std::str::from_utf8(&sum).unwrap());
    assert!(ApiKey::parse(&wrong).is_ok_and(|parsed| parsed.id() == key.id()));
    wrong
}
