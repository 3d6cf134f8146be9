//! `POST /v1/keys/import`: keys issued elsewhere, up to 1,000 per request, each imported
//! or refused on its own.

use axum::Json;
use axum::extract::State;
use latchkey_core::limits::MAX_IMPORT_ITEMS;
use latchkey_core::{ImportKey, ImportSecret, StoreError, without_keys};

use crate::api::import::ImportItem;
use crate::api::{ImportKeys, ImportReport, Imported, Rejected};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::JsonBody;
use crate::openapi::problems::NoSuchUser;
use crate::state::AppState;

/// A refused item: why, by the store's error.
fn refused(index: usize, err: &StoreError) -> Rejected {
    let field = match err {
        StoreError::Invalid { field, .. } => Some((*field).to_owned()),
        _ => None,
    };
    Rejected {
        index,
        code: err.code().to_owned(),
        field,
        // It may repeat what the item held: a key's text given where a name or a member
        // goes is not shown again.
        reason: without_keys(&err.to_string()),
    }
}

/// One item as core takes it, or why it cannot be.
fn parse_item(value: serde_json::Value) -> Result<ImportKey, StoreError> {
    // serde reads a struct from an array too, member by member in order (re-check s55 I1).
    if !value.is_object() {
        return Err(StoreError::Invalid {
            field: "item",
            reason: "must be a JSON object".into(),
        });
    }
    let text = value.get("key").and_then(serde_json::Value::as_str);
    let text = text.filter(|text| !text.is_empty()).map(str::to_owned);
    let item: ImportItem = serde_path_to_error::deserialize(value).map_err(|err| {
        let message = err.inner().to_string();
        let field = crate::extract::field_of(err.path(), &message);
        let mut reason = crate::extract::without_values(&message);
        // And wherever else the key's text stands, whatever quotes it.
        if let Some(text) = &text {
            reason = reason.replace(text.as_str(), "…");
        }
        StoreError::Invalid {
            field: ImportItem::field(field.as_deref()),
            reason,
        }
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
        expires_at: item
            .expires_at
            .map(|at| super::in_utc("expires_at", at))
            .transpose()?,
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
                    Err(e) => rejected.push(refused(index, &e)),
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
                    Err(e) => rejected.push(refused(*index, &e)),
                }
            }
            rejected.sort_by_key(|r| r.index);
            Ok(ImportReport { imported, rejected })
        })
        .await?;
    Ok(Json(report))
}
