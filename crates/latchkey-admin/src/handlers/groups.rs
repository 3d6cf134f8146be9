//! `/v1/groups`: roles, a name and a set of permissions.

use axum::Json;
use axum::extract::{OriginalUri, State};
use http::StatusCode;
use latchkey_core::{Group, GroupPatch, NewGroup, PermissionEdit};

use crate::api::{CreateGroup, List, UpdateGroup};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::{JsonBody, PageParams, Params, RecordRef};
use crate::handlers::created::{Created, created};
use crate::openapi::problems::{
    GroupWrite, InvalidField, InvalidParameter, LastAdminKey, NameTaken, NameTakenOrLastAdmin,
    NoSuchGroup,
};
use crate::state::AppState;

/// Create a group.
///
/// The caller must hold every permission the group grants and be bound to no tenant.
#[utoipa::path(post, path = "/v1/groups", operation_id = "createGroup", tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created", body = Group,
            headers(("Location" = String, description = "The new group's path: `/v1/groups/{id}`, under the prefix an app nests the router at"))),
        InvalidField, NameTaken,
        (status = 403, description = "Lacks latchkey:groups:write or a permission the group grants (`insufficient_permission`), or is bound to a tenant (`tenant_forbidden`): groups are global", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:groups:write"])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    caller: Caller<perm::GroupsWrite>,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<Created<Group, 1>, AppError> {
    let group = state
        .run(move |store| {
            Ok(store.create_group(
                &caller.actor,
                NewGroup {
                    name: body.name,
                    permissions: body.permissions,
                },
            )?)
        })
        .await?;
    Ok(created(&uri, "groups", group.id, group))
}

/// List groups, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/groups", operation_id = "listGroups", tag = "groups",
    params(PageParams),
    responses(
        (status = 200, description = "One page of groups", body = List<Group>),
        InvalidParameter,
    ),
    security(("bearer" = ["latchkey:groups:read"])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _caller: Caller<perm::GroupsRead>,
    Params(params): Params<PageParams>,
) -> Result<Json<List<Group>>, AppError> {
    let (limit, cursor) = params.parse()?;
    let page = state
        .run(move |store| Ok(store.groups_page(limit, cursor.as_deref())?))
        .await?;
    Ok(Json(List::from(page)))
}

/// Show a group, by id or name.
#[utoipa::path(get, path = "/v1/groups/{id}", operation_id = "getGroup", tag = "groups",
    params(("id" = String, Path, description = "Group id or name")),
    responses(
        (status = 200, description = "The group", body = Group),
        NoSuchGroup,
    ),
    security(("bearer" = ["latchkey:groups:read"])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _caller: Caller<perm::GroupsRead>,
    RecordRef(id): RecordRef,
) -> Result<Json<Group>, AppError> {
    Ok(Json(state.run(move |store| Ok(store.group(&id)?)).await?))
}

/// Change a group's name or permissions; the change reaches every member's keys at once.
///
/// The caller must hold every permission the group grants, before and after, and everything
/// each member holds; and be bound to no tenant.
#[utoipa::path(patch, path = "/v1/groups/{id}", operation_id = "updateGroup", tag = "groups",
    params(("id" = String, Path, description = "Group id or name")),
    request_body = UpdateGroup,
    responses(
        (status = 200, description = "The changed group", body = Group),
        InvalidField, GroupWrite, NoSuchGroup, NameTakenOrLastAdmin,
    ),
    security(("bearer" = ["latchkey:groups:write"])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller<perm::GroupsWrite>,
    RecordRef(id): RecordRef,
    JsonBody(body): JsonBody<UpdateGroup>,
) -> Result<Json<Group>, AppError> {
    let group = state
        .run(move |store| {
            let id = store.group_id(&id)?;
            let patch = GroupPatch {
                name: body.name,
                permissions: PermissionEdit {
                    replace: body.permissions,
                    add: body.add_permissions,
                    remove: body.remove_permissions,
                },
            };
            Ok(store.update_group(&caller.actor, id, patch)?)
        })
        .await?;
    Ok(Json(group))
}

/// Delete a group; its members lose it.
#[utoipa::path(delete, path = "/v1/groups/{id}", operation_id = "deleteGroup", tag = "groups",
    params(("id" = String, Path, description = "Group id or name")),
    responses(
        (status = 204, description = "Deleted"),
        GroupWrite, NoSuchGroup, LastAdminKey,
    ),
    security(("bearer" = ["latchkey:groups:write"])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller<perm::GroupsWrite>,
    RecordRef(id): RecordRef,
) -> Result<StatusCode, AppError> {
    state
        .run(move |store| {
            let id = store.group_id(&id)?;
            Ok(store.delete_group(&caller.actor, id)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
