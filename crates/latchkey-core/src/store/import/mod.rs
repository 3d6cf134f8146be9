//! Keys issued elsewhere: imported in bulk, found by their full text, re-hashed at their
//! first verification when they came as SHA-256.
//!
//! # What is accepted
//!
//! - A full key (`{"key": "sk_live_…"}`): any text of 16 to 512 visible ASCII characters
//!   (no spaces) that is not a latchkey key. Stored as latchkey's keyed BLAKE3 of the
//!   whole text.
//! - A SHA-256 (`{"sha256": "<64 hex>", "prefix": "<their display prefix>"}`), as Unkey
//!   and others store keys: the hex SHA-256 of the key's UTF-8 text. Stored as given
//!   until the key is first presented; then re-hashed with keyed BLAKE3 and the SHA-256
//!   forgotten.
//!
//! Each becomes an ordinary key record (with a latchkey public id of its own, so it lists,
//! revokes, rotates and is audited like any key), plus one index entry from the hash of
//! its text to that id, and one from the keyed hash of its text's SHA-256 (in either form,
//! kept past the re-hash until the key is deleted: [`layout::imported_seen`]) that refuses
//! the same text imported again, as a full key or as a SHA-256. Native keys never look at the index: only a text that does not
//! parse as a latchkey key, in a store that holds imported keys, is looked up there.

mod shown;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{Backend, Direction, KeyRange};
use super::controls::ControlsRecord;
use super::keys::KeyRecord;
use super::tx::{Invalidate, Tx, TxResult, abort};
use super::usage::{Usage, Use};
use super::users::user_grants_in;
use super::{Store, layout};
use crate::actor::Actor;
use crate::controls::check_meta;
use crate::error::{Conflict, Entity, StoreError};
use crate::hash::SecretHash;
use crate::key::{ApiKey, Env, Prefix, PublicId};
use crate::limits::{MAX_IMPORTED_KEY_LEN, MIN_IMPORTED_KEY_LEN, check_permissions};
use crate::model::{Key, User, validate_text};
use crate::permission::PermissionSet;
use crate::verify::{Cold, Principal, VerifyError};
use shown::{check_beside, check_hides, check_not_native, check_prefix, derived_prefix};

/// The shortest and longest full key text accepted.
const KEY_LEN: std::ops::RangeInclusive<usize> = MIN_IMPORTED_KEY_LEN..=MAX_IMPORTED_KEY_LEN;

/// Where an item of an import goes; see [`Store::import_target`].
struct Target {
    hash: [u8; 32],
    index: Vec<u8>,
    /// The entry of its SHA-256, as a SHA-256 import not yet verified has it.
    sha_index: Vec<u8>,
    /// The keyed hash of its SHA-256, and its entry ([`layout::imported_seen`]).
    seen: [u8; 32],
    seen_index: Vec<u8>,
    prefix: String,
    public: PublicId,
}

/// The secret part of a key to import.
#[derive(Clone, PartialEq, Eq)]
pub enum ImportSecret {
    /// The key's full text.
    Full(String),
    /// The SHA-256 of the key's text.
    Sha256([u8; 32]),
}

impl std::fmt::Debug for ImportSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportSecret::Full(_) => f.write_str("Full(<redacted>)"),
            ImportSecret::Sha256(_) => f.write_str("Sha256(<redacted>)"),
        }
    }
}

/// A key issued elsewhere, to import.
#[derive(Debug, Clone)]
pub struct ImportKey {
    /// Its text, or the SHA-256 of its text.
    pub secret: ImportSecret,
    /// The display prefix it had (shown in lists); derived from a full key when absent.
    pub prefix: Option<String>,
    /// A name (default `imported`).
    pub name: Option<String>,
    /// When it stops authenticating; must be in the future.
    pub expires_at: Option<OffsetDateTime>,
    /// Narrows its user's permissions, as for any key.
    pub scopes: Option<PermissionSet>,
    /// A JSON object (at most 4 KiB) handed to the app in `principal.meta`, as a key
    /// created here carries.
    pub meta: Option<serde_json::Value>,
}

impl ImportSecret {
    /// Reads a full key's text: refused when it could not be one (length, characters) or
    /// is a latchkey key (those keep working in their own store only).
    pub fn full(text: &str) -> Result<ImportSecret, StoreError> {
        if !KEY_LEN.contains(&text.len()) {
            return Err(StoreError::invalid(
                "key",
                format!("must be {MIN_IMPORTED_KEY_LEN} to {MAX_IMPORTED_KEY_LEN} characters"),
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StoreError::invalid(
                "key",
                "must be visible ASCII characters, without spaces",
            ));
        }
        // A mistyped latchkey key (a wrong checksum, a character outside the alphabet) too:
        // imported, it would authenticate as it is (imported keys are found by their hash,
        // checksum or not) and `latchkey scan`, which trusts the checksum, would never
        // report it found in a log.
        if ApiKey::has_its_shape(text) {
            return Err(StoreError::invalid(
                "key",
                "is a latchkey key, or one with a character wrong: move a latchkey store with backup and restore",
            ));
        }
        Ok(ImportSecret::Full(text.to_owned()))
    }

    /// Reads a hex SHA-256 (64 hex digits, either case).
    pub fn sha256(hex: &str) -> Result<ImportSecret, StoreError> {
        // The hex crate takes digits only (`u8::from_str_radix` took a `+` sign too, so one
        // digest had several spellings).
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex, &mut bytes)
            .map_err(|_| StoreError::invalid("sha256", "must be 64 hexadecimal digits"))?;
        Ok(ImportSecret::Sha256(bytes))
    }
}

/// An item refused before the import's transaction: the field at fault and why. Kept
/// apart from [`StoreError`], which is not `Clone`, because a transaction may run again.
#[derive(Debug, Clone, Copy)]
struct Refused {
    field: &'static str,
    reason: &'static str,
}

impl From<Refused> for StoreError {
    fn from(refused: Refused) -> StoreError {
        StoreError::invalid(refused.field, refused.reason)
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Store {
    /// Imports keys issued elsewhere for a user, in one transaction: each item is imported
    /// or refused on its own (a bad item never stops the others). The caller must cover
    /// what each key can do, as for [`Store::create_key`].
    ///
    /// Fails as a whole only when the user does not exist, the caller may not act for it,
    /// or storage fails.
    pub fn import_keys(
        &self,
        actor: &Actor,
        user_id: Uuid,
        items: &[ImportKey],
    ) -> Result<Vec<Result<Key, StoreError>>, StoreError> {
        // Hashed once, and a public id drawn for each, outside the transaction (which may
        // run again), so that its point reads are known before it starts: read in one go.
        let targets: Vec<Result<Target, Refused>> =
            items.iter().map(|item| self.import_target(item)).collect();
        let outcome = self.write(actor, |tx| {
            let Some(user) = tx
                .get::<User>(&layout::user(user_id))?
                .filter(|u| actor.sees(u))
            else {
                return abort(StoreError::not_found(Entity::User, user_id));
            };
            let ahead: Vec<Vec<u8>> = targets
                .iter()
                .flatten()
                .flat_map(|t| {
                    [
                        t.index.clone(),
                        t.sha_index.clone(),
                        t.seen_index.clone(),
                        layout::key(&t.public),
                    ]
                })
                .collect();
            tx.prefetch(&ahead)?;
            let grants = user_grants_in(tx, &user)?;
            let mut results = Vec::with_capacity(items.len());
            for (item, target) in items.iter().zip(&targets) {
                let effective = PermissionSet::effective(&grants, [], item.scopes.as_ref());
                let result = match actor.ensure_covers(&effective) {
                    Ok(()) => self.import_one(tx, actor, &user, item, target)?,
                    Err(e) => Err(e),
                };
                results.push(result);
            }
            Ok(results)
        })?;
        if outcome.iter().any(Result::is_ok) {
            self.inner.has_imports.store(true, Ordering::Release);
        }
        Ok(outcome)
    }

    /// Where an item goes: its stored hash, its index entry, its display prefix and a
    /// public id of its own (so that it is found, listed and revoked like any other key).
    fn import_target(&self, item: &ImportKey) -> Result<Target, Refused> {
        let (hash, index, prefix, digest) = match &item.secret {
            ImportSecret::Full(text) => {
                let hash = self.inner.hash_key.hash(text).to_bytes();
                if let Some(prefix) = &item.prefix {
                    check_hides(prefix, text)?;
                }
                let prefix = item
                    .prefix
                    .clone()
                    .unwrap_or_else(|| derived_prefix(text, self.inner.prefix.as_str()));
                (hash, layout::imported_blake3(&hash), prefix, sha256(text))
            }
            ImportSecret::Sha256(digest) => {
                let Some(prefix) = item.prefix.clone() else {
                    return Err(Refused {
                        field: "prefix",
                        reason: "is required with sha256: the display prefix the key had",
                    });
                };
                (*digest, layout::imported_sha256(digest), prefix, *digest)
            }
        };
        check_prefix(&prefix)?;
        // A derived prefix never takes the native form (see `derived_prefix`).
        if item.prefix.is_some() {
            check_not_native(&prefix, self.inner.prefix.as_str())?;
        }
        check_beside(item)?;
        let seen = self.seen_hash(&digest);
        Ok(Target {
            hash,
            index,
            sha_index: layout::imported_sha256(&digest),
            seen,
            seen_index: layout::imported_seen(&seen),
            prefix,
            public: ApiKey::generate(&Prefix::default(), Env::Live).id(),
        })
    }

    /// One item inside the import's transaction: `Ok(Err(_))` refuses the item alone.
    fn import_one(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        user: &User,
        item: &ImportKey,
        target: &Result<Target, Refused>,
    ) -> TxResult<Result<Key, StoreError>> {
        let name = item.name.as_deref().unwrap_or("imported");
        let checked = validate_text("name", name, 1, 128)
            .and_then(|()| {
                item.scopes
                    .as_ref()
                    .map_or(Ok(()), |s| check_permissions("scopes", s))
            })
            .and_then(|()| item.meta.as_ref().map_or(Ok(()), check_meta));
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        if item.expires_at.is_some_and(|at| at <= tx.now) {
            return Ok(Err(StoreError::invalid(
                "expires_at",
                "must be in the future",
            )));
        }
        let Target {
            hash,
            index,
            sha_index,
            seen,
            seen_index,
            prefix,
            public,
        } = match target {
            Ok(target) => target,
            Err(refused) => return Ok(Err((*refused).into())),
        };
        // Its own entry, its SHA-256's (a SHA-256 import not yet verified, which a full
        // import has none of) and the one kept past the re-hash: one text, one key.
        let mut taken = false;
        for entry in [index, sha_index, seen_index] {
            if let Some(named) = tx.get_raw(entry)? {
                if names_a_key(tx, &named)? {
                    taken = true;
                } else {
                    // Left by an older build's deletion, which knows no such entry (upgrade
                    // hunt L3: the text could never be imported again): it names no key.
                    tx.remove(entry)?;
                }
            }
        }
        if taken {
            return Ok(Err(StoreError::Conflict(Conflict::AlreadyImported {
                prefix: prefix.clone(),
            })));
        }
        if tx.get_raw(&layout::key(public))?.is_some() {
            return abort(StoreError::storage("public id collision; try again"));
        }
        let record = KeyRecord {
            id: layout::key_uuid(public, tx.now),
            public_id: public.as_str().to_owned(),
            prefix: prefix.clone(),
            name: name.to_owned(),
            description: Some("imported".into()),
            user_id: user.id,
            env: Env::Live,
            // Never stronger than whoever imported it, as for a key made here.
            scopes: actor.cap_scopes(item.scopes.as_ref()),
            expires_at: item.expires_at,
            enabled: true,
            revoked_at: None,
            created_at: super::jobs::creation_time_in(tx, user.id, tx.now)?,
            created_by: actor.key_id(),
            rotated_from: None,
            hash: *hash,
            usage: Usage::default(),
        };
        let controls = imported_controls(item);
        if !controls.is_empty() {
            tx.put(&layout::key_controls(public), &controls)?;
        }
        tx.put_raw(index, public.as_str().as_bytes())?;
        tx.put_raw(seen_index, public.as_str().as_bytes())?;
        tx.put_raw(&layout::imported_seen_by(public), seen)?;
        self.insert_key_record(tx, *public, &record)?;
        Ok(Ok(record.view(tx.now, Usage::default(), &controls, 0)))
    }

    /// The keyed hash under which an imported key is kept once imported, by its text's
    /// SHA-256 ([`layout::imported_seen`]).
    fn seen_hash(&self, digest: &[u8; 32]) -> [u8; 32] {
        self.inner.hash_key.hash(&hex::encode(digest)).to_bytes()
    }

    /// Verifies a text that is not a latchkey key against the imported keys: `None` when
    /// the store holds none, or the text could not be one, so a malformed key costs
    /// nothing more than before in a store without imports.
    pub fn verify_imported(&self, presented: &str) -> Option<Result<Principal, VerifyError>> {
        if !self.may_be_imported(presented) {
            return None;
        }
        Some(self.verify_imported_text(presented, Use::Counted))
    }

    /// Whether [`Store::verify_imported`] would look `presented` up (and so read the
    /// storage) rather than answer `None` at once: the store holds imported keys and the
    /// text has the length of one.
    pub fn may_be_imported(&self, presented: &str) -> bool {
        self.holds_imported_keys() && KEY_LEN.contains(&presented.len())
    }

    /// Whether this store holds any imported key (one imported here, or seen in the change
    /// feed of the store it follows): only then does a text that is not a latchkey key get
    /// looked up.
    pub fn holds_imported_keys(&self) -> bool {
        self.inner.has_imports.load(Ordering::Acquire)
    }

    pub(super) fn verify_imported_text(
        &self,
        presented: &str,
        counted: Use,
    ) -> Result<Principal, VerifyError> {
        let unavailable = |e: StoreError| VerifyError::Unavailable(e.to_string());
        // As a latchkey key's: on a shared database, the changes first when the others'
        // writes do not wait for this process.
        self.ready_to_verify(true)?;
        // Both hashes first, so a known and an unknown text cost the same.
        let blake = self.inner.hash_key.hash(presented);
        let digest = sha256(presented);
        let by_blake = self
            .inner
            .db
            .get(&layout::imported_blake3(&blake.to_bytes()));
        if let Some(public) = by_blake.map_err(unavailable)? {
            return self.verify_rehashed(&public, &blake, counted);
        }
        let by_sha = self.inner.db.get(&layout::imported_sha256(&digest));
        let Some(public) = by_sha.map_err(unavailable)? else {
            // A re-hash (by another thread or process) moves the index entry from the
            // SHA-256 to the keyed BLAKE3 in one transaction: it may have run between the
            // two reads, so a text found under neither is looked for once more.
            let by_blake = self
                .inner
                .db
                .get(&layout::imported_blake3(&blake.to_bytes()));
            return match by_blake.map_err(unavailable)? {
                Some(public) => self.verify_rehashed(&public, &blake, counted),
                None => Err(VerifyError::Invalid),
            };
        };
        let principal = match self.verify_public(&public, &SecretHash::from_bytes(digest), counted)
        {
            // The index entry was read before a re-hash, the record after it: the record
            // holds the keyed BLAKE3 now, which only this text has too.
            Err(VerifyError::Invalid) => return self.verify_rehashed(&public, &blake, counted),
            answer => answer?,
        };
        // The text matched its SHA-256: from now on, only its keyed BLAKE3 is kept.
        if let Err(e) = self.rehash(&public, digest, blake) {
            crate::warn_limited!(error = %e, prefix = %principal.prefix, "could not re-hash an imported key; it keeps its SHA-256 until its next verification");
        }
        Ok(principal)
    }

    /// Verifies an imported key found under its keyed BLAKE3. The index holds this text's
    /// keyed hash, so the record does too: a cached entry that disagrees still holds the
    /// SHA-256 it had before a re-hash by another process (of a cluster) or thread, and the
    /// record is read again, once.
    fn verify_rehashed(
        &self,
        public: &[u8],
        blake: &SecretHash,
        counted: Use,
    ) -> Result<Principal, VerifyError> {
        match self.verify_public(public, blake, counted) {
            Err(VerifyError::Invalid) => {
                self.forget_cached(public);
                self.verify_public(public, blake, counted)
            }
            answer => answer,
        }
    }

    /// Verifies an imported key, found by its index entry, through the verify cache.
    fn verify_public(
        &self,
        public: &[u8],
        presented: &SecretHash,
        counted: Use,
    ) -> Result<Principal, VerifyError> {
        let id = std::str::from_utf8(public)
            .ok()
            .and_then(|p| PublicId::parse(p).ok())
            .ok_or(VerifyError::Invalid)?;
        let inner = &*self.inner;
        // Imported keys live in the cold part of the verify cache: only native keys are
        // recognised by tag.
        let entry = match inner.cache.cold(&id) {
            Some(entry) => entry,
            None => {
                let generation = inner.cache.generation();
                let loaded = self
                    .load_resolved(&id)
                    .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
                let entry = match loaded {
                    Some(resolved) => Cold::Imported(std::sync::Arc::new(resolved)),
                    None => Cold::Absent,
                };
                inner.cache.insert_cold(id, entry.clone(), generation);
                entry
            }
        };
        let entry = entry.imported().ok_or(VerifyError::Invalid)?;
        if !entry.hash.matches(presented) {
            return Err(VerifyError::Invalid);
        }
        let now = inner.clock.unix_nanos();
        let principal = entry.status(now)?.clone();
        if counted == Use::Counted {
            entry.usage.record(now);
        }
        Ok(principal)
    }

    /// Drops an imported key's entry from this process's verify cache.
    fn forget_cached(&self, public: &[u8]) {
        let id = std::str::from_utf8(public)
            .ok()
            .and_then(|p| PublicId::parse(p).ok());
        if let Some(id) = id {
            self.inner.cache.invalidate(Some(&id));
        }
    }

    /// Replaces an imported key's SHA-256 with its keyed BLAKE3, index entry included.
    fn rehash(&self, public: &[u8], digest: [u8; 32], blake: SecretHash) -> Result<(), StoreError> {
        let id = std::str::from_utf8(public)
            .ok()
            .and_then(|p| PublicId::parse(p).ok())
            .ok_or_else(|| StoreError::Corrupt("bad imported key index".into()))?;
        self.write(&Actor::system(), |tx| {
            let path = layout::key(&id);
            let Some(mut record) = tx.get::<KeyRecord>(&path)? else {
                return Ok(());
            };
            if record.hash != digest {
                // Another process re-hashed it first: this one's cached entry is stale.
                tx.invalidate(Invalidate::Key(id));
                return Ok(());
            }
            record.hash = blake.to_bytes();
            tx.put_key(&record)?;
            tx.remove(&layout::imported_sha256(&digest))?;
            tx.put_raw(&layout::imported_blake3(&record.hash), public)?;
            tx.invalidate(Invalidate::Key(id));
            Ok(())
        })
    }
}

/// An imported key's usage control, as a key created here with the same `meta` has: its
/// meta, nothing metered (an import takes no limits, credits or allowlist).
fn imported_controls(item: &ImportKey) -> ControlsRecord {
    ControlsRecord {
        version: 1,
        meta: item.meta.as_ref().map(serde_json::Value::to_string),
        ..ControlsRecord::default()
    }
}

/// Whether an import entry's value (a public id) names a key the store holds; one that
/// does not parse counts as naming one, so that nothing not understood is removed.
fn names_a_key(tx: &Tx<'_>, named: &[u8]) -> TxResult<bool> {
    let Some(id) = std::str::from_utf8(named)
        .ok()
        .and_then(|id| PublicId::parse(id).ok())
    else {
        return Ok(true);
    };
    Ok(tx.get_raw(&layout::key(&id))?.is_some())
}

/// Removes the entry that kept a deleted imported key's text from being imported again
/// ([`layout::imported_seen`]), so that it may be imported again. Nothing for other keys.
pub(super) fn forget_seen(tx: &Tx<'_>, public: &PublicId) -> TxResult<()> {
    let by = layout::imported_seen_by(public);
    let Some(seen) = tx.get_raw(&by)? else {
        return Ok(());
    };
    if let Ok(seen) = <[u8; 32]>::try_from(seen.as_slice()) {
        let entry = layout::imported_seen(&seen);
        if tx.get_raw(&entry)?.as_deref() == Some(public.as_str().as_bytes()) {
            tx.remove(&entry)?;
        }
    }
    tx.remove(&by)?;
    Ok(())
}

/// Whether a store holds imported keys (read once at open).
pub(super) fn any_imported(db: &Arc<dyn Backend>) -> Result<bool, StoreError> {
    for prefix in layout::IMPORTED {
        if db
            .first(&KeyRange::prefix(prefix), Direction::Forward)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_import_accepts() {
        assert!(ImportSecret::full("sk_live_0123456789abcdef").is_ok());
        assert!(ImportSecret::full("short").is_err());
        assert!(ImportSecret::full("has a space in it here").is_err());
        let native = ApiKey::generate(&Prefix::default(), Env::Live);
        assert!(ImportSecret::full(native.expose()).is_err());
        // Nor with its checksum broken, under any store prefix.
        let mut mistyped = native.expose().to_owned();
        let last = if mistyped.ends_with('A') { "B" } else { "A" };
        mistyped.replace_range(mistyped.len() - 1.., last);
        assert!(ApiKey::parse(&mistyped).is_err());
        assert!(ImportSecret::full(&mistyped).is_err());
        assert!(ImportSecret::full(&mistyped.replacen("lk_", "acme_", 1)).is_err());
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(
            ImportSecret::sha256(hex).unwrap(),
            ImportSecret::Sha256(sha256("test"))
        );
        assert!(ImportSecret::sha256(&hex[1..]).is_err());
        assert!(ImportSecret::sha256(&hex.replace('9', "g")).is_err());
        // One spelling per digest: no sign, no space.
        let signed: String = (0..32).map(|i| format!("+{:x}", i % 16)).collect();
        assert_eq!(signed.len(), 64);
        assert!(ImportSecret::sha256(&signed).is_err());
        assert!(ImportSecret::sha256(&format!(" {}", &hex[1..])).is_err());
    }
}
