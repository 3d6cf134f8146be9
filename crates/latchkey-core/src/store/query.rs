//! Listing keys: filter, search, sort and cursor pagination, over the indexes of
//! `index.rs`.
//!
//! A page is a range scan of one index from the cursor's position: the user's index when
//! `user_id` is given, else the class index for a `status`, else the index of every key, in
//! the sort field's order. What the index does not decide (a status next to a user, a key
//! expired since the last sweep, `q`) is checked on each record read, and a page reads at
//! most [`SCAN_BUDGET`] index entries: when that runs out first, the page is short (possibly
//! empty) and `next_cursor` continues from where the scan stopped.
//!
//! **Cursors** are opaque: hex of a version byte, the sort, and the last position read (the
//! sort value and the key id). A page starts strictly after it, so a key whose sort value
//! does not change between pages is listed exactly once, whatever is written meanwhile.

use std::collections::HashSet;
use std::str::FromStr;

use uuid::Uuid;

use super::controls::ControlsRecord;
use super::cursor::{CursorSeal, Listing};
use super::index::{self, Class, Scope};
use super::keys::KeyRecord;
use super::{Store, layout};
use crate::actor::Actor;
use crate::error::StoreError;
use crate::key::{ApiKey, Env};
use crate::limits::MAX_LIST_LIMIT;
use crate::model::{Key, KeyStatus};

/// The most index entries one page reads.
pub(crate) const SCAN_BUDGET: usize = 1_000;

/// How many users of one tenant a tenant-bound caller's key list merges the indexes of, by
/// default (`StoreConfig::tenant_list_users`): one seek each per page.
pub(crate) const TENANT_LIST_USERS: usize = 100;

/// The cursor format's version byte.
const CURSOR_VERSION: u8 = 1;

/// Which field keys are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortField {
    /// Creation time (the default).
    #[default]
    CreatedAt,
    /// Name, then creation.
    Name,
    /// Last use; never-used keys sort first.
    LastUsedAt,
}

/// A sort order: a field, ascending unless `descending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySort {
    /// The field.
    pub field: SortField,
    /// Newest / last first.
    pub descending: bool,
}

impl FromStr for KeySort {
    type Err = StoreError;

    /// `created_at`, `name` or `last_used_at`, with a leading `-` for descending.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let field = match name {
            "created_at" => SortField::CreatedAt,
            "name" => SortField::Name,
            "last_used_at" => SortField::LastUsedAt,
            _ => {
                return Err(StoreError::invalid(
                    "sort",
                    "expected created_at, name or last_used_at, optionally with a leading -",
                ));
            }
        };
        Ok(KeySort { field, descending })
    }
}

/// What to list.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    /// Only this user's keys.
    pub user_id: Option<Uuid>,
    /// Only keys in this status.
    pub status: Option<KeyStatus>,
    /// Only keys of this environment. No index decides it: a page scans a bounded number
    /// of entries, as for `search`.
    pub env: Option<Env>,
    /// Case-insensitive search in name, description and display prefix. A whole key's
    /// text, even mistyped, searches for its display prefix (a key found pasted somewhere
    /// is found here; the secret is never compared).
    pub search: Option<String>,
    /// The order.
    pub sort: KeySort,
    /// Page size, 1 to 1000 (default 50).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Default for KeyQuery {
    fn default() -> Self {
        KeyQuery {
            user_id: None,
            status: None,
            env: None,
            search: None,
            sort: KeySort::default(),
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass it back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl SortField {
    fn byte(self) -> u8 {
        match self {
            SortField::CreatedAt => b'c',
            SortField::Name => b'n',
            SortField::LastUsedAt => b'l',
        }
    }
}

/// An opaque, URL-safe cursor for a position in a sort order, sealed by `seal` for
/// `listing`.
fn encode_cursor(seal: &CursorSeal, listing: &Listing, sort: KeySort, position: &[u8]) -> String {
    let mut bytes = vec![CURSOR_VERSION, sort.field.byte(), u8::from(sort.descending)];
    bytes.extend_from_slice(position);
    seal.seal(&bytes, listing)
}

/// The position a cursor holds, when it is one of this listing's, in its sort.
fn decode_cursor(
    seal: &CursorSeal,
    listing: &Listing,
    cursor: &str,
    sort: KeySort,
) -> Option<Vec<u8>> {
    let bytes = seal.open(cursor, listing)?;
    let (head, position) = bytes.split_at_checked(3)?;
    (head == [CURSOR_VERSION, sort.field.byte(), u8::from(sort.descending)]
        && index::is_position(position, sort.field))
    .then(|| position.to_vec())
}

/// A key list's cursors are bound to the caller's tenant (organization), when it is bound
/// to one, and to the filters (the sort is in the position).
pub(super) fn key_listing(actor: &Actor, query: &KeyQuery) -> Listing {
    let user = query.user_id.as_ref().map(|id| id.as_bytes().as_slice());
    Listing::of(actor.tenant_id(), actor.organization_id())
        .with(b'u', user)
        .with(b's', query.status.map(|s| s.as_str().as_bytes()))
        .with(b'e', query.env.map(|e| e.as_str().as_bytes()))
        .with(b'q', query.search.as_deref().map(str::as_bytes))
}

/// What one page scans, and what each record read must also satisfy.
struct Plan<'a> {
    scope: Scope,
    query: &'a KeyQuery,
    needle: Option<String>,
}

impl Plan<'_> {
    fn of(query: &KeyQuery) -> Plan<'_> {
        let scope = match (query.user_id, query.status) {
            (Some(user), _) => Scope::User(user),
            (None, Some(status)) => Scope::Class(match status {
                KeyStatus::Active => Class::Active,
                KeyStatus::Disabled => Class::Disabled,
                KeyStatus::Expired => Class::Expired,
                KeyStatus::Revoked => Class::Revoked,
            }),
            (None, None) => Scope::All,
        };
        Plan {
            scope,
            query,
            needle: query.search.as_deref().map(|text| {
                ApiKey::display_prefix_of(text)
                    .unwrap_or(text)
                    .to_lowercase()
            }),
        }
    }

    fn matches(&self, record: &KeyRecord, now: time::OffsetDateTime) -> bool {
        if self.query.user_id.is_some_and(|u| u != record.user_id) {
            return false;
        }
        if self.query.status.is_some_and(|s| s != record.status(now)) {
            return false;
        }
        if self.query.env.is_some_and(|e| e != record.env) {
            return false;
        }
        let Some(needle) = &self.needle else {
            return true;
        };
        record.name.to_lowercase().contains(needle)
            || record.prefix.to_lowercase().contains(needle)
            || record
                .description
                .as_deref()
                .is_some_and(|d| d.to_lowercase().contains(needle))
    }
}

impl Store {
    /// Lists keys: filtered, searched, sorted, one page at a time.
    ///
    /// A page reads at most [`SCAN_BUDGET`] index entries: with a filter the index does not
    /// decide (`q`, `env`, or `status` next to `user_id`), a page may hold fewer than `limit` keys
    /// and still carry a `next_cursor`. A bad `sort`, `limit` or `cursor` is an `Invalid`
    /// error naming the field.
    pub fn list_keys(&self, query: &KeyQuery) -> Result<Page<Key>, StoreError> {
        let listing = key_listing(&Actor::system(), query);
        self.list_keys_of(query, &listing, |_| true)
    }

    /// [`Store::list_keys`] over the keys of the users `owner` accepts (a caller's tenant),
    /// read from the index of every key (or of `user_id`'s, or a status's), passing over
    /// the others.
    pub(super) fn list_keys_of(
        &self,
        query: &KeyQuery,
        listing: &Listing,
        owner: impl Fn(Uuid) -> bool,
    ) -> Result<Page<Key>, StoreError> {
        self.list_keys_from(query, listing, owner, |plan, after| {
            index::scan(
                &self.inner.db,
                plan.scope,
                query.sort.field,
                query.sort.descending,
                after,
            )
        })
    }

    /// [`Store::list_keys`] over the keys of `users` (a tenant's, when `user_id` is not
    /// given), read from their own indexes merged: no other key is read, so a page is short
    /// only when a filter the indexes do not decide (`q`, `env`, `status`) skips keys.
    /// Each page seeks every user's index once.
    pub(super) fn list_keys_of_users(
        &self,
        query: &KeyQuery,
        listing: &Listing,
        users: &[Uuid],
    ) -> Result<Page<Key>, StoreError> {
        let owners: HashSet<Uuid> = users.iter().copied().collect();
        self.list_keys_from(
            query,
            listing,
            |owner| owners.contains(&owner),
            |_, after| {
                let scans = users.iter().map(|user| {
                    let scope = Scope::User(*user);
                    let (field, descending) = (query.sort.field, query.sort.descending);
                    index::scan(&self.inner.db, scope, field, descending, after)
                });
                index::merge(scans.collect(), query.sort.descending)
            },
        )
    }

    /// One page of the keys of the users `owner` accepts, read from the entries `scan`
    /// gives after a position (the cursor's), for the plan of `query`.
    fn list_keys_from(
        &self,
        query: &KeyQuery,
        listing: &Listing,
        owner: impl Fn(Uuid) -> bool,
        scan: impl FnOnce(&Plan<'_>, Option<&[u8]>) -> index::Entries,
    ) -> Result<Page<Key>, StoreError> {
        if !(1..=MAX_LIST_LIMIT).contains(&query.limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let after = match &query.cursor {
            Some(cursor) => Some(
                decode_cursor(&self.inner.cursors, listing, cursor, query.sort).ok_or_else(
                    || StoreError::invalid("cursor", "not a cursor from this listing"),
                )?,
            ),
            None => None,
        };
        if query.status.is_some() {
            // Statuses follow the clock: classify what expired since the last sweep first.
            self.sweep_before_read();
        }
        let plan = Plan::of(query);
        let now = self.inner.clock.now();
        // Each key's stored usage figures and its pending ones go together (taken after the
        // sweep above, which waits for the write lock).
        let _steady = self.inner.usage.steady();
        let mut entries = scan(&plan, after.as_deref());
        let mut items = Vec::with_capacity(query.limit.min(64));
        let mut last_item: Option<Vec<u8>> = None;
        let mut last_read: Option<Vec<u8>> = None;
        let mut more = false;
        let (mut read, mut batch_size) = (0, query.limit + 1);
        // The records of the positions scanned are read a batch at a time (one round trip on
        // PostgreSQL): first as many as the page needs, then twice as many while a filter
        // the index does not decide skips some.
        'page: while read < SCAN_BUDGET {
            let batch = entries
                .by_ref()
                .take(batch_size.min(SCAN_BUDGET - read))
                .collect::<Result<Vec<_>, _>>()?;
            if batch.is_empty() {
                break;
            }
            read += batch.len();
            batch_size *= 2;
            let records = self.key_records(batch.iter().map(|(_, id)| *id))?;
            let mut matched = Vec::new();
            for ((position, _), record) in batch.into_iter().zip(records) {
                if let Some(record) = record.filter(|r| owner(r.user_id) && plan.matches(r, now)) {
                    if items.len() + matched.len() == query.limit {
                        more = true;
                        self.push_views(&mut items, matched, now)?;
                        break 'page;
                    }
                    last_item = Some(position.clone());
                    matched.push(record);
                }
                last_read = Some(position);
            }
            self.push_views(&mut items, matched, now)?;
        }
        if read == SCAN_BUDGET && !more {
            // The budget ran out: there is more when the index goes on.
            more = entries.next().transpose()?.is_some();
        }
        let next_cursor = if !more {
            None
        } else if items.len() == query.limit {
            last_item.map(|p| encode_cursor(&self.inner.cursors, listing, query.sort, &p))
        } else {
            last_read.map(|p| encode_cursor(&self.inner.cursors, listing, query.sort, &p))
        };
        Ok(Page { items, next_cursor })
    }

    /// The records of key ids read from an index, at once: `None` for an id with no record
    /// (or one whose record is another key's), and for one whose record does not decode,
    /// logged: a damaged key is left out of the lists, as the sweep and the rebuild leave
    /// it, rather than failing every page that reaches it (its own reads answer 500).
    fn key_records(
        &self,
        ids: impl Iterator<Item = Uuid>,
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        let ids: Vec<(Uuid, Option<Vec<u8>>)> = ids
            .map(|id| (id, layout::public_id_of(id).map(|p| layout::key(&p))))
            .collect();
        let keys: Vec<Vec<u8>> = ids.iter().filter_map(|(_, key)| key.clone()).collect();
        let mut found = self.inner.db.get_many(&keys)?.into_iter();
        Ok(ids
            .into_iter()
            .map(|(id, key)| {
                let bytes = key.and_then(|_| found.next().flatten())?;
                match super::decode::<KeyRecord>(&bytes) {
                    Ok(record) => Some(record).filter(|r| r.id == id),
                    Err(e) => {
                        tracing::error!(key_id = %id, error = %e, "a key record does not decode: left out of this list (`latchkey restore` from a backup repairs the store)");
                        None
                    }
                }
            })
            .collect())
    }

    /// Appends the views of `records`, reading their usage controls at once.
    fn push_views(
        &self,
        items: &mut Vec<Key>,
        records: Vec<KeyRecord>,
        now: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let keys = records
            .iter()
            .map(|r| Ok(layout::key_controls(&r.public_id()?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let controls = self.get_many::<ControlsRecord>(&keys)?;
        for (record, controls) in records.iter().zip(controls) {
            let pending = self.inner.usage.pending(record.id);
            items.push(self.key_view_with(record, pending, now, &controls.unwrap_or_default()));
        }
        Ok(())
    }
}
