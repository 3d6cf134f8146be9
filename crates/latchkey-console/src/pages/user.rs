//! A user's page: what it holds (its groups by name), the editor, revoking all its keys,
//! and deleting it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use http::Method;
use latchkey_admin::api::List;
use latchkey_core::{Group, User};
use uuid::Uuid;

use crate::edits;
use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::view::{Nav, segment};

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    nav: Nav,
    user: User,
    /// Its groups, by name where the caller may read them (else by id).
    groups: Vec<(Uuid, String)>,
    /// The editor's text of its groups and permissions, one a line.
    groups_text: String,
    permissions_text: String,
    /// The groups as shown, `name:id` space-separated: a name saved as shown goes back as
    /// the group it named then, not one that took its name meanwhile, and one taken out of
    /// the editor is removed by its id.
    shown_groups: String,
    /// The direct permissions as shown, space-separated (`edits`).
    shown_permissions: String,
}

fn path(id: &str) -> String {
    format!("/v1/users/{}", segment(id))
}

/// `GET /ui/users/{id}`.
pub(crate) async fn show(signed: Signed, Path(id): Path<String>) -> Result<Response, UiError> {
    let user: User = signed.get(&path(&id)).await?;
    let names = group_names(&signed).await;
    let groups: Vec<(Uuid, String)> = user
        .groups
        .iter()
        .map(|g| (*g, names.get(g).cloned().unwrap_or_else(|| g.to_string())))
        .collect();
    let groups_text = super::lines(groups.iter().map(|(_, name)| name.as_str()));
    let (permissions_text, shown_permissions) = super::permission_texts(&user.permissions);
    let shown_groups = groups
        .iter()
        .map(|(id, name)| format!("{name}:{id}"))
        .collect::<Vec<_>>()
        .join(" ");
    super::render(&UserPage {
        nav: signed.nav(),
        user,
        groups,
        groups_text,
        permissions_text,
        shown_groups,
        shown_permissions,
    })
}

/// The names of the groups on the first page of 1,000 the caller may read: a store holds
/// few groups; one beyond them is shown by its id.
async fn group_names(signed: &Signed) -> HashMap<Uuid, String> {
    if !signed.can("latchkey:groups:read") {
        return HashMap::new();
    }
    match signed.get::<List<Group>>("/v1/groups?limit=1000").await {
        Ok(list) => list.items.into_iter().map(|g| (g.id, g.name)).collect(),
        Err(_) => HashMap::new(),
    }
}

/// `POST /ui/users/{id}`: the name, the groups, the direct permissions and the shared rate
/// limits (blank: none), each sent only as far as the form changed it against what the
/// page showed (`edits`).
pub(crate) async fn update(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    let fields = &posted.fields;
    fields.require(&[
        "name",
        "groups",
        "permissions",
        "rate_limits",
        "shown_name",
        "shown_groups",
        "shown_permissions",
        "shown_rate_limits",
    ])?;
    // (Group names hold no `:`.)
    let shown: Vec<(&str, &str)> = fields
        .get("shown_groups")
        .split_whitespace()
        .filter_map(|pair| pair.split_once(':'))
        .collect();
    let by_name: HashMap<&str, &str> = shown.iter().copied().collect();
    // A group typed by its id reads as the id shown, however it is written (`ABC…` for
    // `abc…`), or it would be added and removed at once.
    let groups: Vec<String> = super::split_list(fields.get("groups"))
        .into_iter()
        .map(|g| match by_name.get(g.as_str()) {
            Some(id) => (*id).to_owned(),
            None => Uuid::parse_str(&g).map_or(g, |id| id.to_string()),
        })
        .collect();
    let shown_groups: Vec<String> = shown.iter().map(|(_, id)| (*id).to_owned()).collect();
    let mut body = edits::name_and_permissions(fields);
    edits::list_into(&mut body, "groups", groups, &shown_groups);
    let limits = fields.get("rate_limits");
    if fields.get("shown_rate_limits") != limits {
        body["rate_limits"] = match limits {
            "" => serde_json::Value::Null,
            limits => crate::usage::rate_limits(limits)?.into(),
        };
    }
    // Back by id: the name may have changed.
    let user: User = posted.signed.send(Method::PATCH, &path(&id), body).await?;
    Ok(Redirect::to(&format!("/ui/users/{}", user.id)).into_response())
}

/// `POST /ui/users/{id}/revoke-keys`: every key of the user is revoked (in the
/// background for many); the user stays.
pub(crate) async fn revoke_keys(
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    let revoke = format!("{}/revoke-keys", path(&id));
    let back = format!("/ui/users/{}", segment(&id));
    super::act(&posted, Method::POST, &revoke, &back).await
}

/// `POST /ui/users/{id}/delete`: the user goes, and all its keys with it; back to the list.
pub(crate) async fn delete(Path(id): Path<String>, posted: Posted) -> Result<Response, UiError> {
    super::act(&posted, Method::DELETE, &path(&id), "/ui/users").await
}
