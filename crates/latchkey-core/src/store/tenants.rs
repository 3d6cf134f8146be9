//! The users of each tenant: an empty entry `ut:<tenant>\0<user uuid>` for every user that
//! has a tenant, so that a tenant-bound caller's key list finds its tenant's users in one
//! range read instead of reading every user.
//!
//! Written in the transaction that writes the user's record ([`follow`]), so it never
//! disagrees with the records; built once at open for a store written before it existed
//! (`m:tenants_indexed` marks it complete). Tenants hold no control characters
//! (validated), so the 0x00 terminator keeps one tenant's range from holding another's.

use std::ops::Bound;
use std::sync::Arc;

use uuid::Uuid;

use super::backend::{Backend, Batch, Direction, KeyRange, scan};
use super::rebuild::{BATCH, remove_all};
use super::tx::{Tx, TxResult};
use super::{decode, layout};
use crate::error::StoreError;
use crate::model::User;

/// The namespace of the index.
const TENANT_USERS: &[u8] = b"ut:";
/// Marks a store whose index is complete (a new store's is, from its first settings).
pub(crate) const INDEXED: &[u8] = b"m:tenants_indexed";

/// The range of `tenant`'s entries.
fn prefix(tenant: &str) -> Vec<u8> {
    [TENANT_USERS, tenant.as_bytes(), b"\0"].concat()
}

fn entry(tenant: &str, user: Uuid) -> Vec<u8> {
    [prefix(tenant).as_slice(), user.as_bytes()].concat()
}

/// Moves user `id`'s entry from tenant `before` to tenant `after` (`None`: no tenant, or
/// no record: a user created or deleted).
pub(super) fn follow(
    tx: &Tx<'_>,
    id: Uuid,
    before: Option<&str>,
    after: Option<&str>,
) -> TxResult<()> {
    if before == after {
        return Ok(());
    }
    if let Some(tenant) = before {
        tx.remove(&entry(tenant, id))?;
    }
    if let Some(tenant) = after {
        tx.put_raw(&entry(tenant, id), &[])?;
    }
    Ok(())
}

/// The ids of `tenant`'s users after `after` (all without), in id order.
pub(super) fn users_after(
    db: &Arc<dyn Backend>,
    tenant: &str,
    after: Option<Uuid>,
) -> impl Iterator<Item = Result<Uuid, StoreError>> + use<> {
    let prefix = prefix(tenant);
    let mut range = KeyRange::prefix(&prefix);
    if let Some(after) = after {
        range.lower = Bound::Excluded(entry(tenant, after));
    }
    scan(db, range, Direction::Forward).map(move |item| {
        let (key, _) = item?;
        key.get(prefix.len()..)
            .and_then(|id| Uuid::from_slice(id).ok())
            .ok_or_else(|| StoreError::Corrupt("bad tenant index entry".into()))
    })
}

/// The ids of `tenant`'s users, in id order, when it has at most `bound`; `None` when it
/// has more.
pub(super) fn users_of(
    db: &Arc<dyn Backend>,
    tenant: &str,
    bound: usize,
) -> Result<Option<Vec<Uuid>>, StoreError> {
    let users: Vec<Uuid> = users_after(db, tenant, None)
        .take(bound.saturating_add(1))
        .collect::<Result<_, _>>()?;
    Ok((users.len() <= bound).then_some(users))
}

/// Builds the index unless the store says it is complete: whatever an interrupted build
/// left goes, then an entry for every user record with a tenant, in bounded batches.
pub(super) fn ensure(db: &Arc<dyn Backend>) -> Result<(), StoreError> {
    if db.get(INDEXED)?.is_some() {
        return Ok(());
    }
    // On a shared database, no other process writes users meanwhile (nor builds it too).
    let _writers = db.lock_writers()?;
    if db.get(INDEXED)?.is_some() {
        return Ok(());
    }
    tracing::info!("building the index of users by tenant (once)");
    remove_all(db, TENANT_USERS)?;
    let mut batch = Batch::default();
    for item in scan(db, KeyRange::prefix(layout::USERS), Direction::Forward) {
        let (path, bytes) = item?;
        match decode::<User>(&bytes) {
            Ok(User {
                id,
                tenant_id: Some(tenant),
                ..
            }) => batch.insert(entry(&tenant, id), b""),
            Ok(_) => {}
            // As the key indexes' build steps over a damaged key: the user is in no
            // tenant's list until it is put right.
            Err(e) => {
                let path = String::from_utf8_lossy(&path);
                tracing::error!(record = %path, error = %e, "a user record does not decode: left out of the index of users by tenant");
            }
        }
        if batch.writes.len() >= BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    batch.insert(INDEXED, b"1");
    db.apply_batch(batch)?;
    db.flush()
}
