//! Groups: the list, the create form, the permission editor, and deleting one.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use http::Method;
use latchkey_core::Group;

use crate::edits;
use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::pages::Page;
use crate::view::{Nav, segment};

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    nav: Nav,
    groups: Vec<Group>,
    next: Option<String>,
}

/// `GET /ui/groups?cursor`.
pub(crate) async fn list(signed: Signed, Query(page): Query<Page>) -> Result<Response, UiError> {
    let (groups, next) = super::page(&signed, "groups", &page).await?;
    super::render(&GroupsPage {
        nav: signed.nav(),
        groups,
        next,
    })
}

/// `POST /ui/groups`: a name and its permissions.
pub(crate) async fn create(posted: Posted) -> Result<Response, UiError> {
    let body = serde_json::json!({
        "name": posted.fields.get("name"),
        "permissions": super::split_list(posted.fields.get("permissions")),
    });
    let group: Group = posted.signed.send(Method::POST, "/v1/groups", body).await?;
    Ok(Redirect::to(&format!("/ui/groups/{}", group.id)).into_response())
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    nav: Nav,
    group: Group,
    permissions: String,
    /// The permissions as shown, space-separated (`edits`).
    shown_permissions: String,
}

/// `GET /ui/groups/{id}`: the permission editor.
pub(crate) async fn show(signed: Signed, Path(id): Path<String>) -> Result<Response, UiError> {
    let group: Group = signed.get(&format!("/v1/groups/{}", segment(&id))).await?;
    let (permissions, shown_permissions) = super::permission_texts(&group.permissions);
    super::render(&GroupPage {
        nav: signed.nav(),
        group,
        permissions,
        shown_permissions,
    })
}

/// `POST /ui/groups/{id}/delete`: the group goes (its members lose what it granted);
/// back to the list.
pub(crate) async fn delete(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    let path = format!("/v1/groups/{}", segment(&id));
    super::act(&posted, Method::DELETE, &path, "/ui/groups").await
}

/// `POST /ui/groups/{id}`: the name and the permissions, each sent only as far as the form
/// changed it against what the page showed (`edits`).
pub(crate) async fn update(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    posted
        .fields
        .require(&["name", "permissions", "shown_name", "shown_permissions"])?;
    let body = edits::name_and_permissions(&posted.fields);
    let group: Group = posted
        .signed
        .send(Method::PATCH, &format!("/v1/groups/{}", segment(&id)), body)
        .await?;
    Ok(Redirect::to(&format!("/ui/groups/{}", group.id)).into_response())
}
