//! The JSON bodies of the management API, beyond core's models (`Group`, `User`, `Key`,
//! `AuditEvent`, `PrincipalInfo`), which the API answers as they serialize, and the records
//! its clients also read, defined once in [`latchkey_core::wire`] and re-exported here.
//!
//! Every type is `Serialize + Deserialize`, so that a client (the `latchkey` CLI) sends and
//! reads exactly what the server parses and writes. Request bodies deny unknown fields.
//! In a `Update*` body, an absent member leaves the field as it is; for the nullable
//! fields (`description`, `tenant_id`, `organization_id`) `null` clears it.

mod de;
pub(crate) mod import;

pub use import::{ImportKeys, ImportReport, Imported, Rejected};

use latchkey_core::key::Redacted;

use ipnet::IpNet;
use latchkey_core::{Credits, Env, Key, PermissionSet, RateLimit, Refill};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::openapi::rules;

/// `POST /v1/groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    #[schema(value_type = rules::PrincipalName)]
    pub name: String,
    /// What members may do (at most 256).
    #[serde(default, deserialize_with = "de::permission_set")]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub permissions: PermissionSet,
}

/// `PATCH /v1/groups/{id}`. Replacement first, then additions, then removals.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// New name.
    #[serde(default)]
    #[schema(value_type = Option<rules::PrincipalName>)]
    pub name: Option<String>,
    /// Replaces the permissions.
    #[serde(default, deserialize_with = "de::optional_permission_set")]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub permissions: Option<PermissionSet>,
    /// Added to the permissions.
    #[serde(
        default,
        deserialize_with = "de::permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub add_permissions: PermissionSet,
    /// Removed from the permissions (exact text).
    #[serde(
        default,
        deserialize_with = "de::permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub remove_permissions: PermissionSet,
}

/// `POST /v1/users`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    #[schema(value_type = rules::PrincipalName)]
    pub name: String,
    /// Whether its keys authenticate (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Groups, by id or name (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<rules::Reference>, max_items = 64)]
    pub groups: Vec<String>,
    /// Direct permissions.
    #[serde(
        default,
        deserialize_with = "de::permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub permissions: PermissionSet,
    /// Tenant, handed to services in the principal.
    #[serde(default)]
    #[schema(value_type = Option<rules::Tenant>)]
    pub tenant_id: Option<String>,
    /// Organization, handed to services in the principal.
    #[serde(default)]
    #[schema(value_type = Option<rules::Tenant>)]
    pub organization_id: Option<String>,
    /// Up to 8 named rate limits shared by all the user's keys, in addition to each key's
    /// own.
    #[serde(default)]
    // A set in the document (`uniqueItems`): the limits' names are unique besides.
    #[schema(value_type = Option<BTreeSet<RateLimit>>, max_items = 8)]
    pub rate_limits: Option<Vec<RateLimit>>,
}

/// `PATCH /v1/users/{id}`. Replacements first, then additions, then removals.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New name.
    #[serde(default)]
    #[schema(value_type = Option<rules::PrincipalName>)]
    pub name: Option<String>,
    /// Enable or disable the user (and so all its keys).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replaces the groups (ids or names; at most 64).
    #[serde(default)]
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
    #[serde(default, deserialize_with = "de::optional_permission_set")]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub permissions: Option<PermissionSet>,
    /// Added to the direct permissions.
    #[serde(
        default,
        deserialize_with = "de::permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub add_permissions: PermissionSet,
    /// Removed from the direct permissions (exact text).
    #[serde(
        default,
        deserialize_with = "de::permission_set",
        skip_serializing_if = "PermissionSet::is_empty"
    )]
    #[schema(value_type = Vec<rules::Permission>, max_items = 256)]
    pub remove_permissions: PermissionSet,
    /// New tenant; `null` clears it.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<rules::Tenant>)]
    pub tenant_id: Option<Option<String>>,
    /// New organization; `null` clears it.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<rules::Tenant>)]
    pub organization_id: Option<Option<String>>,
    /// Replaces the rate limits shared by all the user's keys; `null` clears them.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<BTreeSet<RateLimit>>, max_items = 8)]
    pub rate_limits: Option<Option<Vec<RateLimit>>>,
}

/// `POST /v1/keys`.
#[serde_with::skip_serializing_none]
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
    #[serde(default)]
    #[schema(value_type = Option<rules::Description>)]
    pub description: Option<String>,
    /// Narrows the user's permissions; absent or `null` is unrestricted, `[]` grants nothing.
    #[serde(default, deserialize_with = "de::optional_permission_set")]
    #[schema(value_type = Option<Vec<rules::Permission>>, max_items = 256)]
    pub scopes: Option<PermissionSet>,
    /// When the key stops authenticating (RFC 3339, in the future).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// `live` (default) or `test`.
    #[serde(default)]
    pub env: Option<Env>,
    /// A JSON object (at most 4 KiB, nested at most 16 levels deep) handed to the app in
    /// `principal.meta`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
    /// Up to 8 named rate limits.
    #[serde(default)]
    #[schema(value_type = Option<BTreeSet<RateLimit>>, max_items = 8)]
    pub rate_limits: Option<Vec<RateLimit>>,
    /// Credits: each request costs 1 (or its route's cost); at 0, 429 `usage_exceeded`.
    #[serde(default)]
    pub credits: Option<Credits>,
    /// Up to 64 networks (`203.0.113.0/24`, `2001:db8::/32`, or one address, `203.0.113.7`,
    /// kept as `203.0.113.7/32`) requests may come from; kept with their host bits cleared
    /// (`10.0.0.1/8` is `10.0.0.0/8`), and a range of IPv4-mapped IPv6 addresses as the
    /// IPv4 range it maps.
    /// `[]` is refused (400): `null`, or no member, is no allowlist.
    #[serde(default, deserialize_with = "de::optional_nets")]
    #[schema(value_type = Option<Vec<rules::Cidr>>, min_items = 1, max_items = 64)]
    pub allowed_ips: Option<Vec<IpNet>>,
}

/// `PATCH /v1/keys/{id}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// New name, 1 to 128 bytes.
    #[serde(default)]
    #[schema(value_type = Option<rules::Label>)]
    pub name: Option<String>,
    /// New description; `null` clears it.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<rules::Description>)]
    pub description: Option<Option<String>>,
    /// `false` disables the key, `true` enables it again (409 `key_revoked` once revoked).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New `meta` (a JSON object, at most 4 KiB and 16 levels deep); `null` clears it.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Option<serde_json::Value>>,
    /// Replaces the rate limits; `null` clears them.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<BTreeSet<RateLimit>>, max_items = 8)]
    pub rate_limits: Option<Option<Vec<RateLimit>>>,
    /// `{"remaining": N}` sets the credits (with an optional `refill`), `{"add": N}` adds
    /// to what is left; `null` removes them.
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<CreditsChange>)]
    pub credits: Option<Option<CreditsChange>>,
    /// Replaces the allowlist (as at creation; `[]` is refused); `null` clears it.
    #[serde(default, deserialize_with = "de::present_nets")]
    #[schema(value_type = Option<Vec<rules::Cidr>>, min_items = 1, max_items = 64)]
    pub allowed_ips: Option<Option<Vec<IpNet>>>,
}

/// A change to a key's credits: `remaining` (with an optional `refill`), `refill` alone
/// (the balance kept), or `add`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsChange {
    /// Sets what is left (at most 10^15).
    #[serde(default, deserialize_with = "latchkey_core::wire::optional_integer")]
    #[schema(maximum = 1_000_000_000_000_000_i64)] // limits::MAX_CREDITS
    pub remaining: Option<u64>,
    /// Adds to what is left (at most 10^15 at once).
    #[serde(default, deserialize_with = "latchkey_core::wire::optional_integer")]
    #[schema(maximum = 1_000_000_000_000_000_i64)] // limits::MAX_CREDITS
    pub add: Option<u64>,
    /// The new refill; `null` removes it; absent keeps it. Without `remaining`, the balance
    /// stays as it is shown (slices other processes hold unspent count as spent, as with a
    /// set).
    #[serde(default, deserialize_with = "de::present")]
    #[schema(value_type = Option<Refill>)]
    pub refill: Option<Option<Refill>>,
}

/// `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working, 0 (expires at once) to 31,536,000 (a year).
    #[serde(deserialize_with = "latchkey_core::wire::whole_number")]
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

impl<T> From<latchkey_core::Page<T>> for List<T> {
    fn from(page: latchkey_core::Page<T>) -> Self {
        List {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
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

pub use latchkey_core::wire::{UsageItem, UsageReport, VerifyRequest, VerifyResponse};

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
            client_ip: None,
            cost: None,
        };
        check_redacted(&request, &key);
        // A presented text that is not a key is hidden whole.
        let typo = VerifyRequest {
            key: format!("{}x", key.expose()),
            permissions: None,
            client_ip: None,
            cost: None,
        };
        assert!(!format!("{typo:?}").contains(key.secret()));
        assert!(format!("{typo:?}").contains("<redacted>"));
    }
}
