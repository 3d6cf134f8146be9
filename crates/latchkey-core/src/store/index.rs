//! Secondary indexes of keys: sorted positions packed in chunks (`chunks.rs`), so a list
//! page is a range scan from the chunk that holds the cursor, O(page + log n) at any depth.
//!
//! ```text
//! x:<scope><field><start>         a chunk of positions, one index per scope × field
//!   scope    a                    every key
//!            u<user uuid>         the keys of one user
//!            s<class>             the keys of one stored class (see `class`)
//!   field    c | n | l            created_at | name | last_used_at
//!   position c: 8-byte time, n: name bytes then 0x00, l: 0x00 (never used) or 0x01 + time;
//!            then the key's 16-byte UUID, which breaks ties
//! x:e<start>                      the expiry index: positions <8-byte expiry><uuid> of
//!                                 keys that may expire and are not revoked (the sweep)
//! ```
//!
//! Times are Unix nanoseconds as big-endian `i64` with the sign bit flipped, so bytes sort
//! as times do. Names hold no control characters (validated), so the 0x00 terminator makes
//! byte order the order of (name, id).
//!
//! **Nine positions per key** (plus one for a key with an expiry), packed up to 16 to a
//! chunk: about one stored entry per key in all (~9 positions a chunk after random
//! inserts; the README gives what they cost).
//! Every write of a key record goes through [`entries`] and [`apply`], and the usage flush
//! moves `l` positions in its batch, so an index never disagrees with the records.
//!
//! This module only lays out and scans positions: which index answers which query is
//! decided in `query.rs`, so another backend can answer the same calls with its own indexes.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::Backend;
use super::chunks::{self, ChunkStore, Writer};
use super::keys::KeyRecord;
use super::query::SortField;
use crate::error::StoreError;

/// The namespace of every index entry.
pub(crate) const INDEX: &[u8] = b"x:";
/// The expiry index: `x:e<expiry><uuid>`.
const EXPIRY: &[u8] = b"x:e";
/// The expiry index position up to which keys are counted and indexed as expired.
pub(crate) const EXPIRY_MARK: &[u8] = b"m:expiry_mark";

/// A set of keys an index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    User(Uuid),
    Class(Class),
}

/// A key's stored class: what its status is at the expiry mark. `status` filters read the
/// class index and re-check the status against the clock, which only differs for keys that
/// expired since the last sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    Active,
    Disabled,
    Expired,
    Revoked,
}

impl Class {
    pub(crate) const ALL: [Class; 4] = [
        Class::Active,
        Class::Disabled,
        Class::Expired,
        Class::Revoked,
    ];

    fn byte(self) -> u8 {
        match self {
            Class::Active => b'e',
            Class::Disabled => b'd',
            Class::Expired => b'x',
            Class::Revoked => b'r',
        }
    }

    /// The class of a record at the expiry `mark` (an expiry-index position).
    pub(crate) fn of(record: &KeyRecord, mark: &[u8]) -> Class {
        if record.revoked_at.is_some() {
            Class::Revoked
        } else if record
            .expires_at
            .is_some_and(|at| expiry_position(at, record.id).as_slice() <= mark)
        {
            Class::Expired
        } else if !record.enabled {
            Class::Disabled
        } else {
            Class::Active
        }
    }
}

/// The byte form of a time that sorts as the time does.
pub(crate) fn time_bytes(at: OffsetDateTime) -> [u8; 8] {
    let nanos = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    ((nanos as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time [`time_bytes`] made the first 8 of `bytes` from; `None` when too short or out
/// of range.
pub(crate) fn time_of(bytes: &[u8]) -> Option<OffsetDateTime> {
    let raw = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let nanos = (raw ^ (1 << 63)) as i64;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()
}

fn field_byte(field: SortField) -> u8 {
    match field {
        SortField::CreatedAt => b'c',
        SortField::Name => b'n',
        SortField::LastUsedAt => b'l',
    }
}

/// A record's position in a sort order: the sort value's bytes, then its UUID.
pub(crate) fn position(record: &KeyRecord, field: SortField) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    match field {
        SortField::CreatedAt => out.extend_from_slice(&time_bytes(record.created_at)),
        SortField::Name => {
            out.extend_from_slice(record.name.as_bytes());
            out.push(0);
        }
        SortField::LastUsedAt => match record.usage.last_used_at {
            None => out.push(0),
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&time_bytes(at));
            }
        },
    }
    out.extend_from_slice(record.id.as_bytes());
    out
}

/// Whether `bytes` is a well-formed position for `field` (a cursor is checked with it).
pub(crate) fn is_position(bytes: &[u8], field: SortField) -> bool {
    let Some(value) = bytes.len().checked_sub(16).map(|n| &bytes[..n]) else {
        return false;
    };
    match field {
        SortField::CreatedAt => value.len() == 8,
        SortField::Name => value.last() == Some(&0) && !value[..value.len() - 1].contains(&0),
        SortField::LastUsedAt => value == [0] || (value.len() == 9 && value[0] == 1),
    }
}

/// The UUID at the end of a position or an index key.
pub(crate) fn uuid_of(bytes: &[u8]) -> Result<Uuid, StoreError> {
    bytes
        .len()
        .checked_sub(16)
        .and_then(|n| Uuid::from_slice(&bytes[n..]).ok())
        .ok_or_else(|| StoreError::Corrupt("bad index entry".into()))
}

/// The prefix of one index: scope and field.
pub(crate) fn prefix(scope: Scope, field: SortField) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.extend_from_slice(INDEX);
    match scope {
        Scope::All => out.push(b'a'),
        Scope::User(user) => {
            out.push(b'u');
            out.extend_from_slice(user.as_bytes());
        }
        Scope::Class(class) => {
            out.push(b's');
            out.push(class.byte());
        }
    }
    out.push(field_byte(field));
    out
}

/// The position of a key in the expiry index.
pub(crate) fn expiry_position(at: OffsetDateTime, id: Uuid) -> Vec<u8> {
    [time_bytes(at).as_slice(), id.as_bytes()].concat()
}

/// An index entry: the index's prefix and the position in it.
pub(crate) type IndexEntry = (Vec<u8>, Vec<u8>);

/// Every index entry of a record, given the expiry mark.
pub(crate) fn entries(record: &KeyRecord, mark: &[u8]) -> Vec<IndexEntry> {
    let class = Class::of(record, mark);
    let mut out = Vec::with_capacity(10);
    for field in [SortField::CreatedAt, SortField::Name, SortField::LastUsedAt] {
        let position = position(record, field);
        for scope in [Scope::All, Scope::User(record.user_id), Scope::Class(class)] {
            out.push((prefix(scope, field), position.clone()));
        }
    }
    if let (Some(at), None) = (record.expires_at, record.revoked_at) {
        out.push((EXPIRY.to_vec(), expiry_position(at, record.id)));
    }
    out
}

/// Where index changes go: a transaction's pending changes, or a batch's chunks.
pub(crate) trait Sink {
    /// What a write can fail with.
    type Error;
    fn insert(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), Self::Error>;
    fn remove(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), Self::Error>;
}

impl<S: ChunkStore> Sink for Writer<S> {
    type Error = S::Error;
    fn insert(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), S::Error> {
        Writer::insert(self, prefix, position)
    }
    fn remove(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), S::Error> {
        Writer::remove(self, prefix, position)
    }
}

/// Moves a record's entries from `before` to `after` (each from [`entries`], empty for a
/// creation or a deletion), touching only the entries that differ.
pub(crate) fn apply<S: Sink>(
    sink: &mut S,
    before: Vec<IndexEntry>,
    after: Vec<IndexEntry>,
) -> Result<(), S::Error> {
    for (prefix, position) in before.iter().filter(|e| !after.contains(e)) {
        sink.remove(prefix, position)?;
    }
    for (prefix, position) in after.iter().filter(|e| !before.contains(e)) {
        sink.insert(prefix, position)?;
    }
    Ok(())
}

/// An index entry as (position, key UUID).
pub(crate) type Entry = Result<(Vec<u8>, Uuid), StoreError>;

/// Index entries in scan order.
pub(crate) type Entries = Box<dyn Iterator<Item = Entry>>;

/// The entries of one index after `after` (a position), in order or in reverse, each as
/// (position, key UUID).
pub(crate) fn scan(
    db: &Arc<dyn Backend>,
    scope: Scope,
    field: SortField,
    descending: bool,
    after: Option<&[u8]>,
) -> Entries {
    let positions = chunks::scan(db, prefix(scope, field), descending, after);
    Box::new(positions.map(|position| {
        let position = position?;
        let id = uuid_of(&position)?;
        Ok((position, id))
    }))
}

/// Scans of one sort field in several scopes (a tenant's users), merged into one scan in
/// that field's order: positions compare alike whatever the scope, and the key's id in each
/// makes no two equal. An error comes out as soon as a scan meets it.
pub(crate) fn merge(scans: Vec<Entries>, descending: bool) -> Entries {
    Box::new(itertools::kmerge_by(
        scans,
        move |a: &Entry, b: &Entry| match (a, b) {
            (Ok((a, _)), Ok((b, _))) => (a < b) != descending,
            (Err(_), _) => true,
            (Ok(_), Err(_)) => false,
        },
    ))
}

/// Keys whose expiry is after `mark` and at or before `now`, oldest first, at most `limit`:
/// the ones the next sweep reclassifies.
pub(crate) fn newly_expired(
    db: &Arc<dyn Backend>,
    mark: &[u8],
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Uuid)>, StoreError> {
    let upper = expiry_position(now, Uuid::max());
    chunks::scan(db, EXPIRY.to_vec(), false, Some(mark))
        .take_while(|p| p.as_ref().is_ok_and(|p| *p <= upper) || p.is_err())
        .take(limit)
        .map(|position| {
            let position = position?;
            let id = uuid_of(&position)?;
            Ok((position, id))
        })
        .collect()
}
