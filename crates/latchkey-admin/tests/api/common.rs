//! A store in a tempdir, the router over it, and a request helper.

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use latchkey_core::{Store, StoreConfig};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// A store initialised as `latchkey init` does, and the authenticated router over it.
pub(crate) struct Harness {
    _dir: TempDir,
    pub(crate) store: Store,
    pub(crate) app: Router,
    /// The `admin` key (holds `*`).
    pub(crate) admin: String,
}

/// A response, its body read.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Resp {
    /// The body as JSON (panics with the text when it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a problem+json response with this status and code; returns the body.
    #[track_caller]
    pub(crate) fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["code"], code, "body: {body}");
        assert_eq!(body["status"], status);
        assert!(
            body["type"].is_string() && body["title"].is_string() && body["detail"].is_string()
        );
        body
    }

    /// Asserts the status; returns the JSON body.
    #[track_caller]
    pub(crate) fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self.json()
    }
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness::configured(|config| config)
    }

    /// A harness whose store is opened with `configure`'s settings.
    pub(crate) fn configured(configure: impl FnOnce(StoreConfig) -> StoreConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = configure(StoreConfig::default().usage_flush_interval(None));
        let (store, admin) = Store::create_with_admin(dir.path(), "lk", config).unwrap();
        Harness {
            app: latchkey_admin::router(store.clone()),
            store,
            admin: admin.secret.expose().to_owned(),
            _dir: dir,
        }
    }

    /// A harness whose store, after `write`, was closed, changed behind its back by
    /// `edit` (on its directory: see `tamper`) and opened again.
    pub(crate) fn edited(
        write: impl FnOnce(&Store),
        edit: impl FnOnce(&std::path::Path),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::default().usage_flush_interval(None);
        let (store, admin) = Store::create_with_admin(dir.path(), "lk", config.clone()).unwrap();
        write(&store);
        drop(store);
        edit(dir.path());
        let store = Store::open(dir.path(), config).unwrap();
        Harness {
            app: latchkey_admin::router(store.clone()),
            store,
            admin: admin.secret.expose().to_owned(),
            _dir: dir,
        }
    }

    /// Sends a request with an optional bearer key and an optional JSON body.
    pub(crate) async fn send(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let body = body.map(|b| b.to_string());
        send(
            &self.app,
            method,
            uri,
            key,
            body.as_deref(),
            Some("application/json"),
        )
        .await
    }

    /// Revokes a key (its record) as the admin; asserts 200 and answers the record.
    pub(crate) async fn revoke(&self, key: &Value) -> Value {
        let id = key["id"].as_str().expect("a key record");
        let uri = format!("/v1/keys/{id}/revoke");
        self.admin("POST", &uri, None).await.ok(200)
    }

    /// As the admin.
    pub(crate) async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        self.send(method, uri, Some(&self.admin.clone()), body)
            .await
    }

    /// A GET with another key; asserts 200 and answers the body.
    pub(crate) async fn get_as(&self, key: &str, uri: &str) -> Value {
        self.send("GET", uri, Some(key), None).await.ok(200)
    }

    /// A POST with another key; asserts 200 and answers the body.
    pub(crate) async fn post_as(&self, key: &str, uri: &str, body: Value) -> Value {
        self.send("POST", uri, Some(key), Some(body)).await.ok(200)
    }

    pub(crate) async fn get(&self, uri: &str) -> Resp {
        self.admin("GET", uri, None).await
    }

    pub(crate) async fn post(&self, uri: &str, body: Value) -> Resp {
        self.admin("POST", uri, Some(body)).await
    }

    /// POSTs as the admin; asserts 201 and answers the record made.
    pub(crate) async fn created(&self, uri: &str, body: Value) -> Value {
        self.post(uri, body).await.ok(201)
    }

    pub(crate) async fn patch(&self, uri: &str, body: Value) -> Resp {
        self.admin("PATCH", uri, Some(body)).await
    }

    pub(crate) async fn delete(&self, uri: &str) -> Resp {
        self.admin("DELETE", uri, None).await
    }

    /// Sends a request written `"METHOD /path"` with `key` and a JSON body (none for
    /// `null`).
    pub(crate) async fn request_as(&self, key: &str, request: &str, body: &Value) -> Resp {
        let (method, uri) = request.split_once(' ').expect("METHOD /path");
        let body = (!body.is_null()).then(|| body.clone());
        self.send(method, uri, Some(key), body).await
    }

    /// Sends each `(request, body)` with `key` (see [`Harness::request_as`]) and asserts a
    /// problem with this status and code.
    pub(crate) async fn problems_as(
        &self,
        key: &str,
        status: u16,
        code: &str,
        cases: &[(&str, Value)],
    ) {
        for (request, body) in cases {
            let answer = self.request_as(key, request, body).await;
            assert_eq!(answer.status.as_u16(), status, "{request} {body}");
            answer.problem(status, code);
        }
    }

    /// Sends each `(request, body, field)` as the admin (see [`Harness::request_as`]) and
    /// asserts a problem with this status and code that names `field`.
    pub(crate) async fn field_problems(
        &self,
        status: u16,
        code: &str,
        cases: &[(&str, Value, &str)],
    ) {
        for (request, body, field) in cases {
            let answer = self.request_as(&self.admin, request, body).await;
            let problem = answer.problem(status, code);
            assert_eq!(problem["field"], *field, "{request} {body}: {problem}");
        }
    }

    /// Creates a user with these direct permissions, as the admin; returns the record.
    pub(crate) async fn user(&self, name: &str, permissions: &[&str]) -> Value {
        self.post(
            "/v1/users",
            serde_json::json!({"name": name, "permissions": permissions}),
        )
        .await
        .ok(201)
    }

    /// Creates a group with these permissions, as the admin; returns the record.
    pub(crate) async fn group(&self, name: &str, permissions: &[&str]) -> Value {
        self.created(
            "/v1/groups",
            serde_json::json!({"name": name, "permissions": permissions}),
        )
        .await
    }

    /// Rotates a key with this grace period, as the admin; returns the new key with its
    /// secret.
    pub(crate) async fn rotate(&self, id: &str, grace_seconds: u64) -> Value {
        self.post(
            &format!("/v1/keys/{id}/rotate"),
            serde_json::json!({"grace_seconds": grace_seconds}),
        )
        .await
        .ok(201)
    }

    /// Creates a key named `k` for a user, as the admin; returns the record with its secret.
    pub(crate) async fn key_for(&self, user: &str) -> Value {
        self.post(
            "/v1/keys",
            serde_json::json!({"name": "k", "user_id": user}),
        )
        .await
        .ok(201)
    }

    /// Creates a user with these permissions and a key for it; returns (user, key record
    /// with secret).
    pub(crate) async fn user_with_key(&self, name: &str, permissions: &[&str]) -> (Value, String) {
        let user = self.user(name, permissions).await;
        let key = self
            .post(
                "/v1/keys",
                serde_json::json!({"name": format!("{name} key"), "user_id": name}),
            )
            .await
            .ok(201);
        (user, key["secret"].as_str().unwrap().to_owned())
    }
}

/// POSTs a JSON body to a router, without a key.
pub(crate) async fn post_json(app: &Router, uri: &str, body: Value) -> Resp {
    let body = body.to_string();
    send(
        app,
        "POST",
        uri,
        None,
        Some(&body),
        Some("application/json"),
    )
    .await
}

/// Sends one request to a router.
pub(crate) async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&str>,
    content_type: Option<&str>,
) -> Resp {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let (Some(_), Some(ct)) = (body, content_type) {
        request = request.header("content-type", ct);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    oneshot(app, request).await
}

/// The `name` of each item of a list answer, in order.
pub(crate) fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The member names of a JSON object, sorted.
pub(crate) fn keys_of(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Sends one request through the router and reads the whole answer.
async fn oneshot(app: &Router, request: Request<Body>) -> Resp {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// A POST of a JSON body as `key`, with these headers too.
pub(crate) async fn post_with_headers(
    app: &Router,
    uri: &str,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Resp {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    oneshot(app, request.body(Body::from(body.to_string())).unwrap()).await
}

/// A GET with one extra header.
pub(crate) async fn send_with_header(app: &Router, uri: &str, name: &str, value: &str) -> Resp {
    send_with_headers(app, uri, &[(name, value)]).await
}

/// A GET with these headers, in order (a name may come more than once).
pub(crate) async fn send_with_headers(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    oneshot(app, request.body(Body::empty()).unwrap()).await
}
