//! Users: create, read, update, delete (which revokes their keys).

use uuid::Uuid;

use super::counters::Counter;
use super::tx::{Invalidate, Tx, TxResult, abort};
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::Action;
use crate::error::{Conflict, Entity, StoreError};
use crate::model::{Group, NewUser, User, UserPatch, validate_principal_name, validate_text};
use crate::permission::PermissionSet;

impl Store {
    /// Creates a user. The caller must hold everything the user would hold (its direct
    /// permissions and its groups').
    pub fn create_user(&self, actor: &Actor, new: NewUser) -> Result<User, StoreError> {
        self.write(actor, |tx| self.create_user_in(tx, actor, &new))
    }

    pub(super) fn create_user_in(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        new: &NewUser,
    ) -> TxResult<User> {
        if let Err(e) = validate_principal_name("name", &new.name)
            .and_then(|()| validate_optional("tenant_id", new.tenant_id.as_deref()))
            .and_then(|()| validate_optional("organization_id", new.organization_id.as_deref()))
        {
            return abort(e);
        }
        if tx.get_raw(&layout::user_name(&new.name))?.is_some() {
            return abort(
                Conflict::NameTaken {
                    entity: Entity::User,
                    name: new.name.clone(),
                }
                .into(),
            );
        }
        let mut groups = new.groups.clone();
        groups.dedup();
        let user = User {
            id: Uuid::now_v7(),
            name: new.name.clone(),
            enabled: new.enabled,
            groups,
            permissions: new.permissions.clone(),
            tenant_id: new.tenant_id.clone(),
            organization_id: new.organization_id.clone(),
            created_at: tx.now,
            updated_at: tx.now,
        };
        let grants = user_grants_in(tx, &user, true)?;
        if let Err(e) = actor.ensure_covers(&grants) {
            return abort(e);
        }
        tx.put(&layout::user(user.id), &user)?;
        tx.count(Counter::Users, 1)?;
        tx.put_raw(&layout::user_name(&user.name), user.id.as_bytes())?;
        tx.record(Action::UserCreate, user.id, Some(user.id));
        Ok(user)
    }

    /// A user by id or by name.
    pub fn user(&self, reference: &str) -> Result<User, StoreError> {
        let id = self.user_id(reference)?;
        self.get(&layout::user(id))?
            .ok_or_else(|| StoreError::not_found(Entity::User, reference))
    }

    /// Resolves a user id or name to its id.
    pub fn user_id(&self, reference: &str) -> Result<Uuid, StoreError> {
        self.resolve(reference, Entity::User, layout::user, layout::user_name)
    }

    /// Every user, oldest first.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.scan(layout::USERS)
    }

    /// What a user holds: its direct permissions and its groups'.
    pub fn user_permissions(&self, user: &User) -> Result<PermissionSet, StoreError> {
        let groups: Vec<PermissionSet> = user
            .groups
            .iter()
            .filter_map(|g| self.get::<Group>(&layout::group(*g)).transpose())
            .map(|g| g.map(|g| g.permissions))
            .collect::<Result<_, _>>()?;
        Ok(PermissionSet::effective(&user.permissions, &groups, None))
    }

    /// Changes a user; the change reaches all its keys at once. The caller must hold
    /// everything the user holds, before and after.
    pub fn update_user(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: UserPatch,
    ) -> Result<User, StoreError> {
        self.write(actor, |tx| {
            let Some(mut user) = tx.get::<User>(&layout::user(id))? else {
                return abort(StoreError::not_found(Entity::User, id));
            };
            let before = user_grants_in(tx, &user, false)?;
            if let Err(e) = actor.ensure_covers(&before) {
                return abort(e);
            }
            if let Some(name) = &patch.name {
                if let Err(e) = validate_principal_name("name", name) {
                    return abort(e);
                }
                if *name != user.name {
                    if tx.get_raw(&layout::user_name(name))?.is_some() {
                        return abort(
                            Conflict::NameTaken {
                                entity: Entity::User,
                                name: name.clone(),
                            }
                            .into(),
                        );
                    }
                    tx.remove(&layout::user_name(&user.name))?;
                    tx.put_raw(&layout::user_name(name), id.as_bytes())?;
                    user.name = name.clone();
                }
            }
            if let Some(enabled) = patch.enabled {
                user.enabled = enabled;
            }
            if let Some(groups) = &patch.groups {
                user.groups = groups.clone();
            }
            user.groups.extend(patch.add_groups.iter().copied());
            user.groups.retain(|g| !patch.remove_groups.contains(g));
            let mut seen = std::collections::HashSet::new();
            user.groups.retain(|g| seen.insert(*g));
            if let Some(permissions) = &patch.permissions {
                user.permissions = permissions.clone();
            }
            user.permissions.extend(&patch.add_permissions);
            user.permissions.remove_all(&patch.remove_permissions);
            for (field, value) in [
                ("tenant_id", &patch.tenant_id),
                ("organization_id", &patch.organization_id),
            ] {
                if let Some(Err(e)) = value
                    .as_ref()
                    .map(|v| validate_optional(field, v.as_deref()))
                {
                    return abort(e);
                }
            }
            if let Some(tenant) = &patch.tenant_id {
                user.tenant_id = tenant.clone();
            }
            if let Some(organization) = &patch.organization_id {
                user.organization_id = organization.clone();
            }
            let after = user_grants_in(tx, &user, true)?;
            if let Err(e) = actor.ensure_covers(&after) {
                return abort(e);
            }
            user.updated_at = tx.now;
            tx.put(&layout::user(id), &user)?;
            tx.record(Action::UserUpdate, id, Some(id));
            tx.invalidate(Invalidate::All);
            Ok(user)
        })
    }

    /// Deletes a user; none of its keys authenticates from then on. Its keys are revoked
    /// in the same transaction when they fit in one job chunk, else in the background
    /// (see `jobs.rs`). The revoked keys stay listed until deleted.
    pub fn delete_user(&self, actor: &Actor, id: Uuid) -> Result<(), StoreError> {
        let head = || self.user_keys_head(id);
        let in_background = self.write_prepared(actor, head, |tx, head| {
            let Some(user) = tx.get::<User>(&layout::user(id))? else {
                return abort(StoreError::not_found(Entity::User, id));
            };
            let grants = user_grants_in(tx, &user, false)?;
            if let Err(e) = actor.ensure_covers(&grants) {
                return abort(e);
            }
            tx.revoke_user_keys_in(id, head, false)?;
            tx.remove(&layout::user(id))?;
            tx.count(Counter::Users, -1)?;
            tx.remove(&layout::user_name(&user.name))?;
            tx.record(Action::UserDelete, id, Some(id));
            tx.invalidate(Invalidate::All);
            Ok(!head.fits_inline())
        })?;
        if in_background {
            self.wake_jobs();
        }
        Ok(())
    }
}

/// A user's grants, read inside the transaction. With `require_groups`, a missing group is
/// a `NotFound` for the `groups` field; otherwise it is skipped (it grants nothing).
pub(super) fn user_grants_in(
    tx: &Tx<'_>,
    user: &User,
    require_groups: bool,
) -> TxResult<PermissionSet> {
    let mut groups = Vec::with_capacity(user.groups.len());
    for id in &user.groups {
        match tx.get::<Group>(&layout::group(*id))? {
            Some(group) => groups.push(group.permissions),
            None if require_groups => return abort(StoreError::not_found(Entity::Group, id)),
            None => {}
        }
    }
    Ok(PermissionSet::effective(&user.permissions, &groups, None))
}

fn validate_optional(field: &'static str, value: Option<&str>) -> Result<(), StoreError> {
    value.map_or(Ok(()), |v| validate_text(field, v, 1, 128))
}
