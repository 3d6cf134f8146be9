//! Groups: create, read, update, delete.

use itertools::Itertools;
use uuid::Uuid;

use super::counters::Counter;
use super::last_admin::everything;
use super::names::NameIndex;
use super::rebuild::BATCH;
use super::tx::{Invalidate, Tx, TxResult, abort};
use super::user_index::{self, UserIndex};
use super::users::user_grants_in;
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::{Action, Changes};
use crate::error::{Entity, StoreError};
use crate::limits::{check_permission_edit, check_permissions};
use crate::model::{Group, GroupPatch, NewGroup, User, validate_principal_name};

/// What a tenant-bound caller is told of a group write.
const GROUPS_ARE_GLOBAL: &str = "create, change or delete a group: groups are global, every \
                                 tenant's users are assigned them";

impl Store {
    /// Creates a group. The caller must hold every permission it grants and be bound to no
    /// tenant: groups are global records, which a tenant-bound caller reads and assigns
    /// but never writes.
    ///
    /// Fails with `GlobalOnly` (a tenant-bound caller), `Invalid` (name), `Escalation`, or
    /// `Conflict::NameTaken`.
    pub fn create_group(&self, actor: &Actor, new: NewGroup) -> Result<Group, StoreError> {
        self.write(actor, |tx| self.create_group_in(tx, actor, &new))
    }

    pub(super) fn create_group_in(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        new: &NewGroup,
    ) -> TxResult<Group> {
        if let Err(e) = actor
            .ensure_global(GROUPS_ARE_GLOBAL)
            .and_then(|()| validate_principal_name("name", &new.name))
            .and_then(|()| check_permissions("permissions", &new.permissions))
            .and_then(|()| actor.ensure_covers(&new.permissions))
        {
            return abort(e);
        }
        NameIndex::GROUPS.ensure_free(tx, &new.name)?;
        let group = Group {
            id: Uuid::now_v7(),
            name: new.name.clone(),
            permissions: new.permissions.clone(),
            created_at: tx.now,
            updated_at: tx.now,
        };
        tx.put(&layout::group(group.id), &group)?;
        tx.count(Counter::Groups, 1)?;
        NameIndex::GROUPS.insert(tx, &group.name, group.id)?;
        tx.record(Action::GroupCreate, group.id, None);
        Ok(group)
    }

    /// A group by id or by name.
    pub fn group(&self, reference: &str) -> Result<Group, StoreError> {
        let id = self.group_id(reference)?;
        self.get(&layout::group(id))?
            .ok_or_else(|| StoreError::not_found(Entity::Group, reference))
    }

    /// Resolves a group id or name to its id.
    pub fn group_id(&self, reference: &str) -> Result<Uuid, StoreError> {
        self.resolve(reference, Entity::Group, layout::group, layout::group_name)
    }

    /// Every group, oldest first.
    pub fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.scan(layout::GROUPS)
    }

    /// Changes a group. The change reaches every key of every member at once.
    ///
    /// The caller must hold every permission the group grants, before and after, and
    /// everything each member holds (no reaching a stronger user through a group), and be
    /// bound to no tenant (`GlobalOnly`, as for [`Store::create_group`]). A change that
    /// changes nothing writes nothing.
    pub fn update_group(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: GroupPatch,
    ) -> Result<Group, StoreError> {
        actor.ensure_global(GROUPS_ARE_GLOBAL)?;
        check_permission_edit(&patch.permissions)?;
        let narrows = patch.permissions.narrows();
        let prepare = || {
            let admin_keys = self.admin_keys_if(narrows && self.group_holds_everything(id)?)?;
            Ok((self.members(id)?, admin_keys))
        };
        self.write_prepared(actor, prepare, |tx, (members, admin_keys)| {
            let Some(mut group) = tx.get::<Group>(&layout::group(id))? else {
                return abort(StoreError::not_found(Entity::Group, id));
            };
            let original = group.clone();
            if let Err(e) = actor.ensure_covers(&group.permissions) {
                return abort(e);
            }
            Self::ensure_may_change_members(tx, actor, members)?;
            NameIndex::GROUPS.rename(tx, id, &mut group.name, patch.name.as_ref())?;
            patch.permissions.apply(&mut group.permissions);
            if let Err(e) = check_permissions("permissions", &group.permissions)
                .and_then(|()| actor.ensure_covers(&group.permissions))
            {
                return abort(e);
            }
            if group == original {
                return Ok(group);
            }
            group.updated_at = tx.now;
            tx.put(&layout::group(id), &group)?;
            admin_keys.ensure_one_remains(tx)?;
            let changes = Changes::default()
                .field("name", &original.name, &group.name)
                .set(
                    "permissions",
                    original.permissions.iter(),
                    group.permissions.iter(),
                );
            tx.record_changes(Action::GroupUpdate, id, None, changes);
            tx.invalidate(Invalidate::All);
            Ok(group)
        })
    }

    /// Deletes a group and removes it from its users, in one transaction. The caller must
    /// hold what the group grants and everything each member holds, and be bound to no
    /// tenant.
    pub fn delete_group(&self, actor: &Actor, id: Uuid) -> Result<(), StoreError> {
        actor.ensure_global(GROUPS_ARE_GLOBAL)?;
        let prepare = || {
            let admin_keys = self.admin_keys_if(self.group_holds_everything(id)?)?;
            Ok((self.members(id)?, admin_keys))
        };
        self.write_prepared(actor, prepare, |tx, (members, admin_keys)| {
            let Some(group) = tx.get::<Group>(&layout::group(id))? else {
                return abort(StoreError::not_found(Entity::Group, id));
            };
            if let Err(e) = actor.ensure_covers(&group.permissions) {
                return abort(e);
            }
            Self::ensure_may_change_members(tx, actor, members)?;
            for member in members {
                let mut user = member.clone();
                user.groups.retain(|g| *g != id);
                user.updated_at = tx.now;
                tx.put(&layout::user(user.id), &user)?;
                user_index::follow(tx, Some(member), Some(&user))?;
                let changes = super::users::user_changes(member, &user);
                tx.record_changes(Action::UserUpdate, user.id, Some(user.id), changes);
            }
            tx.remove(&layout::group(id))?;
            tx.count(Counter::Groups, -1)?;
            NameIndex::GROUPS.remove(tx, &group.name)?;
            admin_keys.ensure_one_remains(tx)?;
            tx.record(Action::GroupDelete, id, None);
            tx.invalidate(Invalidate::All);
            Ok(())
        })
    }

    /// The users in a group, through the index of users by group (every user read while
    /// it is incomplete). Run in a write's preparation, under the write lock.
    pub(super) fn members(&self, id: Uuid) -> Result<Vec<User>, StoreError> {
        if !user_index::complete(&self.inner.db)? {
            let users = self.scan::<User>(layout::USERS)?;
            return Ok(users
                .into_iter()
                .filter(|u| u.groups.contains(&id))
                .collect());
        }
        let ids = UserIndex::GROUPS.users_after(&self.inner.db, &user_index::group(id), None);
        let mut members = Vec::new();
        for batch in &ids.chunks(BATCH) {
            let paths = batch
                .map(|id| id.map(layout::user))
                .collect::<Result<Vec<_>, _>>()?;
            members.extend(self.get_many::<User>(&paths)?.into_iter().flatten());
        }
        Ok(members)
    }

    /// Whether a group grants `*`.
    fn group_holds_everything(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .get::<Group>(&layout::group(id))?
            .is_some_and(|g| g.permissions.allows(&everything())))
    }

    /// A change to a group changes the access of each member: the caller must hold
    /// everything each one holds (else `Escalation`), so that it cannot reach a stronger
    /// user through a group. (It is global, so it sees every member.)
    fn ensure_may_change_members(tx: &Tx<'_>, actor: &Actor, members: &[User]) -> TxResult<()> {
        for member in members {
            if let Err(e) = actor.ensure_covers(&user_grants_in(tx, member)?) {
                return abort(e);
            }
        }
        Ok(())
    }

    /// Resolves a UUID or a unique name through the name index.
    pub(super) fn resolve(
        &self,
        reference: &str,
        entity: Entity,
        by_id: fn(Uuid) -> Vec<u8>,
        by_name: fn(&str) -> Vec<u8>,
    ) -> Result<Uuid, StoreError> {
        if let Ok(id) = Uuid::parse_str(reference) {
            if self.inner.db.contains_key(&by_id(id))? {
                return Ok(id);
            }
            return Err(StoreError::not_found(entity, reference));
        }
        match self.inner.db.get(&by_name(reference))? {
            Some(bytes) => Uuid::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Err(StoreError::not_found(entity, reference)),
        }
    }
}
