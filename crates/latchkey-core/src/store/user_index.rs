//! The users of each tenant and of each group: an empty entry for every user in one,
//! `ut:<tenant>\0<user uuid>` and `ug:<group uuid><user uuid>`, so that a tenant-bound
//! caller's lists, and a change to a group, read the users concerned in one range read
//! instead of reading every user.
//!
//! Written in the transaction that writes the user's record ([`follow`]), so they never
//! disagree with the records. Every write that appends to the audit trail while [`INDEXED`]
//! equals the trail's sequence number moves it along: every write of a user is audited, so
//! a store whose trail has gone on without it (written by a build before these indexes,
//! a daemon of one still running on a migrated database, or restored from its backup) is
//! read without the indexes ([`complete`]) and has them built again at its next open. Tenants hold no control characters (validated), so the 0x00 terminator keeps one
//! tenant's range from holding another's.

use std::ops::Bound;
use std::sync::Arc;

use uuid::Uuid;

use super::backend::{Backend, Batch, Direction, KeyRange, scan};
use super::rebuild::{BATCH, remove_all};
use super::tx::{Tx, TxResult};
use super::{decode, layout};
use crate::error::StoreError;
use crate::model::User;

/// The audit trail's sequence number (`m:seq`) as of the last write of a build that keeps
/// these indexes: equal to it when they are complete.
pub(crate) const INDEXED: &[u8] = b"m:users_indexed";
/// The mark of the first version, which kept the tenants' index only: removed at a build,
/// so that a build of that version, opening the store after this one, builds its own.
const TENANTS_INDEXED: &[u8] = b"m:tenants_indexed";

/// One index of users by what they belong to.
pub(crate) struct UserIndex {
    namespace: &'static [u8],
    /// The sets a user is in, each as the index's keys name it.
    sets: fn(&User) -> Vec<Vec<u8>>,
}

impl UserIndex {
    /// Users by tenant.
    pub(crate) const TENANTS: UserIndex = UserIndex {
        namespace: b"ut:",
        sets: |user| user.tenant_id.iter().map(|t| tenant(t)).collect(),
    };
    /// Users by group.
    pub(crate) const GROUPS: UserIndex = UserIndex {
        namespace: b"ug:",
        sets: |user| user.groups.iter().map(|g| group(*g)).collect(),
    };
    const ALL: [UserIndex; 2] = [UserIndex::TENANTS, UserIndex::GROUPS];

    fn entry(&self, set: &[u8], user: Uuid) -> Vec<u8> {
        [self.namespace, set, user.as_bytes()].concat()
    }

    /// The ids of the users in `set` after `after` (all without), in id order.
    pub(crate) fn users_after(
        &self,
        db: &Arc<dyn Backend>,
        set: &[u8],
        after: Option<Uuid>,
    ) -> impl Iterator<Item = Result<Uuid, StoreError>> + use<> {
        let prefix = [self.namespace, set].concat();
        let mut range = KeyRange::prefix(&prefix);
        if let Some(after) = after {
            range.lower = Bound::Excluded(self.entry(set, after));
        }
        scan(db, range, Direction::Forward).map(move |item| {
            let (key, _) = item?;
            key.get(prefix.len()..)
                .and_then(|id| Uuid::from_slice(id).ok())
                .ok_or_else(|| StoreError::Corrupt("bad user index entry".into()))
        })
    }

    /// The ids of the users in `set`, in id order, when it has at most `bound`; `None`
    /// when it has more.
    pub(crate) fn users_of(
        &self,
        db: &Arc<dyn Backend>,
        set: &[u8],
        bound: usize,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        let users: Vec<Uuid> = self
            .users_after(db, set, None)
            .take(bound.saturating_add(1))
            .collect::<Result<_, _>>()?;
        Ok((users.len() <= bound).then_some(users))
    }
}

/// A tenant as the index names it.
pub(crate) fn tenant(tenant: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0"].concat()
}

/// A group as the index names it.
pub(crate) fn group(group: Uuid) -> Vec<u8> {
    group.as_bytes().to_vec()
}

/// Moves a user's entries from what its record was, `before`, to what it is, `after`
/// (`None`: no record, a user created or deleted).
pub(super) fn follow(tx: &Tx<'_>, before: Option<&User>, after: Option<&User>) -> TxResult<()> {
    let Some(id) = after.or(before).map(|u| u.id) else {
        return Ok(());
    };
    for index in &UserIndex::ALL {
        let sets = |user: Option<&User>| user.map(index.sets).unwrap_or_default();
        let (was, is) = (sets(before), sets(after));
        for set in was.iter().filter(|s| !is.contains(s)) {
            tx.remove(&index.entry(set, id))?;
        }
        for set in is.iter().filter(|s| !was.contains(s)) {
            tx.put_raw(&index.entry(set, id), &[])?;
        }
    }
    Ok(())
}

/// Whether the indexes are complete: the audit trail has not gone on without them (and a
/// store without a trail holds no user). Until they are built again at the next open, a
/// group's change reads every user and a tenant's lists scan, as before the indexes.
pub(super) fn complete(db: &Arc<dyn Backend>) -> Result<bool, StoreError> {
    // Read together: one statement on PostgreSQL, so a write by an older daemon (which
    // advances `m:seq` alone) cannot fall between the two.
    let mut read = db
        .get_many(&[layout::SEQ.to_vec(), INDEXED.to_vec()])?
        .into_iter();
    let (seq, indexed) = (read.next().flatten(), read.next().flatten());
    if indexed != seq {
        return Ok(false);
    }
    Ok(seq.is_some()
        || db
            .first(&KeyRange::prefix(layout::USERS), Direction::Forward)?
            .is_none())
}

/// Builds the indexes unless they are complete: whatever was there goes, then the entries
/// of every user record, in bounded batches, and the mark last (a build cut off starts
/// over at the next open).
pub(super) fn ensure(db: &Arc<dyn Backend>) -> Result<(), StoreError> {
    if complete(db)? {
        return Ok(());
    }
    // On a shared database, no other process writes users meanwhile (nor builds it too).
    let _writers = db.lock_writers()?;
    if complete(db)? {
        return Ok(());
    }
    tracing::info!("building the indexes of users by tenant and by group");
    for index in &UserIndex::ALL {
        remove_all(db, index.namespace)?;
    }
    let mut batch = Batch::default();
    for item in scan(db, KeyRange::prefix(layout::USERS), Direction::Forward) {
        let (path, bytes) = item?;
        match decode::<User>(&bytes) {
            Ok(user) => {
                for index in &UserIndex::ALL {
                    for set in (index.sets)(&user) {
                        batch.insert(index.entry(&set, user.id), b"");
                    }
                }
            }
            // As the key indexes' build steps over a damaged key: the user is in no
            // tenant's list, and no group's change reads it, until it is put right.
            Err(e) => {
                let path = String::from_utf8_lossy(&path);
                tracing::error!(record = %path, error = %e, "a user record does not decode: left out of the indexes of users by tenant and group");
            }
        }
        if batch.writes.len() >= BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    batch.remove(TENANTS_INDEXED);
    match db.get(layout::SEQ)? {
        Some(seq) => batch.insert(INDEXED, seq),
        None => batch.remove(INDEXED),
    }
    db.apply_batch(batch)?;
    db.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NewGroup, NewUser, UserPatch};
    use crate::{Actor, Store, StoreConfig};

    /// Asserts that every group's and tenant's users, read through the indexes, are those
    /// the records say.
    fn check(store: &Store, groups: &[Uuid]) {
        // `members` falls back to a scan when the index is not complete: it must be.
        assert!(
            complete(&store.inner.db).unwrap(),
            "the indexes are complete"
        );
        let users = store.users().unwrap();
        let ids = |keep: &dyn Fn(&User) -> bool| -> Vec<Uuid> {
            users.iter().filter(|u| keep(u)).map(|u| u.id).collect()
        };
        for group in groups {
            let mut members: Vec<Uuid> = store
                .members(*group)
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect();
            members.sort();
            assert_eq!(members, ids(&|u| u.groups.contains(group)), "group {group}");
        }
        for name in ["t1", "t2"] {
            let found = UserIndex::TENANTS
                .users_of(&store.inner.db, &tenant(name), 100)
                .unwrap();
            let expected = ids(&|u| u.tenant_id.as_deref() == Some(name));
            assert_eq!(found, Some(expected), "tenant {name}");
        }
    }

    fn new_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
        (dir, store)
    }

    fn group(store: &Store, name: &str) -> Uuid {
        let new = NewGroup {
            name: name.into(),
            ..NewGroup::default()
        };
        store.create_group(&Actor::system(), new).unwrap().id
    }

    fn user(store: &Store, name: &str, groups: Vec<Uuid>, tenant: Option<&str>) -> Uuid {
        let new = NewUser {
            name: name.into(),
            groups,
            tenant_id: tenant.map(str::to_owned),
            ..NewUser::default()
        };
        store.create_user(&Actor::system(), new).unwrap().id
    }

    #[test]
    fn the_indexes_follow_every_write_of_a_user() {
        let (_dir, store) = new_store();
        let admin = Actor::system();
        let groups = [group(&store, "a"), group(&store, "b"), group(&store, "c")];
        let [a, b, c] = groups;
        let u1 = user(&store, "u1", vec![a], Some("t1"));
        let u2 = user(&store, "u2", vec![a, b], None);
        let u3 = user(&store, "u3", vec![], Some("t1"));
        check(&store, &groups);
        let update = |id, patch: UserPatch| {
            store.update_user(&admin, id, patch).unwrap();
            check(&store, &groups);
        };
        update(
            u1,
            UserPatch {
                add_groups: vec![b, c],
                remove_groups: vec![a],
                tenant_id: Some(Some("t2".into())),
                ..UserPatch::default()
            },
        );
        update(
            u2,
            UserPatch {
                groups: Some(vec![c]),
                ..UserPatch::default()
            },
        );
        update(
            u3,
            UserPatch {
                add_groups: vec![a],
                tenant_id: Some(None),
                ..UserPatch::default()
            },
        );
        store.delete_group(&admin, c).unwrap();
        check(&store, &groups);
        assert!(store.members(c).unwrap().is_empty());
        store.delete_user(&admin, u1).unwrap();
        check(&store, &groups);
        assert_eq!(store.members(a).unwrap().len(), 1);
    }

    /// A build before these indexes writes users without their entries and leaves the mark
    /// behind the trail: the next open builds them again.
    #[test]
    fn a_store_whose_trail_went_on_without_the_indexes_has_them_built_at_open() {
        let (dir, store) = new_store();
        let group = group(&store, "g");
        let user = user(&store, "u", vec![group], Some("t1"));
        let db = &store.inner.db;
        let seq = db.get(layout::SEQ).unwrap().unwrap();
        let behind = (u64::from_be_bytes(seq.try_into().unwrap()) - 1).to_be_bytes();
        let mut batch = Batch::default();
        batch.remove(UserIndex::GROUPS.entry(&super::group(group), user));
        batch.remove(UserIndex::TENANTS.entry(&tenant("t1"), user));
        batch.insert(INDEXED, behind);
        db.apply_batch(batch).unwrap();
        // Behind the trail, the indexes are not read, and a write of this build (a daemon
        // beside an older one on a database) does not take them for complete.
        assert_eq!(store.members(group).unwrap().len(), 1);
        self::user(&store, "v", vec![], None);
        assert!(!complete(db).unwrap());
        assert_eq!(store.members(group).unwrap().len(), 1);
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        check(&store, &[group]);
        let (mark, seq) = (store.inner.db.get(INDEXED), store.inner.db.get(layout::SEQ));
        assert_eq!(mark.unwrap(), seq.unwrap());
        // Complete again: the next write moves the mark with the trail.
        self::user(&store, "w", vec![group], None);
        assert!(complete(&store.inner.db).unwrap());
        assert_eq!(store.members(group).unwrap().len(), 2);
    }
}
