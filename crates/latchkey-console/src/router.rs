//! The console's routes, all under `/ui`.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use latchkey_core::Store;

use crate::client::Api;
use crate::pages::{audit, groups, key, key_new, keys, signin, user, users};
use crate::session::Sessions;
use crate::state::Console;
use crate::{assets, headers};

/// How the console is served.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ConsoleConfig {
    /// Browsers reach the console over HTTPS: cookies are `Secure`, `__Host-` prefixed and
    /// for `Path=/`, and `Strict-Transport-Security` is sent. Set it when the daemon serves
    /// HTTPS, or a TLS-terminating proxy does in front of it.
    pub secure_cookies: bool,
}

impl ConsoleConfig {
    /// A config; `secure_cookies` when browsers use HTTPS.
    pub fn new(secure_cookies: bool) -> ConsoleConfig {
        ConsoleConfig { secure_cookies }
    }
}

/// The console at `/ui`, over `api` (the router [`latchkey_admin::router`] returns, or
/// the daemon's API router) and the same `store`.
///
/// Merge it beside the API router: it answers `/ui` and `/ui/...` only.
pub fn router(store: Store, api: Router, config: ConsoleConfig) -> Router {
    let tls = config.secure_cookies;
    let sessions = Arc::new(Sessions::default());
    crate::ending::watch(&store, Arc::downgrade(&sessions));
    let state = Console {
        api: Api::new(api),
        store,
        sessions,
        secure: config.secure_cookies,
    };
    let ui = Router::<Console>::new()
        .route("/", get(keys::home))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/keys", get(keys::list).post(key_new::create))
        .route("/keys/new", get(key_new::new))
        .route("/keys/{id}", get(key::show))
        .route("/keys/{id}/enabled", post(key::enabled))
        .route("/keys/{id}/rotate", post(key::rotate))
        .route(
            "/keys/{id}/revoke",
            get(key::confirm_revoke).post(key::revoke),
        )
        .route("/keys/{id}/delete", post(key::delete))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", get(user::show).post(user::update))
        .route("/users/{id}/enabled", post(users::enabled))
        .route("/users/{id}/revoke-keys", post(user::revoke_keys))
        .route("/users/{id}/delete", post(user::delete))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", get(groups::show).post(groups::update))
        .route("/groups/{id}/delete", post(groups::delete))
        .route("/audit", get(audit::list))
        .route("/static/console.css", get(assets::stylesheet))
        .route("/static/console.js", get(assets::script))
        .fallback(crate::errors::not_found);
    Router::new()
        .nest("/ui", ui)
        .route("/ui/", get(keys::home))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            crate::extract::refuse_non_utf8_address,
        ))
        .layer(axum::middleware::from_fn(
            crate::fetch_site::refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn(crate::errors::with_signed_nav))
        .layer(axum::middleware::map_response(move |response| {
            headers::secure(response, tls)
        }))
}
