//! `POST /v1/keys/import`: its body and its answer.

use latchkey_core::PermissionSet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/keys/import`. Its `Debug` counts the items: they hold keys' full text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeys {
    /// The user the keys will belong to, by id or name.
    pub user_id: String,
    /// Up to 1,000 keys, each `{"key": "<full key>"}` or `{"sha256": "<hex>", "prefix":
    /// "<their display prefix>"}`, with optional `name`, `expires_at` (RFC 3339), `scopes`
    /// and `meta` (a JSON object, at most 4 KiB).
    #[schema(value_type = Vec<ImportItem>, max_items = 1000)] // limits::MAX_IMPORT_ITEMS
    pub items: Vec<serde_json::Value>,
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
    /// The key's full text (16 to 512 visible ASCII characters, not a latchkey key nor one
    /// mistyped).
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// The hex SHA-256 (64 digits) of the key's text, as other systems store it. Only a
    /// text of 16 to 512 visible ASCII characters is ever looked up: another's digest
    /// imports but never verifies.
    #[serde(default)]
    pub(crate) sha256: Option<String>,
    /// The display prefix the key had (required with `sha256`).
    #[serde(default)]
    pub(crate) prefix: Option<String>,
    /// A name (default `imported`).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// When the key stops authenticating (RFC 3339, in the future).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) expires_at: Option<OffsetDateTime>,
    /// Narrows the user's permissions, as for any key.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub(crate) scopes: Option<PermissionSet>,
    /// A JSON object (at most 4 KiB) handed to the app in `principal.meta`, as for any key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) meta: Option<serde_json::Value>,
}

impl ImportItem {
    /// The member `name` names, as a refusal names it: `item` for none of them (an item
    /// that is no object, or a member unknown).
    pub(crate) fn field(name: Option<&str>) -> &'static str {
        const FIELDS: [&str; 7] = [
            "key",
            "sha256",
            "prefix",
            "name",
            "expires_at",
            "scopes",
            "meta",
        ];
        name.and_then(|name| FIELDS.into_iter().find(|field| *field == name))
            .unwrap_or("item")
    }
}

/// The answer of `POST /v1/keys/import`: what was imported and what was refused, by position in `items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// The keys imported.
    pub imported: Vec<Imported>,
    /// The items refused, each with why.
    pub rejected: Vec<Rejected>,
}

/// An imported key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Imported {
    /// Its position in `items`, from 0.
    pub index: usize,
    /// Its record id.
    pub id: Uuid,
    /// Its display prefix.
    pub prefix: String,
}

/// A refused item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rejected {
    /// Its position in `items`, from 0.
    pub index: usize,
    /// A stable code: `invalid_field`, `name_taken` (already imported),
    /// `insufficient_permission`.
    pub code: String,
    /// The item's field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why, for people.
    pub reason: String,
}
