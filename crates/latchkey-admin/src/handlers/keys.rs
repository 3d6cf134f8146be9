//! `/v1/keys`: create (the only answer that holds the secret), list, show, update,
//! revoke, rotate, delete.

use axum::Json;
use axum::extract::{OriginalUri, State};
use http::StatusCode;
use latchkey_core::{
    CreatedKey, CreditsPatch, Entity, Env, Key, KeyPatch, KeyQuery, KeySort, KeyStatus, NewKey,
    StoreError, limits,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{CreateKey, CreditsChange, KeyWithSecret, List, RotateKey, UpdateKey};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::{JsonBody, Params, RecordRef, optional, page_limit};
use crate::handlers::created::{Created, created_with_secret};
use crate::handlers::in_utc;
use crate::openapi::problems::{
    BodyTimeout, InvalidField, InvalidParameter, LastAdminKey, NoSuchKey, NoSuchUser, StrongerKey,
};
use crate::openapi::rules;
use crate::state::AppState;

/// The parameters of `GET /v1/keys`. An empty value counts as absent.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyListParams {
    /// Only this user's keys (id or name).
    user_id: Option<String>,
    /// Only keys in this status: `active`, `disabled`, `revoked` or `expired`.
    #[param(value_type = Option<String>, pattern = r"^(active|disabled|revoked|expired)?$")]
    status: Option<String>,
    /// Only keys of this environment: `live` or `test` (a bounded scan per page, as `q`).
    #[param(value_type = Option<String>, pattern = r"^(live|test)?$")]
    env: Option<String>,
    /// Case-insensitive search in name, description and display prefix: at most 256 bytes.
    /// A whole key's text searches for its display prefix.
    #[param(max_length = 256)] // limits::MAX_SEARCH_BYTES
    q: Option<String>,
    /// `created_at` (default), `name` or `last_used_at`; a leading `-` for descending.
    #[param(pattern = r"^(-?(created_at|name|last_used_at))?$")]
    sort: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(value_type = Option<crate::openapi::rules::PageSize>)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (with the same filters and sort).
    #[param(value_type = Option<rules::Cursor>)]
    cursor: Option<String>,
}

/// A 201 holding a key's secret (see [`created_with_secret`]).
type SecretAnswer = Created<KeyWithSecret, 2>;

fn with_secret(uri: &http::Uri, created: CreatedKey) -> SecretAnswer {
    let id = created.key.id;
    let answer = KeyWithSecret {
        secret: created.secret.expose().to_owned(),
        key: created.key,
    };
    created_with_secret(uri, "keys", id, answer)
}

/// Create a key for a user. The answer holds the full key, shown this once.
///
/// The caller must hold everything the key could do: the user's permissions narrowed by
/// the key's scopes.
#[utoipa::path(post, path = "/v1/keys", operation_id = "createKey", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `secret` is the full key, never shown again", body = KeyWithSecret,
            headers(("Cache-Control" = String, description = "`no-store`: the secret is in no cache"),
                ("Location" = String, description = "The new key's path: `/v1/keys/{id}`, under the prefix an app nests the router at"))),
        InvalidField, NoSuchUser, BodyTimeout,
        (status = 403, description = "Lacks latchkey:keys:write, or the key would be stronger than the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    caller: Caller<perm::KeysWrite>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<SecretAnswer, AppError> {
    let created = state
        .run(move |store| {
            let user_id = store
                .user_id_as(&caller.actor, &body.user_id)
                .map_err(|e| AppError::from(e).with_field("user_id"))?;
            let new = NewKey {
                name: body.name,
                user_id,
                description: body.description,
                scopes: body.scopes,
                // Times are answered in UTC whatever offset they were given with.
                expires_at: body
                    .expires_at
                    .map(|at| in_utc("expires_at", at))
                    .transpose()?,
                env: body.env.unwrap_or_default(),
                meta: body.meta,
                rate_limits: body.rate_limits.unwrap_or_default(),
                credits: body.credits,
                allowed_ips: body.allowed_ips.unwrap_or_default(),
            };
            store.create_key(&caller.actor, new).map_err(|e| match e {
                // The user exists but lies outside the caller's tenant: as if absent.
                StoreError::NotFound {
                    entity: Entity::User,
                    ..
                } => AppError::from(e).with_field("user_id"),
                e => AppError::from(e),
            })
        })
        .await?;
    Ok(with_secret(&uri, created))
}

/// List keys: filter, search, sort, one page at a time.
#[utoipa::path(get, path = "/v1/keys", operation_id = "listKeys", tag = "keys",
    params(KeyListParams),
    responses(
        (status = 200, description = "One page of keys", body = List<Key>),
        InvalidParameter, NoSuchUser,
    ),
    security(("bearer" = ["latchkey:keys:read"])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller<perm::KeysRead>,
    Params(params): Params<KeyListParams>,
) -> Result<Json<List<Key>>, AppError> {
    let status = optional("status", params.status, |s| {
        s.parse::<KeyStatus>().map_err(|_| {
            format!("unknown status {s:?}: expected active, disabled, revoked or expired")
        })
    })?;
    let env = optional("env", params.env, |s| {
        s.parse::<Env>()
            .map_err(|_| format!("unknown env {s:?}: expected live or test"))
    })?;
    let sort = optional("sort", params.sort, |s| {
        s.parse::<KeySort>().map_err(|_| {
            format!("unknown sort {s:?}: expected created_at, name or last_used_at, optionally with a leading -")
        })
    })?;
    let limit = page_limit(params.limit)?;
    let page = state
        .run(move |store| {
            let user_id = match params.user_id.filter(|u| !u.is_empty()) {
                Some(u) => Some(
                    store
                        .user_id_as(&caller.actor, &u)
                        .map_err(|e| AppError::from(e).with_field("user_id"))?,
                ),
                None => None,
            };
            let query = KeyQuery {
                user_id,
                status,
                env,
                search: params.q.filter(|q| !q.is_empty()),
                sort: sort.unwrap_or_default(),
                limit: limit.unwrap_or(KeyQuery::default().limit),
                cursor: params.cursor.filter(|c| !c.is_empty()),
            };
            store
                .list_keys_as(&caller.actor, &query)
                .map_err(|e| match e {
                    StoreError::NotFound { .. } => AppError::from(e).with_field("user_id"),
                    e => AppError::from(e),
                })
        })
        .await?;
    Ok(Json(List::from(page)))
}

/// Show a key, by id or display prefix.
#[utoipa::path(get, path = "/v1/keys/{id}", operation_id = "getKey", tag = "keys",
    params(("id" = String, Path, description = "Key id or display prefix")),
    responses(
        (status = 200, description = "The key (never its secret)", body = Key),
        NoSuchKey,
    ),
    security(("bearer" = ["latchkey:keys:read"])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller<perm::KeysRead>,
    RecordRef(id): RecordRef,
) -> Result<Json<Key>, AppError> {
    let key = state
        .run(move |store| Ok(store.key_as(&caller.actor, store.key_id_as(&caller.actor, &id)?)?))
        .await?;
    Ok(Json(key))
}

/// Rename, describe, disable or re-enable a key.
#[utoipa::path(patch, path = "/v1/keys/{id}", operation_id = "updateKey", tag = "keys",
    params(("id" = String, Path, description = "Key id or display prefix")),
    request_body = UpdateKey,
    responses(
        (status = 200, description = "The changed key", body = Key),
        InvalidField, StrongerKey, NoSuchKey,
        (status = 409, description = "Enabling or disabling a revoked key (`key_revoked`), giving credits to (setting them on, or refilling) a revoked or expired key (`key_revoked`, `key_expired`) or to a key rotated already, whose credits went to its successor (`key_rotated`), or disabling the last active key that holds `*`, giving it credits or a rate limit slower than once a minute (`last_admin_key`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller<perm::KeysWrite>,
    RecordRef(id): RecordRef,
    JsonBody(body): JsonBody<UpdateKey>,
) -> Result<Json<Key>, AppError> {
    let key = state
        .run(move |store| {
            let id = store.key_id_as(&caller.actor, &id)?;
            let patch = KeyPatch {
                name: body.name,
                description: body.description,
                enabled: body.enabled,
                meta: body.meta,
                rate_limits: body.rate_limits.map(Option::unwrap_or_default),
                credits: body.credits.map(credits_patch).transpose()?,
                allowed_ips: body.allowed_ips.map(Option::unwrap_or_default),
            };
            Ok(store.update_key(&caller.actor, id, patch)?)
        })
        .await?;
    Ok(Json(key))
}

/// Revoke a key, irreversibly; the very next request with it fails. Idempotent.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", operation_id = "revokeKey", tag = "keys",
    params(("id" = String, Path, description = "Key id or display prefix")),
    responses(
        (status = 200, description = "The revoked key", body = Key),
        StrongerKey, NoSuchKey, LastAdminKey,
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller<perm::KeysWrite>,
    RecordRef(id): RecordRef,
) -> Result<Json<Key>, AppError> {
    let key = state
        .run(
            move |store| Ok(store.revoke_key(&caller.actor, store.key_id_as(&caller.actor, &id)?)?),
        )
        .await?;
    Ok(Json(key))
}

/// Rotate a key: a new key with the same user, scopes and name; the old one keeps
/// working for `grace_seconds` (0: it expires at once). The answer holds the new key's
/// full text, shown this once. A key rotates once: the next rotation is its successor's.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotateKey", tag = "keys",
    params(("id" = String, Path, description = "Key id or display prefix")),
    request_body = RotateKey,
    responses(
        (status = 201, description = "The new key; `secret` is its full text, never shown again", body = KeyWithSecret,
            headers(("Cache-Control" = String, description = "`no-store`: the secret is in no cache"),
                ("Location" = String, description = "The new key's path: `/v1/keys/{id}`, under the prefix an app nests the router at"))),
        InvalidField, StrongerKey, NoSuchKey, BodyTimeout,
        (status = 409, description = "The key is revoked (`key_revoked`), has expired (`key_expired`: create a new key instead), or was rotated already (`key_rotated`: rotate the key it was rotated to, or create a new key if that one is revoked)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    caller: Caller<perm::KeysWrite>,
    RecordRef(id): RecordRef,
    JsonBody(body): JsonBody<RotateKey>,
) -> Result<SecretAnswer, AppError> {
    if body.grace_seconds > limits::MAX_GRACE_SECONDS {
        return Err(AppError::invalid(
            "grace_seconds",
            format!(
                "0 to {} seconds (a year of 365 days)",
                limits::MAX_GRACE_SECONDS
            ),
        ));
    }
    // In range by the check above, so the conversion cannot fail.
    let grace = time::Duration::seconds(i64::try_from(body.grace_seconds).unwrap_or(i64::MAX));
    let created = state
        .run(move |store| {
            Ok(store.rotate_key(&caller.actor, store.key_id_as(&caller.actor, &id)?, grace)?)
        })
        .await?;
    Ok(with_secret(&uri, created))
}

/// Delete a revoked key; a key that is not revoked is a 409 `key_not_revoked`.
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "deleteKey", tag = "keys",
    params(("id" = String, Path, description = "Key id or display prefix")),
    responses(
        (status = 204, description = "Deleted"),
        StrongerKey, NoSuchKey,
        (status = 409, description = "Not revoked (`key_not_revoked`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller<perm::KeysWrite>,
    RecordRef(id): RecordRef,
) -> Result<StatusCode, AppError> {
    state
        .run(
            move |store| Ok(store.delete_key(&caller.actor, store.key_id_as(&caller.actor, &id)?)?),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A PATCH's `credits` as core's change: `null` clears, `remaining` sets, `refill` alone
/// replaces the refill and keeps the balance, `add` adds.
fn credits_patch(change: Option<CreditsChange>) -> Result<CreditsPatch, AppError> {
    match change {
        None => Ok(CreditsPatch::Clear),
        Some(CreditsChange {
            remaining: Some(remaining),
            add: None,
            refill,
        }) => Ok(CreditsPatch::Set { remaining, refill }),
        Some(CreditsChange {
            remaining: None,
            add: Some(add),
            refill: None,
        }) => Ok(CreditsPatch::Add(add)),
        Some(CreditsChange {
            remaining: None,
            add: None,
            refill: Some(refill),
        }) => Ok(CreditsPatch::Refill(refill)),
        Some(CreditsChange {
            remaining: None,
            add: None,
            refill: None,
        }) => Err(AppError::from(StoreError::Invalid {
            field: "credits",
            reason: "give `remaining`, `refill` or both, or `add`".into(),
        })),
        Some(CreditsChange {
            remaining: None, ..
        }) => Err(AppError::from(StoreError::Invalid {
            field: "credits",
            reason: "`refill` goes with `remaining`, not with `add`".into(),
        })),
        Some(_) => Err(AppError::from(StoreError::Invalid {
            field: "credits",
            reason: "give `remaining` or `add`, not both".into(),
        })),
    }
}
