//! Verification: from a presented key to a [`Principal`], and the cache that makes it cheap.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use quick_cache::sync::Cache;

use crate::hash::{SecretHash, Tag, TagKey};
use crate::key::{self, ApiKey, Env, ParseError, PublicId};
use crate::meter::{Meter, RateLimited};
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
/// #     permissions: PermissionSet::parse(["orders:*"]).unwrap(), meta: None, meter: None,
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
    /// The key's `meta`: a JSON object its creator attached, for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<serde_json::Value>,
    /// The key's usage control at run time (allowlist, rate limits, credits), checked by
    /// [`crate::meter::admit`]; `None` for a key without any. Never serialized.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub meter: Option<Meter>,
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
    /// The client's address is not in the key's `allowed_ips`; say 403.
    #[error("the client's address is not allowed for this key")]
    IpNotAllowed,
    /// The key lacks a permission asked of it; say 403.
    #[error("the key lacks a required permission")]
    InsufficientPermission,
    /// A rate limit of the key is reached; say 429 with `Retry-After`.
    #[error("rate limit {} reached", .0.limit.name)]
    RateLimited(Box<RateLimited>),
    /// The key has fewer credits left than the request costs; say 429, with `Retry-After`
    /// when a refill lets it through.
    #[error("the key has too few credits left for the request")]
    UsageExceeded {
        /// Seconds until the credits' next refill (at least 1). `None` when no refill
        /// will let the request through (there is none, or it is smaller than the
        /// request's cost): only a change to the key will; or when a remote verifier
        /// could not learn it (its lease held too little after its asks).
        retry_after_seconds: Option<u64>,
    },
}

impl VerifyError {
    /// The stable code of the refusal, as the HTTP layers answer it in problem+json
    /// bodies and clients match on it: `invalid_key`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `user_disabled`, `keystore_unavailable`, `ip_not_allowed`,
    /// `insufficient_permission`, `rate_limited` or `usage_exceeded`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) | VerifyError::Invalid => "invalid_key",
            VerifyError::Disabled => "key_disabled",
            VerifyError::Revoked => "key_revoked",
            VerifyError::Expired => "key_expired",
            VerifyError::UserDisabled => "user_disabled",
            VerifyError::Unavailable(_) => "keystore_unavailable",
            VerifyError::IpNotAllowed => "ip_not_allowed",
            VerifyError::InsufficientPermission => "insufficient_permission",
            VerifyError::RateLimited(_) => "rate_limited",
            VerifyError::UsageExceeded { .. } => "usage_exceeded",
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
    /// Whether `key` is this record's key: the same environment, and the secret's keyed
    /// hash equal to the stored one, compared in constant time. (The id and the prefix were
    /// matched by the look-up.)
    pub(crate) fn is_key(&self, key: &ApiKey, presented: &SecretHash) -> bool {
        let secret = self.hash.matches(presented);
        secret & (self.principal.env == key.env())
    }

    /// The statuses, for a caller that has shown it holds the secret, in the order the
    /// contract gives: key enabled, not revoked, not expired, user enabled.
    pub(crate) fn status(&self, now_nanos: i128) -> Result<&Principal, VerifyError> {
        if !self.enabled {
            Err(VerifyError::Disabled)
        } else if self.revoked {
            Err(VerifyError::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now_nanos) {
            Err(VerifyError::Expired)
        } else if !self.user_enabled {
            Err(VerifyError::UserDisabled)
        } else {
            Ok(&self.principal)
        }
    }
}

/// What the cold part of the verify cache knows of an id that no caller holding its secret
/// presented.
#[derive(Clone)]
pub(crate) enum Cold {
    /// No key has this id.
    Absent,
    /// A key presented with a wrong secret: its secret's hash and its environment, what
    /// tells the next wrong secret from the right one. The user, groups and usage controls
    /// behind the key are read only for a caller that holds the secret, so a wrong secret
    /// costs what an unknown id costs: one read, of the key's record.
    Stranger { hash: SecretHash, env: Env },
    /// An imported key, whole: imported keys are never hot (`store/import.rs`).
    Imported(Arc<Resolved>),
}

impl Cold {
    /// Whether `key`, whose secret hashed to `presented`, may be this id's key. An absent
    /// id is compared too, with a hash no secret has, so that both answers take one
    /// constant-time comparison.
    pub(crate) fn admits(&self, key: &ApiKey, presented: &SecretHash) -> bool {
        match self {
            Cold::Absent => {
                std::hint::black_box(SecretHash::from_bytes([0; 32]).matches(presented));
                false
            }
            Cold::Stranger { hash, env } => hash.matches(presented) & (*env == key.env()),
            Cold::Imported(resolved) => resolved.is_key(key, presented),
        }
    }

    /// The imported key, if this is one.
    pub(crate) fn imported(&self) -> Option<&Arc<Resolved>> {
        match self {
            Cold::Imported(resolved) => Some(resolved),
            Cold::Absent | Cold::Stranger { .. } => None,
        }
    }
}

/// A record in the hot cache, with the tag of the one key text that verifies against it.
#[derive(Clone)]
pub(crate) struct Hot {
    tag: Tag,
    pub(crate) resolved: Arc<Resolved>,
}

/// The verify cache: records by public id, in two bounded parts.
///
/// - **hot**: keys that a caller holding the secret presented. Each entry keeps the keyed
///   [`Tag`] of that key's text, so that the same text presented again is recognised
///   ([`VerifyCache::recognise`]) without the checksum or the BLAKE3 hash.
/// - **cold**: every other answer the store gave ([`Cold`]): ids that do not exist, and the
///   hash of keys presented with a wrong secret. It is a tenth of the hot part's size, so
///   traffic without a valid key, however much of it, cycles through it and never evicts a
///   hot entry; and, once in it, an unknown id and a wrong secret both cost a hash, a cold
///   hit and one constant-time comparison. (A wrong secret for a hot id is answered from the
///   hot part: timing may tell an id in use, see `Store::verify`.)
///
/// **Why a hit by tag is as safe as a hit by BLAKE3 hash.** Exactly one text verifies
/// against a record (its prefix, env and id are fixed, the secret is fixed by its hash, the
/// checksum by the rest), and a hot entry's tag is that text's tag, taken once the secret
/// matched. The tag is SipHash-1-3 with a 128-bit output under a key drawn from the OS
/// CSPRNG when the store is opened, never stored or shown ([`TagKey`]): another text has
/// the same tag with probability 2⁻¹²⁸, and, the key being unknown, no one can look for
/// one offline; online, each try is one request. Tags are compared in constant time, and
/// a text the cache does not recognise goes the full way (strict parse with the checksum,
/// BLAKE3, constant-time compare), so no answer depends on a prefix of a tag or a secret.
/// The cache holds tags and keyed hashes, never a secret.
///
/// **Invariant:** after a write returns, no entry read from the store before that write is
/// in the cache. Writers bump `generation` and invalidate both parts under `lock` before
/// returning; a verifier reads the generation (an atomic load, paired with the writer's
/// release) before it reads the cold part or the store, and inserts, under `lock`, only if
/// the generation has not moved, so an answer read before a concurrent write can
/// never land after it. An invalidated key leaves the hot part, and with it its tag: its
/// next presentation goes the full way and reads the store.
pub(crate) struct VerifyCache {
    tag_key: TagKey,
    hot: Option<Cache<PublicId, Hot>>,
    cold: Option<Cache<PublicId, Cold>>,
    generation: AtomicU64,
    /// Held to bump the generation and invalidate, and to compare and insert: an insert
    /// lands before an invalidation or is refused by it.
    lock: Mutex<()>,
}

/// The cold part's size: a tenth of the hot part's, at most this.
const COLD_MAX: usize = 4_096;

impl VerifyCache {
    /// A cache of `capacity` hot entries (0: no cache at all).
    pub(crate) fn new(capacity: usize) -> VerifyCache {
        let cold = capacity.div_ceil(10).min(COLD_MAX);
        VerifyCache {
            tag_key: TagKey::generate(),
            hot: (capacity > 0).then(|| Cache::new(capacity)),
            cold: (cold > 0).then(|| Cache::new(cold)),
            generation: AtomicU64::new(0),
            lock: Mutex::new(()),
        }
    }

    /// The record of a presented key text that verified before, recognised by its tag
    /// without parsing it; `None` for any other text.
    ///
    /// The tag is taken only when the id is hot: an unknown id and a wrong secret for a key
    /// not in use cost the same look-up; a wrong secret for a key in use costs the tag
    /// more, which tells only that the key is in use, as a store read's time always did.
    #[inline]
    pub(crate) fn recognise(&self, text: &[u8]) -> Option<Arc<Resolved>> {
        let id = key::id_hint(text)?;
        let hot = self.hot.as_ref()?.get(&id)?;
        hot.tag
            .matches(&self.tag_key.tag(text))
            .then_some(hot.resolved)
    }

    /// A hot entry by id.
    pub(crate) fn hot(&self, id: &PublicId) -> Option<Hot> {
        self.hot.as_ref()?.get(id)
    }

    /// A cold entry by id.
    pub(crate) fn cold(&self, id: &PublicId) -> Option<Cold> {
        self.cold.as_ref()?.get(id)
    }

    /// Read before reading the cold part or the store; pass it to the inserts.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a record whose secret `key` holds, with `key`'s tag, unless a write
    /// invalidated since `generation`.
    pub(crate) fn insert_hot(&self, key: &ApiKey, resolved: Arc<Resolved>, generation: u64) {
        let Some(hot) = &self.hot else { return };
        let tag = self.tag_key.tag(key.expose_bytes());
        let _locked = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            hot.insert(key.id(), Hot { tag, resolved });
        }
    }

    /// Caches any other answer of the store, unless a write invalidated since `generation`.
    pub(crate) fn insert_cold(&self, id: PublicId, entry: Cold, generation: u64) {
        let Some(cold) = &self.cold else { return };
        let _locked = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            cold.insert(id, entry);
        }
    }

    /// Forgets one key, or everything, in both parts.
    pub(crate) fn invalidate(&self, id: Option<&PublicId>) {
        let _locked = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::Release);
        for_both(&self.hot, &self.cold, id);
    }

    /// How many keys the hot part holds.
    pub(crate) fn len(&self) -> usize {
        self.hot.as_ref().map_or(0, |e| e.len())
    }

    fn cold_len(&self) -> usize {
        self.cold.as_ref().map_or(0, |e| e.len())
    }
}

/// Removes `id` (or everything) from both parts.
fn for_both<A: Clone, B: Clone>(
    hot: &Option<Cache<PublicId, A>>,
    cold: &Option<Cache<PublicId, B>>,
    id: Option<&PublicId>,
) {
    match id {
        Some(id) => {
            hot.as_ref().map(|c| c.remove(id));
            cold.as_ref().map(|c| c.remove(id));
        }
        None => {
            hot.as_ref().map(Cache::clear);
            cold.as_ref().map(Cache::clear);
        }
    }
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("hot", &self.len())
            .field("cold", &self.cold_len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Env, Prefix};

    #[test]
    fn an_answer_read_before_an_invalidation_is_not_cached() {
        let cache = VerifyCache::new(16);
        let id = ApiKey::generate(&Prefix::default(), Env::Live).id();
        // A verifier reads the generation, then the store; a write invalidates meanwhile.
        let read_at = cache.generation();
        cache.invalidate(None);
        cache.insert_cold(id, Cold::Absent, read_at);
        assert!(cache.cold(&id).is_none(), "a stale answer was cached");
        // An answer read after the write is.
        cache.insert_cold(id, Cold::Absent, cache.generation());
        assert!(matches!(cache.cold(&id), Some(Cold::Absent)));
    }
}
