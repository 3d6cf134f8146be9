//! The last admin key: no write may leave the store without an active key that holds `*`,
//! or no one could manage it through the API any more (`Conflict::LastAdminKey`).
//!
//! A key holds `*` effectively when its user's grants hold `*` and its scopes, if any, do
//! too (only `*` covers `*`). It is active when it is enabled, unrevoked, unexpired and its
//! user exists and is enabled. Every write that can take `*` away from a key (revoking or
//! disabling it; disabling, narrowing or deleting its user; narrowing or deleting its
//! group) first asks, cheaply, whether its target holds `*` at all; only then does it
//! list the admin keys, before its transaction and under the write lock, and check inside
//! the transaction, after its changes, that one of them still holds `*`.
//!
//! A store with no admin key at all (an embedding that never made one) is not held to
//! this: the rule keeps the last one, it does not demand one.

use std::collections::HashSet;

use uuid::Uuid;

use super::keys::KeyRecord;
use super::tx::{Tx, TxResult, abort};
use super::users::user_grants_in;
use super::{Store, layout};
use crate::error::{Conflict, StoreError};
use crate::key::PublicId;
use crate::model::{KeyStatus, User};
use crate::permission::{Permission, PermissionSet};

/// The active keys that held `*` before a write (empty when the write cannot touch one).
#[derive(Debug, Default)]
pub(super) struct AdminKeys(Vec<PublicId>);

impl AdminKeys {
    /// Inside the write, after its changes: fails with `Conflict::LastAdminKey` when keys
    /// held `*` before and none does now.
    pub(super) fn ensure_one_remains(&self, tx: &Tx<'_>) -> TxResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        for public in &self.0 {
            if is_admin_key_in(tx, public)? {
                return Ok(());
            }
        }
        abort(Conflict::LastAdminKey.into())
    }
}

impl Store {
    /// The admin keys, when `relevant` (the write's target holds `*`); none otherwise.
    /// Run in a write's preparation, under the write lock.
    pub(super) fn admin_keys_if(&self, relevant: bool) -> Result<AdminKeys, StoreError> {
        if !relevant {
            return Ok(AdminKeys::default());
        }
        let mut admins = HashSet::new();
        for user in self.scan::<User>(layout::USERS)? {
            if user.enabled && self.user_permissions(&user)?.allows(&everything()) {
                admins.insert(user.id);
            }
        }
        if admins.is_empty() {
            return Ok(AdminKeys::default());
        }
        let now = self.inner.clock.now();
        let mut keys = Vec::new();
        for record in self.scan::<KeyRecord>(layout::KEYS)? {
            if admins.contains(&record.user_id)
                && record.status(now) == KeyStatus::Active
                && scopes_hold_everything(record.scopes.as_ref())
            {
                keys.push(record.public_id()?);
            }
        }
        Ok(AdminKeys(keys))
    }

    /// Whether a key (by record id) is active and holds `*` now. An unknown id is not.
    pub(super) fn is_admin_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self.key_record(id).ok() else {
            return Ok(false);
        };
        if record.status(self.inner.clock.now()) != KeyStatus::Active
            || !scopes_hold_everything(record.scopes.as_ref())
        {
            return Ok(false);
        }
        self.user_holds_everything(record.user_id)
    }

    /// Whether a user exists, is enabled and holds `*`.
    pub(super) fn user_holds_everything(&self, id: Uuid) -> Result<bool, StoreError> {
        match self.get::<User>(&layout::user(id))? {
            Some(user) if user.enabled => Ok(self.user_permissions(&user)?.allows(&everything())),
            _ => Ok(false),
        }
    }
}

/// Whether a key, as the write leaves it so far, is active and holds `*`.
fn is_admin_key_in(tx: &Tx<'_>, public: &PublicId) -> TxResult<bool> {
    let Some(record) = tx.get::<KeyRecord>(&layout::key(public))? else {
        return Ok(false);
    };
    if record.status(tx.now) != KeyStatus::Active || !scopes_hold_everything(record.scopes.as_ref())
    {
        return Ok(false);
    }
    let Some(user) = tx.get::<User>(&layout::user(record.user_id))? else {
        return Ok(false);
    };
    Ok(user.enabled && user_grants_in(tx, &user, false)?.allows(&everything()))
}

fn scopes_hold_everything(scopes: Option<&PermissionSet>) -> bool {
    scopes.is_none_or(|s| s.allows(&everything()))
}

pub(super) fn everything() -> Permission {
    Permission::parse("*").expect("valid")
}
