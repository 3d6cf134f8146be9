//! Users: create, read, update, delete (which revokes their keys).

use uuid::Uuid;

use super::counters::Counter;
use super::last_admin;
use super::names::NameIndex;
use super::tx::{Invalidate, Tx, TxResult, abort};
use super::user_index;
use super::user_limits::{put_user_limits_in, user_limits_in};
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::{Action, Changes};
use crate::controls::check_rate_limits;
use crate::error::{Entity, StoreError};
use crate::limits::{check_groups, check_permission_edit, check_permissions, check_tenant};
use crate::model::{Group, NewUser, User, UserPatch, validate_principal_name};
use crate::permission::PermissionSet;

impl Store {
    /// Creates a user. The caller must hold everything the user would hold (its direct
    /// permissions and its groups'). A tenant-bound caller's users go to its tenant
    /// (organization); asking for another is `TenantForbidden`.
    pub fn create_user(&self, actor: &Actor, new: NewUser) -> Result<User, StoreError> {
        self.write(actor, |tx| self.create_user_in(tx, actor, &new))
    }

    pub(super) fn create_user_in(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        new: &NewUser,
    ) -> TxResult<User> {
        // The caller's own tenant and organization stand as stored, whatever rule they
        // were written under.
        let (own_tenant, own_organization) = (actor.tenant_id(), actor.organization_id());
        let placed = validate_principal_name("name", &new.name)
            .and_then(|()| validate_new("tenant_id", new.tenant_id.as_deref(), own_tenant))
            .and_then(|()| {
                let organization = new.organization_id.as_deref();
                validate_new("organization_id", organization, own_organization)
            })
            .and_then(|()| check_permissions("permissions", &new.permissions))
            .and_then(|()| check_groups("groups", new.groups.len()))
            .and_then(|()| check_rate_limits(&new.rate_limits))
            .and_then(|()| actor.place(new.tenant_id.as_deref(), new.organization_id.as_deref()));
        let (tenant_id, organization_id) = match placed {
            Ok(placed) => placed,
            Err(e) => return abort(e),
        };
        NameIndex::USERS.ensure_free(tx, &new.name)?;
        let mut groups = new.groups.clone();
        groups.dedup();
        let user = User {
            id: Uuid::now_v7(),
            name: new.name.clone(),
            enabled: new.enabled,
            groups,
            permissions: new.permissions.clone(),
            tenant_id,
            organization_id,
            created_at: tx.now,
            updated_at: tx.now,
            rate_limits: new.rate_limits.clone(),
        };
        let grants = user_grants_checked_in(tx, &user)?;
        if let Err(e) = actor.ensure_covers(&grants) {
            return abort(e);
        }
        tx.put(&layout::user(user.id), &user)?;
        put_user_limits_in(tx, user.id, &user.rate_limits)?;
        tx.count(Counter::Users, 1)?;
        NameIndex::USERS.insert(tx, &user.name, user.id)?;
        user_index::follow(tx, None, Some(&user))?;
        tx.record(Action::UserCreate, user.id, Some(user.id));
        Ok(user)
    }

    /// A user by id or by name.
    pub fn user(&self, reference: &str) -> Result<User, StoreError> {
        self.user_view(self.user_record(reference)?)
    }

    /// A user's record as stored, by id or by name: [`Store::user`] without the view's
    /// reads (its rate limits).
    pub(super) fn user_record(&self, reference: &str) -> Result<User, StoreError> {
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
        self.scan(layout::USERS)?
            .into_iter()
            .map(|u| self.user_view(u))
            .collect()
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
    /// everything the user holds, before and after; a tenant-bound caller sees only its
    /// tenant's users and cannot move one out. A change that changes nothing writes nothing.
    pub fn update_user(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: UserPatch,
    ) -> Result<User, StoreError> {
        check_user_patch(&patch)?;
        actor.ensure_may_set("tenant_id", patch.tenant_id.as_ref())?;
        actor.ensure_may_set("organization_id", patch.organization_id.as_ref())?;
        // Moving a user into a tenant narrows it too: its `*` keys stop being admin keys.
        let narrows = patch.enabled == Some(false)
            || patch.tenant_id.is_some()
            || patch.groups.is_some()
            || !patch.remove_groups.is_empty()
            || patch.permissions.narrows();
        let stalls = patch.rate_limits.as_deref().is_some_and(last_admin::stalls);
        let guard = || self.admin_keys_if((narrows || stalls) && self.is_admin_user(id)?);
        self.write_prepared(actor, guard, |tx, admin_keys| {
            let Some(mut user) = tx.get::<User>(&layout::user(id))?.filter(|u| actor.sees(u))
            else {
                return abort(StoreError::not_found(Entity::User, id));
            };
            user.rate_limits = user_limits_in(tx, id)?;
            let original = user.clone();
            let before = user_grants_in(tx, &user)?;
            if let Err(e) = actor.ensure_covers(&before) {
                return abort(e);
            }
            NameIndex::USERS.rename(tx, id, &mut user.name, patch.name.as_ref())?;
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
            patch.permissions.apply(&mut user.permissions);
            for (field, value, current) in [
                ("tenant_id", &patch.tenant_id, &user.tenant_id),
                (
                    "organization_id",
                    &patch.organization_id,
                    &user.organization_id,
                ),
            ] {
                // The user's value as it stands is not checked again.
                let checked = value
                    .as_ref()
                    .map(|v| validate_new(field, v.as_deref(), current.as_deref()));
                if let Some(Err(e)) = checked {
                    return abort(e);
                }
            }
            if let Some(tenant) = &patch.tenant_id {
                user.tenant_id = tenant.clone();
            }
            if let Some(organization) = &patch.organization_id {
                user.organization_id = organization.clone();
            }
            if let Some(limits) = &patch.rate_limits {
                user.rate_limits = limits.clone();
            }
            if let Err(e) = check_groups("groups", user.groups.len())
                .and_then(|()| check_permissions("permissions", &user.permissions))
            {
                return abort(e);
            }
            let after = user_grants_checked_in(tx, &user)?;
            if let Err(e) = actor.ensure_covers(&after) {
                return abort(e);
            }
            if user == original {
                return Ok(user);
            }
            user.updated_at = tx.now;
            tx.put(&layout::user(id), &user)?;
            if user.rate_limits != original.rate_limits {
                put_user_limits_in(tx, id, &user.rate_limits)?;
            }
            user_index::follow(tx, Some(&original), Some(&user))?;
            admin_keys.ensure_one_remains(tx)?;
            tx.record_changes(
                Action::UserUpdate,
                id,
                Some(id),
                user_changes(&original, &user),
            );
            tx.invalidate(Invalidate::All);
            Ok(user)
        })
    }

    /// Deletes a user; none of its keys authenticates from then on. Its keys are revoked
    /// in the same transaction when they fit in one job chunk, else in the background
    /// (see `jobs.rs`). The revoked keys stay listed until deleted. Deleting the user of
    /// the last active key that holds `*` is `LastAdminKey`.
    pub fn delete_user(&self, actor: &Actor, id: Uuid) -> Result<(), StoreError> {
        let prepare = || {
            Ok((
                self.user_keys_head(id)?,
                self.admin_keys_if(self.is_admin_user(id)?)?,
            ))
        };
        let in_background = self.write_prepared(actor, prepare, |tx, (head, admin_keys)| {
            let Some(user) = tx.get::<User>(&layout::user(id))?.filter(|u| actor.sees(u)) else {
                return abort(StoreError::not_found(Entity::User, id));
            };
            let grants = user_grants_in(tx, &user)?;
            if let Err(e) = actor.ensure_covers(&grants) {
                return abort(e);
            }
            // Marked, as `revoke-keys` does: until the background work reaches a key, the
            // key is revoked to every rule (never enabled again, deleted as a revoked key,
            // never rotated), not only to verification, which finds no user.
            tx.revoke_user_keys_in(actor, id, head, true)?;
            tx.remove(&layout::user(id))?;
            put_user_limits_in(tx, id, &[])?;
            tx.count(Counter::Users, -1)?;
            NameIndex::USERS.remove(tx, &user.name)?;
            user_index::follow(tx, Some(&user), None)?;
            admin_keys.ensure_one_remains(tx)?;
            tx.record(Action::UserDelete, id, Some(id));
            tx.invalidate(Invalidate::All);
            Ok(!head.fits_inline())
        })?;
        self.inner.user_meters.forget(id);
        if in_background {
            self.wake_jobs();
        }
        Ok(())
    }
}

/// A user's grants, read inside the transaction; a group that no longer exists grants
/// nothing.
pub(super) fn user_grants_in(tx: &Tx<'_>, user: &User) -> TxResult<PermissionSet> {
    grants_in(tx, user, MissingGroup::Skip)
}

/// A user's grants for a user being written: a missing group is a `NotFound` for the
/// `groups` field.
fn user_grants_checked_in(tx: &Tx<'_>, user: &User) -> TxResult<PermissionSet> {
    grants_in(tx, user, MissingGroup::NotFound)
}

/// What a group the user names but the store lacks means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MissingGroup {
    Skip,
    NotFound,
}

fn grants_in(tx: &Tx<'_>, user: &User, missing: MissingGroup) -> TxResult<PermissionSet> {
    let mut groups = Vec::with_capacity(user.groups.len());
    for id in &user.groups {
        match tx.get::<Group>(&layout::group(*id))? {
            Some(group) => groups.push(group.permissions),
            None if missing == MissingGroup::NotFound => {
                return abort(StoreError::not_found(Entity::Group, id));
            }
            None => {}
        }
    }
    Ok(PermissionSet::effective(&user.permissions, &groups, None))
}

/// Checks a tenant or organization id given, unless it is `standing` (a value already
/// stored, checked when it was written: a rule made stricter since never stops a write
/// that names it).
fn validate_new(
    field: &'static str,
    value: Option<&str>,
    standing: Option<&str>,
) -> Result<(), StoreError> {
    match value {
        Some(v) if Some(v) != standing => check_tenant(field, v),
        _ => Ok(()),
    }
}

/// Checks the sizes of a user change's lists, before anything is read.
fn check_user_patch(patch: &UserPatch) -> Result<(), StoreError> {
    if let Some(groups) = &patch.groups {
        check_groups("groups", groups.len())?;
    }
    check_groups("add_groups", patch.add_groups.len())?;
    check_groups("remove_groups", patch.remove_groups.len())?;
    if let Some(limits) = &patch.rate_limits {
        check_rate_limits(limits)?;
    }
    check_permission_edit(&patch.permissions)
}

/// What a change did to a user, field by field ([`crate::AuditEvent::changes`]).
pub(crate) fn user_changes(before: &User, after: &User) -> Changes {
    Changes::default()
        .field("name", &before.name, &after.name)
        .field("enabled", &before.enabled, &after.enabled)
        .set("groups", &before.groups, &after.groups)
        .set(
            "permissions",
            before.permissions.iter(),
            after.permissions.iter(),
        )
        .field("tenant_id", &before.tenant_id, &after.tenant_id)
        .field(
            "organization_id",
            &before.organization_id,
            &after.organization_id,
        )
        .field("rate_limits", &before.rate_limits, &after.rate_limits)
}

#[cfg(test)]
mod tests {
    use super::validate_new;

    #[test]
    fn a_standing_tenant_is_not_checked_again() {
        // Stored under a looser rule: named again as it stands, it passes.
        assert!(validate_new("tenant_id", Some("acme "), Some("acme ")).is_ok());
        assert!(validate_new("tenant_id", Some("acme "), Some("acme")).is_err());
        assert!(validate_new("tenant_id", Some("acme\u{200b}"), None).is_err());
        assert!(validate_new("tenant_id", Some("acme"), None).is_ok());
        assert!(validate_new("tenant_id", None, Some("acme ")).is_ok());
    }
}
