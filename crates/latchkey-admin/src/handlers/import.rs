//! `POST /v1/keys/import`: keys issued elsewhere, up to 1,000 per request, each imported
//! or refused on its own.

use axum::Json;
use axum::extract::State;
use latchkey_core::limits::MAX_IMPORT_ITEMS;
use latchkey_core::{ImportKey, ImportSecret, PermissionSet, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::JsonBody;
use crate::openapi::problems::NoSuchUser;
use crate::state::AppState;

/// `POST /v1/keys/import`. Its `Debug` counts the items: they hold keys' full text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportKeys {
    /// The user the keys will belong to, by id or name.
    user_id: String,
    /// Up to 1,000 keys, each `{"key": "<full key>"}` or `{"sha256": "<hex>", "prefix":
    /// "<their display prefix>"}`, with optional `name`, `expires_at` (RFC 3339), `scopes`
    /// and `meta` (a JSON object, at most 4 KiB).
    #[schema(value_type = Vec<ImportItem>, max_items = 1000)] // limits::MAX_IMPORT_ITEMS
    items: Vec<serde_json::Value>,
}

impl std::fmt::Debug for ImportKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportKeys")
            .field("user_id", &self.user_id)
            .field("items", &format_args!("<{} items>", self.items.len()))
            .finish()
    }
}

/// One key to import.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportItem {
    /// The key's full text (16 to 512 visible ASCII characters, not a latchkey key).
    #[serde(default)]
    key: Option<String>,
    /// The hex SHA-256 (64 digits) of the key's text, as other systems store it. Only a
    /// text of 16 to 512 visible ASCII characters is ever looked up: another's digest
    /// imports but never verifies.
    #[serde(default)]
    sha256: Option<String>,
    /// The display prefix the key had (required with `sha256`).
    #[serde(default)]
    prefix: Option<String>,
    /// A name (default `imported`).
    #[serde(default)]
    name: Option<String>,
    /// When the key stops authenticating (RFC 3339, in the future).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<OffsetDateTime>,
    /// Narrows the user's permissions, as for any key.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    scopes: Option<PermissionSet>,
    /// A JSON object (at most 4 KiB) handed to the app in `principal.meta`, as for any key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    meta: Option<serde_json::Value>,
}

/// The answer: what was imported and what was refused, by position in `items`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ImportReport {
    /// The keys imported.
    imported: Vec<Imported>,
    /// The items refused, each with why.
    rejected: Vec<Rejected>,
}

/// An imported key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Imported {
    /// Its position in `items`, from 0.
    index: usize,
    /// Its record id.
    id: Uuid,
    /// Its display prefix.
    prefix: String,
}

/// A refused item.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Rejected {
    /// Its position in `items`, from 0.
    index: usize,
    /// A stable code: `invalid_field`, `name_taken` (already imported),
    /// `insufficient_permission`.
    code: String,
    /// The item's field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// Why, for people.
    reason: String,
}

impl Rejected {
    fn of(index: usize, err: &StoreError) -> Rejected {
        let field = match err {
            StoreError::Invalid { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        Rejected {
            index,
            code: err.code().to_owned(),
            field,
            reason: err.to_string(),
        }
    }
}

/// One item as core takes it, or why it cannot be.
fn parse_item(value: serde_json::Value) -> Result<ImportKey, StoreError> {
    let item: ImportItem = serde_json::from_value(value).map_err(|e| StoreError::Invalid {
        field: "item",
        reason: e.to_string(),
    })?;
    let secret = match (item.key, item.sha256) {
        (Some(key), None) => ImportSecret::full(&key)?,
        (None, Some(hex)) => ImportSecret::sha256(&hex)?,
        _ => {
            return Err(StoreError::Invalid {
                field: "key",
                reason: "give exactly one of `key` and `sha256`".into(),
            });
        }
    };
    Ok(ImportKey {
        secret,
        prefix: item.prefix,
        name: item.name,
        expires_at: item.expires_at.map(|at| at.to_offset(time::UtcOffset::UTC)),
        scopes: item.scopes,
        meta: item.meta,
    })
}

/// Import keys issued elsewhere for a user: each is imported or refused on its own.
///
/// Imported keys authenticate under their old text (a SHA-256 one is re-hashed with
/// latchkey's keyed BLAKE3 at its first verification), and are listed, revoked and audited
/// like any key. The caller must cover what each key can do.
#[utoipa::path(post, path = "/v1/keys/import", operation_id = "importKeys", tag = "operations",
    request_body = ImportKeys,
    responses(
        (status = 200, description = "Each item imported or refused", body = ImportReport),
        NoSuchUser,
        (status = 400, description = "No user_id, or more than 1,000 items", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks latchkey:keys:write, or cannot act for the user", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full: nothing was imported", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:keys:write"])))]
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller<perm::KeysWrite>,
    JsonBody(body): JsonBody<ImportKeys>,
) -> Result<Json<ImportReport>, AppError> {
    AppError::check_len("items", &body.items, MAX_IMPORT_ITEMS, "items per request")?;
    let report = state
        .run(move |store| {
            let user_id = store
                .user_id_as(&caller.actor, &body.user_id)
                .map_err(|e| AppError::from(e).with_field("user_id"))?;
            let mut rejected = Vec::new();
            let mut valid = Vec::with_capacity(body.items.len());
            for (index, value) in body.items.into_iter().enumerate() {
                match parse_item(value) {
                    Ok(item) => valid.push((index, item)),
                    Err(e) => rejected.push(Rejected::of(index, &e)),
                }
            }
            let items: Vec<ImportKey> = valid.iter().map(|(_, item)| item.clone()).collect();
            let outcome = store.import_keys(&caller.actor, user_id, &items)?;
            let mut imported = Vec::new();
            for ((index, _), result) in valid.iter().zip(outcome) {
                match result {
                    Ok(key) => imported.push(Imported {
                        index: *index,
                        id: key.id,
                        prefix: key.prefix,
                    }),
                    Err(e) => rejected.push(Rejected::of(*index, &e)),
                }
            }
            rejected.sort_by_key(|r| r.index);
            Ok(ImportReport { imported, rejected })
        })
        .await?;
    Ok(Json(report))
}
