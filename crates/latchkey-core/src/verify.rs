//! Verification: from a presented key to a [`Principal`], and the cache that makes it cheap.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::SecretHash;
use crate::key::{Env, ParseError, PublicId};
use crate::permission::{Permission, PermissionSet};
use crate::store::KeyUsage;

/// Who a request authenticated as: the key, its user, and what it may do.
///
/// Cheap to clone (one `Arc`), and dereferences to [`PrincipalInfo`] for its fields.
///
/// # Example
///
/// ```
/// # use latchkey_core::{Principal, PrincipalInfo, PermissionSet, Env};
/// # let principal = Principal::new(PrincipalInfo {
/// #     key_id: uuid::Uuid::nil(), prefix: "lk_live_000000000000".into(), key_name: "ci".into(),
/// #     env: Env::Live, user_id: uuid::Uuid::nil(), user_name: "ci-bot".into(),
/// #     tenant_id: None, organization_id: None,
/// #     permissions: PermissionSet::parse(["orders:*"]).unwrap(),
/// # });
/// assert_eq!(principal.user_name, "ci-bot");
/// assert!(principal.has("orders:read"));
/// assert!(!principal.has("users:read"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(Arc<PrincipalInfo>);

/// The fields of a [`Principal`]. Never holds key material beyond the display prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrincipalInfo {
    /// The key's record id.
    pub key_id: Uuid,
    /// The key's display prefix, `<prefix>_<env>_<id>`.
    pub prefix: String,
    /// The key's name.
    pub key_name: String,
    /// The key's environment.
    pub env: Env,
    /// The user's id.
    pub user_id: Uuid,
    /// The user's name.
    pub user_name: String,
    /// The user's tenant.
    pub tenant_id: Option<String>,
    /// The user's organization.
    pub organization_id: Option<String>,
    /// Effective permissions: `(user's direct ∪ groups') ∩ key scopes`.
    pub permissions: PermissionSet,
}

impl Principal {
    /// Wraps the fields.
    pub fn new(info: PrincipalInfo) -> Principal {
        Principal(Arc::new(info))
    }

    /// Whether the effective permissions cover `permission`; an invalid string never does.
    pub fn has(&self, permission: &str) -> bool {
        self.0.permissions.allows_str(permission)
    }

    /// Whether the effective permissions cover `permission`.
    pub fn allows(&self, permission: &Permission) -> bool {
        self.0.permissions.allows(permission)
    }
}

impl Deref for Principal {
    type Target = PrincipalInfo;
    fn deref(&self) -> &PrincipalInfo {
        &self.0
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a presented key does not authenticate.
///
/// An unknown id and a wrong secret are the same [`VerifyError::Invalid`]; the specific
/// statuses (disabled, revoked, …) are only reported once the secret has matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a well-formed key; no store was read.
    #[error("malformed key: {0}")]
    Malformed(ParseError),
    /// Unknown id, wrong secret, or another store's prefix.
    #[error("invalid key")]
    Invalid,
    /// The key is disabled.
    #[error("the key is disabled")]
    Disabled,
    /// The key is revoked.
    #[error("the key is revoked")]
    Revoked,
    /// The key is past its expiry.
    #[error("the key has expired")]
    Expired,
    /// The key's user is disabled.
    #[error("the key's user is disabled")]
    UserDisabled,
    /// The keystore could not be read; say 503, never 401.
    #[error("the keystore is unavailable: {0}")]
    Unavailable(String),
}

impl VerifyError {
    /// The stable code of PRODUCT.md: `invalid_key`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `user_disabled` or `keystore_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) | VerifyError::Invalid => "invalid_key",
            VerifyError::Disabled => "key_disabled",
            VerifyError::Revoked => "key_revoked",
            VerifyError::Expired => "key_expired",
            VerifyError::UserDisabled => "user_disabled",
            VerifyError::Unavailable(_) => "keystore_unavailable",
        }
    }
}

/// Everything needed to answer a verification without touching the store.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) hash: SecretHash,
    pub(crate) enabled: bool,
    pub(crate) revoked: bool,
    /// Unix nanoseconds.
    pub(crate) expires_at: Option<i128>,
    /// `false` also when the user no longer exists.
    pub(crate) user_enabled: bool,
    pub(crate) principal: Principal,
    /// Where successful verifications are counted, without a lock.
    pub(crate) usage: Arc<KeyUsage>,
}

impl Resolved {
    /// Checks the secret first, then the statuses: a caller without the secret learns only
    /// `Invalid`.
    pub(crate) fn check(
        &self,
        presented: &SecretHash,
        now_nanos: i128,
    ) -> Result<&Principal, VerifyError> {
        if !self.hash.matches(presented) {
            return Err(VerifyError::Invalid);
        }
        if self.revoked {
            Err(VerifyError::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now_nanos) {
            Err(VerifyError::Expired)
        } else if !self.enabled {
            Err(VerifyError::Disabled)
        } else if !self.user_enabled {
            Err(VerifyError::UserDisabled)
        } else {
            Ok(&self.principal)
        }
    }
}

/// The verified-record cache, keyed by public id.
///
/// **Invariant:** after a write returns, no entry read from the store before that write is
/// in the cache. Writers invalidate under `generation`'s lock before returning; a verifier
/// that missed reads the generation before reading the store and inserts only if it has
/// not moved, so an answer read before a concurrent write can never land after it.
pub(crate) struct VerifyCache {
    /// `None` values remember ids that do not exist, so an unknown id costs no store read.
    entries: Option<quick_cache::sync::Cache<PublicId, Option<Arc<Resolved>>>>,
    generation: Mutex<u64>,
}

impl VerifyCache {
    pub(crate) fn new(capacity: usize) -> VerifyCache {
        let entries = (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity));
        VerifyCache {
            entries,
            generation: Mutex::new(0),
        }
    }

    pub(crate) fn get(&self, id: &PublicId) -> Option<Option<Arc<Resolved>>> {
        self.entries.as_ref()?.get(id)
    }

    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert_if_current(
        &self,
        id: PublicId,
        entry: Option<Arc<Resolved>>,
        generation: u64,
    ) {
        let Some(entries) = &self.entries else { return };
        let current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if *current == generation {
            entries.insert(id, entry);
        }
    }

    pub(crate) fn invalidate(&self, id: Option<&PublicId>) {
        let mut current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *current += 1;
        if let Some(entries) = &self.entries {
            match id {
                Some(id) => {
                    entries.remove(id);
                }
                None => entries.clear(),
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
