//! Where each record lives in the one sled tree. Every key starts with a short namespace.
//!
//! | key                          | value                                  |
//! |------------------------------|----------------------------------------|
//! | `m:version`, `m:prefix`, `m:hash_key`, `m:seq`, `m:head`, `m:lineage` | store metadata |
//! | `g:<uuid>` / `gn:<name>`     | group JSON / group id                  |
//! | `u:<uuid>` / `un:<name>`     | user JSON / user id                    |
//! | `ut:<tenant>\0<uuid>` / `ug:<group uuid><uuid>` | empty: the user is in the tenant / the group (`user_index.rs`; `m:users_indexed`, the audit sequence number they are complete at) |
//! | `uc:<uuid>`                  | the user's rate limits, when it has any (`user_limits.rs`) |
//! | `k:<public id>`              | key record (secret hash, usage figures) |
//! | `kc:<public id>`             | the key's usage control, when it has any (`controls.rs`) |
//! | `kr:<public id>`             | the id of the key it was rotated to, once it was (`keys.rs`) |
//! | `a:<seq, big-endian u64>`    | audit event (also the change feed)     |
//! | `x:…`                        | key indexes: chunks of up to 16 sorted positions (`index.rs`, `chunks.rs`) |
//! | `m:n:<count>`, `m:expiry_mark`, `m:indexed`, `m:recount` | counts for `/metrics` (`counters.rs`), the expiry sweep's mark, the index version, counts to take again at the next open (`rebuild.rs`) |
//! | `j:<uuid>` / `ja:<uuid>` / `ur:<user uuid>` | background job / the key that asked for it / a user's revocation mark (`jobs.rs`) |
//! | `xb:<keyed BLAKE3>` / `xs:<SHA-256>` | an imported key's public id, by the hash of its text |
//! | `xh:<keyed BLAKE3 of its SHA-256>` / `kx:<public id>` | an imported key's public id, kept past its re-hash so its text is never imported twice / that entry's hash, to remove it with the key (`import.rs`) |
//! | `r:k:<public id>` / `r:u:<user uuid>` | on a shared database only: the key's / user's rate limits' shared GCRA state (`rate_state.rs`); not backed up |
//!
//! Values are postcard. UUIDs are the 16 raw bytes, so v7 ids keep records in creation order.
//!
//! **About three entries per key**: its record, its audit event, and its nine index
//! positions (ten with an expiry) packed up to 16 to a chunk with other keys' (~1 entry;
//! 298,480 entries for 100,000 keys rebuilt from the first layout), the price of list
//! pages that cost O(page + log n) at any depth (the README has the figures). sled's
//! resident memory grows with the number of entries, not their size: the first layout, one
//! entry per position, made eleven. A key's UUID embeds its public id ([`key_uuid`]), so an
//! index position, which ends with the UUID, leads to the record without one more entry.

use uuid::Uuid;

use crate::key::PublicId;

pub(crate) const VERSION: &[u8] = b"m:version";
pub(crate) const PREFIX: &[u8] = b"m:prefix";
pub(crate) const HASH_KEY: &[u8] = b"m:hash_key";
pub(crate) const SEQ: &[u8] = b"m:seq";
pub(crate) const HEAD: &[u8] = b"m:head";
/// The store's lineage (16 raw UUID bytes): new at creation and at every restore.
pub(crate) const LINEAGE: &[u8] = b"m:lineage";

pub(crate) const GROUPS: &[u8] = b"g:";
pub(crate) const USERS: &[u8] = b"u:";
pub(crate) const KEYS: &[u8] = b"k:";
pub(crate) const AUDIT: &[u8] = b"a:";
/// The shared state of rate limits (`rate_state.rs`): written only on a database several
/// processes share, and left out of backups.
pub(crate) const RATES: &[u8] = b"r:";
/// The two indexes of imported keys (not `x:`, the list indexes).
pub(crate) const IMPORTED: [&[u8]; 2] = [b"xb:", b"xs:"];

/// The schema written by this version.
pub(crate) const SCHEMA_VERSION: &[u8] = b"1";
/// [`SCHEMA_VERSION`] as a number.
pub(crate) const SCHEMA: u32 = 1;

fn join(ns: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ns.len() + rest.len());
    out.extend_from_slice(ns);
    out.extend_from_slice(rest);
    out
}

pub(crate) fn group(id: Uuid) -> Vec<u8> {
    join(GROUPS, id.as_bytes())
}

pub(crate) fn group_name(name: &str) -> Vec<u8> {
    join(b"gn:", name.as_bytes())
}

pub(crate) fn user(id: Uuid) -> Vec<u8> {
    join(USERS, id.as_bytes())
}

/// A user's rate limits (`user_limits.rs`), beside its record.
pub(crate) fn user_controls(id: Uuid) -> Vec<u8> {
    join(b"uc:", id.as_bytes())
}

pub(crate) fn user_name(name: &str) -> Vec<u8> {
    join(b"un:", name.as_bytes())
}

pub(crate) fn key(id: &PublicId) -> Vec<u8> {
    join(KEYS, id.as_bytes())
}

/// A key's usage control (`controls.rs`): meta, rate limits, credits, allowlist.
pub(crate) fn key_controls(id: &PublicId) -> Vec<u8> {
    join(b"kc:", id.as_bytes())
}

/// The id of the key a key was rotated to (16 raw bytes): a key rotates once.
pub(crate) fn key_successor(id: &PublicId) -> Vec<u8> {
    join(b"kr:", id.as_bytes())
}

/// The shared state of a key's rate limits (`rate_state.rs`).
pub(crate) fn key_rates(id: &PublicId) -> Vec<u8> {
    join(b"r:k:", id.as_bytes())
}

/// The shared state of a user's rate limits (`rate_state.rs`).
pub(crate) fn user_rates(id: Uuid) -> Vec<u8> {
    join(b"r:u:", id.as_bytes())
}

/// A key's record id: a UUID v7 of its creation time whose 74 random bits carry its
/// public id (a number below 62^12 < 2^72), so either finds the other without an index.
pub(crate) fn key_uuid(public: &PublicId, at: time::OffsetDateTime) -> Uuid {
    let n = public.to_number();
    let millis = (at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u128;
    let rand_a = (n >> 62) & 0xFFF;
    let rand_b = n & ((1 << 62) - 1);
    Uuid::from_u128((millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)
}

/// The public id carried by a key's record id; `None` for a UUID that is not one.
pub(crate) fn public_id_of(id: Uuid) -> Option<PublicId> {
    let bits = id.as_u128();
    if id.get_version_num() != 7 || (bits >> 62) & 0b11 != 0b10 {
        return None;
    }
    let n = (((bits >> 64) & 0xFFF) << 62) | (bits & ((1 << 62) - 1));
    PublicId::from_number(n)
}

/// An imported key, by the keyed BLAKE3 of its full text.
pub(crate) fn imported_blake3(hash: &[u8; 32]) -> Vec<u8> {
    join(b"xb:", hash)
}

/// An imported key not yet verified, by the SHA-256 it was imported with.
pub(crate) fn imported_sha256(digest: &[u8; 32]) -> Vec<u8> {
    join(b"xs:", digest)
}

/// An imported key, by the keyed BLAKE3 of the hex SHA-256 of its text: written at import
/// in either form and kept until the key is deleted, so that one text is never imported
/// twice, however it came (full, SHA-256, re-hashed since). Keyed, so that the SHA-256
/// itself is still forgotten at the re-hash.
pub(crate) fn imported_seen(hash: &[u8; 32]) -> Vec<u8> {
    join(b"xh:", hash)
}

/// The hash under which [`imported_seen`] holds an imported key, to remove it with the key.
pub(crate) fn imported_seen_by(id: &PublicId) -> Vec<u8> {
    join(b"kx:", id.as_bytes())
}

pub(crate) fn audit(seq: u64) -> Vec<u8> {
    join(AUDIT, &seq.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_uuid_carries_its_public_id_and_time() {
        let at = time::macros::datetime!(2026-06-01 12:00 UTC);
        for id in ["000000000000", "zzzzzzzzzzzz", "4fT9kQ2mX8pZ"] {
            let public = PublicId::parse(id).unwrap();
            let uuid = key_uuid(&public, at);
            assert_eq!(uuid.get_version_num(), 7);
            assert_eq!(public_id_of(uuid), Some(public));
            let (secs, _) = uuid.get_timestamp().unwrap().to_unix();
            assert_eq!(secs as i64, at.unix_timestamp());
        }
        assert_eq!(public_id_of(Uuid::nil()), None);
        assert_eq!(public_id_of(Uuid::max()), None);
    }
}
