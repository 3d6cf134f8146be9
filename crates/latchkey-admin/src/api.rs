//! The JSON bodies of the management API, beyond core's models (`Group`, `User`, `Key`,
//! `AuditEvent`, `PrincipalInfo`), which the API answers as they serialize.
//!
//! Every type is `Serialize + Deserialize`, so that a client (the `latchkey` CLI) sends and
//! reads exactly what the server parses and writes. Request bodies deny unknown fields.
//! In a `Update*` body, an absent member leaves the field as it is; for the nullable
//! fields (`description`, `tenant_id`, `organization_id`) `null` clears it.

use latchkey_core::key::Redacted;

use crate::openapi::rules;
use latchkey_core::{Env, Key, Permission, PermissionSet, PrincipalInfo};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    #[schema(value_type = rules::PrincipalName)]
    pub name: String,
    /// What members may do (at most 256).
    #[serde(default, deserialize_with = "permission_set")]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub permissions: PermissionSet,
}

/// `PATCH /v1/groups/{id}`. Replacement first, then additions, then removals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::PrincipalName>)]
    pub name: Option<String>,
    /// Replaces the permissions.
    #[serde(
        default,
        deserialize_with = "optional_permission_set",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub permissions: Option<PermissionSet>,
    /// Added to the permissions.
    #[serde(
        default,
        deserialize_with = "permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub add_permissions: PermissionSet,
    /// Removed from the permissions (exact text).
    #[serde(
        default,
        deserialize_with = "permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub remove_permissions: PermissionSet,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    #[schema(value_type = rules::PrincipalName)]
    pub name: String,
    /// Whether its keys authenticate (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Groups, by id or name (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<rules::Reference>, max_items = 64)]
    pub groups: Vec<String>,
    /// Direct permissions.
    #[serde(
        default,
        deserialize_with = "permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub permissions: PermissionSet,
    /// Tenant, handed to services in the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::Label>)]
    pub tenant_id: Option<String>,
    /// Organization, handed to services in the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::Label>)]
    pub organization_id: Option<String>,
}

/// `PATCH /v1/users/{id}`. Replacements first, then additions, then removals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::PrincipalName>)]
    pub name: Option<String>,
    /// Enable or disable the user (and so all its keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces the groups (ids or names; at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<rules::Reference>>, max_items = 64)]
    pub groups: Option<Vec<String>>,
    /// Groups to add (ids or names; at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<rules::Reference>, max_items = 64)]
    pub add_groups: Vec<String>,
    /// Groups to remove (ids or names; at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<rules::Reference>, max_items = 64)]
    pub remove_groups: Vec<String>,
    /// Replaces the direct permissions.
    #[serde(
        default,
        deserialize_with = "optional_permission_set",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub permissions: Option<PermissionSet>,
    /// Added to the direct permissions.
    #[serde(
        default,
        deserialize_with = "permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub add_permissions: PermissionSet,
    /// Removed from the direct permissions (exact text).
    #[serde(
        default,
        deserialize_with = "permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub remove_permissions: PermissionSet,
    /// New tenant; `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<rules::Label>)]
    pub tenant_id: Option<Option<String>>,
    /// New organization; `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<rules::Label>)]
    pub organization_id: Option<Option<String>>,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Human name, 1 to 128 bytes; need not be unique.
    #[schema(value_type = rules::Label)]
    pub name: String,
    /// The owning user, by id or name.
    #[schema(value_type = rules::Reference)]
    pub user_id: String,
    /// Free text, up to 1,024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::Description>)]
    pub description: Option<String>,
    /// Narrows the user's permissions; absent or `null` is unrestricted, `[]` grants nothing.
    #[serde(
        default,
        deserialize_with = "optional_permission_set",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub scopes: Option<PermissionSet>,
    /// When the key stops authenticating (RFC 3339, in the future).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// `live` (default) or `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Env>,
}

/// `PATCH /v1/keys/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// New name, 1 to 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<rules::Label>)]
    pub name: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<rules::Description>)]
    pub description: Option<Option<String>>,
    /// `false` disables the key, `true` enables it again (409 `key_revoked` once revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working, 0 (expires at once) to 31,536,000 (a year).
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 31_536_000)]
    pub grace_seconds: u64,
}

/// A key just created or rotated: its record plus the full key, which no other response
/// ever holds.
// Its `Debug` shows the key's display prefix only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyWithSecret {
    /// The key's record.
    #[serde(flatten)]
    pub key: Key,
    /// The full key. Store it now: it is never shown again.
    pub secret: String,
}

impl std::fmt::Debug for KeyWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyWithSecret")
            .field("key", &self.key)
            .field("secret", &Redacted(&self.secret))
            .finish()
    }
}

/// A list: `GET /v1/keys`, `/v1/users`, `/v1/groups`, `/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass it back (as `cursor`, or `after` for the audit trail) for the next page;
    /// `null` on the last page. A page of keys filtered by `q` (or by `status` next to
    /// `user_id`) may hold fewer items than asked and still have a `next_cursor`.
    pub next_cursor: Option<String>,
}

/// The answer of `POST /v1/users/{id}/revoke-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeysRevoked {
    /// The user.
    pub user_id: Uuid,
    /// Every key the user held at this moment is revoked: none authenticates any more.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_before: OffsetDateTime,
    /// How many key records were revoked by the call itself.
    pub revoked_now: usize,
    /// Whether the remaining key records are being revoked in the background (they
    /// already do not authenticate; `user.keys_revoked` in the audit trail marks the end).
    pub in_background: bool,
}

/// `POST /v1/usage`: figures a remote verifier counted from its cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// One entry per key, at most 500.
    #[schema(max_items = 500)]
    pub items: Vec<UsageItem>,
}

/// Usage of one key since the last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// The key's record id.
    pub key_id: uuid::Uuid,
    /// Successful verifications, at least 1.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 1)]
    pub count: u64,
    /// The last of them (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: time::OffsetDateTime,
}

/// `POST /v1/verify`.
// Its `Debug` shows the key's display prefix only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The full key presented to the service.
    pub key: String,
    /// Permissions the key must all hold for `valid` to be true.
    #[serde(
        default,
        deserialize_with = "optional_permission_list",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub permissions: Option<Vec<Permission>>,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &Redacted(&self.key))
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// The answer of `POST /v1/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether the key authenticates and holds every permission asked for.
    pub valid: bool,
    /// `ok` when valid; otherwise `invalid_key`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `user_disabled` or `insufficient_permission`.
    pub code: String,
    /// Who the key authenticates as: present when it authenticates (also with
    /// `insufficient_permission`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalInfo>,
    /// When the key expires (RFC 3339), present with `principal` for a key that has an
    /// expiry: a remote verifier's cache must not outlive it, and no event announces it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// The answer of `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditCheck {
    /// Whether the whole chain holds.
    pub valid: bool,
    /// How many events were checked.
    pub events: u64,
    /// Where the chain breaks, or `null`.
    pub broken: Option<AuditBreak>,
}

/// Where and why the audit chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditBreak {
    /// The first event that does not fit.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Most permissions in one list of a body. Counted as sent, duplicates included, so that
/// the document's `maxItems` is the rule: core's limit on the distinct permissions of a set
/// is the same number, so a list within this bound never breaks it by its count.
const MAX_PERMISSION_ITEMS: usize = 256;

/// Deserializes a list of at most [`MAX_PERMISSION_ITEMS`] permissions.
fn permission_list<'de, D>(deserializer: D) -> Result<Vec<Permission>, D::Error>
where
    D: Deserializer<'de>,
{
    let list = Vec::<Permission>::deserialize(deserializer)?;
    if list.len() > MAX_PERMISSION_ITEMS {
        return Err(serde::de::Error::invalid_length(
            list.len(),
            &"at most 256 permissions",
        ));
    }
    Ok(list)
}

fn permission_set<'de, D>(deserializer: D) -> Result<PermissionSet, D::Error>
where
    D: Deserializer<'de>,
{
    permission_list(deserializer).map(PermissionSet::from_iter)
}

fn optional_permission_list<'de, D>(deserializer: D) -> Result<Option<Vec<Permission>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "permission_list")] Vec<Permission>);
    Ok(Option::<Bounded>::deserialize(deserializer)?.map(|list| list.0))
}

fn optional_permission_set<'de, D>(deserializer: D) -> Result<Option<PermissionSet>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(optional_permission_list(deserializer)?.map(PermissionSet::from_iter))
}

/// Deserializes a non-negative integer, also when written with a zero fraction (`7.0`):
/// JSON Schema's `integer` is any number without a fractional part, so a client that
/// follows the document may send one, and it means the same number.
fn whole_number<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    // 2^64: every f64 below it that has no fraction fits a u64.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            let float = number.as_f64()?;
            (float.fract() == 0.0 && (0.0..LIMIT).contains(&float)).then_some(float as u64)
        })
        .ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Other(&number.to_string()),
                &"a non-negative integer",
            )
        })
}

/// Deserializes a member that is present, `null` included, as `Some`; with
/// `#[serde(default)]` an absent member stays `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::{ApiKey, Prefix};

    /// Formats `value` both ways and checks that the key's secret never shows while its
    /// display prefix does.
    #[track_caller]
    fn check_redacted(value: &dyn std::fmt::Debug, key: &ApiKey) {
        for shown in [format!("{value:?}"), format!("{value:#?}")] {
            assert!(!shown.contains(key.secret()), "{shown}");
            assert!(shown.contains(key.display_prefix()), "{shown}");
        }
    }

    fn record(key: &ApiKey) -> Key {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::now_v7(), "name": "ci", "description": null,
            "user_id": uuid::Uuid::now_v7(), "env": "live", "prefix": key.display_prefix(),
            "scopes": null, "expires_at": null, "enabled": true, "revoked_at": null,
            "status": "active", "created_at": "2026-12-01T12:00:00Z", "created_by": null,
            "rotated_from": null, "last_used_at": null, "usage_count": 0,
        }))
        .expect("a key record")
    }

    #[test]
    fn integers_may_have_a_zero_fraction() {
        let rotate = |body: &str| serde_json::from_str::<RotateKey>(body).map(|r| r.grace_seconds);
        assert_eq!(rotate(r#"{"grace_seconds": 7631}"#).unwrap(), 7631);
        assert_eq!(rotate(r#"{"grace_seconds": 7631.0}"#).unwrap(), 7631);
        assert_eq!(rotate(r#"{"grace_seconds": 1e3}"#).unwrap(), 1000);
        for bad in ["7631.5", "-1", "-0.5", "1e20", "\"7\"", "null"] {
            let body = format!(r#"{{"grace_seconds": {bad}}}"#);
            assert!(rotate(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn permission_lists_are_bounded_as_sent() {
        let list = |n: usize| serde_json::json!(vec!["orders:read"; n]);
        let group = |n| {
            serde_json::from_value::<CreateGroup>(
                serde_json::json!({"name": "g", "permissions": list(n)}),
            )
        };
        assert_eq!(group(256).unwrap().permissions.len(), 1);
        assert!(group(257).is_err());
        let verify = |permissions| {
            serde_json::from_value::<VerifyRequest>(
                serde_json::json!({"key": "k", "permissions": permissions}),
            )
        };
        assert_eq!(verify(list(256)).unwrap().permissions.unwrap().len(), 256);
        assert!(verify(list(257)).is_err());
        assert_eq!(verify(serde_json::Value::Null).unwrap().permissions, None);
        let key = |scopes| {
            serde_json::from_value::<CreateKey>(
                serde_json::json!({"name": "k", "user_id": "u", "scopes": scopes}),
            )
        };
        assert!(key(list(257)).is_err());
        assert_eq!(key(serde_json::Value::Null).unwrap().scopes, None);
        assert_eq!(key(list(0)).unwrap().scopes, Some(PermissionSet::default()));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        let created = KeyWithSecret {
            key: record(&key),
            secret: key.expose().to_owned(),
        };
        check_redacted(&created, &key);
        let request = VerifyRequest {
            key: key.expose().to_owned(),
            permissions: None,
        };
        check_redacted(&request, &key);
        // A presented text that is not a key is hidden whole.
        let typo = VerifyRequest {
            key: format!("{}x", key.expose()),
            permissions: None,
        };
        assert!(!format!("{typo:?}").contains(key.secret()));
        assert!(format!("{typo:?}").contains("<redacted>"));
    }
}
