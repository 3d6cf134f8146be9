//! The last admin key: no write may leave the store without an active admin key, or no
//! one could manage it through the API any more (`Conflict::LastAdminKey`).
//!
//! An admin key holds `*` effectively (its user's grants hold `*` and its scopes, if any,
//! do too: only `*` covers `*`) and its user belongs to no tenant: a tenant-bound `*` key
//! manages its tenant only (no other tenant, no backup, no change feed, no global user), so
//! it does not count. A key is active when it is enabled, unrevoked, unexpired and its user
//! exists and is enabled. A key its usage control can stop counts for none: credits of any
//! amount (spent by use, they refuse it until a refill, if any, which may be a month away),
//! or a rate limit of its own or its user's that lets it through less than once a minute
//! ([`stalls`]). A store whose every admin key has credits (made before that rule, which
//! counted only credits at 0) keeps the older rule, so that it is not left unguarded: its
//! keys with credits left count, and setting one's credits to 0 is refused. Every write that can take `*` away from a key
//! (revoking or disabling it, stopping it so; disabling, narrowing or deleting its user;
//! narrowing or deleting its group) first asks, cheaply,
//! whether its target holds `*` at all; only then does it list the admin keys, before its
//! transaction and under the write lock, and check inside the transaction, after its
//! changes, that one of them still holds `*`.
//!
//! A store with no admin key at all (an embedding that never made one) is not held to
//! this: the rule keeps the last one, it does not demand one.

use std::collections::HashSet;

use uuid::Uuid;

use super::controls::ControlsRecord;
use super::index::{self, Scope};
use super::keys::KeyRecord;
use super::query::SortField;
use super::tx::{Tx, TxResult, abort};
use super::user_limits::user_limits_in;
use super::users::user_grants_in;
use super::{Store, layout};
use crate::controls::RateLimit;
use crate::error::{Conflict, StoreError};
use crate::key::PublicId;
use crate::model::{KeyStatus, User};
use crate::permission::{Permission, PermissionSet};

/// How deep into one admin user's keys [`Store::admin_keys_if`] reads before it warns that
/// it reads on, by default (`StoreConfig::admin_scan_keys`).
pub(super) const ADMIN_SCAN: usize = 10_000;

/// The active keys that held `*` before a write (empty when the write cannot touch one),
/// and the rule they were found by.
#[derive(Debug, Default)]
pub(super) struct AdminKeys {
    keys: Vec<PublicId>,
    metering: Metering,
}

/// How credits count against an admin key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Metering {
    /// A key with credits, however many, can be stopped by use: it counts for none.
    #[default]
    AnyCredits,
    /// Only a key whose credits are spent counts for none: for a store whose every admin
    /// key has credits (made before [`Metering::AnyCredits`]), so that it stays guarded.
    SpentCredits,
}

impl AdminKeys {
    /// Inside the write, after its changes: fails with `Conflict::LastAdminKey` when keys
    /// held `*` before and none of those found does now (or each is stopped).
    pub(super) fn ensure_one_remains(&self, tx: &Tx<'_>) -> TxResult<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        for public in &self.keys {
            if is_admin_key_in(tx, public, self.metering)? {
                return Ok(());
            }
        }
        abort(Conflict::LastAdminKey.into())
    }
}

/// Whether a key's usage control can stop it from managing the store: it is metered (its
/// credits, however many, run out by use; under [`Metering::SpentCredits`], only credits
/// spent at `now`), or its own or its user's rate limits [`stall`](stalls).
fn stopped(
    controls: Option<&ControlsRecord>,
    user_limits: &[RateLimit],
    metering: Metering,
    now: i128,
) -> bool {
    let metered = |c: &ControlsRecord| match (metering, c.credits) {
        (_, None) => false,
        (Metering::AnyCredits, Some(_)) => true,
        (Metering::SpentCredits, Some(credits)) => credits.current(now).remaining == 0,
    };
    controls.is_some_and(|c| metered(c) || stalls(&c.rate_limits)) || stalls(user_limits)
}

/// Whether `limits` would leave a key waiting more than a minute between requests once its
/// burst is spent: on the last admin key, that would lock the API out for the window (up
/// to 31 days) as surely as credits 0.
pub(super) fn stalls(limits: &[RateLimit]) -> bool {
    limits
        .iter()
        .any(|l| u64::from(l.window_seconds) > 60 * u64::from(l.limit))
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
            if self.is_store_admin(&user)? && !stalls(&self.user_limits(user.id)?) {
                admins.insert(user.id);
            }
        }
        if admins.is_empty() {
            return Ok(AdminKeys::default());
        }
        // Every write that can take `*` from several keys at once takes it from all keys of
        // one user alike (delete, disable, narrow, revoke-keys), and a single-key write from
        // one key: two active `*` keys per admin user are enough to tell whether one remains.
        // The user index gives its keys newest first; the read stops at the second. A user
        // whose newest keys are not admin keys is read on, to the end if need be: a read cut
        // short would have to refuse, and anyone who may make keys for an admin user could
        // then pad it with keys until no admin key of it could be revoked. Reading that deep
        // is logged: it costs every such write.
        for metering in [Metering::AnyCredits, Metering::SpentCredits] {
            let keys = self.admin_keys_of(&admins, metering)?;
            if !keys.is_empty() {
                return Ok(AdminKeys { keys, metering });
            }
        }
        Ok(AdminKeys::default())
    }

    /// Up to two admin keys of each of `admins`, by `metering`.
    fn admin_keys_of(
        &self,
        admins: &HashSet<Uuid>,
        metering: Metering,
    ) -> Result<Vec<PublicId>, StoreError> {
        let now = self.inner.clock.now();
        let depth = self.inner.admin_scan_keys;
        let mut keys = Vec::new();
        for &user in admins {
            let entries = index::scan(
                &self.inner.db,
                Scope::User(user),
                SortField::CreatedAt,
                true,
                None,
            );
            let (mut found, mut read) = (0, 0);
            for entry in entries {
                read += 1;
                if read == depth + 1 {
                    tracing::warn!(user_id = %user, depth, "the last-admin check reads past {depth} keys of an admin user without finding two admin keys: every write that could take `*` from its keys reads them all (keep an admin user's keys few)");
                }
                let (_, id) = entry?;
                let Some(public) = layout::public_id_of(id) else {
                    continue;
                };
                let Some(record) = self.get::<KeyRecord>(&layout::key(&public))? else {
                    continue;
                };
                let controls = self.get::<ControlsRecord>(&layout::key_controls(&public))?;
                if record.status(now) == KeyStatus::Active
                    && scopes_hold_everything(record.scopes.as_ref())
                    && !stopped(controls.as_ref(), &[], metering, now.unix_timestamp_nanos())
                {
                    keys.push(public);
                    found += 1;
                    if found == 2 {
                        break;
                    }
                }
            }
        }
        Ok(keys)
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
        self.is_admin_user(record.user_id)
    }

    /// Whether a user exists and its keys would be admin keys: enabled, in no tenant,
    /// holding `*`.
    pub(super) fn is_admin_user(&self, id: Uuid) -> Result<bool, StoreError> {
        match self.get::<User>(&layout::user(id))? {
            Some(user) => self.is_store_admin(&user),
            None => Ok(false),
        }
    }

    fn is_store_admin(&self, user: &User) -> Result<bool, StoreError> {
        Ok(user.enabled
            && user.tenant_id.is_none()
            && self.user_permissions(user)?.allows(&everything()))
    }
}

/// Whether a key, as the write leaves it so far, is active, holds `*` and is not
/// [`stopped`].
fn is_admin_key_in(tx: &Tx<'_>, public: &PublicId, metering: Metering) -> TxResult<bool> {
    let Some(record) = tx.get::<KeyRecord>(&layout::key(public))? else {
        return Ok(false);
    };
    if record.status(tx.now) != KeyStatus::Active || !scopes_hold_everything(record.scopes.as_ref())
    {
        return Ok(false);
    }
    // Revoked by its user's revocation mark, its record still to be revoked in the
    // background (`POST /v1/users/{id}/revoke-keys` on a user with many keys).
    if super::jobs::revoked_by_mark_in(tx, &record)? {
        return Ok(false);
    }
    let Some(user) = tx.get::<User>(&layout::user(record.user_id))? else {
        return Ok(false);
    };
    if !user.enabled
        || user.tenant_id.is_some()
        || !user_grants_in(tx, &user)?.allows(&everything())
    {
        return Ok(false);
    }
    let controls = tx.get::<ControlsRecord>(&layout::key_controls(public))?;
    let user_limits = user_limits_in(tx, user.id)?;
    Ok(!stopped(
        controls.as_ref(),
        &user_limits,
        metering,
        tx.now.unix_timestamp_nanos(),
    ))
}

fn scopes_hold_everything(scopes: Option<&PermissionSet>) -> bool {
    scopes.is_none_or(|s| s.allows(&everything()))
}

pub(super) fn everything() -> Permission {
    Permission::parse("*").expect("valid")
}
