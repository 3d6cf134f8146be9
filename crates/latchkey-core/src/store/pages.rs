//! Users and groups, one page at a time: their records are keyed by UUID v7, so creation
//! order is key order and a page is a range scan after the cursor's id.

use std::ops::Bound;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::backend::{self, Direction, KeyRange};
use super::query::SCAN_BUDGET;
use super::{Page, Store, decode, layout};
use crate::actor::Actor;
use crate::error::StoreError;
use crate::limits::MAX_LIST_LIMIT;
use crate::model::{Group, User};

impl Store {
    /// Users, oldest first, `limit` (1 to 1000) at a time after `cursor` (a page's
    /// `next_cursor`). A bad limit or cursor is an `Invalid` error naming the field.
    pub fn users_page(&self, limit: usize, cursor: Option<&str>) -> Result<Page<User>, StoreError> {
        self.records_page(layout::USERS, limit, cursor, |_: &User| true)
            .and_then(|page| self.users_viewed(page))
    }

    /// [`Store::users_page`] over the users the caller sees. A tenant-bound caller's page
    /// passes over at most 1,000 users of other tenants, so it may hold fewer
    /// than `limit` with a cursor to go on.
    pub fn users_page_as(
        &self,
        actor: &Actor,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<User>, StoreError> {
        self.records_page(layout::USERS, limit, cursor, |u: &User| actor.sees(u))
            .and_then(|page| self.users_viewed(page))
    }

    /// A page of user records as the API shows them (with their rate limits).
    fn users_viewed(&self, page: Page<User>) -> Result<Page<User>, StoreError> {
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|u| self.user_view(u))
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }

    /// Groups, oldest first, one page at a time, as [`Store::users_page`].
    pub fn groups_page(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Group>, StoreError> {
        self.records_page(layout::GROUPS, limit, cursor, |_: &Group| true)
    }

    fn records_page<T: DeserializeOwned>(
        &self,
        namespace: &[u8],
        limit: usize,
        cursor: Option<&str>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, StoreError> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let lower = match cursor {
            None => Bound::Included(namespace.to_vec()),
            Some(cursor) => {
                let id = self
                    .inner
                    .cursors
                    .open(cursor)
                    .filter(|b| b.len() == 17 && b[0] == namespace[0])
                    .and_then(|b| Uuid::from_slice(&b[1..]).ok())
                    .ok_or_else(|| {
                        StoreError::invalid("cursor", "not a cursor from this listing")
                    })?;
                Bound::Excluded([namespace, id.as_bytes()].concat())
            }
        };
        // The namespace ends in ':'; its successor bounds it.
        let mut end = namespace.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        let mut items = Vec::with_capacity(limit.min(64));
        let mut last = None;
        let mut more = false;
        let mut passed = 0;
        let range = KeyRange::new(lower, Bound::Excluded(end));
        for item in backend::scan(&self.inner.db, range, Direction::Forward) {
            let (key, value) = item?;
            if items.len() == limit || passed == SCAN_BUDGET {
                more = true;
                break;
            }
            let record: T = decode(&value)?;
            if keep(&record) {
                items.push(record);
            } else {
                passed += 1;
            }
            last = Some(key);
        }
        let next_cursor = more
            .then(|| {
                last.map(|key| {
                    let position = [&namespace[..1], &key[namespace.len()..]].concat();
                    self.inner.cursors.seal(&position)
                })
            })
            .flatten();
        Ok(Page { items, next_cursor })
    }
}
