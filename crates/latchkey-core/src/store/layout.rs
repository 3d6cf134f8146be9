//! Where each record lives in the one sled tree. Every key starts with a short namespace.
//!
//! | key                          | value                                  |
//! |------------------------------|----------------------------------------|
//! | `m:version`, `m:prefix`, `m:hash_key`, `m:seq`, `m:head` | store metadata |
//! | `g:<uuid>` / `gn:<name>`     | group JSON / group id                  |
//! | `u:<uuid>` / `un:<name>`     | user JSON / user id                    |
//! | `k:<public id>`              | key record JSON (with the secret hash) |
//! | `ki:<uuid>`                  | the key's public id                    |
//! | `uk:<user uuid><key uuid>`   | empty: a user's keys                   |
//! | `us:<key uuid>`              | usage figures JSON                     |
//! | `a:<seq, big-endian u64>`    | audit event JSON (also the change feed) |
//!
//! UUIDs are the 16 raw bytes, so v7 ids keep records in creation order.

use uuid::Uuid;

use crate::key::PublicId;

pub(crate) const VERSION: &[u8] = b"m:version";
pub(crate) const PREFIX: &[u8] = b"m:prefix";
pub(crate) const HASH_KEY: &[u8] = b"m:hash_key";
pub(crate) const SEQ: &[u8] = b"m:seq";
pub(crate) const HEAD: &[u8] = b"m:head";

pub(crate) const GROUPS: &[u8] = b"g:";
pub(crate) const USERS: &[u8] = b"u:";
pub(crate) const KEYS: &[u8] = b"k:";
pub(crate) const AUDIT: &[u8] = b"a:";

/// The schema written by this version.
pub(crate) const SCHEMA_VERSION: &[u8] = b"1";

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

pub(crate) fn user_name(name: &str) -> Vec<u8> {
    join(b"un:", name.as_bytes())
}

pub(crate) fn key(id: &PublicId) -> Vec<u8> {
    join(KEYS, id.as_bytes())
}

pub(crate) fn key_index(id: Uuid) -> Vec<u8> {
    join(b"ki:", id.as_bytes())
}

pub(crate) fn user_keys(user: Uuid) -> Vec<u8> {
    join(b"uk:", user.as_bytes())
}

pub(crate) fn user_key(user: Uuid, key: Uuid) -> Vec<u8> {
    let mut out = user_keys(user);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn usage(key: Uuid) -> Vec<u8> {
    join(b"us:", key.as_bytes())
}

pub(crate) fn audit(seq: u64) -> Vec<u8> {
    join(AUDIT, &seq.to_be_bytes())
}

/// The UUID stored as 16 raw bytes at the end of a key or in a value.
pub(crate) fn uuid_at_end(bytes: &[u8]) -> Option<Uuid> {
    let start = bytes.len().checked_sub(16)?;
    Uuid::from_slice(&bytes[start..]).ok()
}
