//! The console's handlers in process (`oneshot`): every page's status and headers, the
//! session cookie, CSRF refusals, and writes refused by the API's own rules.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use latchkey_console::ConsoleConfig;
use latchkey_core::{Location, Store, StoreConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// The core tests' store locations: a directory, or a database of its own on the server
// `LATCHKEY_TEST_POSTGRES` names.
#[path = "../../latchkey-core/tests/support/mod.rs"]
mod support;

/// The browser's address, as the daemon's listener gives it (`ConnectInfo`).
const BROWSER: &str = "127.0.0.1:50123";

struct App {
    _dir: Option<tempfile::TempDir>,
    api: Router,
    console: Router,
    admin: String,
    /// Served as over HTTPS: the cookies carry `Secure` and the `__Host-` prefix.
    secure: bool,
}

impl App {
    /// The console over a new store in a temporary directory.
    fn new(secure: bool) -> App {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Dir(dir.path().to_owned());
        App {
            _dir: Some(dir),
            ..App::at(&location, support::config(), secure)
        }
    }

    /// The console over a new store at `location`, which must outlive it.
    fn at(location: &Location, config: StoreConfig, secure: bool) -> App {
        let (store, admin) = Store::create_with_admin_at(location, "lk", config).unwrap();
        let api = latchkey_admin::router(store.clone());
        let console = latchkey_console::router(store, api.clone(), ConsoleConfig::new(secure));
        App {
            _dir: None,
            api,
            console,
            admin: admin.secret.expose().to_owned(),
            secure,
        }
    }

    /// The name of the console's cookie `plain` as this console names it.
    fn cookie(&self, plain: &str) -> String {
        if self.secure {
            format!("__Host-{plain}")
        } else {
            plain.to_owned()
        }
    }

    /// A request to the console from [`BROWSER`].
    fn request(&self) -> http::request::Builder {
        let peer: SocketAddr = BROWSER.parse().unwrap();
        Request::builder().extension(ConnectInfo(peer))
    }

    /// A JSON API call as `key`.
    async fn api(&self, key: &str, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(if body.is_null() {
                Body::empty()
            } else {
                Body::from(body.to_string())
            })
            .unwrap();
        let response = self.api.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let (_, text) = read(response).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (Response<()>, String) {
        let mut request = self.request().uri(path);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = self
            .console
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        read(response).await
    }

    async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> (Response<()>, String) {
        self.post_from(path, cookie, form, "same-origin").await
    }

    /// [`App::post`] from a page the browser places at `site` (`Sec-Fetch-Site`).
    async fn post_from(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
        site: &str,
    ) -> (Response<()>, String) {
        let body = serde_urlencoded::to_string(form).unwrap();
        let request = self
            .request()
            .method("POST")
            .uri(path)
            .header(COOKIE, cookie)
            .header("sec-fetch-site", site)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        read(self.console.clone().oneshot(request).await.unwrap()).await
    }

    /// Posts the sign-in form with `key`: the answer.
    async fn try_sign_in(&self, key: &str) -> (Response<()>, String) {
        self.sign_in_from(key, None, "same-origin").await
    }

    /// Posts the sign-in form with `key` from a browser that also sends `session` (a
    /// session cookie), from a page at `site` (`Sec-Fetch-Site`): the answer.
    async fn sign_in_from(
        &self,
        key: &str,
        session: Option<&str>,
        site: &str,
    ) -> (Response<()>, String) {
        let (form, html) = self.get("/ui/signin", None).await;
        let mut cookie = cookie_pair(&form, &self.cookie("lk_signin"));
        if let Some(session) = session {
            cookie = format!("{cookie}; {session}");
        }
        let token = hidden(&html, "csrf");
        let form = [("csrf", token.as_str()), ("key", key)];
        self.post_from("/ui/signin", &cookie, &form, site).await
    }

    /// Signs in with `key`, which may read the keys: the session cookie
    /// (`lk_session=...`), its `Set-Cookie` and the session's CSRF token.
    async fn sign_in(&self, key: &str) -> (String, String, String) {
        let (answer, html) = self.try_sign_in(key).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
        assert_eq!(answer.headers()[LOCATION], "/ui/keys");
        let set = answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{}=", self.cookie("lk_session"))))
            .expect("a session cookie");
        let session = cookie_pair(&answer, &self.cookie("lk_session"));
        let (_, keys) = self.get("/ui/keys", Some(&session)).await;
        (session, set, hidden(&keys, "csrf"))
    }

    /// A group with `permissions`; returns its id.
    async fn group(&self, name: &str, permissions: &[&str]) -> String {
        let body = json!({"name": name, "permissions": permissions});
        let (status, group) = self.api(&self.admin, "POST", "/v1/groups", body).await;
        assert_eq!(status, StatusCode::CREATED, "{group}");
        group["id"].as_str().unwrap().to_owned()
    }

    /// A user with `permissions` and a key for it; returns the key.
    async fn key_with(&self, user: &str, permissions: &[&str]) -> String {
        self.key_of_new_user(json!({"name": user, "permissions": permissions}))
            .await
    }

    /// The user `body` makes, and a key for it; returns the key.
    async fn key_of_new_user(&self, body: Value) -> String {
        self.key_of_new_user_with(body, json!({})).await
    }

    /// The user `body` makes, and a key for it with the members of `key` too; returns the
    /// key.
    async fn key_of_new_user_with(&self, body: Value, key: Value) -> String {
        let user = body["name"].clone();
        let (status, _) = self.api(&self.admin, "POST", "/v1/users", body).await;
        assert_eq!(status, StatusCode::CREATED);
        let mut request = json!({"name": "k", "user_id": user});
        request
            .as_object_mut()
            .unwrap()
            .extend(key.as_object().unwrap().clone());
        let (status, key) = self.api(&self.admin, "POST", "/v1/keys", request).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["secret"].as_str().unwrap().to_owned()
    }

    /// A new user `name` who may read the keys, and `texts` imported as its keys.
    async fn import_for_new_reader(&self, name: &str, texts: &[String]) {
        let (status, _) = self
            .api(
                &self.admin,
                "POST",
                "/v1/users",
                json!({"name": name, "permissions": ["latchkey:keys:read"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let items: Vec<Value> = texts.iter().map(|t| json!({"key": t})).collect();
        let (status, report) = self
            .api(
                &self.admin,
                "POST",
                "/v1/keys/import",
                json!({"user_id": name, "items": items}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["imported"].as_array().unwrap().len(), texts.len());
    }

    /// A one-time token of the create form, as the session's browser gets it.
    async fn form_token(&self, session: &str) -> String {
        let (_, html) = self.get("/ui/keys/new", Some(session)).await;
        hidden(&html, "once")
    }

    /// `count` groups, each an audit event.
    async fn make_groups(&self, count: usize) {
        for i in 0..count {
            let group = json!({"name": format!("g{i}"), "permissions": ["a:b"]});
            let (status, _) = self.api(&self.admin, "POST", "/v1/groups", group).await;
            assert_eq!(status, StatusCode::CREATED);
        }
    }

    /// Revokes the first key of `user` through the API.
    async fn revoke_first_key_of(&self, user: &str) {
        let path = format!("{}/revoke", self.first_key_of(user).await);
        let (status, _) = self.api(&self.admin, "POST", &path, Value::Null).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// The API path of the first key of `user`: `/v1/keys/{id}`.
    async fn first_key_of(&self, user: &str) -> String {
        let (_, keys) = self
            .api(
                &self.admin,
                "GET",
                &format!("/v1/keys?user_id={user}"),
                Value::Null,
            )
            .await;
        format!("/v1/keys/{}", keys["items"][0]["id"].as_str().unwrap())
    }

    async fn key_count(&self) -> usize {
        let (_, list) = self
            .api(&self.admin, "GET", "/v1/keys?limit=1000", Value::Null)
            .await;
        list["items"].as_array().unwrap().len()
    }
}

async fn read(response: Response<axum::body::Body>) -> (Response<()>, String) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// `name=value` from the answer's `Set-Cookie`.
fn cookie_pair(response: &Response<()>, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {response:?}"))
        .to_owned()
}

/// The value of the first hidden input `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// A list page's link to its next page, if it has one.
fn next_page(html: &str) -> Option<String> {
    html.split("id=\"next-page\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|href| href.replace("&#38;", "&"))
}

#[track_caller]
fn assert_policy(response: &Response<()>) {
    let headers = response.headers();
    assert_eq!(headers["content-security-policy"], CSP, "{response:?}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn every_page_answers_with_the_policy() {
    let app = App::new(false);
    let group = app.group("ops", &["a:b"]).await;
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (_, keys) = app.api(&app.admin, "GET", "/v1/keys", Value::Null).await;
    let key = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, admin) = app
        .api(&app.admin, "GET", "/v1/users/admin", Value::Null)
        .await;
    let admin = admin["id"].as_str().unwrap().to_owned();
    for path in [
        "/ui/keys".to_owned(),
        "/ui/keys?q=adm&status=active&sort=-name".to_owned(),
        "/ui/keys?env=live&status=active".to_owned(),
        "/ui/keys/new".to_owned(),
        format!("/ui/keys/{key}"),
        format!("/ui/keys/{key}/revoke"),
        "/ui/users".to_owned(),
        format!("/ui/users/{admin}"),
        "/ui/groups".to_owned(),
        format!("/ui/groups/{group}"),
        "/ui/audit".to_owned(),
        "/ui/audit?check=1".to_owned(),
    ] {
        let (response, html) = app.get(&path, Some(&session)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {html}");
        assert_policy(&response);
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert!(html.contains("Signed in as"), "{path}");
        assert!(
            !html.contains(&app.admin),
            "{path}: the session's key is never rendered"
        );
    }
    // The key's page lists its own events, from the audit trail.
    let events = key_events(&app, &key, &session).await;
    assert!(events.contains("key.create"), "{events}");
    assert!(
        !events.contains("user.create"),
        "only this key's events: {events}"
    );
    // With what each change did, as text (escaped).
    let meta = serde_json::json!({"meta": {"note": "<b>x</b>"}});
    let (status, _) = app
        .api(&app.admin, "PATCH", &format!("/v1/keys/{key}"), meta)
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = key_events(&app, &key, &session).await;
    assert!(events.contains("meta: null → {&#34;note&#34;"), "{events}");
    assert!(events.contains("&#60;b&#62;x&#60;/b&#62;"), "{events}");
    assert!(!events.contains("<b>x</b>"), "{events}");
    let (_, html) = app.get("/ui/audit", Some(&session)).await;
    assert!(html.contains("meta: null → {&#34;note&#34;"), "{html}");
    let (audit, html) = app.get("/ui/audit?check=1", Some(&session)).await;
    assert_eq!(audit.status(), StatusCode::OK);
    assert!(html.contains("The chain holds"), "{html}");
    // Disabling a user, which stops all its keys, asks first, as a deletion does.
    let (_, html) = app.get("/ui/users", Some(&session)).await;
    assert!(html.contains("data-confirm=\"Disable admin?"), "{html}");
    for asset in ["/ui/static/console.css", "/ui/static/console.js"] {
        let (response, _) = app.get(asset, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_policy(&response);
    }
    // Signed out: every page sends to the sign-in form; unknown pages are 404.
    let (response, _) = app.get("/ui/keys", None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/signin");
    assert_policy(&response);
    let (response, _) = app.get("/ui/nowhere", Some(&session)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let long = "x".repeat(600);
    let (response, _) = app.get(&format!("/ui/keys?q={long}"), Some(&session)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A query that is no UTF-8 once decoded is refused, not searched for as U+FFFD; a
    // path segment too, with the console's page (it was axum's plain text).
    for path in [
        "/ui/keys?q=%FF%FE",
        "/ui/users?cursor=%C0%AF",
        "/ui/audit?%FF=1",
        "/ui/keys/%FF%FE",
        "/ui/users/%C0%AF",
    ] {
        let (response, html) = app.get(path, Some(&session)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(html.contains("not UTF-8"), "{path}: {html}");
        assert_policy(&response);
    }
}

/// A key's page finds its events among the last 10,000 of the trail, not only among the
/// last 1,000 (it read those and kept the key's: on a busy store, often none).
#[tokio::test]
async fn a_key_s_page_finds_its_events_behind_a_thousand_others() {
    let app = App::new(false);
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (_, keys) = app.api(&app.admin, "GET", "/v1/keys", Value::Null).await;
    let key = keys["items"][0]["id"].as_str().unwrap().to_owned();
    for n in 0..1_050 {
        let (status, _) = app
            .api(
                &app.admin,
                "POST",
                "/v1/groups",
                json!({"name": format!("g{n}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let events = key_events(&app, &key, &session).await;
    assert!(events.contains("key.create"), "{events}");
}

/// The events table of the key page of `key`, and what follows it.
async fn key_events(app: &App, key: &str, session: &str) -> String {
    let (_, html) = app.get(&format!("/ui/keys/{key}"), Some(session)).await;
    html.split("id=\"key-events\"")
        .nth(1)
        .expect("the key's events")
        .to_owned()
}

#[tokio::test]
async fn the_session_cookie_flags() {
    let app = App::new(true);
    let (_, set, _) = app.sign_in(&app.admin).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set.split("; ").any(|part| part == flag), "{flag} in {set}");
    }
    assert!(set.starts_with("__Host-lk_session="), "{set}");
    // A plain-named cookie (planted over HTTP) with the session's value is not a session.
    let (session, _, _) = app.sign_in(&app.admin).await;
    let planted = session.trim_start_matches("__Host-");
    let (answer, _) = app.get("/ui/keys", Some(planted)).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/ui/keys", Some(&session)).await.0.status(),
        StatusCode::OK
    );

    let plain = App::new(false);
    let (_, set, _) = plain.sign_in(&plain.admin).await;
    assert!(!set.contains("Secure"), "{set}");
    assert!(set.starts_with("lk_session="), "{set}");
    assert!(set.split("; ").any(|part| part == "Path=/ui"), "{set}");
}

/// `latchkey_console_sign_ins_total{outcome}` as the API's `/metrics` shows it. The count
/// is the process's, and this binary's tests run at once: a test reads it before and
/// after, and expects at least its own sign-ins.
async fn sign_ins(app: &App, outcome: &str) -> u64 {
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let (_, text) = read(app.api.clone().oneshot(request).await.unwrap()).await;
    let series = format!("latchkey_console_sign_ins_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series}in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn sign_ins_are_counted_by_outcome() {
    let app = App::new(false);
    let opened = sign_ins(&app, "opened").await;
    let refused = sign_ins(&app, "refused").await;
    let no_section = sign_ins(&app, "no_section").await;
    app.sign_in(&app.admin).await;
    assert!(sign_ins(&app, "opened").await > opened);
    // A key of the store's form that the store never made: generated, never written down.
    let wrong = latchkey_core::ApiKey::generate(
        &latchkey_core::Prefix::default(),
        latchkey_core::Env::Live,
    );
    let (answer, _) = app.try_sign_in(wrong.expose()).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(sign_ins(&app, "refused").await > refused);
    let app_key = app.key_with("app", &["orders:read"]).await;
    let (answer, _) = app.try_sign_in(&app_key).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(sign_ins(&app, "no_section").await > no_section);
    // Every outcome's series is there from the start.
    for outcome in ["ip_not_allowed", "keystore_unavailable"] {
        sign_ins(&app, outcome).await;
    }
}

#[tokio::test]
async fn a_wrong_key_does_not_sign_in_and_is_not_echoed() {
    let app = App::new(false);
    let (form, html) = app.get("/ui/signin", None).await;
    let cookie = cookie_pair(&form, "lk_signin");
    let wrong = "lk_live_AAAAAAAAAAAA_notarealsecretnotarealsecretnotareal";
    let (answer, html2) = app
        .post(
            "/ui/signin",
            &cookie,
            &[("csrf", &hidden(&html, "csrf")), ("key", wrong)],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(!html2.contains(wrong));
    assert!(
        answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("lk_session"))
    );
    // Without the sign-in form's token: refused before the key is looked at.
    let (answer, _) = app
        .post("/ui/signin", &cookie, &[("key", &app.admin)])
        .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused() {
    let app = App::new(false);
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let before = app.key_count().await;
    let once = app.form_token(&session).await;
    let create = [("user", "admin"), ("name", "x"), ("once", &once)];
    let (answer, html) = app.post("/ui/keys", &session, &create).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{html}");
    let mut wrong = create.to_vec();
    wrong.push(("csrf", "0000"));
    let (answer, _) = app.post("/ui/keys", &session, &wrong).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let (answer, _) = app.post("/ui/signout", &session, &[]).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.key_count().await, before, "nothing created");
    // With it: created, the secret in this answer only; the same form again is refused.
    let mut good = create.to_vec();
    good.push(("csrf", &csrf));
    let (answer, html) = app.post("/ui/keys", &session, &good).await;
    assert_eq!(answer.status(), StatusCode::CREATED, "{html}");
    let secret = hidden(
        &format!(
            "name=\"s\" value=\"{}",
            html.split("id=\"secret\" readonly value=\"")
                .nth(1)
                .unwrap()
        ),
        "s",
    );
    assert!(secret.starts_with("lk_live_"), "{secret}");
    assert!(html.contains("will not be shown again"));
    let (again, html) = app.post("/ui/keys", &session, &good).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(!html.contains(&secret));
    assert_eq!(app.key_count().await, before + 1, "one key, not two");
    let (_, list) = app.get("/ui/keys", Some(&session)).await;
    assert!(!list.contains(&secret));
    // Sign out ends the session on the server.
    let (answer, _) = app.post("/ui/signout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(
        answer.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (answer, _) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.headers()[LOCATION], "/ui/signin");
}

#[tokio::test]
async fn a_forged_post_from_a_key_without_keys_write_is_refused() {
    let app = App::new(false);
    let reader = app.key_with("reader", &["latchkey:keys:read"]).await;
    let (session, _, csrf) = app.sign_in(&reader).await;
    let (_, html) = app.get("/ui/keys", Some(&session)).await;
    assert!(
        !html.contains("id=\"new-key\""),
        "no create button for a reader"
    );
    assert!(
        !html.contains("href=\"/ui/users\""),
        "no users section without users:read"
    );
    let (_, keys) = app
        .api(&app.admin, "GET", "/v1/keys?q=admin", Value::Null)
        .await;
    let admin_key = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!("/ui/keys/{admin_key}"), Some(&session))
        .await;
    assert!(!page.contains("id=\"rotate\"") && !page.contains("id=\"disable\""));
    let before = app.key_count().await;
    // No create form either, nor its one-time token.
    let (answer, html) = app.get("/ui/keys/new", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("latchkey:keys:write"), "{html}");
    assert!(!html.contains("name=\"once\""), "{html}");
    // Without a token of its own session, a forged create is refused before the API (409);
    // the other forms need none, and the API refuses them (403).
    let once = app.form_token(&app.sign_in(&app.admin).await.0).await;
    let enabled = format!("/ui/keys/{admin_key}/enabled");
    let revoke = format!("/ui/keys/{admin_key}/revoke");
    let forged: [(&str, &[(&str, &str)]); 3] = [
        (
            "/ui/keys",
            &[
                ("csrf", &csrf),
                ("once", &once),
                ("user", "reader"),
                ("name", "x"),
            ],
        ),
        (&enabled, &[("csrf", &csrf), ("enabled", "false")]),
        (&revoke, &[("csrf", &csrf)]),
    ];
    for (path, form) in forged {
        let (answer, _) = app.post(path, &session, form).await;
        let refused = match path {
            "/ui/keys" => StatusCode::CONFLICT,
            _ => StatusCode::FORBIDDEN,
        };
        assert_eq!(answer.status(), refused, "{path}");
    }
    assert_eq!(app.key_count().await, before);
    let (_, key) = app
        .api(
            &app.admin,
            "GET",
            &format!("/v1/keys/{admin_key}"),
            Value::Null,
        )
        .await;
    assert_eq!(key["status"], "active", "{key}");
}

#[tokio::test]
async fn a_revoked_key_ends_its_session() {
    let app = App::new(false);
    let key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (session, _, _) = app.sign_in(&key).await;
    app.revoke_first_key_of("ops").await;
    // Its cookie is cleared at once, and so is one naming a session that never was.
    for cookie in [session.as_str(), "lk_session=0123"] {
        let (answer, _) = app.get("/ui/keys", Some(cookie)).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert_eq!(answer.headers()[LOCATION], "/ui/signin");
        assert_eq!(
            answer.headers()[SET_COOKIE],
            "lk_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0",
            "{cookie}"
        );
    }
    // Without a cookie, nothing to clear.
    let (answer, _) = app.get("/ui/keys", None).await;
    assert_eq!(answer.headers()[LOCATION], "/ui/signin");
    assert!(answer.headers().get(SET_COOKIE).is_none(), "{answer:?}");
}

/// Signs in with the key of a new user of the tenant `acme` holding `permissions`: the
/// session cookie and its CSRF token.
async fn signed_in_to_acme(app: &App, user: &str, permissions: &[&str]) -> (String, String) {
    let body = json!({"name": user, "tenant_id": "acme", "permissions": permissions});
    let key = app.key_of_new_user(body).await;
    let (session, _, csrf) = app.sign_in(&key).await;
    (session, csrf)
}

#[tokio::test]
async fn a_tenant_bound_key_sees_why_it_cannot_check_the_chain() {
    let app = App::new(false);
    let permissions = ["latchkey:audit:read", "latchkey:keys:read"];
    let (session, _) = signed_in_to_acme(&app, "acme-auditor", &permissions).await;
    let (audit, html) = app.get("/ui/audit?check=1", Some(&session)).await;
    assert_eq!(audit.status(), StatusCode::OK);
    assert!(html.contains("only a key without a tenant"), "{html}");
    assert!(!html.contains("The chain holds"), "{html}");
    // Nor is it offered the button (trust hunt s56 I1); a global key is.
    let (_, html) = app.get("/ui/audit", Some(&session)).await;
    assert!(!html.contains("id=\"check-chain\""), "{html}");
    let (global, _, _) = app.sign_in(&app.admin).await;
    let (_, html) = app.get("/ui/audit", Some(&global)).await;
    assert!(html.contains("id=\"check-chain\""), "{html}");
}

/// Groups are global: a tenant-bound key, even one holding `*`, reads them but is offered
/// no form to create or change one; a forged post is refused and says so once.
#[tokio::test]
async fn a_tenant_bound_key_is_offered_no_group_forms() {
    let app = App::new(false);
    let (session, csrf) = signed_in_to_acme(&app, "acme-root", &["*"]).await;
    let (list, html) = app.get("/ui/groups", Some(&session)).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert!(html.contains("/ui/groups/"), "{html}");
    assert!(!html.contains("create-group"), "{html}");
    let (_, admin_group) = app
        .api(&app.admin, "GET", "/v1/groups/admin", Value::Null)
        .await;
    let path = format!("/ui/groups/{}", admin_group["id"].as_str().unwrap());
    let (page, html) = app.get(&path, Some(&session)).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(!html.contains("save-group"), "{html}");
    assert!(html.contains("id=\"group-permissions\""), "{html}");

    let form = [("csrf", csrf.as_str()), ("name", "acme-group")];
    let (refused, html) = app.post("/ui/groups", &session, &form).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("a caller bound to a tenant"), "{html}");
    assert!(!html.contains("tenant_id: tenant_id:"), "{html}");
}

/// A key of a new user who may read the keys, usable only from `allowed_ips`.
async fn key_allowing(app: &App, user: &str, allowed_ips: &[&str]) -> String {
    app.key_of_new_user_with(
        json!({"name": user, "permissions": ["latchkey:keys:read"]}),
        json!({"allowed_ips": allowed_ips}),
    )
    .await
}

#[tokio::test]
async fn a_key_with_allowed_ips_signs_in_and_reads_only_from_an_allowed_address() {
    let app = App::new(false);
    let local = key_allowing(&app, "local", &["127.0.0.1/32"]).await;
    let (session, _, _) = app.sign_in(&local).await;
    let (answer, html) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(html.contains("id=\"keys\""), "{html}");

    let elsewhere = key_allowing(&app, "elsewhere", &["203.0.113.0/24"]).await;
    let (answer, html) = app.try_sign_in(&elsewhere).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("may not be used from this address"), "{html}");
    assert!(
        answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("lk_session")),
        "no session opened"
    );
}

/// The key's allowed IPs are checked at every page, against the browser's address, as at
/// sign-in: pages that make no API call (the key form, the fallback) included. The
/// session stays, for an address the key allows.
#[tokio::test]
async fn every_page_checks_the_key_s_allowed_ips() {
    let app = App::new(false);
    let key = key_allowing(&app, "local", &["127.0.0.1/32"]).await;
    let (session, _, _) = app.sign_in(&key).await;
    let path = app.first_key_of("local").await;
    let allow = |ips: &'static str| json!({"allowed_ips": [ips]});
    let (status, _) = app
        .api(&app.admin, "PATCH", &path, allow("203.0.113.0/24"))
        .await;
    assert_eq!(status, StatusCode::OK);
    for page in ["/ui/keys/new", "/ui/", "/ui/keys"] {
        let (answer, html) = app.get(page, Some(&session)).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{page}: {html}");
        assert!(html.contains("may not be used from this address"), "{html}");
        assert!(!html.contains("name=\"once\""), "{page}: no form token");
    }
    // The fallback says only that there is no such page, not who is signed in.
    let (answer, html) = app.get("/ui/no-such-page", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(!html.contains("local"), "{html}");
    let (status, _) = app
        .api(&app.admin, "PATCH", &path, allow("127.0.0.0/8"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (answer, html) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
}

/// A form the browser says came from another site (`Sec-Fetch-Site`) is refused before it
/// is read: no sign-in, no sign-out (the cookie is not cleared), nothing created.
#[tokio::test]
async fn a_form_from_another_site_is_refused_and_changes_nothing() {
    let app = App::new(false);
    for site in ["cross-site", "same-site"] {
        let (answer, html) = app.sign_in_from(&app.admin, None, site).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{site}: {html}");
        assert!(html.contains("sent from another site"), "{html}");
        assert!(!opens_a_session(&answer), "{site}");
    }
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let keys = app.key_count().await;
    let once = app.form_token(&session).await;
    let create = [
        ("csrf", csrf.as_str()),
        ("once", &once),
        ("user", "admin"),
        ("name", "planted"),
    ];
    let (answer, _) = app
        .post_from("/ui/keys", &session, &create, "cross-site")
        .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.key_count().await, keys, "nothing created");
    let (answer, _) = app
        .post_from("/ui/signout", &session, &[("csrf", &csrf)], "cross-site")
        .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(answer.headers().get(SET_COOKIE).is_none(), "{answer:?}");
    let (answer, _) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "still signed in");
    // The same form from the console itself creates the key.
    let (answer, html) = app.post("/ui/keys", &session, &create).await;
    assert_eq!(answer.status(), StatusCode::CREATED, "{html}");
    assert_eq!(app.key_count().await, keys + 1);
}

/// Signing in again in the same browser ends the session it had: the key it held leaves
/// the server's memory then, not when the session would have idled out.
#[tokio::test]
async fn signing_in_again_ends_the_browser_s_previous_session() {
    let app = App::new(false);
    let first = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (before, _, _) = app.sign_in(&first).await;
    let (answer, html) = app
        .sign_in_from(&app.admin, Some(&before), "same-origin")
        .await;
    assert!(opens_a_session(&answer), "{html}");
    let after = cookie_pair(&answer, "lk_session");
    let (answer, _) = app.get("/ui/keys", Some(&before)).await;
    assert_eq!(answer.headers()[LOCATION], "/ui/signin", "the first ended");
    let (answer, _) = app.get("/ui/keys", Some(&after)).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_imported_in_another_format_signs_in() {
    let app = App::new(false);
    let foreign = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
    app.import_for_new_reader("migrated", &[foreign.to_owned()])
        .await;
    // The form takes the longest an import takes: a browser cut it at 256 characters.
    let (_, form) = app.get("/ui/signin", None).await;
    let longest = latchkey_core::limits::MAX_IMPORTED_KEY_LEN;
    assert!(form.contains(&format!("maxlength=\"{longest}\"")), "{form}");
    let (session, _, _) = app.sign_in(foreign).await;
    let (answer, html) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(
        html.contains("Signed in as <strong>migrated</strong>"),
        "{html}"
    );
    assert!(!html.contains(foreign), "the key is never rendered");
}

#[tokio::test]
async fn a_key_lands_on_a_section_it_reads_and_error_pages_keep_the_sign_out() {
    let app = App::new(false);
    let auditor = app.key_with("auditor", &["latchkey:audit:read"]).await;
    let (answer, _) = app.try_sign_in(&auditor).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()[LOCATION], "/ui/audit");
    let session = cookie_pair(&answer, "lk_session");
    let (answer, _) = app.get("/ui/", Some(&session)).await;
    assert_eq!(answer.headers()[LOCATION], "/ui/audit");
    let (answer, html) = app.get("/ui/audit", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    // A section it may not read: the API's 403, with the signed-in header and sign-out.
    for path in ["/ui/keys", "/ui/nowhere"] {
        let (answer, html) = app.get(path, Some(&session)).await;
        assert!(answer.status().is_client_error(), "{path}: {html}");
        assert!(html.contains("id=\"signout\""), "{path}: {html}");
        assert!(html.contains("href=\"/ui/audit\""), "{path}: {html}");
        assert!(html.contains("Signed in as"), "{path}: {html}");
    }
}

#[test]
fn a_keystore_outage_keeps_the_session_and_blames_no_key() {
    // PostgreSQL only: the database is cut off under the console.
    let Some(location) = support::postgres_location() else {
        eprintln!("skipped: PostgreSQL only (set LATCHKEY_TEST_POSTGRES)");
        return;
    };
    let config = support::config().max_staleness(Duration::from_millis(300));
    let app = App::at(&location.location, config, false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(async { app.sign_in(&app.admin).await.0 });
    let (leaving, _, leaving_csrf) = runtime.block_on(app.sign_in(&app.admin));
    let reconnect = support::cut_off(&location);
    // Past the staleness bound, no answer comes from the verify cache.
    std::thread::sleep(Duration::from_millis(1_500));
    runtime.block_on(async {
        let (answer, html) = app.get("/ui/keys", Some(&session)).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{html}");
        assert!(html.contains("Keystore unavailable"), "{html}");
        let (answer, html) = app.try_sign_in(&app.admin).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{html}");
        assert!(html.contains("keystore is unavailable"), "{html}");
        assert!(!html.contains("does not sign in"), "{html}");
        // Signing out needs no keystore: the session ends and the cookie is cleared.
        let (answer, html) = app
            .post("/ui/signout", &leaving, &[("csrf", &leaving_csrf)])
            .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
        assert!(
            answer.headers()[SET_COOKIE]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    });
    reconnect();
    // Back: the same session goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    runtime.block_on(async {
        loop {
            let (answer, html) = app.get("/ui/keys", Some(&session)).await;
            if answer.status() == StatusCode::OK {
                break;
            }
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{html}");
            assert!(Instant::now() < deadline, "the store came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (answer, _) = app.get("/ui/keys", Some(&leaving)).await;
        assert_eq!(answer.headers()[LOCATION], "/ui/signin", "signed out");
    });
}

#[test]
fn a_cold_sign_in_on_postgresql_waits_off_the_async_worker() {
    // PostgreSQL only: a key the verify cache does not hold is a round trip.
    let Some(location) = support::postgres_location() else {
        eprintln!("skipped: PostgreSQL only (set LATCHKEY_TEST_POSTGRES)");
        return;
    };
    let app = App::at(&location.location, support::config(), false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The first poll hands the look-up to the blocking pool and returns, unless the
        // blocking thread ran the whole round trip before that poll (a loaded machine may
        // hold the async thread back that long): a look-up on the async worker would
        // answer at the first poll every time, so one of a few tries must not.
        let mut handed_off = false;
        for user in ["reader", "reader2", "reader3", "reader4", "reader5"] {
            // Made, never presented: not in the verify cache.
            let cold = app.key_with(user, &["latchkey:keys:read"]).await;
            let (form, html) = app.get("/ui/signin", None).await;
            let body = serde_urlencoded::to_string([
                ("csrf", hidden(&html, "csrf").as_str()),
                ("key", cold.as_str()),
            ])
            .unwrap();
            let request = app
                .request()
                .method("POST")
                .uri("/ui/signin")
                .header(COOKIE, cookie_pair(&form, "lk_signin"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let mut answer = std::pin::pin!(app.console.clone().oneshot(request));
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(answer.as_mut().poll(cx).is_ready())
            })
            .await;
            let (answer, html) = read(answer.await.unwrap()).await;
            assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
            if !first {
                handed_off = true;
                break;
            }
        }
        assert!(
            handed_off,
            "the sign-in waited for the database on the async worker"
        );
    });
}

#[tokio::test]
async fn a_search_page_without_a_match_says_there_is_more_to_search() {
    let app = App::new(false);
    // More keys than one page of the API reads, then the one searched for.
    let texts: Vec<String> = (0..1_000)
        .map(|i| format!("ext_key_{i:08}_padding"))
        .collect();
    app.import_for_new_reader("many", &texts).await;
    let (status, _) = app
        .api(
            &app.admin,
            "POST",
            "/v1/keys",
            json!({"name": "needle", "user_id": "many"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (answer, html) = app.get("/ui/keys?q=needle", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(!html.contains("No keys match"), "{html}");
    assert!(html.contains("there are more to search"), "{html}");
    let next = next_page(&html).expect("a next page");
    let (_, html) = app.get(&next, Some(&session)).await;
    assert!(html.contains(">needle</a>"), "{html}");
}

/// A whole key pasted into the search box: the search goes on by its display prefix, at
/// an address that no longer holds the secret, and finds the key.
#[tokio::test]
async fn a_key_pasted_into_the_search_box_is_found_by_its_prefix_only() {
    let app = App::new(false);
    let key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let prefix = &key[..key.rfind('_').unwrap()];
    let path = app.first_key_of("ops").await;
    let id = path.rsplit('/').next().unwrap();
    let (session, _, _) = app.sign_in(&app.admin).await;
    // Whole, or with its last character mistyped.
    let last = if key.ends_with('A') { "B" } else { "A" };
    let mistyped = format!("{}{last}", &key[..key.len() - 1]);
    for pasted in [key.as_str(), &mistyped] {
        let search = format!("/ui/keys?q={pasted}&status=active");
        let (answer, _) = app.get(&search, Some(&session)).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let to = answer.headers()[LOCATION].to_str().unwrap().to_owned();
        assert_eq!(to, format!("/ui/keys?q={prefix}&status=active"));
        let (answer, html) = app.get(&to, Some(&session)).await;
        assert_eq!(answer.status(), StatusCode::OK, "{html}");
        assert!(
            html.contains(&format!("/ui/keys/{id}")),
            "not found: {html}"
        );
        assert!(!html.contains(pasted), "the secret is shown");
    }
}

/// The groups list's next page opens (the console refused the API's cursors once they
/// were padded past its own bound); users page through the same code.
#[tokio::test]
async fn the_groups_list_pages_on() {
    let app = App::new(false);
    app.make_groups(101).await;
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (answer, html) = app.get("/ui/groups", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(!html.contains(">g100<"), "{html}");
    let next = next_page(&html).expect("a next page");
    let (answer, html) = app.get(&next, Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(html.contains(">g100<"), "{html}");
}

#[tokio::test]
async fn a_list_and_a_key_page_cost_a_rate_limited_key_a_few_requests() {
    let app = App::new(false);
    // A trail long enough that finding its end by bisection took many reads.
    app.make_groups(64).await;
    let key = app
        .key_of_new_user_with(
            json!({"name": "ops", "permissions":
                ["latchkey:keys:read", "latchkey:users:read", "latchkey:audit:read"]}),
            json!({"rate_limits": [{"name": "default", "limit": 8, "window_seconds": 3600}]}),
        )
        .await;
    // A list page of many users' keys: their names took one read each.
    for i in 0..10 {
        app.key_with(&format!("svc{i}"), &[]).await;
    }
    let (session, _, _) = app.sign_in(&key).await;
    let (answer, html) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(
        html.contains("<td data-label=\"User\">svc9</td>"),
        "names shown: {html}"
    );
    let (_, keys) = app
        .api(&app.admin, "GET", "/v1/keys?user_id=ops", Value::Null)
        .await;
    let id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let (answer, html) = app.get(&format!("/ui/keys/{id}"), Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK, "{html}");
    assert!(html.contains("key.create"), "its events: {html}");
}

#[tokio::test]
async fn a_create_form_the_session_never_showed_creates_nothing() {
    let app = App::new(false);
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let before = app.key_count().await;
    let made_up = [
        ("csrf", csrf.as_str()),
        ("once", "made-up"),
        ("user", "admin"),
        ("name", "x"),
    ];
    let (answer, html) = app.post("/ui/keys", &session, &made_up).await;
    assert_eq!(answer.status(), StatusCode::CONFLICT, "{html}");
    assert_eq!(app.key_count().await, before, "nothing created");
}

/// Whether `answer` opens a session.
fn opens_a_session(answer: &Response<()>) -> bool {
    answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("lk_session"))
}

#[tokio::test]
async fn a_key_that_may_read_no_section_does_not_sign_in() {
    let app = App::new(false);
    let app_key = app.key_with("shop", &["orders:read"]).await;
    let (answer, html) = app.try_sign_in(&app_key).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("may not use the console"), "{html}");
    assert!(!opens_a_session(&answer), "no session made");
}

#[tokio::test]
async fn one_user_s_keys_share_its_sessions_cap() {
    let app = App::new(false);
    let first_key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (first, _, _) = app.sign_in(&first_key).await;
    let (other, _, _) = app.sign_in(&app.admin).await;
    // The same user's sessions, each signed in with a new key of it.
    for i in 0..latchkey_console::session::MAX_SESSIONS_PER_USER {
        let (status, key) = app
            .api(
                &app.admin,
                "POST",
                "/v1/keys",
                json!({"name": format!("k{i}"), "user_id": "ops"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        app.sign_in(key["secret"].as_str().unwrap()).await;
    }
    let (answer, _) = app.get("/ui/keys", Some(&first)).await;
    assert_eq!(
        answer.headers().get(LOCATION).map(|l| l.to_str().unwrap()),
        Some("/ui/signin"),
        "the user's least recently used session was ended"
    );
    let (answer, _) = app.get("/ui/keys", Some(&other)).await;
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "another user's session stays"
    );
}

#[tokio::test]
async fn sign_out_clears_the_cookie_whatever_became_of_the_key() {
    let app = App::new(false);
    let key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (session, _, csrf) = app.sign_in(&key).await;
    app.revoke_first_key_of("ops").await;
    let (answer, html) = app.post("/ui/signout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    assert_eq!(answer.headers()[LOCATION], "/ui/signin");
    assert!(
        answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap()
                == "lk_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"),
        "{answer:?}"
    );
}

/// A sign-out that carries no session cookie (a form posted from another site carries
/// none: `SameSite=Strict`) clears none: only the browser's own sign-out signs it out.
#[tokio::test]
async fn a_sign_out_without_a_session_cookie_clears_nothing() {
    let app = App::new(false);
    let (answer, html) = app.post("/ui/signout", "", &[]).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    assert!(answer.headers().get(SET_COOKIE).is_none(), "{answer:?}");
    // A cookie of a session that is no more is cleared.
    let (answer, _) = app
        .post("/ui/signout", "lk_session=0123", &[("csrf", "x")])
        .await;
    assert!(answer.headers().get(SET_COOKIE).is_some(), "{answer:?}");
}

#[tokio::test]
async fn a_page_counts_as_a_use_of_the_key_only_its_api_calls() {
    let app = App::new(false);
    let key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (_, keys) = app
        .api(&app.admin, "GET", "/v1/keys?user_id=ops", Value::Null)
        .await;
    let path = format!("/v1/keys/{}", keys["items"][0]["id"].as_str().unwrap());
    let uses = || async {
        let (_, key) = app.api(&app.admin, "GET", &path, Value::Null).await;
        (
            key["usage_count"].as_u64().unwrap(),
            key["last_used_at"].clone(),
        )
    };
    assert_eq!(uses().await, (0, Value::Null));
    // Sign-in and the session's check at each page are not uses of the key.
    let (answer, _) = app.try_sign_in(&key).await;
    let session = cookie_pair(&answer, "lk_session");
    assert_eq!(uses().await, (0, Value::Null), "sign-in");
    let (answer, _) = app.get("/ui/nowhere", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(uses().await, (0, Value::Null), "a page without API calls");
    // The keys' list is one API call (the key may not read users' names).
    let (answer, _) = app.get("/ui/keys", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(uses().await.0, 1, "one API call");
}

#[tokio::test]
async fn a_key_page_issues_a_form_token_only_with_the_rotate_form() {
    let app = App::new(false);
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let once = app.form_token(&session).await;
    app.key_with("ops", &[]).await;
    app.revoke_first_key_of("ops").await;
    let (_, keys) = app
        .api(&app.admin, "GET", "/v1/keys?user_id=ops", Value::Null)
        .await;
    let revoked = format!("/ui/keys/{}", keys["items"][0]["id"].as_str().unwrap());
    // Many views of a page without a rotate form: no token issued, none forgotten.
    for _ in 0..100 {
        let (answer, html) = app.get(&revoked, Some(&session)).await;
        assert_eq!(answer.status(), StatusCode::OK, "{html}");
        assert!(!html.contains("name=\"once\""), "{html}");
    }
    let create = [
        ("csrf", csrf.as_str()),
        ("once", &once),
        ("user", "admin"),
        ("name", "x"),
    ];
    let (answer, html) = app.post("/ui/keys", &session, &create).await;
    assert_eq!(answer.status(), StatusCode::CREATED, "{html}");
}

#[tokio::test]
async fn a_refused_create_shows_the_form_again_as_typed() {
    let app = App::new(false);
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let before = app.key_count().await;
    let mut once = app.form_token(&session).await;
    // Refused by the API (no such user), then by the console (credits not a number).
    for (user, credits) in [("nobody", "5"), ("admin", "-1")] {
        let form = [
            ("csrf", csrf.as_str()),
            ("once", &once),
            ("user", user),
            ("name", "typed <name>"),
            ("scopes", "orders:read"),
            ("credits", credits),
            ("refill", "month"),
        ];
        let (answer, html) = app.post("/ui/keys", &session, &form).await;
        assert!(answer.status().is_client_error(), "{html}");
        assert!(html.contains("id=\"create-error\""), "{html}");
        for typed in [
            format!("value=\"{user}\""),
            "value=\"typed &#60;name&#62;\"".to_owned(),
            "value=\"orders:read\"".to_owned(),
            format!("value=\"{credits}\""),
            "value=\"month\" selected".to_owned(),
        ] {
            assert!(html.contains(&typed), "{typed} in {html}");
        }
        let fresh = hidden(&html, "once");
        assert_ne!(fresh, once, "a new token");
        once = fresh;
    }
    assert_eq!(app.key_count().await, before, "nothing created");
    let good = [
        ("csrf", csrf.as_str()),
        ("once", &once),
        ("user", "admin"),
        ("name", "typed"),
    ];
    let (answer, html) = app.post("/ui/keys", &session, &good).await;
    assert_eq!(answer.status(), StatusCode::CREATED, "{html}");
}

/// The sequence numbers of an audit page's rows.
fn audit_rows(html: &str) -> Vec<u64> {
    html.split("<td data-label=\"#\">")
        .skip(1)
        .map(|row| row.split('<').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_audit_log_shows_the_newest_first_and_pages_both_ways() {
    let app = App::new(false);
    app.make_groups(150).await;
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (_, latest) = app
        .api(
            &app.admin,
            "GET",
            "/v1/audit?order=desc&limit=1",
            Value::Null,
        )
        .await;
    let newest = latest["items"][0]["seq"].as_u64().unwrap();
    let every: Vec<u64> = (1..=newest).collect();
    for (start, expected) in [
        ("/ui/audit", every.iter().rev().copied().collect::<Vec<_>>()),
        ("/ui/audit?order=asc", every.clone()),
    ] {
        let (mut seen, mut page, mut pages) = (Vec::new(), Some(start.to_owned()), 0);
        while let Some(path) = page {
            let (answer, html) = app.get(&path, Some(&session)).await;
            assert_eq!(answer.status(), StatusCode::OK, "{path}: {html}");
            seen.extend(audit_rows(&html));
            page = next_page(&html);
            pages += 1;
            assert!(pages < 10, "{start}: the pages end");
        }
        assert_eq!(seen, expected, "{start}: every event once, in order");
    }
}

#[tokio::test]
async fn under_tls_every_answer_sends_hsts() {
    for tls in [true, false] {
        let app = App::new(tls);
        let (session, _, _) = app.sign_in(&app.admin).await;
        for (path, cookie) in [
            ("/ui/signin", None),
            ("/ui/keys", None),
            ("/ui/keys", Some(session.as_str())),
            ("/ui/nowhere", Some(session.as_str())),
            ("/ui/static/console.css", None),
        ] {
            let (answer, _) = app.get(path, cookie).await;
            let hsts = answer.headers().get("strict-transport-security");
            if tls {
                assert_eq!(hsts.unwrap(), "max-age=31536000", "{path}");
            } else {
                assert!(hsts.is_none(), "{path}: not over plain HTTP");
            }
        }
    }
}

/// Parity hunt INFO 10: a user has a page of its own, where the console edits its name,
/// groups, permissions and shared limits, disables it, revokes all its keys and deletes it;
/// a group's page deletes the group.
#[tokio::test]
async fn a_user_s_page_edits_revokes_and_deletes_it_and_a_group_s_page_deletes_the_group() {
    let app = App::new(false);
    let group = app.group("ops", &["orders:read"]).await;
    let key = app.key_with("svc", &[]).await;
    let (_, user) = app
        .api(&app.admin, "GET", "/v1/users/svc", Value::Null)
        .await;
    let user = user["id"].as_str().unwrap().to_owned();
    let page = format!("/ui/users/{user}");
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let (_, list) = app.get("/ui/users", Some(&session)).await;
    assert!(list.contains(&format!("href=\"{page}\"")), "{list}");

    // The editor's form as typed on `shown`, the page as it was.
    let edit = |permissions, rate_limits, shown: &str| {
        [
            ("csrf", csrf.clone()),
            ("name", "svc2".to_owned()),
            ("groups", "ops".to_owned()),
            ("permissions", permissions),
            ("rate_limits", rate_limits),
            ("shown_groups", hidden(shown, "shown_groups")),
            ("shown_permissions", hidden(shown, "shown_permissions")),
            ("shown_name", hidden(shown, "shown_name")),
            ("shown_rate_limits", hidden(shown, "shown_rate_limits")),
        ]
    };
    let (_, first) = app.get(&page, Some(&session)).await;
    let typed = edit("orders:write\nreports:read".into(), "3/1m".into(), &first);
    let typed = typed.each_ref().map(|(k, v)| (*k, v.as_str()));
    let (answer, html) = app.post(&page, &session, &typed).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    assert_eq!(answer.headers()[LOCATION], page.as_str());
    let (_, stored) = app
        .api(&app.admin, "GET", &format!("/v1/users/{user}"), Value::Null)
        .await;
    assert_eq!(stored["name"], "svc2");
    assert_eq!(stored["groups"], json!([group]));
    assert_eq!(
        stored["permissions"],
        json!(["orders:write", "reports:read"])
    );
    assert_eq!(
        stored["rate_limits"],
        json!([{"name": "default", "limit": 3, "window_seconds": 60}])
    );
    // The page names its groups, and gives the editor back what it holds.
    let (shown, html) = app.get(&page, Some(&session)).await;
    assert_eq!(shown.status(), StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("<a href=\"/ui/groups/{group}\">ops</a>")),
        "{html}"
    );
    assert!(html.contains("value=\"3/60s default\""), "{html}");
    // The key uses up the user's limit (a request refused for want of a permission counts).
    for _ in 0..3 {
        let (status, _) = app.api(&key, "GET", "/v1/users", Value::Null).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = app.api(&key, "GET", "/v1/users", Value::Null).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Meanwhile its group is renamed and another takes the name it had.
    let (status, _) = app
        .api(
            &app.admin,
            "PATCH",
            &format!("/v1/groups/{group}"),
            json!({"name": "ops-old"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.group("ops", &[]).await;
    // Saved again as shown, nothing changes: the same group, the limit's state kept.
    let same = edit(
        "orders:write reports:read".into(),
        "3/60s default".into(),
        &html,
    );
    let same = same.each_ref().map(|(k, v)| (*k, v.as_str()));
    let (answer, _) = app.post(&page, &session, &same).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (_, again) = app
        .api(&app.admin, "GET", &format!("/v1/users/{user}"), Value::Null)
        .await;
    assert_eq!(again["rate_limits"], stored["rate_limits"]);
    assert_eq!(again["groups"], stored["groups"]);
    let (status, _) = app.api(&key, "GET", "/v1/users", Value::Null).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the limit started afresh"
    );

    // Disabled from its page, back to its page.
    let disable = [
        ("csrf", csrf.as_str()),
        ("enabled", "false"),
        ("back", "user"),
    ];
    let (answer, _) = app
        .post(&format!("{page}/enabled"), &session, &disable)
        .await;
    assert_eq!(answer.headers()[LOCATION], page.as_str());
    let enable = [
        ("csrf", csrf.as_str()),
        ("enabled", "true"),
        ("back", "user"),
    ];
    app.post(&format!("{page}/enabled"), &session, &enable)
        .await;

    // Its key authenticates (limited) until all its keys are revoked.
    let (status, _) = app.api(&key, "GET", "/v1/users", Value::Null).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (answer, html) = app
        .post(&format!("{page}/revoke-keys"), &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.headers()[LOCATION], page.as_str(), "{html}");
    let (status, refused) = app.api(&key, "GET", "/v1/users", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["code"], "key_revoked");

    let (answer, _) = app
        .post(&format!("{page}/delete"), &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.headers()[LOCATION], "/ui/users");
    let (status, _) = app
        .api(&app.admin, "GET", &format!("/v1/users/{user}"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (answer, _) = app
        .post(
            &format!("/ui/groups/{group}/delete"),
            &session,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(answer.headers()[LOCATION], "/ui/groups");
    let (status, _) = app
        .api(
            &app.admin,
            "GET",
            &format!("/v1/groups/{group}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An editor sends only what it changed against what its page showed: a group and a
/// permission taken from a user, and a permission taken from a group, through the API after
/// their pages were shown, stay taken when those pages are saved for another change.
#[tokio::test]
async fn an_editor_saved_after_a_change_elsewhere_keeps_that_change() {
    let app = App::new(false);
    let ops = app.group("ops", &["orders:read", "orders:write"]).await;
    app.group("audit", &["reports:read"]).await;
    app.key_of_new_user(json!({
        "name": "svc",
        "groups": ["ops", "audit"],
        "permissions": ["a:read", "b:read"],
    }))
    .await;
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let (_, user_page) = app.get("/ui/users/svc", Some(&session)).await;
    let group_path = format!("/ui/groups/{ops}");
    let (_, group_page) = app.get(&group_path, Some(&session)).await;

    // Meanwhile, elsewhere:
    for (path, body) in [
        (
            "/v1/users/svc".to_owned(),
            json!({"remove_groups": ["audit"], "remove_permissions": ["b:read"]}),
        ),
        (
            format!("/v1/groups/{ops}"),
            json!({"remove_permissions": ["orders:write"]}),
        ),
    ] {
        let (status, body) = app.api(&app.admin, "PATCH", &path, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // The user's page (as `page` showed it) saved with `groups` and `permissions` typed:
    // the user as stored then.
    let save_user = |page: String, groups: String, permissions: &'static str| {
        let (app, session, csrf) = (&app, &session, &csrf);
        async move {
            let mut form = vec![
                ("csrf", csrf.clone()),
                ("name", "svc".to_owned()),
                ("groups", groups),
                ("permissions", permissions.to_owned()),
                ("rate_limits", String::new()),
            ];
            for shown in [
                "shown_groups",
                "shown_permissions",
                "shown_name",
                "shown_rate_limits",
            ] {
                form.push((shown, hidden(&page, shown)));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (answer, html) = app.post("/ui/users/svc", session, &form).await;
            assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
            let (_, stored) = app
                .api(&app.admin, "GET", "/v1/users/svc", Value::Null)
                .await;
            stored
        }
    };
    // One permission typed in and one taken out.
    let stored = save_user(user_page, "ops\naudit".to_owned(), "b:read\nc:read").await;
    assert_eq!(stored["groups"], json!([ops]), "{stored}");
    assert_eq!(stored["permissions"], json!(["c:read"]), "{stored}");

    // The group's page saved under a new name, its permissions as shown.
    let form = [
        ("csrf", csrf.clone()),
        ("name", "ops2".to_owned()),
        ("permissions", "orders:read\norders:write".to_owned()),
        (
            "shown_permissions",
            hidden(&group_page, "shown_permissions"),
        ),
        ("shown_name", hidden(&group_page, "shown_name")),
    ];
    let form = form.each_ref().map(|(k, v)| (*k, v.as_str()));
    let (answer, html) = app.post(&group_path, &session, &form).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    let (_, stored) = app
        .api(&app.admin, "GET", &format!("/v1/groups/{ops}"), Value::Null)
        .await;
    assert_eq!(stored["name"], "ops2");
    assert_eq!(stored["permissions"], json!(["orders:read"]), "{stored}");

    // A group typed as its id, in capitals, is the group shown: kept, not removed.
    let (_, user_page) = app.get("/ui/users/svc", Some(&session)).await;
    let stored = save_user(user_page, ops.to_uppercase(), "c:read").await;
    assert_eq!(stored["groups"], json!([ops]), "{stored}");
}

/// Audit s60 M2: a user's page offers "Revoke all its keys" to a key that may write keys,
/// as the API asks, and not to one that may write users only, which gets the editor,
/// disable and delete (the button followed `latchkey:users:write`: shown where the API
/// refused it, hidden where it would serve). L4: the form that creates a user takes its
/// organization beside its tenant.
#[tokio::test]
async fn a_user_s_actions_follow_the_permissions_their_endpoints_need() {
    let app = App::new(false);
    let svc = app.key_with("svc", &[]).await;
    let page = "/ui/users/svc";
    let people = [
        "latchkey:users:read",
        "latchkey:users:write",
        "latchkey:keys:read",
    ];
    let people = app.key_with("people", &people).await;
    let keyops = [
        "latchkey:users:read",
        "latchkey:keys:read",
        "latchkey:keys:write",
    ];
    let keyops = app.key_with("keyops", &keyops).await;

    let (session, _, _) = app.sign_in(&people).await;
    let (_, html) = app.get(page, Some(&session)).await;
    assert!(html.contains("id=\"save-user\""), "{html}");
    assert!(html.contains("id=\"delete-user\""), "{html}");
    assert!(!html.contains("id=\"revoke-keys\""), "{html}");

    let (session, _, csrf) = app.sign_in(&keyops).await;
    let (_, html) = app.get(page, Some(&session)).await;
    assert!(html.contains("id=\"revoke-keys\""), "{html}");
    assert!(!html.contains("id=\"save-user\""), "{html}");
    assert!(!html.contains("id=\"delete-user\""), "{html}");
    let revoke = format!("{page}/revoke-keys");
    let (answer, html) = app.post(&revoke, &session, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    let (status, refused) = app.api(&svc, "GET", "/v1/users", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["code"], "key_revoked");

    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let (_, html) = app.get("/ui/users", Some(&session)).await;
    assert!(html.contains("name=\"organization_id\""), "{html}");
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "tenanted"),
        ("tenant_id", "acme"),
        ("organization_id", "acme-eu"),
    ];
    let (answer, html) = app.post("/ui/users", &session, &form).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    let (_, stored) = app
        .api(&app.admin, "GET", "/v1/users/tenanted", Value::Null)
        .await;
    assert_eq!(stored["tenant_id"], "acme", "{stored}");
    assert_eq!(stored["organization_id"], "acme-eu", "{stored}");
}

/// A key pasted into a field the console reads itself (rate limits) is refused without
/// being written into the page: not in the field, not in the message that says why.
#[tokio::test]
async fn a_key_pasted_into_rate_limits_is_not_shown_in_the_refusal() {
    let app = App::new(false);
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let once = app.form_token(&session).await;
    let pasted = format!("10/1m, {}", app.admin);
    let create = [
        ("csrf", csrf.as_str()),
        ("once", &once),
        ("user", "admin"),
        ("name", "typed"),
        ("rate_limits", &pasted),
    ];
    let edit = [
        ("csrf", csrf.as_str()),
        ("name", "admin"),
        ("groups", "admin"),
        ("permissions", ""),
        ("rate_limits", &pasted),
        ("shown_name", "admin"),
        ("shown_groups", ""),
        ("shown_permissions", ""),
        ("shown_rate_limits", ""),
    ];
    for (path, form) in [("/ui/keys", &create[..]), ("/ui/users/admin", &edit[..])] {
        let (answer, html) = app.post(path, &session, form).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}: {html}");
        assert!(html.contains("rate limits:"), "{path}: {html}");
        assert!(html.contains("not shown"), "{path}: {html}");
        assert!(!html.contains(&app.admin), "{path}: the key is shown again");
    }
}

/// A page of another site (a sibling host's, whose requests carry the cookie) loading a
/// console page as an image or a fetch is refused before the page calls the API: the
/// signed-in key is not used. Following a link from there opens the page.
#[tokio::test]
async fn a_page_loaded_by_another_site_is_refused_and_a_link_followed_opens_it() {
    let app = App::new(false);
    let key = app.key_with("ops", &["latchkey:keys:read"]).await;
    let (answer, _) = app.try_sign_in(&key).await;
    let session = cookie_pair(&answer, "lk_session");
    let usage_count = || async {
        let (_, keys) = app
            .api(&app.admin, "GET", "/v1/keys?user_id=ops", Value::Null)
            .await;
        keys["items"][0]["usage_count"].as_u64().unwrap()
    };
    let load = |site: &'static str, mode: &'static str, dest: &'static str| {
        let request = app
            .request()
            .uri("/ui/keys")
            .header(COOKIE, &session)
            .header("sec-fetch-site", site)
            .header("sec-fetch-mode", mode)
            .header("sec-fetch-dest", dest)
            .body(Body::empty())
            .unwrap();
        let console = app.console.clone();
        async move { read(console.oneshot(request).await.unwrap()).await }
    };
    for (site, mode, dest) in [
        ("same-site", "no-cors", "image"),
        ("same-site", "cors", "empty"),
        ("cross-site", "no-cors", "script"),
        ("same-site", "navigate", "iframe"),
    ] {
        let (answer, html) = load(site, mode, dest).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{site} {dest}");
        assert!(html.contains("sent from another site"), "{html}");
    }
    assert_eq!(usage_count().await, 0, "the key was not used");
    for site in ["same-site", "same-origin"] {
        let (answer, html) = load(site, "navigate", "document").await;
        assert_eq!(answer.status(), StatusCode::OK, "{site}: {html}");
    }
    assert_eq!(usage_count().await, 2);
}

/// Hunt (console) 4: an editor's form that leaves a field out (a script's, not a browser's)
/// is refused by name and changes nothing; it emptied the groups, permissions and rate
/// limits it did not carry.
#[tokio::test]
async fn an_editor_s_form_without_a_field_is_refused_and_changes_nothing() {
    let app = App::new(false);
    let ops = app.group("ops", &["orders:read"]).await;
    app.key_of_new_user(json!({
        "name": "svc",
        "groups": ["ops"],
        "permissions": ["a:read"],
        "rate_limits": [{"name": "default", "limit": 5, "window_seconds": 60}],
    }))
    .await;
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let app = &app;
    let read = |path: String| async move {
        let (_, record) = app.api(&app.admin, "GET", &path, Value::Null).await;
        record
    };
    let user = read("/v1/users/svc".to_owned()).await;
    let group = read(format!("/v1/groups/{ops}")).await;
    // (Re-check s51 B: nor one with every field it edits but not what its page showed,
    // which would read as showing nothing and give back what was removed since.)
    let every_field = [
        ("csrf", csrf.as_str()),
        ("name", "renamed"),
        ("groups", ""),
        ("permissions", ""),
        ("rate_limits", ""),
    ];
    for (path, form, missing) in [
        ("/ui/users/svc".to_owned(), &every_field[..2], "groups"),
        (
            format!("/ui/groups/{ops}"),
            &every_field[..2],
            "permissions",
        ),
        ("/ui/users/svc".to_owned(), &every_field[..], "shown_name"),
        (format!("/ui/groups/{ops}"), &every_field[..4], "shown_name"),
    ] {
        let (answer, html) = app.post(&path, &session, form).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}: {html}");
        assert!(html.contains(&format!("no `{missing}` field")), "{html}");
    }
    assert_eq!(read("/v1/users/svc".to_owned()).await, user);
    assert_eq!(read(format!("/v1/groups/{ops}")).await, group);
}

/// Hunt (console) 5: a filter given twice in the key list's address is refused, as the
/// API refuses it, rather than one of the two taken.
#[tokio::test]
async fn a_key_list_filter_given_twice_is_refused() {
    let app = App::new(false);
    let (session, _, _) = app.sign_in(&app.admin).await;
    let (answer, html) = app
        .get("/ui/keys?status=active&status=revoked", Some(&session))
        .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("status is given twice"), "{html}");
    let (answer, _) = app.get("/ui/keys?status=active", Some(&session)).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

/// Hunt (console) INFO: a page refused for the key's rate limit answers 429 with the
/// API's `Retry-After`, not only the words.
#[tokio::test]
async fn a_page_refused_for_a_rate_limit_says_when_to_retry() {
    let app = App::new(false);
    let key = app
        .key_of_new_user_with(
            json!({"name": "ops", "permissions": ["latchkey:keys:read"]}),
            json!({"rate_limits": [{"name": "hourly", "limit": 3, "window_seconds": 3600}]}),
        )
        .await;
    let (answer, _) = app.try_sign_in(&key).await;
    let session = cookie_pair(&answer, "lk_session");
    let mut refused = None;
    for _ in 0..10 {
        let (answer, _) = app.get("/ui/keys", Some(&session)).await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let refused = refused.expect("the limit refuses a page");
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
}

/// A form is read up to 128 KiB: an editor's, carrying a user's longest permissions twice
/// (typed and as shown), fits; a larger one is refused and changes nothing.
#[tokio::test]
async fn a_form_is_bounded_and_an_editor_s_largest_fits() {
    let app = App::new(false);
    let permissions: Vec<String> = (0..256)
        .map(|i| format!("p{i:03}:{}", "x".repeat(120)))
        .collect();
    app.key_of_new_user(json!({"name": "svc", "permissions": permissions}))
        .await;
    let (session, _, csrf) = app.sign_in(&app.admin).await;
    let (_, page) = app.get("/ui/users/svc", Some(&session)).await;
    let typed = permissions.join("\n");
    let shown = hidden(&page, "shown_permissions");
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "svc2"),
        ("groups", ""),
        ("permissions", &typed),
        ("rate_limits", ""),
        ("shown_groups", ""),
        ("shown_permissions", &shown),
        ("shown_name", "svc"),
        ("shown_rate_limits", ""),
    ];
    let (answer, html) = app.post("/ui/users/svc", &session, &form).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{html}");
    let big = "x".repeat(130 * 1024);
    let form = [("csrf", csrf.as_str()), ("name", "svc3"), ("padding", &big)];
    let (answer, html) = app.post("/ui/users/svc2", &session, &form).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("larger than 128 KiB"), "{html}");
    let (status, _) = app
        .api(&app.admin, "GET", "/v1/users/svc2", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "not renamed");
}
