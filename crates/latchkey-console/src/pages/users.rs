//! Users: the list (with their rate limits), the create form, enable and disable (a
//! user's own page is `user.rs`).

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use http::Method;
use latchkey_core::User;

use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::view::{Nav, segment};

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<User>,
    next: Option<String>,
}

/// `GET /ui/users?cursor`.
pub(crate) async fn list(
    signed: Signed,
    Query(page): Query<super::Page>,
) -> Result<Response, UiError> {
    let (users, next) = super::page(&signed, "users", &page).await?;
    super::render(&UsersPage {
        nav: signed.nav(),
        users,
        next,
    })
}

/// `POST /ui/users`: name, groups and permissions (lists typed as text).
pub(crate) async fn create(posted: Posted) -> Result<Response, UiError> {
    let fields = &posted.fields;
    let mut body = serde_json::json!({
        "name": fields.get("name"),
        "groups": super::split_list(fields.get("groups")),
        "permissions": super::split_list(fields.get("permissions")),
    });
    for label in ["tenant_id", "organization_id"] {
        if let Some(value) = fields.optional(label) {
            body[label] = value.into();
        }
    }
    if let Some(limits) = fields.optional("rate_limits") {
        body["rate_limits"] = crate::usage::rate_limits(&limits)?.into();
    }
    let _: User = posted.signed.send(Method::POST, "/v1/users", body).await?;
    Ok(Redirect::to("/ui/users").into_response())
}

/// `POST /ui/users/{id}/enabled`: enable (`enabled=true`) or disable (`false`); back to
/// the list, or to the user's page from there (`back=user`).
pub(crate) async fn enabled(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    super::set_enabled(&posted, &format!("/v1/users/{}", segment(&id))).await?;
    let back = match posted.fields.get("back") {
        "user" => format!("/ui/users/{}", segment(&id)),
        _ => "/ui/users".to_owned(),
    };
    Ok(Redirect::to(&back).into_response())
}
