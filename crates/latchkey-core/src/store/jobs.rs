//! Work over many keys, done in the background: revoking every key of a user that was
//! deleted or whose keys were all revoked.
//!
//! The call that asks for it returns at once with the decisive change durable in one small
//! transaction: the user is gone, or a **revocation mark** `ur:<user>` says "keys created
//! up to this position are revoked", which verification checks. From then on none of those
//! keys authenticates. The per-key work (setting each record's `revoked_at`, its audit event)
//! follows in chunks of [`StoreConfig::job_chunk_keys`](super::StoreConfig) keys, one
//! transaction each, which also records the job's progress (`j:<job id>`): a crash or a
//! restart resumes after the last chunk that committed. The last chunk removes the job and
//! records `user.keys_revoked`; the mark stays (a verification that read a key's record
//! before its chunk must still find it). The key counts (`latchkey_keys{status}`) move with
//! each chunk, so until the last one they count as active keys that no longer authenticate.
//!
//! A user with no more keys than one chunk has them revoked inline, in the decisive
//! transaction itself, as before background jobs existed.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backend::{self, Direction, KeyRange};
use super::index::{self, Scope};
use super::keys::KeyRecord;
use super::query::SortField;
use super::tx::{Invalidate, Tx, TxResult};
use super::{Store, decode, layout};
use crate::actor::Actor;
use crate::audit::Action;
use crate::error::StoreError;
use crate::permission::PermissionSet;

const JOBS: &[u8] = b"j:";

fn job_path(id: Uuid) -> Vec<u8> {
    [JOBS, id.as_bytes()].concat()
}

/// The key that asked for the job at `job` (a `j:` path), named as the actor of the events
/// its chunks write; absent when the operator asked (or for a job from before it was kept).
fn requester_path(job: &[u8]) -> Vec<u8> {
    [b"ja:".as_slice(), &job[JOBS.len()..]].concat()
}

/// Where a user's revocation mark lives.
pub(crate) fn mark_path(user: Uuid) -> Vec<u8> {
    [b"ur:".as_slice(), user.as_bytes()].concat()
}

/// Whether `record` falls under its user's revocation `mark` (the position of the newest
/// key when `revoke-keys` ran): revoked, whatever its record says yet.
fn under_mark(record: &KeyRecord, mark: Option<&[u8]>) -> bool {
    mark.is_some_and(|mark| index::position(record, SortField::CreatedAt).as_slice() <= mark)
}

/// [`Store::revoked_by_mark`], read in a write.
pub(crate) fn revoked_by_mark_in(tx: &Tx<'_>, record: &KeyRecord) -> TxResult<bool> {
    let mark = tx.get_raw(&mark_path(record.user_id))?;
    Ok(under_mark(record, mark.as_deref()))
}

/// The creation time of a new key of `user` at `now`: just after the user's revocation
/// mark when a clock behind it (another daemon's, or one stepped back) would place the key
/// under the mark, born revoked.
pub(crate) fn creation_time_in(
    tx: &Tx<'_>,
    user: Uuid,
    now: OffsetDateTime,
) -> TxResult<OffsetDateTime> {
    let Some(mark) = tx.get_raw(&mark_path(user))? else {
        return Ok(now);
    };
    let after_mark = index::time_of(&mark).map_or(now, |at| at + time::Duration::NANOSECOND);
    Ok(now.max(after_mark))
}

/// A durable job: revoke the keys of `user_id` up to `upto` (a position in the user's
/// creation index; `None`: all of them), continuing after `done`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    user_id: Uuid,
    upto: Option<Vec<u8>>,
    done: Option<Vec<u8>>,
    /// Whether the job holds a revocation mark to remove when it ends.
    marked: bool,
}

/// The first keys of a user (at most one chunk and one more), read before a decisive
/// write, under the write lock.
#[derive(Debug)]
pub(crate) struct UserKeys {
    ids: Vec<Uuid>,
    /// The position of the user's newest key.
    newest: Option<Vec<u8>>,
    chunk: usize,
}

impl UserKeys {
    pub(crate) fn fits_inline(&self) -> bool {
        self.ids.len() <= self.chunk
    }
}

/// What [`Store::revoke_user_keys`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRevocation {
    /// Every key the user held at this moment no longer authenticates.
    pub revoked_before: OffsetDateTime,
    /// How many keys were revoked in the call itself.
    pub revoked_now: usize,
    /// Whether more keys are being revoked in the background (they already do not
    /// authenticate).
    pub in_background: bool,
}

impl Store {
    /// Reads the first keys of a user, for a decisive write (under the write lock).
    pub(crate) fn user_keys_head(&self, user: Uuid) -> Result<UserKeys, StoreError> {
        let chunk = self.inner.job_chunk_keys;
        let scan = |descending| {
            index::scan(
                &self.inner.db,
                Scope::User(user),
                SortField::CreatedAt,
                descending,
                None,
            )
        };
        let ids = scan(false)
            .take(chunk + 1)
            .map(|e| e.map(|(_, id)| id))
            .collect::<Result<_, _>>()?;
        let newest = scan(true).next().transpose()?.map(|(p, _)| p);
        Ok(UserKeys { ids, newest, chunk })
    }

    /// Revokes every key of a user, irreversibly: none authenticates once this returns.
    /// A user with many keys has the records revoked in the background (see `jobs.rs`).
    ///
    /// The caller must see the user (a tenant-bound caller, one of its tenant) and hold
    /// everything it holds; revoking the keys of the user of the last active key that holds
    /// `*` is `LastAdminKey`.
    pub fn revoke_user_keys(&self, actor: &Actor, id: Uuid) -> Result<KeysRevocation, StoreError> {
        let prepare = || {
            Ok((
                self.user_keys_head(id)?,
                self.admin_keys_if(self.is_admin_user(id)?)?,
            ))
        };
        let outcome = self.write_prepared(actor, prepare, |tx, (head, admin_keys)| {
            let Some(user) = tx
                .get::<crate::model::User>(&layout::user(id))?
                .filter(|u| actor.sees(u))
            else {
                return super::tx::abort(StoreError::not_found(crate::error::Entity::User, id));
            };
            let grants = super::users::user_grants_in(tx, &user)?;
            if let Err(e) = actor.ensure_covers(&grants) {
                return super::tx::abort(e);
            }
            let revoked_now = tx.revoke_user_keys_in(actor, id, head, true)?;
            admin_keys.ensure_one_remains(tx)?;
            tx.record(Action::UserRevokeKeys, id, Some(id));
            tx.invalidate(Invalidate::All);
            Ok(KeysRevocation {
                revoked_before: tx.now,
                revoked_now,
                in_background: !head.fits_inline(),
            })
        })?;
        if outcome.in_background {
            self.wake_jobs();
        }
        Ok(outcome)
    }

    /// Whether verification must treat a key as revoked by its user's revocation mark.
    pub(crate) fn revoked_by_mark(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let mark = self.inner.db.get(&mark_path(record.user_id))?;
        Ok(under_mark(record, mark.as_deref()))
    }

    /// How many background jobs are not finished.
    pub fn pending_jobs(&self) -> Result<usize, StoreError> {
        backend::scan(&self.inner.db, KeyRange::prefix(JOBS), Direction::Forward)
            .try_fold(0, |n, item| item.map(|_| n + 1))
    }

    /// Runs every pending job to its end, in this thread (the background thread does the
    /// same, chunk by chunk). Returns how many chunks ran.
    pub fn run_jobs(&self) -> Result<usize, StoreError> {
        let mut chunks = 0;
        while self.run_job_chunk()? {
            chunks += 1;
        }
        Ok(chunks)
    }

    /// Runs one chunk of the oldest job; `false` when there is none.
    pub(crate) fn run_job_chunk(&self) -> Result<bool, StoreError> {
        let db = &self.inner.db;
        let chunk = self.inner.job_chunk_keys;
        // The events name the key that asked for the job: read before the write, and the
        // job checked to be the same under the write lock.
        let Some((first, _)) = db.first(&KeyRange::prefix(JOBS), Direction::Forward)? else {
            return Ok(false);
        };
        let requester = db
            .get(&requester_path(&first))?
            .and_then(|bytes| Uuid::from_slice(&bytes).ok());
        let actor = match requester {
            Some(key) => Actor::new(Some(key), PermissionSet::new()),
            None => Actor::system(),
        };
        // Read under the write lock, so two runners never work from a stale job.
        let prepare = || {
            let Some((path, value)) = db.first(&KeyRange::prefix(JOBS), Direction::Forward)? else {
                return Ok(None);
            };
            if path != first {
                // Another runner finished it meanwhile: the next call takes the next one.
                return Ok(None);
            }
            let job: Job = decode(&value)?;
            let entries = index::scan(
                db,
                Scope::User(job.user_id),
                SortField::CreatedAt,
                false,
                job.done.as_deref(),
            )
            .take_while(|e| match (e, &job.upto) {
                (Ok((position, _)), Some(upto)) => position <= upto,
                _ => true,
            })
            .take(chunk)
            .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((path, job, entries)))
        };
        let ran = self.write_prepared(&actor, prepare, |tx, prepared| {
            let Some((path, job, entries)) = prepared else {
                return Ok(false);
            };
            for (_, id) in entries {
                tx.revoke_key_in(*id, job.user_id)?;
            }
            if entries.len() < chunk {
                tx.remove(path)?;
                tx.remove(&requester_path(path))?;
                // The mark stays: a verification that read a key's record before this
                // chunk revoked it reads the mark after, and must still find it.
                tx.record(Action::UserKeysRevoked, job.user_id, Some(job.user_id));
            } else {
                let mut job = job.clone();
                job.done = entries.last().map(|(p, _)| p.clone());
                tx.put(path, &job)?;
            }
            Ok(true)
        })?;
        Ok(ran)
    }

    /// Tells the jobs thread that a job is waiting.
    pub(crate) fn wake_jobs(&self) {
        if let Some(wake) = &self.inner.wake_jobs {
            // The thread may be gone (the store is closing): the job resumes at next open.
            let _ = wake.send(());
        }
    }
}

impl Tx<'_> {
    /// Revokes a user's keys as part of a decisive write: inline when they fit in one
    /// chunk, else by recording a job (and, with `mark`, a revocation mark for the keys
    /// created so far). Returns how many keys were revoked inline.
    pub(crate) fn revoke_user_keys_in(
        &self,
        actor: &Actor,
        user: Uuid,
        head: &UserKeys,
        mark: bool,
    ) -> TxResult<usize> {
        if head.fits_inline() {
            let mut revoked = 0;
            for &id in &head.ids {
                revoked += usize::from(self.revoke_key_in(id, user)?);
            }
            return Ok(revoked);
        }
        if mark && let Some(newest) = &head.newest {
            self.put_raw(&mark_path(user), newest)?;
        }
        let job = Job {
            user_id: user,
            upto: if mark { head.newest.clone() } else { None },
            done: None,
            marked: mark,
        };
        let path = job_path(Uuid::now_v7());
        self.put(&path, &job)?;
        if let Some(key) = actor.key_id() {
            self.put_raw(&requester_path(&path), key.as_bytes())?;
        }
        Ok(0)
    }

    /// Revokes one key of `user` unless it is revoked already; `true` when it was not.
    fn revoke_key_in(&self, id: Uuid, user: Uuid) -> TxResult<bool> {
        let Some(public) = layout::public_id_of(id) else {
            return Ok(false);
        };
        let Some(mut record) = self.get_or_skip::<KeyRecord>(&layout::key(&public))? else {
            return Ok(false);
        };
        if record.revoked_at.is_some() || record.user_id != user {
            return Ok(false);
        }
        record.revoked_at = Some(self.now);
        self.put_key(&record)?;
        self.record(Action::KeyRevoke, id, Some(user));
        self.invalidate(Invalidate::Key(public));
        Ok(true)
    }
}
