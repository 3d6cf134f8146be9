//! `/v1/users`: identities that own keys, with groups and direct permissions.

use axum::Json;
use axum::extract::{OriginalUri, State};
use http::StatusCode;
use latchkey_core::limits::MAX_USERS_BY_ID;
use latchkey_core::{NewUser, PermissionEdit, Store, User, UserPatch, limits};
use uuid::Uuid;

use crate::api::{CreateUser, KeysRevoked, List, UpdateUser};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::{JsonBody, PageParams, Params, RecordRef, optional};
use crate::handlers::created::{Created, created};
use crate::openapi::problems::{
    Escalation, InvalidField, InvalidParameter, LastAdminKey, NameTaken, NameTakenOrLastAdmin,
    NoSuchUser, UserWrite,
};
use crate::state::AppState;

/// Resolves group references (ids or names) from the body member `field`; an unknown one
/// is a 404 naming the field, and more than a user may hold a 400, before any is looked up.
fn group_ids(store: &Store, field: &'static str, refs: &[String]) -> Result<Vec<Uuid>, AppError> {
    limits::check_groups(field, refs.len())?;
    refs.iter()
        .map(|r| {
            store
                .group_id(r)
                .map_err(|e| AppError::from(e).with_field(field))
        })
        .collect()
}

/// Create a user.
///
/// The caller must hold everything the user would hold: its direct permissions and its
/// groups'.
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = User,
            headers(("Location" = String, description = "The new user's path: `/v1/users/{id}`, under the prefix an app nests the router at"))),
        InvalidField, NameTaken,
        UserWrite,
        (status = 404, description = "A group named in `groups` does not exist", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:users:write"])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    caller: Caller<perm::UsersWrite>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Created<User, 1>, AppError> {
    let user = state
        .run(move |store| {
            let new = NewUser {
                name: body.name,
                enabled: body.enabled.unwrap_or(true),
                groups: group_ids(store, "groups", &body.groups)?,
                permissions: body.permissions,
                tenant_id: body.tenant_id,
                organization_id: body.organization_id,
                rate_limits: body.rate_limits.unwrap_or_default(),
            };
            Ok(store.create_user(&caller.actor, new)?)
        })
        .await?;
    Ok(created(&uri, "users", user.id, user))
}

/// The parameters of `GET /v1/users`. An empty value counts as absent.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserListParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(value_type = Option<crate::openapi::rules::PageSize>)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<crate::openapi::rules::Cursor>)]
    cursor: Option<String>,
    /// Only these users, in one answer without a cursor: up to 100 ids, comma-separated;
    /// an id that is no user, or one the caller does not see, is left out, and one given
    /// twice is answered once. Not with
    /// `limit` or `cursor`.
    ids: Option<String>,
}

/// `ids`: up to [`MAX_USERS_BY_ID`] user ids, comma-separated.
fn user_ids(value: Option<String>) -> Result<Option<Vec<Uuid>>, AppError> {
    optional("ids", value, |s| {
        let ids: Vec<Uuid> = s
            .split(',')
            .map(|id| Uuid::parse_str(id.trim()).map_err(|_| format!("{id:?} is not a user id")))
            .collect::<Result<_, _>>()?;
        if ids.len() > MAX_USERS_BY_ID {
            return Err(format!("at most {MAX_USERS_BY_ID} ids"));
        }
        // Each user once, where first asked for.
        let mut seen = std::collections::HashSet::new();
        Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
    })
}

/// List users, oldest first, one page at a time; or the users of some ids.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "users",
    params(UserListParams),
    responses(
        (status = 200, description = "One page of users (with `ids`: those users, no cursor)", body = List<User>),
        InvalidParameter,
    ),
    security(("bearer" = ["latchkey:users:read"])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller<perm::UsersRead>,
    Params(params): Params<UserListParams>,
) -> Result<Json<List<User>>, AppError> {
    if let Some(ids) = user_ids(params.ids)? {
        if [&params.limit, &params.cursor]
            .iter()
            .any(|p| p.as_deref().is_some_and(|v| !v.is_empty()))
        {
            return Err(AppError::invalid(
                "ids",
                "ids lists users in one answer: not with limit or cursor",
            ));
        }
        let items = state
            .run(move |store| Ok(store.users_by_id_as(&caller.actor, &ids)?))
            .await?;
        return Ok(Json(List {
            items,
            next_cursor: None,
        }));
    }
    let (limit, cursor) = PageParams::new(params.limit, params.cursor).parse()?;
    let page = state
        .run(move |store| Ok(store.users_page_as(&caller.actor, limit, cursor.as_deref())?))
        .await?;
    Ok(Json(List::from(page)))
}

/// Show a user, by id or name.
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", tag = "users",
    params(("id" = String, Path, description = "User id or name")),
    responses(
        (status = 200, description = "The user", body = User),
        NoSuchUser,
    ),
    security(("bearer" = ["latchkey:users:read"])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller<perm::UsersRead>,
    RecordRef(id): RecordRef,
) -> Result<Json<User>, AppError> {
    Ok(Json(
        state
            .run(move |store| Ok(store.user_as(&caller.actor, &id)?))
            .await?,
    ))
}

/// Change a user; the change reaches all its keys at the next request (its rate limits
/// too: they are shared by all its keys).
///
/// The caller must hold everything the user holds, before and after the change.
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", tag = "users",
    params(("id" = String, Path, description = "User id or name")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The changed user", body = User),
        InvalidField, UserWrite, NameTakenOrLastAdmin,
        (status = 404, description = "No such user, or no such group in the body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:users:write"])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller<perm::UsersWrite>,
    RecordRef(id): RecordRef,
    JsonBody(body): JsonBody<UpdateUser>,
) -> Result<Json<User>, AppError> {
    let user = state
        .run(move |store| {
            let id = store.user_id_as(&caller.actor, &id)?;
            let patch = UserPatch {
                name: body.name,
                enabled: body.enabled,
                groups: body
                    .groups
                    .map(|g| group_ids(store, "groups", &g))
                    .transpose()?,
                add_groups: group_ids(store, "add_groups", &body.add_groups)?,
                remove_groups: group_ids(store, "remove_groups", &body.remove_groups)?,
                permissions: PermissionEdit {
                    replace: body.permissions,
                    add: body.add_permissions,
                    remove: body.remove_permissions,
                },
                tenant_id: body.tenant_id,
                organization_id: body.organization_id,
                rate_limits: body.rate_limits.map(Option::unwrap_or_default),
            };
            Ok(store.update_user(&caller.actor, id, patch)?)
        })
        .await?;
    Ok(Json(user))
}

/// Delete a user; none of its keys authenticates from then on. Its keys are revoked in the
/// same transaction, or, for a user with many keys, in the background.
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", tag = "users",
    params(("id" = String, Path, description = "User id or name")),
    responses(
        (status = 204, description = "Deleted, and its keys revoked"),
        Escalation, NoSuchUser, LastAdminKey,
    ),
    security(("bearer" = ["latchkey:users:write"])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller<perm::UsersWrite>,
    RecordRef(id): RecordRef,
) -> Result<StatusCode, AppError> {
    state
        .run(move |store| {
            let id = store.user_id_as(&caller.actor, &id)?;
            Ok(store.delete_user(&caller.actor, id)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every key of a user, irreversibly. None of them authenticates once this returns;
/// a user with many keys has the records revoked in the background (`in_background`).
///
/// The caller must hold everything the user holds.
#[utoipa::path(post, path = "/v1/users/{id}/revoke-keys", operation_id = "revokeUserKeys", tag = "users",
    params(("id" = String, Path, description = "User id or name")),
    responses(
        (status = 200, description = "Every key of the user is revoked", body = KeysRevoked),
        NoSuchUser, LastAdminKey,
        (status = 403, description = "Lacks latchkey:keys:write, or the user is stronger than the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn revoke_keys(
    State(state): State<AppState>,
    caller: Caller<perm::KeysWrite>,
    RecordRef(id): RecordRef,
) -> Result<Json<KeysRevoked>, AppError> {
    let (user_id, done) = state
        .run(move |store| {
            let id = store.user_id_as(&caller.actor, &id)?;
            Ok((id, store.revoke_user_keys(&caller.actor, id)?))
        })
        .await?;
    Ok(Json(KeysRevoked {
        user_id,
        revoked_before: done.revoked_before,
        revoked_now: done.revoked_now,
        in_background: done.in_background,
    }))
}
