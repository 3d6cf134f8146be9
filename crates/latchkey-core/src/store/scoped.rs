//! Reads as a caller sees them: a tenant-bound caller sees only the users of its tenant
//! (organization), their keys and their audit events; everything else is "not found".
//! A global caller sees everything, as the unscoped reads answer it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::keys::KeyRecord;
use super::user_index::{self, UserIndex};
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::AuditEvent;
use crate::error::{Entity, StoreError};
use crate::limits::{MAX_CURSOR_BYTES, MAX_LIST_LIMIT, MAX_SEARCH_BYTES, MAX_USERS_BY_ID};
use crate::model::{Key, User};
use crate::store::{KeyQuery, Page};

/// How many audit events one page may pass over for a tenant-bound caller, or for the
/// events about one record, before it answers what it found, with a cursor to go on: a
/// page costs a bounded read.
const AUDIT_SCAN_PER_PAGE: usize = 10 * MAX_LIST_LIMIT;

/// How many events such a page reads at a time: one filled early stops early.
const AUDIT_SCAN_CHUNK: usize = MAX_LIST_LIMIT;

/// Which audit events a page reads: those after `after` and before `before`, oldest or
/// newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditRange {
    /// Only events with a greater sequence number (0: from the first).
    pub after: u64,
    /// Only events with a smaller sequence number (`None`: up to the newest).
    pub before: Option<u64>,
    /// Newest first (from `before`, or the newest event, back), rather than oldest first.
    pub newest_first: bool,
}

impl AuditRange {
    /// The events after `after`, oldest first.
    pub fn after(after: u64) -> AuditRange {
        AuditRange {
            after,
            ..AuditRange::default()
        }
    }
}

impl Store {
    /// A user by id or name, if the caller sees it.
    pub fn user_as(&self, actor: &Actor, reference: &str) -> Result<User, StoreError> {
        // Seen or not is told before the view is read (as for keys: `sees_key`).
        let user = self.user_record(reference)?;
        self.user_view(visible(actor, user, Entity::User, reference)?)
    }

    /// The users of `ids` that the caller sees, in that order; an id that is no user, or one
    /// the caller does not see, is left out. At most [`MAX_USERS_BY_ID`] ids.
    pub fn users_by_id_as(&self, actor: &Actor, ids: &[Uuid]) -> Result<Vec<User>, StoreError> {
        if ids.len() > MAX_USERS_BY_ID {
            return Err(StoreError::invalid(
                "ids",
                format!("at most {MAX_USERS_BY_ID} ids"),
            ));
        }
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            match self.user_as(actor, &id.to_string()) {
                Ok(user) => users.push(user),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(users)
    }

    /// Resolves a user id or name the caller sees; any other is "not found" under the
    /// reference given, as for a user that does not exist.
    pub fn user_id_as(&self, actor: &Actor, reference: &str) -> Result<Uuid, StoreError> {
        self.user_as(actor, reference).map(|u| u.id)
    }

    /// Resolves a key reference (id, display prefix or public id) whose user the caller
    /// sees; any other is "not found" under the reference given.
    pub fn key_id_as(&self, actor: &Actor, reference: &str) -> Result<Uuid, StoreError> {
        let id = self.key_id(reference)?;
        match self.key_record(id).and_then(|r| self.sees_key(actor, &r)) {
            Ok(()) => Ok(id),
            Err(StoreError::NotFound { .. }) => Err(StoreError::not_found(Entity::Key, reference)),
            Err(e) => Err(e),
        }
    }

    /// Every user the caller sees, oldest first.
    pub fn users_as(&self, actor: &Actor) -> Result<Vec<User>, StoreError> {
        let mut users = self.users()?;
        users.retain(|u| actor.sees(u));
        Ok(users)
    }

    /// A key by record id, if the caller sees its user.
    pub fn key_as(&self, actor: &Actor, id: Uuid) -> Result<Key, StoreError> {
        let (record, pending) = self.key_record_and_pending(id)?;
        self.sees_key(actor, &record)?;
        self.key_view(&record, pending, self.inner.clock.now())
    }

    /// Whether the caller sees a key, told from its record and its user's alone: the key's
    /// view (usage, usage control) is built only for a key the caller sees, so another
    /// tenant's key answers "not found" in about the time a missing one does (one read of
    /// its user more), not in the time of a whole view.
    fn sees_key(&self, actor: &Actor, record: &KeyRecord) -> Result<(), StoreError> {
        if actor.tenant_id().is_some() {
            let owner = self.get::<User>(&layout::user(record.user_id))?;
            if !owner.is_some_and(|u| actor.sees(&u)) {
                return Err(StoreError::not_found(Entity::Key, record.id));
            }
        }
        Ok(())
    }

    /// [`Store::list_keys`] over the keys of the users the caller sees; a `user_id` it does
    /// not see is "not found".
    ///
    /// A tenant-bound caller's page reads its tenant's users' own indexes, merged, when the
    /// tenant has at most 100 users: no other tenant's key is read, so without `q`, `env` or
    /// `status` (checked on each record, as next to `user_id`) every page but the last is
    /// full. A tenant with more users is listed from the index of every key, passing over
    /// at most 1,000 other tenants' keys a page, so a page may hold fewer than `limit` with
    /// a cursor to go on.
    ///
    /// A search text over [`MAX_SEARCH_BYTES`] or a cursor over [`MAX_CURSOR_BYTES`] is an
    /// `Invalid` error naming `q` or `cursor`: no request scans every key for a needle that
    /// no name or description can hold.
    pub fn list_keys_as(&self, actor: &Actor, query: &KeyQuery) -> Result<Page<Key>, StoreError> {
        let too_long =
            |text: &Option<String>, max: usize| text.as_ref().is_some_and(|t| t.len() > max);
        if too_long(&query.search, MAX_SEARCH_BYTES) {
            let reason = format!("at most {MAX_SEARCH_BYTES} bytes");
            return Err(StoreError::invalid("q", reason));
        }
        if too_long(&query.cursor, MAX_CURSOR_BYTES) {
            return Err(StoreError::invalid(
                "cursor",
                "not a cursor from this listing",
            ));
        }
        if actor.tenant_id().is_none() {
            return self.list_keys(query);
        }
        let listing = super::query::key_listing(actor, query);
        if let Some(user) = query.user_id
            && !self.visible_users(actor, [user])?.contains(&user)
        {
            return Err(StoreError::not_found(Entity::User, user));
        }
        if query.user_id.is_none()
            && let Some(users) = self.users_seen_by(actor)?
        {
            return self.list_keys_of_users(query, &listing, &users);
        }
        // A tenant of more users than a page merges: the index of every key, and the owners
        // a page meets, read as it meets them.
        let seen = RefCell::new(HashMap::new());
        let failed = RefCell::new(None);
        let page = self.list_keys_of(query, &listing, |owner| {
            *seen.borrow_mut().entry(owner).or_insert_with(|| {
                self.visible_users(actor, [owner])
                    .map(|visible| visible.contains(&owner))
                    .unwrap_or_else(|e| {
                        failed.borrow_mut().get_or_insert(e);
                        false
                    })
            })
        });
        match failed.into_inner() {
            Some(e) => Err(e),
            None => page,
        }
    }

    /// Up to `limit` audit events after `after` that the caller sees, oldest first, and the
    /// sequence number to pass as `after` for the next page: [`Store::audit_in_as`] over
    /// [`AuditRange::after`].
    pub fn audit_as(
        &self,
        actor: &Actor,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<u64>), StoreError> {
        self.audit_in_as(actor, AuditRange::after(after), limit)
    }

    /// Up to `limit` audit events in `range` that the caller sees, in the range's order, and
    /// the sequence number the next page goes on from (its `after` oldest first, its
    /// `before` newest first).
    ///
    /// A tenant-bound caller sees the events of its tenant's users (group events concern
    /// every tenant, and events of a deleted user no tenant: it sees neither). Its page
    /// passes over at most a bounded number of events, so it may hold fewer than `limit`
    /// (none, even) with a cursor to go on.
    pub fn audit_in_as(
        &self,
        actor: &Actor,
        range: AuditRange,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<u64>), StoreError> {
        self.audit_page(actor, range, None, limit)
    }

    /// Up to `limit` audit events about `target` (a key's, user's or group's id) in
    /// `range` that the caller sees, in the range's order, and the sequence number the next
    /// page goes on from: [`Store::audit_in_as`] with one more filter. No index holds the
    /// events by record: a page passes over at most 10,000 events, so it
    /// may hold fewer than `limit` (none, even) with a cursor to go on. A group's events
    /// concern every tenant and are a global caller's only: a tenant-bound caller asking
    /// about a group gets none at once.
    ///
    /// ```
    /// # use latchkey_core::{Actor, AuditRange, NewUser, Store, StoreConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
    /// let user = store
    ///     .create_user(&Actor::system(), NewUser { name: "svc".into(), ..NewUser::default() })
    ///     .unwrap();
    /// let newest = AuditRange { newest_first: true, ..AuditRange::default() };
    /// let (events, _) = store.audit_about_as(&Actor::system(), user.id, newest, 10).unwrap();
    /// assert!(events.iter().all(|e| e.target == user.id) && !events.is_empty());
    /// ```
    pub fn audit_about_as(
        &self,
        actor: &Actor,
        target: Uuid,
        range: AuditRange,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<u64>), StoreError> {
        self.audit_page(actor, range, Some(target), limit)
    }

    fn audit_page(
        &self,
        actor: &Actor,
        range: AuditRange,
        target: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<u64>), StoreError> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let global = actor.tenant_id().is_none();
        if !global
            && let Some(target) = target
            && self.inner.db.get(&layout::group(target))?.is_some()
        {
            return Ok((Vec::new(), None));
        }
        if global && target.is_none() {
            // One more than asked tells whether another page follows.
            let mut items = self.events_in(range, limit + 1)?;
            let next = (items.len() > limit).then(|| {
                items.truncate(limit);
                items.last().map_or(range.after, |e| e.seq)
            });
            return Ok((items, next));
        }
        let about = |event: &AuditEvent| target.is_none_or(|t| event.target == t);
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let (mut scanned, mut rest) = (0, range);
        // In chunks, so that a page filled early (a record's recent events) stops early.
        'scan: while scanned < AUDIT_SCAN_PER_PAGE {
            let want = AUDIT_SCAN_CHUNK.min(AUDIT_SCAN_PER_PAGE - scanned);
            let mut chunk = self.events_in(rest, want + 1)?;
            let beyond = chunk.len() > want;
            chunk.truncate(want);
            scanned += chunk.len();
            // The users these events concern, read at once: never every user in the store.
            let seen = if global {
                None
            } else {
                let users = chunk.iter().filter(|e| about(e)).filter_map(|e| e.user_id);
                Some(self.visible_users(actor, users)?)
            };
            for event in chunk {
                let seq = event.seq;
                let shown = about(&event)
                    && seen
                        .as_ref()
                        .is_none_or(|seen| event.user_id.is_some_and(|u| seen.contains(&u)));
                if shown {
                    if items.len() == limit {
                        more = true;
                        break 'scan;
                    }
                    items.push(event);
                }
                last = Some(seq);
            }
            if !beyond {
                break;
            }
            more = scanned == AUDIT_SCAN_PER_PAGE;
            match last {
                Some(seq) if rest.newest_first => rest.before = Some(seq),
                Some(seq) => rest.after = seq,
                None => break,
            }
        }
        Ok((items, more.then(|| last.unwrap_or(range.after))))
    }

    /// The ids of the users of `actor`'s tenant that it sees, when the tenant has at most
    /// `StoreConfig::tenant_list_users`; `None` when it has more (or `actor` is global).
    fn users_seen_by(&self, actor: &Actor) -> Result<Option<Vec<Uuid>>, StoreError> {
        let Some(tenant) = actor.tenant_id() else {
            return Ok(None);
        };
        if !user_index::complete(&self.inner.db)? {
            return Ok(None);
        }
        let bound = self.inner.tenant_list_users;
        let tenant = user_index::tenant(tenant);
        let Some(users) = UserIndex::TENANTS.users_of(&self.inner.db, &tenant, bound)? else {
            return Ok(None);
        };
        // Its organization's, when it is bound to one too (in id order still).
        let seen = self.visible_users(actor, users.iter().copied())?;
        Ok(Some(
            users.into_iter().filter(|u| seen.contains(u)).collect(),
        ))
    }

    /// Those of `ids` whose users exist and the caller sees: their records read at once
    /// (one round trip on PostgreSQL).
    fn visible_users(
        &self,
        actor: &Actor,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> Result<HashSet<Uuid>, StoreError> {
        let ids: Vec<Uuid> = ids
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let paths: Vec<Vec<u8>> = ids.iter().map(|id| layout::user(*id)).collect();
        let users = self.get_many::<User>(&paths)?;
        Ok(users
            .into_iter()
            .flatten()
            .filter(|u| actor.sees(u))
            .map(|u| u.id)
            .collect())
    }
}

fn visible(actor: &Actor, user: User, entity: Entity, reference: &str) -> Result<User, StoreError> {
    if actor.sees(&user) {
        Ok(user)
    } else {
        Err(StoreError::not_found(entity, reference))
    }
}
