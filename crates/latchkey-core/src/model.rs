//! Groups, users and keys as the store returns them, and the inputs that create or change them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use ipnet::IpNet;

use crate::controls::{Credits, CreditsPatch, RateLimit};
use crate::error::StoreError;
use crate::key::{ApiKey, Env};
use crate::limits::MAX_PRINCIPAL_NAME_BYTES;
use crate::permission::{PermissionEdit, PermissionSet};

/// A group (role): a name and a set of permissions. Users in the group hold them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    /// Record id (UUID v7).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// What members may do.
    pub permissions: PermissionSet,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A user: usually a dedicated, limited identity for one integration. Its keys can do what
/// it can do, narrowed by each key's scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Record id (UUID v7).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// A disabled user's keys do not authenticate.
    pub enabled: bool,
    /// Group ids.
    pub groups: Vec<Uuid>,
    /// Direct permissions, in addition to the groups'.
    pub permissions: PermissionSet,
    /// Optional tenant, handed to handlers in the principal.
    pub tenant_id: Option<String>,
    /// Optional organization, handed to handlers in the principal.
    pub organization_id: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Named rate limits shared by all the user's keys, in addition to each key's own
    /// (empty: none). Stored in a record of their own, not in the user's.
    #[serde(default, with = "kept_apart")]
    pub rate_limits: Vec<RateLimit>,
}

/// Serde for a field the store keeps in a record of its own: in JSON it is the value; in
/// the store's postcard (which is not human-readable) it takes no byte at all, so the
/// records written before the field existed decode as they are, and records written now
/// decode with older builds.
mod kept_apart {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            serializer.serialize_unit()
        }
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        if deserializer.is_human_readable() {
            T::deserialize(deserializer)
        } else {
            <()>::deserialize(deserializer).map(|()| T::default())
        }
    }
}

/// Where a key stands in its life. Computed at read time from the record and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Authenticates (if its user is enabled).
    Active,
    /// Switched off; can be switched back on.
    Disabled,
    /// Revoked for good.
    Revoked,
    /// Past `expires_at`.
    Expired,
}

impl KeyStatus {
    /// The lowercase name used in JSON and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }

    /// The status of a key: revoked beats expired, which beats disabled.
    pub fn of(
        enabled: bool,
        revoked_at: Option<OffsetDateTime>,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> KeyStatus {
        if revoked_at.is_some() {
            KeyStatus::Revoked
        } else if expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else if !enabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(KeyStatus::Active),
            "disabled" => Ok(KeyStatus::Disabled),
            "revoked" => Ok(KeyStatus::Revoked),
            "expired" => Ok(KeyStatus::Expired),
            _ => Err(StoreError::invalid(
                "status",
                "expected active, disabled, revoked or expired",
            )),
        }
    }
}

/// A key as shown to administrators: never the secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Key {
    /// Record id (UUID v7).
    pub id: Uuid,
    /// Human name; not unique (a rotated key keeps its name).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The owning user.
    pub user_id: Uuid,
    /// `live` or `test`.
    pub env: Env,
    /// The display prefix, `<prefix>_<env>_<id>`.
    pub prefix: String,
    /// Optional narrowing of the user's permissions; `None` is unrestricted.
    pub scopes: Option<PermissionSet>,
    /// When the key stops authenticating.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Reversible switch.
    pub enabled: bool,
    /// When it was revoked; revocation is irreversible.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Computed from the fields above and the clock.
    pub status: KeyStatus,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Key id of the caller that created it; `None` for the operator (CLI on the store).
    pub created_by: Option<Uuid>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<Uuid>,
    /// Last successful authentication (persisted every few seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Successful authentications.
    pub usage_count: u64,
    /// A JSON object handed to the app in `principal.meta`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<serde_json::Value>,
    /// Named rate limits (empty: none).
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Credits, with what is left now (consumption not yet persisted included).
    #[serde(default)]
    pub credits: Option<Credits>,
    /// The CIDRs requests may come from (empty: anywhere).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allowed_ips: Vec<IpNet>,
}

/// A freshly created key: its record and the full key, shown this once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The record.
    pub key: Key,
    /// The full key. Its `Debug` is redacted; [`ApiKey::expose`] gives the text.
    pub secret: ApiKey,
}

/// What a new group is made of.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    pub name: String,
    /// What members may do.
    pub permissions: PermissionSet,
}

/// A change to a group; `None` and empty sets leave a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    /// New name.
    pub name: Option<String>,
    /// The change to the permissions.
    pub permissions: PermissionEdit,
}

/// What a new user is made of.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Unique name: 1 to 64 characters of `[A-Za-z0-9_.@-]`, not a UUID.
    pub name: String,
    /// Whether its keys authenticate.
    pub enabled: bool,
    /// Group ids; each must exist.
    pub groups: Vec<Uuid>,
    /// Direct permissions.
    pub permissions: PermissionSet,
    /// Optional tenant.
    pub tenant_id: Option<String>,
    /// Optional organization.
    pub organization_id: Option<String>,
    /// Up to 8 named rate limits, shared by all its keys.
    pub rate_limits: Vec<RateLimit>,
}

impl Default for NewUser {
    fn default() -> Self {
        NewUser {
            name: String::new(),
            enabled: true,
            groups: Vec::new(),
            permissions: PermissionSet::new(),
            tenant_id: None,
            organization_id: None,
            rate_limits: Vec::new(),
        }
    }
}

/// A change to a user; `None` and empty lists leave a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New name.
    pub name: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replaces the groups.
    pub groups: Option<Vec<Uuid>>,
    /// Added after any replacement.
    pub add_groups: Vec<Uuid>,
    /// Removed after any replacement.
    pub remove_groups: Vec<Uuid>,
    /// The change to the direct permissions.
    pub permissions: PermissionEdit,
    /// `Some(None)` clears it.
    pub tenant_id: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub organization_id: Option<Option<String>>,
    /// Replaces the rate limits (`Some(empty)` clears them).
    pub rate_limits: Option<Vec<RateLimit>>,
}

/// What a new key is made of.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Human name, 1 to 128 bytes, no control, formatting or separator characters.
    pub name: String,
    /// The owning user.
    pub user_id: Uuid,
    /// Free text, up to 1,024 bytes, no control, formatting or separator characters.
    pub description: Option<String>,
    /// Narrows the user's permissions; `None` is unrestricted, `Some(empty)` grants nothing.
    pub scopes: Option<PermissionSet>,
    /// When it stops authenticating; must be in the future.
    pub expires_at: Option<OffsetDateTime>,
    /// `live` or `test`.
    pub env: Env,
    /// A JSON object (at most 4 KiB, 16 levels deep) for the app, in `principal.meta`.
    pub meta: Option<serde_json::Value>,
    /// Up to 8 named rate limits.
    pub rate_limits: Vec<RateLimit>,
    /// Credits, with an optional refill.
    pub credits: Option<Credits>,
    /// Up to 64 CIDRs requests may come from (empty: anywhere).
    pub allowed_ips: Vec<IpNet>,
}

/// A change to a key.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Disable or re-enable; a revoked key is neither (`key_revoked`).
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    pub meta: Option<Option<serde_json::Value>>,
    /// Replaces the rate limits (`Some(empty)` clears them).
    pub rate_limits: Option<Vec<RateLimit>>,
    /// Sets, adds to or clears the credits.
    pub credits: Option<CreditsPatch>,
    /// Replaces the allowlist (`Some(empty)` clears it).
    pub allowed_ips: Option<Vec<IpNet>>,
}

/// Whether `text` holds only what a user or group name may: `[A-Za-z0-9_.@-]`.
pub(crate) fn is_name_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// Checks a user or group name.
pub(crate) fn validate_principal_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_PRINCIPAL_NAME_BYTES).contains(&name.len()) && is_name_text(name);
    if !ok {
        return Err(StoreError::invalid(
            field,
            format!("1 to {MAX_PRINCIPAL_NAME_BYTES} characters of [A-Za-z0-9_.@-]"),
        ));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(StoreError::invalid(
            field,
            "a name may not be a UUID: records are referred to by either",
        ));
    }
    crate::limits::check_no_key(field, name)?;
    Ok(())
}

/// Checks free text: a length bound in bytes, and no control, formatting or separator
/// characters ([`crate::limits::is_forbidden_char`]).
pub(crate) fn validate_text(
    field: &'static str,
    text: &str,
    min: usize,
    max: usize,
) -> Result<(), StoreError> {
    crate::limits::check_text(field, text, min, max)
}
