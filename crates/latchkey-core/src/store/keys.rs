//! Keys: create, read, update, revoke, delete, rotate; and resolving one for verification.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::controls::{ControlsRecord, StoredCredits, voiding};
use super::counters::{self, Counter};
use super::index::Class;
use super::last_admin::{AdminKeys, stalls};
use super::rate_state::{carry_key_rates_in, copy_key_rates_in};
use super::tx::{Invalidate, Tx, TxResult, abort};
use super::usage::Usage;
use super::users::user_grants_in;
use super::{Store, layout};
use crate::actor::Actor;
use crate::audit::{Action, Changes};
use crate::controls::{
    Credits, CreditsPatch, canonical_net, check_allowed_ips, check_credit_amount, check_credits,
    check_meta, check_rate_limits, check_refill,
};
use crate::error::{Conflict, Entity, StoreError};
use crate::hash::SecretHash;
use crate::key::{ApiKey, Env, PublicId};
use crate::limits::{MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES, check_permissions};
use crate::meter::Meter;
use crate::model::{CreatedKey, Group, Key, KeyPatch, KeyStatus, NewKey, User, validate_text};
use crate::permission::PermissionSet;
use crate::verify::{Principal, PrincipalInfo, Resolved};

/// Whether a key is revoked: by itself, or with all its user's keys (revoke-keys, or its
/// user deleted), before the background job has brought the revocation to its record.
fn revoked_in(tx: &Tx<'_>, record: &KeyRecord) -> TxResult<bool> {
    Ok(record.revoked_at.is_some() || super::jobs::revoked_by_mark_in(tx, record)?)
}

/// A key as stored: the public record plus the secret's hash. Stored with postcard, so
/// times use `time`'s compact binary form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) id: Uuid,
    pub(crate) public_id: String,
    pub(crate) prefix: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) user_id: Uuid,
    pub(crate) env: Env,
    pub(crate) scopes: Option<PermissionSet>,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) enabled: bool,
    pub(crate) revoked_at: Option<OffsetDateTime>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) created_by: Option<Uuid>,
    pub(crate) rotated_from: Option<Uuid>,
    /// The secret's keyed hash, raw (32 bytes stored rather than 64 hex characters).
    pub(crate) hash: [u8; 32],
    /// Persisted usage figures; written by the usage flush under the write lock.
    pub(crate) usage: Usage,
}

impl KeyRecord {
    pub(crate) fn public_id(&self) -> Result<PublicId, StoreError> {
        PublicId::parse(&self.public_id).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub(crate) fn status(&self, now: OffsetDateTime) -> KeyStatus {
        KeyStatus::of(self.enabled, self.revoked_at, self.expires_at, now)
    }

    /// The public view, with usage figures not yet persisted added to the stored ones, and
    /// the usage control (`own_credits`: the slice of credits this process holds unspent).
    pub(crate) fn view(
        &self,
        now: OffsetDateTime,
        pending: Usage,
        controls: &ControlsRecord,
        own_credits: u64,
    ) -> Key {
        let mut usage = self.usage;
        usage.add(pending);
        Key {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            user_id: self.user_id,
            env: self.env,
            prefix: self.prefix.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
            enabled: self.enabled,
            revoked_at: self.revoked_at,
            status: self.status(now),
            created_at: self.created_at,
            created_by: self.created_by,
            rotated_from: self.rotated_from,
            last_used_at: usage.last_used_at,
            usage_count: usage.count,
            meta: controls.meta_value(),
            rate_limits: controls.rate_limits.clone(),
            credits: controls.credits_view(own_credits, now.unix_timestamp_nanos()),
            allowed_ips: controls.allowed_ips.clone(),
        }
    }
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys by status.
    pub keys: BTreeMap<&'static str, u64>,
    /// Users.
    pub users: u64,
    /// Groups.
    pub groups: u64,
}

/// Whether a change to a key's credits gives it any, now or by a refill: what a revoked or
/// expired key could never spend. Removing them, a balance set to 0 and a refill removed
/// give nothing.
fn gives_credits(patch: &CreditsPatch) -> bool {
    match patch {
        CreditsPatch::Clear | CreditsPatch::Refill(None) => false,
        CreditsPatch::Add(amount) => *amount > 0,
        CreditsPatch::Set { remaining, refill } => {
            *remaining > 0 || matches!(refill, Some(Some(_)))
        }
        CreditsPatch::Refill(Some(_)) => true,
    }
}

/// What a key is as [`Store::authenticates_now`] reads it: whom it authenticates as, until
/// when, and the groups its user's permissions come from.
#[derive(Debug, Clone)]
pub struct Standing {
    /// Whom it authenticates as.
    pub principal: Principal,
    /// When it expires, in Unix nanoseconds of the store's clock
    /// ([`crate::Clock::unix_nanos`]), if it does: it stops authenticating then with no
    /// change recorded.
    pub expires_at_nanos: Option<i128>,
    /// Its user's groups (ids).
    pub groups: Vec<Uuid>,
}

impl Store {
    /// Creates a key for a user and returns it with its secret, which is never stored and
    /// never shown again.
    ///
    /// The caller must hold everything the key could do: the user's permissions narrowed
    /// by the key's scopes. A caller that does not hold `*` mints a key capped at its own
    /// permissions ([`Actor::cap_scopes`]); a tenant-bound caller finds only the users of
    /// its tenant.
    pub fn create_key(&self, actor: &Actor, new: NewKey) -> Result<CreatedKey, StoreError> {
        self.write(actor, |tx| self.create_key_in(tx, actor, &new, None))
    }

    /// Creates many keys in one transaction and one flush: for provisioning in bulk and
    /// for seeding benchmarks. All succeed or none does.
    pub fn create_keys(
        &self,
        actor: &Actor,
        new: &[NewKey],
    ) -> Result<Vec<CreatedKey>, StoreError> {
        self.write(actor, |tx| {
            new.iter()
                .map(|n| self.create_key_in(tx, actor, n, None))
                .collect()
        })
    }

    pub(super) fn create_key_in(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        new: &NewKey,
        rotated: Option<&KeyRecord>,
    ) -> TxResult<CreatedKey> {
        // A successor carries its key's name and description as stored, checked when they
        // were written: a rule made stricter since never stops a rotation.
        let text = match rotated {
            Some(_) => Ok(()),
            None => validate_key_text(&new.name, new.description.as_deref()),
        };
        let checked = text.and_then(|()| {
            new.scopes
                .as_ref()
                .map_or(Ok(()), |s| check_permissions("scopes", s))
        });
        if let Err(e) = checked {
            return abort(e);
        }
        if new.expires_at.is_some_and(|at| at <= tx.now) {
            return abort(StoreError::invalid("expires_at", "must be in the future"));
        }
        let controls = match new_controls(new, tx.now) {
            Ok(controls) => controls,
            Err(e) => return abort(e),
        };
        let Some(user) = tx
            .get::<User>(&layout::user(new.user_id))?
            .filter(|u| actor.sees(u))
        else {
            return abort(StoreError::not_found(Entity::User, new.user_id));
        };
        let grants = user_grants_in(tx, &user)?;
        let effective = PermissionSet::effective(&grants, [], new.scopes.as_ref());
        if let Err(e) = actor.ensure_covers(&effective) {
            return abort(e);
        }
        let secret = ApiKey::generate(&self.inner.prefix, new.env);
        let public = secret.id();
        if tx.get_raw(&layout::key(&public))?.is_some() {
            // 71 random bits: unreachable in practice, and refused rather than overwritten.
            return abort(StoreError::storage("public id collision; try again"));
        }
        let record = KeyRecord {
            id: layout::key_uuid(&public, tx.now),
            public_id: public.as_str().to_owned(),
            prefix: secret.display_prefix().to_owned(),
            name: new.name.clone(),
            description: new.description.clone(),
            user_id: user.id,
            env: new.env,
            scopes: actor.cap_scopes(new.scopes.as_ref()),
            expires_at: new.expires_at,
            // Rotation never restores access that was switched off.
            enabled: rotated.is_none_or(|old| old.enabled),
            revoked_at: None,
            created_at: super::jobs::creation_time_in(tx, user.id, tx.now)?,
            created_by: actor.key_id(),
            rotated_from: rotated.map(|old| old.id),
            hash: self.inner.hash_key.hash(secret.secret()).to_bytes(),
            usage: Usage::default(),
        };
        if !controls.is_empty() {
            tx.put(&layout::key_controls(&public), &controls)?;
        }
        self.insert_key_record(tx, public, &record)?;
        Ok(CreatedKey {
            key: record.view(tx.now, Default::default(), &controls, 0),
            secret,
        })
    }

    /// Writes a new key's record, its audit event and its cache invalidation: the one place
    /// a key comes into existence (creation, rotation, import), so whatever indexes a key
    /// has are written here.
    pub(super) fn insert_key_record(
        &self,
        tx: &Tx<'_>,
        public: PublicId,
        record: &KeyRecord,
    ) -> TxResult<()> {
        tx.put_key(record)?;
        tx.record(Action::KeyCreate, record.id, Some(record.user_id));
        // Forget a cached "unknown id" for this public id.
        tx.invalidate(Invalidate::Key(public));
        Ok(())
    }

    /// A key by record id.
    pub fn key(&self, id: Uuid) -> Result<Key, StoreError> {
        let (record, pending) = self.key_record_and_pending(id)?;
        self.key_view(&record, pending, self.inner.clock.now())
    }

    /// A key's record with its usage figures not yet persisted, read together (see
    /// [`UsageBuffer::steady`](super::usage::UsageBuffer::steady)).
    pub(super) fn key_record_and_pending(
        &self,
        id: Uuid,
    ) -> Result<(KeyRecord, Usage), StoreError> {
        let _steady = self.inner.usage.steady();
        let record = self.key_record(id)?;
        let pending = self.inner.usage.pending(id);
        Ok((record, pending))
    }

    /// A key's public view, with its usage control and `pending`, its usage figures not yet
    /// persisted: read together with the record's (see
    /// [`UsageBuffer::steady`](super::usage::UsageBuffer::steady)).
    pub(crate) fn key_view(
        &self,
        record: &KeyRecord,
        pending: Usage,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        let controls: ControlsRecord = self
            .get(&layout::key_controls(&record.public_id()?))?
            .unwrap_or_default();
        Ok(self.key_view_with(record, pending, now, &controls))
    }

    /// [`Store::key_view`] with the key's usage control already read (a list page reads
    /// those of its keys at once).
    pub(crate) fn key_view_with(
        &self,
        record: &KeyRecord,
        pending: Usage,
        now: OffsetDateTime,
        controls: &ControlsRecord,
    ) -> Key {
        let own =
            self.inner
                .meters
                .own_slice(record.id, controls.version, now.unix_timestamp_nanos());
        record.view(now, pending, controls, own)
    }

    /// Resolves a key reference: its record id (UUID), its display prefix
    /// (`lk_live_4fT9kQ2mX8pZ`) or its public id.
    pub fn key_id(&self, reference: &str) -> Result<Uuid, StoreError> {
        if let Ok(id) = Uuid::parse_str(reference) {
            return Ok(id);
        }
        let public = reference.rsplit('_').next().unwrap_or(reference);
        let found = PublicId::parse(public)
            .ok()
            .map(|p| self.get::<KeyRecord>(&layout::key(&p)))
            .transpose()?
            .flatten();
        match found {
            Some(record) if reference == record.public_id || reference == record.prefix => {
                Ok(record.id)
            }
            _ => Err(StoreError::not_found(Entity::Key, reference)),
        }
    }

    pub(crate) fn key_record(&self, id: Uuid) -> Result<KeyRecord, StoreError> {
        let record = layout::public_id_of(id)
            .map(|p| self.get::<KeyRecord>(&layout::key(&p)))
            .transpose()?
            .flatten();
        record
            .filter(|r| r.id == id)
            .ok_or_else(|| StoreError::not_found(Entity::Key, id))
    }

    /// Changes a key's name, description, enabled flag or usage control. Enabling or disabling
    /// a revoked key is a `Conflict::KeyRevoked` (its revocation is final, and its status
    /// stays `revoked` whatever the flag); giving credits to a revoked or expired key is a
    /// `Conflict::CreditsOfAnEndedKey`, and to a key rotated already (its credits went to
    /// its successor) a `Conflict::CreditsOfARotatedKey`; disabling the last active key that holds `*`,
    /// giving it credits (spent by use, they would refuse it until a refill, if any) or a
    /// rate limit slower than once a minute is a `Conflict::LastAdminKey`. A change that changes
    /// nothing writes nothing.
    pub fn update_key(&self, actor: &Actor, id: Uuid, patch: KeyPatch) -> Result<Key, StoreError> {
        let stops = matches!(patch.credits, Some(CreditsPatch::Set { .. }))
            || patch.rate_limits.as_deref().is_some_and(stalls);
        let guard = || {
            if patch.enabled == Some(false) || stops {
                self.admin_keys_if(self.is_admin_key(id)?)
            } else {
                Ok(AdminKeys::default())
            }
        };
        let record = self.write_prepared(actor, guard, |tx, admin_keys| {
            let (_, mut record) = self.key_for_change(tx, actor, id)?;
            // No flush runs while the write lock is held: these go with the stored ones.
            let pending = self.inner.usage.pending(id);
            let before = record.clone();
            if let Some(name) = &patch.name {
                if let Err(e) = validate_text("name", name, 1, MAX_NAME_BYTES) {
                    return abort(e);
                }
                record.name = name.clone();
            }
            if let Some(description) = &patch.description {
                if let Some(Err(e)) = description
                    .as_deref()
                    .map(|d| validate_text("description", d, 0, MAX_DESCRIPTION_BYTES))
                {
                    return abort(e);
                }
                record.description = description.clone();
            }
            if let Some(enabled) = patch.enabled {
                if revoked_in(tx, &record)? {
                    return abort(Conflict::KeyRevoked.into());
                }
                record.enabled = enabled;
            }
            let public = record.public_id().map_err(abort_err)?;
            if patch.credits.as_ref().is_some_and(gives_credits) {
                let revoked = revoked_in(tx, &record)?;
                if revoked || record.expires_at.is_some_and(|at| at <= tx.now) {
                    let expired = !revoked;
                    return abort(Conflict::CreditsOfAnEndedKey { expired }.into());
                }
                // Stranded at the end of the grace (review s56 L4).
                if tx.get_raw(&layout::key_successor(&public))?.is_some() {
                    return abort(Conflict::CreditsOfARotatedKey.into());
                }
            }
            let path = layout::key_controls(&public);
            let old = tx.get::<ControlsRecord>(&path)?.unwrap_or_default();
            let own = self
                .inner
                .meters
                .own_slice(id, old.version, tx.now.unix_timestamp_nanos());
            let (controls, carry) = match patched_controls(&old, &patch, own, tx.now) {
                Ok(patched) => patched,
                Err(e) => return abort(e),
            };
            let settle = (controls != old).then(|| (old.version, carry, controls.clone()));
            if record == before && settle.is_none() {
                return Ok((record, None, pending));
            }
            if let Some((_, _, controls)) = &settle {
                // Kept when it controls nothing, with its version: a version never starts
                // again at 1, so a meter built from an older record is never taken for a
                // newer one (`Meters::meter`).
                tx.put(&path, controls)?;
                if controls.rate_limits == old.rate_limits {
                    let rates = layout::key_rates(&public);
                    carry_key_rates_in(tx, &rates, old.version, controls.version)?;
                }
            }
            tx.put_key(&record)?;
            admin_keys.ensure_one_remains(tx)?;
            let now = tx.now.unix_timestamp_nanos();
            let changes = key_changes(&before, &record)
                .field("meta", &old.meta_value(), &controls.meta_value())
                .field("rate_limits", &old.rate_limits, &controls.rate_limits)
                .field(
                    "credits",
                    &old.credits_view(own, now),
                    // What this process kept of its slice is still shown with them.
                    &controls.credits_view(if carry { own } else { 0 }, now),
                )
                .set("allowed_ips", &old.allowed_ips, &controls.allowed_ips);
            tx.record_changes(Action::KeyUpdate, id, Some(record.user_id), changes);
            tx.invalidate(Invalidate::Key(public));
            Ok((record, settle, pending))
        })?;
        let (record, settle, pending) = record;
        if let Some((old_version, carry, controls)) = settle {
            self.settle_meter(id, old_version, carry, &controls);
        }
        self.key_view(&record, pending, self.inner.clock.now())
    }

    /// Revokes a key, irreversibly; the very next verification fails. Revoking a revoked
    /// key changes nothing and answers the record as it is; revoking the last active key
    /// that holds `*` is a `Conflict::LastAdminKey`.
    pub fn revoke_key(&self, actor: &Actor, id: Uuid) -> Result<Key, StoreError> {
        let guard = || self.admin_keys_if(self.is_admin_key(id)?);
        let (record, pending) = self.write_prepared(actor, guard, |tx, admin_keys| {
            let (_, mut record) = self.key_for_change(tx, actor, id)?;
            // No flush runs while the write lock is held: these go with the stored ones.
            let pending = self.inner.usage.pending(id);
            if record.revoked_at.is_none() {
                record.revoked_at = Some(tx.now);
                tx.put_key(&record)?;
                admin_keys.ensure_one_remains(tx)?;
                tx.record(Action::KeyRevoke, id, Some(record.user_id));
                tx.invalidate(Invalidate::Key(record.public_id().map_err(abort_err)?));
            }
            Ok((record, pending))
        })?;
        self.key_view(&record, pending, self.inner.clock.now())
    }

    /// Deletes a revoked key; a key that is not revoked is a `Conflict::KeyNotRevoked`.
    pub fn delete_key(&self, actor: &Actor, id: Uuid) -> Result<(), StoreError> {
        self.write(actor, |tx| {
            let (_, record) = self.key_for_change(tx, actor, id)?;
            if !revoked_in(tx, &record)? {
                return abort(Conflict::KeyNotRevoked.into());
            }
            tx.remove_key(&record)?;
            let public = record.public_id().map_err(abort_err)?;
            tx.remove(&layout::key_controls(&public))?;
            tx.remove(&layout::key_rates(&public))?;
            tx.remove(&layout::key_successor(&public))?;
            // An imported key's text is found by its hash: the entry goes with the key, so
            // the same text may be imported again.
            for entry in [
                layout::imported_blake3(&record.hash),
                layout::imported_sha256(&record.hash),
            ] {
                if tx.get_raw(&entry)?.as_deref() == Some(public.as_str().as_bytes()) {
                    tx.remove(&entry)?;
                }
            }
            super::import::forget_seen(tx, &public)?;
            tx.record(Action::KeyDelete, id, Some(record.user_id));
            tx.invalidate(Invalidate::Key(public));
            Ok(())
        })?;
        self.inner.meters.remove(id);
        Ok(())
    }

    /// Rotates a key: a new key with the same user, scopes, name, description, environment,
    /// enabled flag, expiry (when still ahead) and usage control (the credits move to the new
    /// key: the old one keeps none to spend in its grace; its rate limits go on from where
    /// the old key's stand, which keeps its own); the old key now expires at the end of
    /// `grace` (at once for zero), or keeps its own earlier expiry. The new key is capped at
    /// the rotating caller's permissions, as a created one is.
    pub fn rotate_key(
        &self,
        actor: &Actor,
        id: Uuid,
        grace: Duration,
    ) -> Result<CreatedKey, StoreError> {
        if grace.is_negative() {
            return Err(StoreError::invalid("grace_seconds", "must not be negative"));
        }
        // The old key's unspent slice, taken once (a write may run its body again) and
        // credited to the new key; put back if the rotation does not commit.
        let taken = std::cell::Cell::new(None);
        let rotated = self.write(actor, |tx| {
            let (_, mut old) = self.key_for_change(tx, actor, id)?;
            // Its successor would escape a revocation mark.
            if revoked_in(tx, &old)? {
                return abort(Conflict::KeyRevoked.into());
            }
            let old_public = old.public_id().map_err(abort_err)?;
            // Its expiry is the grace's end by now, and its credits went to its successor.
            let successor = layout::key_successor(&old_public);
            if tx.get_raw(&successor)?.is_some() {
                return abort(Conflict::KeyRotated.into());
            }
            // Its successor would not expire: rotation never switches access back on.
            if old.expires_at.is_some_and(|at| at <= tx.now) {
                return abort(Conflict::KeyExpired.into());
            }
            let path = layout::key_controls(&old_public);
            let controls = tx.get::<ControlsRecord>(&path)?.unwrap_or_default();
            let now = tx.now.unix_timestamp_nanos();
            let (_, (own, _)) = match taken.get() {
                Some(taken) => taken,
                None => {
                    let slice = self.inner.meters.take_own_slice(id, controls.version, now);
                    taken.set(Some((controls.version, slice)));
                    (controls.version, slice)
                }
            };
            let mut drained = controls.clone();
            let rates = layout::key_rates(&old_public);
            if let Some(credits) = drained.credits.as_mut() {
                credits.remaining = 0;
                credits.refill = None;
                credits.next_refill = None;
                drained.version = voiding(drained.version);
                tx.put(&path, &drained)?;
                carry_key_rates_in(tx, &rates, controls.version, drained.version)?;
            }
            let original_expiry = old.expires_at;
            let Some(end) = tx.now.checked_add(grace) else {
                return abort(StoreError::invalid("grace_seconds", "too large"));
            };
            old.expires_at = Some(old.expires_at.map_or(end, |at| at.min(end)));
            tx.put_key(&old)?;
            let changes = Changes::default()
                .time("expires_at", original_expiry, old.expires_at)
                .field(
                    "credits",
                    &controls.credits_view(own, now),
                    &drained.credits_view(0, now),
                );
            let rotation = tx.record_changes(Action::KeyRotate, id, Some(old.user_id), changes);
            tx.invalidate(Invalidate::Key(old.public_id().map_err(abort_err)?));
            let new = NewKey {
                name: old.name.clone(),
                user_id: old.user_id,
                description: old.description.clone(),
                scopes: old.scopes.clone(),
                expires_at: original_expiry.filter(|at| *at > tx.now),
                env: old.env,
                meta: controls.meta_value(),
                rate_limits: controls.rate_limits.clone(),
                credits: controls.credits_view(own, now),
                allowed_ips: controls.allowed_ips.clone(),
            };
            let created = self.create_key_in(tx, actor, &new, Some(&old))?;
            tx.put_raw(&successor, created.key.id.as_bytes())?;
            // The successor's limits go on from where the key's stand (usage hunt s56 M4:
            // they started afresh, a whole limit more at each rotation). Shared through the
            // database here; kept in this process, by its meter below.
            let new_public = created.secret.id();
            let new_controls = tx
                .get::<ControlsRecord>(&layout::key_controls(&new_public))?
                .unwrap_or_default();
            copy_key_rates_in(
                tx,
                (&rates, drained.version),
                (&layout::key_rates(&new_public), new_controls.version),
            )?;
            tx.add_changes(rotation, |changes| {
                changes.field("rotated_to", &None, &Some(created.key.id))
            });
            Ok((created, (controls.version, drained), new_controls))
        });
        let (created, settle, new_controls) = rotated.inspect_err(|e| {
            // Back to the old key unless the rotation may have committed (a failure in
            // storage over a network): then it is spent, never counted twice.
            let maybe_committed = e.may_have_committed();
            if let Some((version, slice)) = taken.get()
                && !maybe_committed
            {
                self.inner.meters.put_back(id, version, slice);
            }
        })?;
        // The old key's slice is void: its credits moved to the new key.
        let (old_version, drained) = settle;
        self.settle_meter(id, old_version, false, &drained);
        let store = Arc::downgrade(&self.inner);
        let (meters, clock) = (&self.inner.meters, &self.inner.clock);
        meters.succeed(id, created.key.id, &new_controls, &store, clock);
        Ok(created)
    }

    /// [`Meters::settle`](super::controls::Meters::settle) on this store's meters, after a
    /// change to key `id`'s controls committed as `record`.
    fn settle_meter(&self, id: Uuid, old_version: u64, carry: bool, record: &ControlsRecord) {
        let store = Arc::downgrade(&self.inner);
        let clock = &self.inner.clock;
        self.inner
            .meters
            .settle(id, old_version, carry, record, &store, clock);
    }

    /// Loads a key for a change and checks the caller sees its user and covers everything
    /// it can do.
    fn key_for_change(
        &self,
        tx: &Tx<'_>,
        actor: &Actor,
        id: Uuid,
    ) -> TxResult<(Vec<u8>, KeyRecord)> {
        let Some(public) = layout::public_id_of(id) else {
            return abort(StoreError::not_found(Entity::Key, id));
        };
        let path = layout::key(&public);
        let Some(record) = tx.get::<KeyRecord>(&path)?.filter(|r| r.id == id) else {
            return abort(StoreError::not_found(Entity::Key, id));
        };
        let grants = match tx.get::<User>(&layout::user(record.user_id))? {
            Some(user) if actor.sees(&user) => user_grants_in(tx, &user)?,
            Some(_) => return abort(StoreError::not_found(Entity::Key, id)),
            // The user is gone (its keys were revoked with it): only global callers see it.
            None if actor.tenant_id().is_some() => {
                return abort(StoreError::not_found(Entity::Key, id));
            }
            None => PermissionSet::new(),
        };
        let effective = PermissionSet::effective(&grants, [], record.scopes.as_ref());
        if let Err(e) = actor.ensure_covers(&effective) {
            return abort(e);
        }
        Ok((path, record))
    }

    /// Whom key `id` authenticates as now, read from the records exactly as verification
    /// reads them (its status, its user's revocation mark, its user and groups), without
    /// its secret and counting no use: for a caller holding a long-lived stream, whose key
    /// must stay good while it listens. `None` when the key authenticates no one (unknown,
    /// disabled, revoked alone or with all its user's keys, expired, or its user disabled
    /// or gone).
    pub fn authenticates_now(&self, id: Uuid) -> Result<Option<Standing>, StoreError> {
        let record = match self.key_record(id) {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let resolved = self.resolve_record(&record.public_id()?, record)?;
        let now = self.inner.clock.now().unix_timestamp_nanos();
        let Ok(principal) = resolved.status(now).cloned() else {
            return Ok(None);
        };
        let groups = self
            .get::<User>(&layout::user(principal.user_id))?
            .map(|user| user.groups)
            .unwrap_or_default();
        Ok(Some(Standing {
            principal,
            expires_at_nanos: resolved.expires_at,
            groups,
        }))
    }

    /// Everything verification needs about a public id, read from the store.
    pub(crate) fn load_resolved(&self, public: &PublicId) -> Result<Option<Resolved>, StoreError> {
        match self.get::<KeyRecord>(&layout::key(public))? {
            Some(record) => self.resolve_record(public, record).map(Some),
            None => Ok(None),
        }
    }

    /// Everything verification needs about a key whose record was read: its user, groups
    /// and usage controls are read now.
    pub(crate) fn resolve_record(
        &self,
        public: &PublicId,
        record: KeyRecord,
    ) -> Result<Resolved, StoreError> {
        let user: Option<User> = self.get(&layout::user(record.user_id))?;
        let (user_enabled, user) = match user {
            Some(user) => (user.enabled, user),
            // Deleting a user revokes its keys; a missing user authenticates nobody.
            None => return Ok(self.unusable(record)),
        };
        // A user's keys revoked in bulk are refused at once, before the background job
        // reaches their records.
        let revoked = record.revoked_at.is_some() || self.revoked_by_mark(&record)?;
        let mut groups = Vec::with_capacity(user.groups.len());
        for id in &user.groups {
            if let Some(group) = self.get::<Group>(&layout::group(*id))? {
                groups.push(group.permissions);
            }
        }
        let permissions =
            PermissionSet::effective(&user.permissions, &groups, record.scopes.as_ref());
        let controls: Option<ControlsRecord> = self.get(&layout::key_controls(public))?;
        let meter = controls.as_ref().and_then(|c| {
            let store = Arc::downgrade(&self.inner);
            self.inner
                .meters
                .meter(record.id, c, &store, &self.inner.clock)
        });
        let meter = Meter::joined(meter, self.user_meter(user.id)?, &self.inner.clock);
        let principal = Principal::new(PrincipalInfo {
            key_id: record.id,
            prefix: record.prefix,
            key_name: record.name,
            env: record.env,
            user_id: user.id,
            user_name: user.name,
            tenant_id: user.tenant_id,
            organization_id: user.organization_id,
            permissions,
            meta: controls.as_ref().and_then(ControlsRecord::meta_value),
            meter,
        });
        Ok(Resolved {
            hash: SecretHash::from_bytes(record.hash),
            enabled: record.enabled,
            revoked,
            expires_at: record.expires_at.map(OffsetDateTime::unix_timestamp_nanos),
            user_enabled,
            usage: self.inner.usage.handle(record.id),
            principal,
        })
    }

    /// A key whose user is gone: it matches its secret but never authenticates.
    fn unusable(&self, record: KeyRecord) -> Resolved {
        let principal = Principal::new(PrincipalInfo {
            key_id: record.id,
            prefix: record.prefix,
            key_name: record.name,
            env: record.env,
            user_id: record.user_id,
            user_name: String::new(),
            tenant_id: None,
            organization_id: None,
            permissions: PermissionSet::new(),
            meta: None,
            meter: None,
        });
        Resolved {
            hash: SecretHash::from_bytes(record.hash),
            enabled: record.enabled,
            revoked: true,
            expires_at: record.expires_at.map(OffsetDateTime::unix_timestamp_nanos),
            user_enabled: false,
            usage: self.inner.usage.handle(record.id),
            principal,
        }
    }

    /// Counts keys by status, users and groups, from counts the writes keep: one read of a
    /// few entries (one round trip on PostgreSQL, where it is one consistent view), never
    /// a scan (after a sweep of keys that expired since the last one).
    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.sweep_before_read();
        let counts = counters::read_all(&*self.inner.db)?;
        let mut stats = Stats::default();
        for (counter, count) in Counter::ALL.into_iter().zip(counts) {
            match counter {
                Counter::Keys(class) => {
                    let status = match class {
                        Class::Active => KeyStatus::Active,
                        Class::Disabled => KeyStatus::Disabled,
                        Class::Expired => KeyStatus::Expired,
                        Class::Revoked => KeyStatus::Revoked,
                    };
                    stats.keys.insert(status.as_str(), count);
                }
                Counter::Users => stats.users = count,
                Counter::Groups => stats.groups = count,
            }
        }
        Ok(stats)
    }
}

/// The usage control of a new key, checked.
fn new_controls(new: &NewKey, now: OffsetDateTime) -> Result<ControlsRecord, StoreError> {
    let mut controls = ControlsRecord {
        version: 1,
        ..ControlsRecord::default()
    };
    if let Some(meta) = &new.meta {
        check_meta(meta)?;
        controls.meta = Some(meta.to_string());
    }
    check_rate_limits(&new.rate_limits)?;
    controls.rate_limits = new.rate_limits.clone();
    if let Some(credits) = &new.credits {
        check_credits(credits)?;
        controls.credits = Some(ControlsRecord::store_credits(
            *credits,
            now.unix_timestamp_nanos(),
        ));
    }
    check_allowed_ips(&new.allowed_ips)?;
    controls.allowed_ips = canonical_nets(&new.allowed_ips);
    Ok(controls)
}

/// What a change did to a key's record, field by field, as its view shows them
/// ([`crate::AuditEvent::changes`]); its controls' fields are added by the caller.
fn key_changes(before: &KeyRecord, after: &KeyRecord) -> Changes {
    Changes::default()
        .field("name", &before.name, &after.name)
        .field("description", &before.description, &after.description)
        .field("enabled", &before.enabled, &after.enabled)
}

/// A key's usage control after `patch`, checked, and whether this process's unspent slice
/// of credits stays valid (`own`: that slice; see `controls.rs` on how changes compose
/// with slices).
fn patched_controls(
    old: &ControlsRecord,
    patch: &KeyPatch,
    own: u64,
    now: OffsetDateTime,
) -> Result<(ControlsRecord, bool), StoreError> {
    let now_nanos = now.unix_timestamp_nanos();
    let mut controls = old.clone();
    if let Some(meta) = &patch.meta {
        if let Some(meta) = meta {
            check_meta(meta)?;
        }
        controls.meta = meta.as_ref().map(|m| m.to_string());
    }
    if let Some(limits) = &patch.rate_limits {
        check_rate_limits(limits)?;
        controls.rate_limits = limits.clone();
    }
    if let Some(ips) = &patch.allowed_ips {
        check_allowed_ips(ips)?;
        controls.allowed_ips = canonical_nets(ips);
    }
    // A new version voids every slice reserved before (a `set` or `clear`) or this
    // process's only, which it carries over (any other change); an `add` keeps them all.
    let mut voids = false;
    match refill_as_set(patch.credits, old, own, now_nanos)? {
        // (A refill changed alone is a set by now.)
        None | Some(CreditsPatch::Refill(_)) => {}
        Some(CreditsPatch::Clear) => {
            voids = controls.credits.is_some();
            controls.credits = None;
        }
        Some(CreditsPatch::Set { remaining, refill }) => {
            let before = old.credits.map(|c| c.current(now_nanos));
            // A refill kept from before is not checked again: one stored before a bound
            // was added still lets the balance be set.
            check_credit_amount(remaining)?;
            if let Some(Some(refill)) = &refill {
                check_refill(refill)?;
            }
            let refill = refill.unwrap_or_else(|| before.and_then(|c| c.refill));
            let credits = Credits { remaining, refill };
            let mut stored = ControlsRecord::store_credits(credits, now_nanos);
            // The same refill keeps its schedule.
            if let Some(before) = before.filter(|c| c.refill == refill) {
                stored.next_refill = before.next_refill;
            }
            // Setting what is already shown changes nothing.
            let shown = before.map(|c| (c.remaining + own, c.refill, c.next_refill));
            if shown != Some((stored.remaining, stored.refill, stored.next_refill)) {
                voids = true;
                controls.credits = Some(stored);
            }
        }
        Some(CreditsPatch::Add(amount)) => {
            let Some(credits) = controls.credits.as_mut() else {
                return Err(StoreError::invalid(
                    "credits",
                    "the key has no credits to add to; set them first",
                ));
            };
            *credits = credits.current(now_nanos);
            let total = credits
                .remaining
                .checked_add(own)
                .and_then(|t| t.checked_add(amount))
                .ok_or_else(|| StoreError::invalid("credits", "too many credits"))?;
            check_credit_amount(total)?;
            credits.remaining += amount;
        }
    }
    let mut configured = controls.clone();
    configured.credits = configured.credits.map(|c| StoredCredits {
        remaining: 0,
        next_refill: None,
        ..c
    });
    let mut was = old.clone();
    was.credits = was.credits.map(|c| StoredCredits {
        remaining: 0,
        next_refill: None,
        ..c
    });
    if voids {
        controls.version = voiding(old.version);
    } else if configured != was {
        controls.version = old.version + 1;
    }
    Ok((controls, !voids))
}

/// A refill changed alone as the set it comes to: what is shown now (this process's unspent
/// slice given back) with the new refill. Any other change as it is.
fn refill_as_set(
    patch: Option<CreditsPatch>,
    old: &ControlsRecord,
    own: u64,
    now_nanos: i128,
) -> Result<Option<CreditsPatch>, StoreError> {
    let Some(CreditsPatch::Refill(refill)) = patch else {
        return Ok(patch);
    };
    let Some(before) = old.credits.map(|c| c.current(now_nanos)) else {
        return Err(StoreError::invalid(
            "credits",
            "the key has no credits whose refill to change; set them first",
        ));
    };
    Ok(Some(CreditsPatch::Set {
        remaining: before.remaining.saturating_add(own),
        refill: Some(refill),
    }))
}

/// An allowlist as it is kept: each network canonical ([`canonical_net`]) with its host
/// bits cleared (which matches the same addresses: done here, once, not at each request's
/// check), once, in the order given (`10.0.0.0/8` and `10.1.2.3/8` are one network).
fn canonical_nets(nets: &[ipnet::IpNet]) -> Vec<ipnet::IpNet> {
    let mut seen = std::collections::HashSet::new();
    nets.iter()
        .map(|net| canonical_net(*net).trunc())
        .filter(|net| seen.insert(*net))
        .collect()
}

/// Checks a key's name and description.
fn validate_key_text(name: &str, description: Option<&str>) -> Result<(), StoreError> {
    validate_text("name", name, 1, MAX_NAME_BYTES)?;
    description.map_or(Ok(()), |d| {
        validate_text("description", d, 0, MAX_DESCRIPTION_BYTES)
    })
}

fn abort_err(e: StoreError) -> super::backend::TxError {
    super::backend::TxError::Abort(e)
}

#[cfg(test)]
mod tests {
    use super::super::backend::Batch;
    use super::*;
    use crate::model::NewUser;
    use crate::{StoreConfig, VerifyError, key};

    /// `key`'s text with another well-formed secret, re-checksummed.
    fn with_another_secret(key: &ApiKey) -> String {
        let body = format!(
            "{}_{}_{}_{}",
            key.prefix(),
            key.env(),
            key.id(),
            "A".repeat(32)
        );
        let sum = key::checksum(body.as_bytes());
        format!("{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    #[test]
    fn a_wrong_secret_reads_nothing_behind_the_key_as_an_unknown_id_would() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
        let admin = Actor::system();
        let new_user = NewUser {
            name: "u".into(),
            ..NewUser::default()
        };
        let user = store.create_user(&admin, new_user).unwrap();
        let new_key = NewKey {
            name: "k".into(),
            user_id: user.id,
            ..NewKey::default()
        };
        let text = store
            .create_key(&admin, new_key)
            .unwrap()
            .secret
            .expose()
            .to_owned();
        let unknown = ApiKey::generate(store.prefix(), Env::Live);
        // The user's record damaged: whoever reads it fails.
        let mut batch = Batch::default();
        batch.insert(layout::user(user.id), [0xff; 3]);
        store.inner.db.apply_batch(batch).unwrap();
        store.inner.cache.invalidate(None);
        let wrong = with_another_secret(&ApiKey::parse(&text).unwrap());
        for attempt in ["first", "cached"] {
            for presented in [wrong.as_str(), unknown.expose()] {
                let answer = store.verify(presented).map(|p| p.key_id);
                assert!(
                    matches!(answer, Err(VerifyError::Invalid)),
                    "{attempt}: {answer:?}"
                );
            }
        }
        // The right secret has the user read, and meets the damage.
        let right = store.verify(&text).map(|p| p.key_id);
        assert!(
            matches!(right, Err(VerifyError::Unavailable(_))),
            "{right:?}"
        );
    }
}
