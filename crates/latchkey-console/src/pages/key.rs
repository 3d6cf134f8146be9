//! One key: its fields and usage; enable, disable, rotate, revoke (after a confirmation
//! that names it), delete.

use askama::Template;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use http::Method;
use latchkey_admin::api::KeyWithSecret;
use latchkey_core::{Key, KeyStatus};

use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::pages::keys::{SecretPage, claim_once, user_names};
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
    /// The rotate form's one-time token: issued only when the form is shown (a key not
    /// revoked, to a caller that may write keys).
    once: Option<String>,
    graces: Vec<(u64, &'static str)>,
    /// Its newest events among the last 10,000 (when the key may read the audit trail).
    events: Option<Vec<latchkey_core::AuditEvent>>,
}

async fn fetch(signed: &Signed, id: &str) -> Result<Key, UiError> {
    signed.get(&format!("/v1/keys/{}", segment(id))).await
}

/// `GET /ui/keys/{id}`.
pub(crate) async fn show(signed: Signed, Path(id): Path<String>) -> Result<Response, UiError> {
    let key = fetch(&signed, &id).await?;
    let user = user_names(&signed, std::iter::once(key.user_id))
        .await
        .remove(&key.user_id)
        .unwrap_or_else(|| key.user_id.to_string());
    let events = if signed.can("latchkey:audit:read") {
        Some(super::audit::recent_about(&signed, key.id).await?)
    } else {
        None
    };
    let revoked = key.status == KeyStatus::Revoked;
    // The rotation form: not for a revoked or an expired key (neither rotates).
    let rotates = !revoked && key.status != KeyStatus::Expired;
    let once = (rotates && signed.can("latchkey:keys:write"))
        .then(|| signed.console.sessions.issue_form(&signed.session_id));
    super::render(&KeyPage {
        nav: signed.nav(),
        events,
        revoked,
        user,
        key,
        once,
        graces: GRACES.to_vec(),
    })
}

/// Back to the key's page after a change.
fn back(id: &str) -> Response {
    Redirect::to(&format!("/ui/keys/{}", segment(id))).into_response()
}

/// `POST /ui/keys/{id}/enabled`: enable (`enabled=true`) or disable (`false`).
pub(crate) async fn enabled(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    super::set_enabled(&posted, &format!("/v1/keys/{}", segment(&id))).await?;
    Ok(back(&id))
}

/// `POST /ui/keys/{id}/rotate`: the new key's secret is shown in the answer, once.
pub(crate) async fn rotate(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    claim_once(&posted)?;
    let grace: u64 = posted
        .fields
        .get("grace_seconds")
        .parse()
        .map_err(|_| UiError::BadForm("grace: a number of seconds".to_owned()))?;
    let rotated: KeyWithSecret = posted
        .signed
        .send(
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
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let key = fetch(&signed, &id).await?;
    super::render(&RevokePage {
        nav: signed.nav(),
        key,
    })
}

/// `POST /ui/keys/{id}/revoke`: the confirmation's form.
pub(crate) async fn revoke(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    let revoke = format!("/v1/keys/{}/revoke", segment(&id));
    let back = format!("/ui/keys/{}", segment(&id));
    super::act(&posted, Method::POST, &revoke, &back).await
}

/// `POST /ui/keys/{id}/delete`: a revoked key's record goes; back to the list.
pub(crate) async fn delete(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    let path = format!("/v1/keys/{}", segment(&id));
    super::act(&posted, Method::DELETE, &path, "/ui/keys").await
}
