//! The answers a [`RemoteVerifier`](super::RemoteVerifier) remembers, and how changes
//! drop them.
//!
//! Entries are keyed by a [`Digest`]: BLAKE3 of the presented key, keyed with 32 random
//! bytes drawn when the process starts. The cache never holds a key: a memory dump gives
//! digests that cannot be checked against guessed keys without the per-process key, and
//! nothing that can be presented to the daemon.
//!
//! Valid answers and refusals are held apart, each bounded: refusals (what a scan of random
//! keys produces) live in their own S3-FIFO cache, so they can neither evict a valid answer
//! nor, when full, push out the refusals that are presented again and again (a client
//! retrying a revoked key): a scan's one-off entries leave first.
//!
//! **Invariant:** an answer fetched before an invalidation is never inserted after it.
//! Every invalidation bumps `generation` under the write lock; a miss reads the generation
//! before it asks the daemon and inserts only if it has not moved (the same rule as core's
//! verify cache). A change that admits no key refused before ([`Effect::AdmitsNone`]: a
//! revocation, a deletion, a new user or group) leaves the refusals, and the refusals'
//! generation, as they are: a refusal stays right after it, and during a job that revokes
//! many keys a client presenting a refused key is answered from memory, not by the daemon
//! at each request.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use latchkey_core::{Principal, VerifyError};
use time::OffsetDateTime;
use uuid::Uuid;

use super::lease::Lease;

/// The keyed hash of a presented key.
pub(super) type Digest = [u8; 32];

/// Hashes a presented key with a per-process random key.
#[derive(Clone)]
pub(super) struct SecretHasher([u8; 32]);

impl SecretHasher {
    /// A fresh random key from the OS.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub(super) fn generate() -> SecretHasher {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source failed");
        SecretHasher(key)
    }

    pub(super) fn digest(&self, presented: &str) -> Digest {
        *blake3::keyed_hash(&self.0, presented.as_bytes()).as_bytes()
    }
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(<redacted>)")
    }
}

/// Digests are uniformly random already: their first eight bytes are the map's hash, with
/// no SipHash round on the hot path.
#[derive(Default)]
pub(super) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: keep the first eight of the
        // longest write, which is the digest.
        if bytes.len() >= 8 {
            self.0 = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
        }
    }

    fn write_usize(&mut self, _length: usize) {}
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

/// A valid answer.
#[derive(Debug, Clone)]
pub(super) struct Positive {
    pub(super) principal: Principal,
    pub(super) expires_at: Option<OffsetDateTime>,
    /// Set the first time the answer is found expired, shared by its clones: expiry is
    /// final, and a clock set back after it does not admit the key again.
    pub(super) expired: Arc<AtomicBool>,
    /// When the daemon answered; the entry is dropped `cache_ttl` after.
    pub(super) fetched_at: OffsetDateTime,
    /// A metered key's lease of its limits and credits.
    pub(super) lease: Option<Arc<Lease>>,
}

/// A refusal, kept until `until`.
#[derive(Debug, Clone)]
pub(super) struct Negative {
    pub(super) error: VerifyError,
    pub(super) until: OffsetDateTime,
}

/// What a cache lookup found.
#[derive(Debug)]
pub(super) enum Cached {
    Valid(Positive),
    Refused(VerifyError),
}

/// Whether a change may admit a key text refused before: what decides if the cached
/// refusals stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// A revocation or a deletion (`key.revoke`, `key.delete`, `user.delete`,
    /// `user.revoke_keys`, `user.keys_revoked`, `group.delete`), or a new user or group
    /// (`user.create`, `group.create`: no keys yet): no key refused before is admitted
    /// after it. (A deleted key's text that is imported again comes with a `key.create`.)
    AdmitsNone,
    /// Anything else: enabling a key or a user, a new key (an import brings a text that
    /// may have been refused before), or an action this version does not know.
    MayAdmit,
}

impl Effect {
    /// The effect of a change event, from its `action`.
    pub(super) fn of(action: &str) -> Effect {
        match action {
            "key.revoke" | "key.delete" | "user.delete" | "user.revoke_keys"
            | "user.keys_revoked" | "group.delete" | "user.create" | "group.create" => {
                Effect::AdmitsNone
            }
            _ => Effect::MayAdmit,
        }
    }
}

/// When a miss read the cache, to insert its answer only if no invalidation came since
/// ([`Cache::generation`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Generation {
    /// Bumped by every invalidation: a valid answer's.
    all: u64,
    /// Bumped by the invalidations that may admit a key refused before: a refusal's.
    widened: u64,
}

impl Generation {
    /// How many invalidations came: one more moves it.
    pub(super) fn changes(self) -> u64 {
        self.all
    }
}

/// The kind of record a change event is about, from its `action` (`key.revoke`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// A record was created: nothing cached or in flight can be about it (a new key's
    /// secret was never presented; a new user has no keys; a new group no members).
    Created,
    /// One key changed.
    Key(Uuid),
    /// A user changed: all its keys.
    User(Uuid),
    /// A group changed, or a change this version does not know: everything.
    All,
}

#[derive(Debug, Default)]
struct Entries {
    positive: DigestMap<Positive>,
    /// Key id → the digest of its one valid presentation (only the right secret is valid).
    by_key: HashMap<Uuid, Digest>,
    /// User id → its cached keys.
    by_user: HashMap<Uuid, HashSet<Uuid>>,
    generation: Generation,
    /// Leases of answers dropped since the verifier last took them, whose unspent credits
    /// go back to the daemon (at most [`MAX_DROPPED_LEASES`]; past it, they stay spent).
    dropped: Vec<Arc<Lease>>,
}

/// How many dropped leases wait for their credits to be given back.
const MAX_DROPPED_LEASES: usize = 10_000;

/// The cache: valid answers indexed by key and by user, refusals on their own.
#[derive(Debug)]
pub(super) struct Cache {
    entries: RwLock<Entries>,
    max_entries: usize,
    /// Refusals, bounded apart from valid answers. Changed only under the `entries` write
    /// lock, so that the generation check covers them; read without it.
    negative: quick_cache::sync::Cache<Digest, Negative>,
    max_refusals: usize,
}

impl Cache {
    /// A cache of at most `max_entries` valid answers and about `max_refusals` refusals.
    pub(super) fn new(max_entries: usize, max_refusals: usize) -> Cache {
        Cache {
            entries: RwLock::default(),
            max_entries,
            negative: quick_cache::sync::Cache::new(max_refusals.max(1)),
            max_refusals,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for `digest` at `now`, if it is still good.
    pub(super) fn get(&self, digest: &Digest, now: OffsetDateTime) -> Option<Cached> {
        let entries = self.read();
        if let Some(positive) = entries.positive.get(digest) {
            return Some(Cached::Valid(positive.clone()));
        }
        drop(entries);
        let negative = self.negative.get(digest)?;
        (negative.until > now).then_some(Cached::Refused(negative.error))
    }

    /// The generation to pass to [`Cache::insert_valid`] and [`Cache::insert_refused`]:
    /// read it before asking the daemon.
    pub(super) fn generation(&self) -> Generation {
        self.read().generation
    }

    /// Remembers a valid answer, unless an invalidation happened since `generation`.
    pub(super) fn insert_valid(&self, digest: Digest, mut entry: Positive, generation: Generation) {
        let mut entries = self.write();
        if entries.generation.all != generation.all || self.max_entries == 0 {
            return;
        }
        // Requests of a key not cached yet each ask the daemon, and each answer lands here:
        // the entry's lease, which the daemon may have granted a slice to meanwhile, is
        // kept (no invalidation came since `generation`, so its limits are the same), else
        // that slice would be void and the key admit less than its limit.
        if let (Some(_), Some(kept)) = (
            &entry.lease,
            entries.positive.get(&digest).and_then(|p| p.lease.clone()),
        ) {
            entry.lease = Some(kept);
        }
        let (key_id, user_id) = (entry.principal.key_id, entry.principal.user_id);
        if entries.positive.len() >= self.max_entries && !entries.positive.contains_key(&digest) {
            // Make room: an arbitrary entry (the map's iteration order is its hash order,
            // and digests are random).
            if let Some(victim) = entries.positive.values().next().map(|p| p.principal.key_id) {
                entries.remove_key(victim);
            }
        }
        self.negative.remove(&digest);
        if let Some(old) = entries.by_key.insert(key_id, digest)
            && old != digest
        {
            let replaced = entries.positive.remove(&old);
            entries.drop_lease(replaced);
        }
        entries.by_user.entry(user_id).or_default().insert(key_id);
        let replaced = entries.positive.insert(digest, entry);
        entries.drop_lease(replaced);
    }

    /// Remembers a refusal (`entry`, if any) until its `until`, unless an invalidation that
    /// may admit a key ([`Effect::MayAdmit`]) happened since `generation`; forgets the valid
    /// answer for the same text in any
    /// case: the daemon's newer word, which must not give way to it when trust comes back
    /// (a stream that lags hands trust back before the change that refused the key).
    pub(super) fn insert_refused(
        &self,
        digest: Digest,
        entry: Option<Negative>,
        generation: Generation,
    ) {
        let mut entries = self.write();
        entries.remove_digest(&digest);
        let Some(entry) = entry else { return };
        if entries.generation.widened != generation.widened || self.max_refusals == 0 {
            return;
        }
        // Past the bound, S3-FIFO evicts the refusals seen once (a scan of random keys)
        // before those presented again.
        self.negative.insert(digest, entry);
        drop(entries);
    }

    /// Forgets one valid answer (it expired, or outlived `cache_ttl`).
    pub(super) fn forget(&self, digest: &Digest) {
        self.write().remove_digest(digest);
    }

    /// Drops what a change makes stale: the valid answers in its `scope`, and, for a
    /// change that may admit a key ([`Effect::MayAdmit`]), every refusal (enabling a key
    /// or a user, or importing a key, must take effect at once, and a refusal does not say
    /// which key it was about).
    pub(super) fn invalidate(&self, scope: Scope, effect: Effect) {
        if scope == Scope::Created && effect == Effect::AdmitsNone {
            return;
        }
        let mut entries = self.write();
        if effect == Effect::MayAdmit {
            entries.generation.widened += 1;
            self.negative.clear();
        }
        match scope {
            // Nothing valid cached or in flight can be about a new record.
            Scope::Created => return,
            Scope::Key(key_id) => entries.remove_key(key_id),
            Scope::User(user_id) => {
                for key_id in entries.by_user.remove(&user_id).unwrap_or_default() {
                    if let Some(digest) = entries.by_key.remove(&key_id) {
                        let removed = entries.positive.remove(&digest);
                        entries.drop_lease(removed);
                    }
                }
            }
            Scope::All => {
                let removed: Vec<Positive> = entries
                    .positive
                    .drain()
                    .map(|(_, positive)| positive)
                    .collect();
                for positive in removed {
                    entries.drop_lease(Some(positive));
                }
                entries.by_key.clear();
                entries.by_user.clear();
            }
        }
        // Under the same lock: no reader sees the answers gone and the generation not moved.
        entries.generation.all += 1;
    }

    /// How many valid answers are cached.
    pub(super) fn len(&self) -> usize {
        self.read().positive.len()
    }

    /// The leases of the cached metered keys.
    pub(super) fn leases(&self) -> Vec<Arc<Lease>> {
        self.read()
            .positive
            .values()
            .filter_map(|p| p.lease.clone())
            .collect()
    }

    /// The leases of the answers dropped since the last call: their unspent credits are
    /// to be given back.
    pub(super) fn take_dropped_leases(&self) -> Vec<Arc<Lease>> {
        std::mem::take(&mut self.write().dropped)
    }

    /// How many refusals are cached.
    pub(super) fn refusals(&self) -> usize {
        self.negative.len()
    }
}

impl Entries {
    /// Removes the valid answer for `digest`, if any.
    fn remove_digest(&mut self, digest: &Digest) {
        if let Some(positive) = self.positive.get(digest) {
            let key_id = positive.principal.key_id;
            self.remove_key(key_id);
        }
    }

    fn remove_key(&mut self, key_id: Uuid) {
        let Some(digest) = self.by_key.remove(&key_id) else {
            return;
        };
        if let Some(positive) = self.positive.remove(&digest) {
            let user_id = positive.principal.user_id;
            if let Some(keys) = self.by_user.get_mut(&user_id) {
                keys.remove(&key_id);
                if keys.is_empty() {
                    self.by_user.remove(&user_id);
                }
            }
            self.drop_lease(Some(positive));
        }
    }

    /// Keeps the lease of a dropped answer, for its unspent credits to be given back.
    fn drop_lease(&mut self, dropped: Option<Positive>) {
        if let Some(lease) = dropped.and_then(|p| p.lease)
            && self.dropped.len() < MAX_DROPPED_LEASES
        {
            self.dropped.push(lease);
        }
    }
}

impl Scope {
    /// The scope of a change event: `*.create` → nothing, `key.*` → its key, `user.*` →
    /// its user, anything else (`group.*`, or an action added later) → everything.
    pub(super) fn of(action: &str, target: Option<Uuid>, user_id: Option<Uuid>) -> Scope {
        match (action.split_once('.'), target, user_id) {
            (Some(("key" | "user" | "group", "create")), _, _) => Scope::Created,
            (Some(("key", _)), Some(key), _) => Scope::Key(key),
            (Some(("user", _)), _, Some(user)) | (Some(("user", _)), Some(user), None) => {
                Scope::User(user)
            }
            _ => Scope::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{Env, PermissionSet, PrincipalInfo};
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn positive(key: u128, user: u128) -> Positive {
        Positive {
            principal: Principal::new(PrincipalInfo {
                key_id: Uuid::from_u128(key),
                prefix: "lk_live_000000000000".into(),
                key_name: "k".into(),
                env: Env::Live,
                user_id: Uuid::from_u128(user),
                user_name: "u".into(),
                tenant_id: None,
                organization_id: None,
                permissions: PermissionSet::parse(["orders:read"]).unwrap(),
                meta: None,
                meter: None,
            }),
            expires_at: None,
            expired: Arc::default(),
            fetched_at: NOW,
            lease: None,
        }
    }

    fn digest(n: u8) -> Digest {
        [n; 32]
    }

    fn cached(cache: &Cache, n: u8) -> bool {
        matches!(cache.get(&digest(n), NOW), Some(Cached::Valid(_)))
    }

    #[test]
    fn the_digest_is_keyed_and_never_the_key() {
        let (a, b) = (SecretHasher::generate(), SecretHasher::generate());
        assert_eq!(a.digest("lk_live_x"), a.digest("lk_live_x"));
        assert_ne!(a.digest("lk_live_x"), b.digest("lk_live_x"));
        assert_ne!(
            a.digest("lk_live_x"),
            *blake3::hash(b"lk_live_x").as_bytes()
        );
        assert_eq!(format!("{a:?}"), "SecretHasher(<redacted>)");
    }

    #[test]
    fn events_drop_their_key_their_user_or_everything() {
        let cache = Cache::new(100, 100);
        let g = cache.generation();
        cache.insert_valid(digest(1), positive(1, 10), g);
        cache.insert_valid(digest(2), positive(2, 10), g);
        cache.insert_valid(digest(3), positive(3, 20), g);
        cache.insert_valid(digest(4), positive(4, 30), g);
        assert_eq!(cache.len(), 4);

        cache.invalidate(Scope::Created, Effect::MayAdmit);
        assert_eq!(cache.len(), 4);
        cache.invalidate(Scope::Key(Uuid::from_u128(3)), Effect::MayAdmit);
        assert!(!cached(&cache, 3) && cached(&cache, 1) && cached(&cache, 4));
        cache.invalidate(Scope::User(Uuid::from_u128(10)), Effect::MayAdmit);
        assert!(!cached(&cache, 1) && !cached(&cache, 2) && cached(&cache, 4));
        cache.invalidate(Scope::All, Effect::MayAdmit);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_refusal_replaces_the_valid_answer_for_the_same_text() {
        let revoked = revoked();
        let cache = Cache::new(100, 100);
        let g = cache.generation();
        for n in [1, 2] {
            cache.insert_valid(digest(n), positive(n.into(), 10), g);
        }
        cache.insert_refused(digest(1), Some(revoked.clone()), g);
        assert!(matches!(
            cache.get(&digest(1), NOW),
            Some(Cached::Refused(VerifyError::Revoked))
        ));
        assert!(cached(&cache, 2));
        // Even when the refusal itself is not kept (fetched before an invalidation).
        cache.insert_valid(digest(3), positive(3, 10), g);
        cache.invalidate(Scope::Key(Uuid::from_u128(9)), Effect::MayAdmit);
        cache.insert_refused(digest(3), Some(revoked), g);
        assert!(cache.get(&digest(3), NOW).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_answer_fetched_before_an_invalidation_is_not_inserted() {
        let cache = Cache::new(100, 100);
        let before = cache.generation();
        cache.invalidate(Scope::Key(Uuid::from_u128(1)), Effect::MayAdmit);
        cache.insert_valid(digest(1), positive(1, 10), before);
        assert!(!cached(&cache, 1));
        let refused = revoked();
        cache.insert_refused(digest(2), Some(refused.clone()), before);
        assert!(cache.get(&digest(2), NOW).is_none());
        cache.insert_refused(digest(2), Some(refused), cache.generation());
        assert!(matches!(
            cache.get(&digest(2), NOW),
            Some(Cached::Refused(VerifyError::Revoked))
        ));
        assert!(
            cache
                .get(&digest(2), NOW + time::Duration::SECOND)
                .is_none()
        );
        // Any change but a creation drops refusals.
        cache.invalidate(Scope::Key(Uuid::from_u128(9)), Effect::MayAdmit);
        assert!(cache.get(&digest(2), NOW).is_none());
    }

    /// A metered key's answer, with a lease of nothing granted yet.
    fn metered(key: u128) -> Positive {
        let limit = latchkey_core::LimitState {
            name: "default".to_owned(),
            limit: Some(60),
            window_seconds: Some(3_600),
            remaining: 60,
            reset_seconds: None,
        };
        let lease = Lease::new(&[limit], Uuid::from_u128(key));
        Positive {
            lease: Some(Arc::new(lease)),
            ..positive(key, 10)
        }
    }

    fn lease_of(cache: &Cache, n: u8) -> Arc<Lease> {
        match cache.get(&digest(n), NOW) {
            Some(Cached::Valid(Positive {
                lease: Some(lease), ..
            })) => lease,
            other => panic!("no lease cached: {other:?}"),
        }
    }

    /// Requests of a key not cached yet each ask the daemon, and their answers land one
    /// after another: the lease the first one brought (which the daemon may have granted
    /// a slice of the limit to meanwhile) stays, else that slice is void and the key admits
    /// less than its limit.
    #[test]
    fn later_answers_for_a_cached_key_keep_its_lease() {
        let cache = Cache::new(100, 100);
        cache.insert_valid(digest(1), metered(1), cache.generation());
        let first = lease_of(&cache, 1);
        for _ in 0..3 {
            cache.insert_valid(digest(1), metered(1), cache.generation());
            assert!(Arc::ptr_eq(&lease_of(&cache, 1), &first));
        }
        // Once the key changed, the lease of its next answer is a new one.
        cache.invalidate(Scope::Key(Uuid::from_u128(1)), Effect::MayAdmit);
        cache.insert_valid(digest(1), metered(1), cache.generation());
        assert!(!Arc::ptr_eq(&lease_of(&cache, 1), &first));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = Cache::new(3, 3);
        for n in 0..10u8 {
            cache.insert_valid(digest(n), positive(u128::from(n), 1), cache.generation());
            assert!(cache.len() <= 3);
            assert!(cached(&cache, n));
        }
        let entries = cache.read();
        assert_eq!(entries.by_key.len(), 3);
        assert_eq!(entries.by_user[&Uuid::from_u128(1)].len(), 3);
    }

    fn refusal() -> Negative {
        Negative {
            error: VerifyError::Invalid,
            until: NOW + time::Duration::MINUTE,
        }
    }

    /// A revocation, kept for a second.
    fn revoked() -> Negative {
        Negative {
            error: VerifyError::Revoked,
            until: NOW + time::Duration::SECOND,
        }
    }

    fn refused(cache: &Cache, digest: &Digest) -> bool {
        matches!(cache.get(digest, NOW), Some(Cached::Refused(_)))
    }

    /// A digest per number, spread over all bytes as real digests are.
    fn scan_digest(n: u32) -> Digest {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn refusals_never_evict_valid_answers() {
        let cache = Cache::new(3, 100);
        for n in 0..3u8 {
            cache.insert_valid(digest(n), positive(u128::from(n), 1), cache.generation());
        }
        for n in 0..10_000 {
            cache.insert_refused(scan_digest(n), Some(refusal()), cache.generation());
        }
        assert_eq!(cache.len(), 3);
        assert!((0..3).all(|n| cached(&cache, n)));
    }

    #[test]
    fn a_full_refusal_cache_keeps_most_entries_and_its_repeated_ones() {
        const BOUND: usize = 1_000;
        let cache = Cache::new(10, BOUND);
        // A client that retries its revoked key, between the keys of a scan.
        let retried = digest(200);
        cache.insert_refused(retried, Some(refusal()), cache.generation());
        for n in 0..(10 * BOUND as u32) {
            cache.insert_refused(scan_digest(n), Some(refusal()), cache.generation());
            if n % 50 == 0 {
                assert!(refused(&cache, &retried), "evicted after {n} scan entries");
            }
            // Never wiped wholesale: once full, it stays about full.
            if n as usize >= BOUND {
                let held = cache.refusals();
                assert!((BOUND / 2..=BOUND + BOUND / 10).contains(&held), "{held}");
            }
        }
        assert!(refused(&cache, &retried));
    }

    #[test]
    fn scopes_of_actions() {
        let (k, u) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        assert_eq!(Scope::of("key.create", k, u), Scope::Created);
        assert_eq!(Scope::of("user.create", u, u), Scope::Created);
        assert_eq!(Scope::of("group.create", k, None), Scope::Created);
        assert_eq!(Scope::of("key.revoke", k, u), Scope::Key(k.unwrap()));
        assert_eq!(Scope::of("user.update", u, u), Scope::User(u.unwrap()));
        assert_eq!(Scope::of("user.delete", u, None), Scope::User(u.unwrap()));
        assert_eq!(Scope::of("group.update", k, None), Scope::All);
        assert_eq!(Scope::of("tenant.merge", k, u), Scope::All);
        assert_eq!(Scope::of("key.revoke", None, u), Scope::All);
    }

    /// A revocation or a deletion leaves the refusals (and one fetched before it is
    /// kept): it refuses no key less. Anything that may admit a key drops them.
    #[test]
    fn refusals_outlive_the_changes_that_only_refuse_more() {
        let revoked = revoked();
        let cache = Cache::new(100, 100);
        let before = cache.generation();
        cache.insert_refused(digest(1), Some(revoked.clone()), before);
        cache.insert_valid(digest(2), positive(2, 10), before);
        let admit_none = [
            "key.revoke",
            "key.delete",
            "user.delete",
            "user.revoke_keys",
            "user.keys_revoked",
            "group.delete",
            "user.create",
            "group.create",
        ];
        for action in admit_none {
            let scope = Scope::of(action, Some(Uuid::from_u128(2)), Some(Uuid::from_u128(10)));
            cache.invalidate(scope, Effect::of(action));
        }
        assert!(refused(&cache, &digest(1)));
        assert!(!cached(&cache, 2), "a valid answer still goes");
        // Fetched before those changes: a refusal is still right, a valid answer not.
        cache.insert_refused(digest(3), Some(revoked.clone()), before);
        assert!(refused(&cache, &digest(3)));
        cache.insert_valid(digest(4), positive(4, 10), before);
        assert!(!cached(&cache, 4));
        for action in [
            "key.update",
            "user.update",
            "key.rotate",
            "group.update",
            "x.y",
        ] {
            assert_eq!(Effect::of(action), Effect::MayAdmit, "{action}");
        }
        cache.invalidate(Scope::Key(Uuid::from_u128(9)), Effect::of("key.update"));
        assert!(!refused(&cache, &digest(1)) && !refused(&cache, &digest(3)));
        cache.insert_refused(digest(5), Some(revoked.clone()), before);
        assert!(!refused(&cache, &digest(5)), "fetched before an enabling");
        // A new key may be a text refused before (deleted, then imported again): the
        // refusals go, the valid answers stay.
        let now = cache.generation();
        cache.insert_valid(digest(6), positive(6, 10), now);
        cache.insert_refused(digest(7), Some(revoked.clone()), now);
        let created = Scope::of("key.create", Some(Uuid::from_u128(7)), None);
        cache.invalidate(created, Effect::of("key.create"));
        assert!(!refused(&cache, &digest(7)) && cached(&cache, 6));
        cache.insert_refused(digest(8), Some(revoked), now);
        assert!(!refused(&cache, &digest(8)), "fetched before the creation");
        cache.insert_valid(digest(9), positive(9, 10), now);
        assert!(cached(&cache, 9), "a valid answer is about another key");
    }
}
