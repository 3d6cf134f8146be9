//! Users and groups, one page at a time: their records are keyed by UUID v7, so creation
//! order is key order and a page is a range scan after the cursor's id.

use std::ops::Bound;

use itertools::Itertools;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::backend::{self, Direction, KeyRange};
use super::cursor::Listing;
use super::query::SCAN_BUDGET;
use super::user_index::{self, UserIndex};
use super::{Page, Store, decode, layout};
use crate::actor::Actor;
use crate::error::StoreError;
use crate::limits::MAX_LIST_LIMIT;
use crate::model::{Group, User};

impl Store {
    /// Users, oldest first, `limit` (1 to 1000) at a time after `cursor` (a page's
    /// `next_cursor`). A bad limit or cursor is an `Invalid` error naming the field.
    pub fn users_page(&self, limit: usize, cursor: Option<&str>) -> Result<Page<User>, StoreError> {
        let listing = Listing::default();
        self.records_page(layout::USERS, limit, cursor, &listing, |_: &User| true)
            .and_then(|page| self.users_viewed(page))
    }

    /// [`Store::users_page`] over the users the caller sees. A tenant-bound caller's page
    /// reads its tenant's users only (the index of users by tenant); one bound to an
    /// organization too passes over at most 1,000 users of the tenant's other
    /// organizations, so its page may hold fewer than `limit` with a cursor to go on.
    pub fn users_page_as(
        &self,
        actor: &Actor,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<User>, StoreError> {
        // Its cursors are bound to the caller's tenant (organization), when it is bound.
        let listing = Listing::of(actor.tenant_id(), actor.organization_id());
        let page = match actor.tenant_id() {
            Some(tenant) if user_index::complete(&self.inner.db)? => {
                self.tenant_users_page(actor, tenant, limit, cursor, &listing)
            }
            Some(_) => {
                let sees = |u: &User| actor.sees(u);
                self.records_page(layout::USERS, limit, cursor, &listing, sees)
            }
            None => self.records_page(layout::USERS, limit, cursor, &listing, |_: &User| true),
        };
        page.and_then(|page| self.users_viewed(page))
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
        let listing = Listing::default();
        self.records_page(layout::GROUPS, limit, cursor, &listing, |_: &Group| true)
    }

    fn records_page<T: DeserializeOwned>(
        &self,
        namespace: &[u8],
        limit: usize,
        cursor: Option<&str>,
        listing: &Listing,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, StoreError> {
        let mut range = KeyRange::prefix(namespace);
        if let Some(id) = self.page_start(namespace, limit, cursor, listing)? {
            range.lower = Bound::Excluded([namespace, id.as_bytes()].concat());
        }
        let records = backend::scan(&self.inner.db, range, Direction::Forward).map(|item| {
            let (key, value) = item?;
            let id = Uuid::from_slice(&key[namespace.len()..])
                .map_err(|_| StoreError::Corrupt("bad record key".into()))?;
            Ok((id, Some(decode(&value)?)))
        });
        self.page_of(namespace, limit, listing, records, keep)
    }

    /// [`Store::users_page_as`] for a caller bound to `tenant`: its users' ids from the
    /// index of users by tenant, their records read a page's worth at a time. No other
    /// tenant's user is read; one of another organization of the tenant is passed over.
    fn tenant_users_page(
        &self,
        actor: &Actor,
        tenant: &str,
        limit: usize,
        cursor: Option<&str>,
        listing: &Listing,
    ) -> Result<Page<User>, StoreError> {
        let after = self.page_start(layout::USERS, limit, cursor, listing)?;
        let tenant = user_index::tenant(tenant);
        let batches = UserIndex::TENANTS
            .users_after(&self.inner.db, &tenant, after)
            .chunks(limit + 1);
        let records = batches
            .into_iter()
            .map(|batch| {
                let ids: Vec<Uuid> = batch.collect::<Result<_, _>>()?;
                let paths: Vec<Vec<u8>> = ids.iter().map(|id| layout::user(*id)).collect();
                Ok(ids.into_iter().zip(self.get_many::<User>(&paths)?))
            })
            .flatten_ok();
        self.page_of(layout::USERS, limit, listing, records, |u: &User| {
            actor.sees(u)
        })
    }

    /// The id a page starts after: none without a cursor, else the one `cursor` holds, when
    /// it is one of this `namespace`'s lists. A bad limit or cursor is `Invalid`.
    fn page_start(
        &self,
        namespace: &[u8],
        limit: usize,
        cursor: Option<&str>,
        listing: &Listing,
    ) -> Result<Option<Uuid>, StoreError> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        self.inner
            .cursors
            .open(cursor, listing)
            .filter(|b| b.len() == 17 && b[0] == namespace[0])
            .and_then(|b| Uuid::from_slice(&b[1..]).ok())
            .map(Some)
            .ok_or_else(|| StoreError::invalid("cursor", "not a cursor from this listing"))
    }

    /// A page of the `records` (by id, in id order; `None`, a record gone since its id was
    /// read) that `keep` keeps, passing over at most [`SCAN_BUDGET`] others, and the cursor
    /// to go on from the last one read when there is more.
    fn page_of<T>(
        &self,
        namespace: &[u8],
        limit: usize,
        listing: &Listing,
        records: impl Iterator<Item = Result<(Uuid, Option<T>), StoreError>>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, StoreError> {
        let mut items = Vec::with_capacity(limit.min(64));
        let mut last = None;
        let mut more = false;
        let mut passed = 0;
        for item in records {
            let (id, record) = item?;
            if items.len() == limit || passed == SCAN_BUDGET {
                more = true;
                break;
            }
            match record.filter(|r| keep(r)) {
                Some(record) => items.push(record),
                None => passed += 1,
            }
            last = Some(id);
        }
        let next_cursor = more
            .then(|| {
                last.map(|id| {
                    let position = [&namespace[..1], id.as_bytes()].concat();
                    self.inner.cursors.seal(&position, listing)
                })
            })
            .flatten();
        Ok(Page { items, next_cursor })
    }
}
