//! One key: its fields and usage; enable, disable, rotate, revoke (after a confirmation
//! that names it), delete.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::Method;
use latchkey_admin::api::KeyWithSecret;
use latchkey_core::{Key, KeyStatus};

use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::pages::keys::{SecretPage, claim_once, user_names};
use crate::session::random_token;
use crate::state::Console;
use crate::view::{Nav, segment};

/// The grace periods offered when rotating, in seconds, with their labels.
const GRACES: [(u64, &str); 5] = [
    (0, "none: the old key stops now"),
    (3_600, "1 hour"),
    (86_400, "1 day"),
    (604_800, "7 days"),
    (2_592_000, "30 days"),
];

#[derive(Template)]
#[template(path = "key.html")]
struct KeyPage {
    nav: Nav,
    key: Key,
    user: String,
    revoked: bool,
    once: String,
    graces: Vec<(u64, &'static str)>,
    /// Its events among the last 1,000 (when the key may read the audit trail).
    events: Option<Vec<super::audit::Row>>,
}

async fn fetch(console: &Console, signed: &Signed, id: &str) -> Result<Key, UiError> {
    console
        .api
        .get(&signed.key, &format!("/v1/keys/{}", segment(id)))
        .await
}

/// `GET /ui/keys/{id}`.
pub(crate) async fn show(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let key = fetch(&console, &signed, &id).await?;
    let user = user_names(&console, &signed, std::iter::once(key.user_id))
        .await
        .remove(&key.user_id)
        .unwrap_or_else(|| key.user_id.to_string());
    let events = if signed.can("latchkey:audit:read") {
        Some(super::audit::recent_about(&console, &signed, key.id).await?)
    } else {
        None
    };
    super::render(&KeyPage {
        nav: signed.nav(),
        events,
        revoked: key.status == KeyStatus::Revoked,
        user,
        key,
        once: random_token(),
        graces: GRACES.to_vec(),
    })
}

/// Back to the key's page after a change.
fn back(id: &str) -> Response {
    Redirect::to(&format!("/ui/keys/{}", segment(id))).into_response()
}

/// `POST /ui/keys/{id}/enabled`: enable (`enabled=true`) or disable (`false`).
pub(crate) async fn enabled(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    super::set_enabled(&console, &posted, &format!("/v1/keys/{}", segment(&id))).await?;
    Ok(back(&id))
}

/// `POST /ui/keys/{id}/rotate`: the new key's secret is shown in the answer, once.
pub(crate) async fn rotate(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    claim_once(&console, &posted)?;
    let grace: u64 = posted
        .fields
        .get("grace_seconds")
        .parse()
        .map_err(|_| UiError::BadForm("grace: a number of seconds".to_owned()))?;
    let rotated: KeyWithSecret = console
        .api
        .send(
            &posted.signed.key,
            Method::POST,
            &format!("/v1/keys/{}/rotate", segment(&id)),
            serde_json::json!({ "grace_seconds": grace }),
        )
        .await?;
    SecretPage {
        nav: posted.signed.nav(),
        heading: "Key rotated",
        key: rotated.key,
        secret: rotated.secret,
    }
    .respond()
}

#[derive(Template)]
#[template(path = "revoke.html")]
struct RevokePage {
    nav: Nav,
    key: Key,
}

/// `GET /ui/keys/{id}/revoke`: the confirmation, naming the key.
pub(crate) async fn confirm_revoke(
    State(console): State<Console>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let key = fetch(&console, &signed, &id).await?;
    super::render(&RevokePage {
        nav: signed.nav(),
        key,
    })
}

/// `POST /ui/keys/{id}/revoke`: the confirmation's form.
pub(crate) async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    let _: Key = console
        .api
        .send(
            &posted.signed.key,
            Method::POST,
            &format!("/v1/keys/{}/revoke", segment(&id)),
            serde_json::Value::Null,
        )
        .await?;
    Ok(back(&id))
}

/// `POST /ui/keys/{id}/delete`: a revoked key's record goes; back to the list.
pub(crate) async fn delete(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    let _: serde_json::Value = console
        .api
        .send(
            &posted.signed.key,
            Method::DELETE,
            &format!("/v1/keys/{}", segment(&id)),
            serde_json::Value::Null,
        )
        .await?;
    Ok(Redirect::to("/ui/keys").into_response())
}
