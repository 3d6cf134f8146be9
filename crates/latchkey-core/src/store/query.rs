//! Listing keys: filter, search, sort and cursor pagination.

use std::cmp::Ordering;
use std::str::FromStr;

use uuid::Uuid;

use super::keys::KeyRecord;
use super::{Store, layout};
use crate::error::StoreError;
use crate::limits::MAX_LIST_LIMIT;
use crate::model::{Key, KeyStatus};

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
    /// Case-insensitive search in name, description and display prefix.
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

/// The position of a key in a sort order: the sort value, then the id to break ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Position {
    Time(Option<i128>, Uuid),
    Name(String, Uuid),
}

impl Position {
    fn of(key: &Key, field: SortField) -> Position {
        match field {
            SortField::CreatedAt => {
                Position::Time(Some(key.created_at.unix_timestamp_nanos()), key.id)
            }
            SortField::LastUsedAt => {
                Position::Time(key.last_used_at.map(|t| t.unix_timestamp_nanos()), key.id)
            }
            SortField::Name => Position::Name(key.name.clone(), key.id),
        }
    }

    /// An opaque, URL-safe cursor: hex of `<id>|<value>`.
    fn encode(&self) -> String {
        let text = match self {
            Position::Time(t, id) => {
                format!("{id}|{}", t.map(|t| t.to_string()).unwrap_or_default())
            }
            Position::Name(name, id) => format!("{id}|{name}"),
        };
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(cursor: &str, field: SortField) -> Option<Position> {
        let bytes: Vec<u8> = (0..cursor.len())
            .step_by(2)
            .map(|i| {
                cursor
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let (id, value) = text.split_once('|')?;
        let id = Uuid::parse_str(id).ok()?;
        Some(match field {
            SortField::Name => Position::Name(value.to_owned(), id),
            _ if value.is_empty() => Position::Time(None, id),
            _ => Position::Time(Some(value.parse().ok()?), id),
        })
    }
}

impl Store {
    /// Lists keys: filtered, searched, sorted, one page at a time.
    ///
    /// A bad `sort`, `limit` or `cursor` is an `Invalid` error naming the field.
    pub fn list_keys(&self, query: &KeyQuery) -> Result<Page<Key>, StoreError> {
        self.list_keys_of(query, |_| true)
    }

    /// [`Store::list_keys`] over the keys of the users `owner` accepts (a caller's tenant).
    pub(super) fn list_keys_of(
        &self,
        query: &KeyQuery,
        owner: impl Fn(Uuid) -> bool,
    ) -> Result<Page<Key>, StoreError> {
        if !(1..=MAX_LIST_LIMIT).contains(&query.limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let after = match &query.cursor {
            Some(cursor) => {
                Some(Position::decode(cursor, query.sort.field).ok_or_else(|| {
                    StoreError::invalid("cursor", "not a cursor from this listing")
                })?)
            }
            None => None,
        };
        // A full scan: the store keeps no per-user index (see `layout`), and sorting needs
        // every match anyway.
        let mut records: Vec<KeyRecord> = self.scan(layout::KEYS)?;
        if let Some(user) = query.user_id {
            records.retain(|r| r.user_id == user);
        }
        records.retain(|r| owner(r.user_id));
        let now = self.inner.clock.now();
        let needle = query.search.as_deref().map(str::to_lowercase);
        let mut keys = Vec::new();
        for record in records {
            if query.status.is_some_and(|s| s != record.status(now)) {
                continue;
            }
            if let Some(needle) = &needle {
                let hit = record.name.to_lowercase().contains(needle)
                    || record.prefix.to_lowercase().contains(needle)
                    || record
                        .description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(needle));
                if !hit {
                    continue;
                }
            }
            keys.push(record.view(now, self.inner.usage.pending(record.id)));
        }
        let order = |a: &Position, b: &Position| -> Ordering {
            if query.sort.descending {
                b.cmp(a)
            } else {
                a.cmp(b)
            }
        };
        let mut positioned: Vec<(Position, Key)> = keys
            .into_iter()
            .map(|k| (Position::of(&k, query.sort.field), k))
            .collect();
        positioned.sort_by(|a, b| order(&a.0, &b.0));
        if let Some(after) = &after {
            positioned.retain(|(p, _)| order(p, after) == Ordering::Greater);
        }
        let more = positioned.len() > query.limit;
        positioned.truncate(query.limit);
        let next_cursor = if more {
            positioned.last().map(|(p, _)| p.encode())
        } else {
            None
        };
        Ok(Page {
            items: positioned.into_iter().map(|(_, k)| k).collect(),
            next_cursor,
        })
    }
}
