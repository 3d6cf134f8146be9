//! Backup and restore: every record of a store at one point of its audit chain, in one
//! self-checking file, and a new store made from it.
//!
//! # The file
//!
//! One JSON line, the [`BackupHeader`]; then each record as a frame (`u32` big-endian key
//! length, key, `u32` value length, value), in key order; then a zero key length; then the
//! 32-byte BLAKE3 hash of every byte before it. A truncated or altered file fails that
//! check and restores nothing.
//!
//! # Consistency
//!
//! The copy is taken under the write lock, so it holds exactly the writes acknowledged
//! before it began and none after: writers wait for the copy (a second or two for a
//! million keys on a local disk), verification does not. The daemon copies into a
//! temporary file first and streams that, so a slow client never holds writers back.
//!
//! # Lineage
//!
//! A restored store keeps the records and the audit chain (which still verifies), but gets
//! a new lineage: remote verifiers that followed the old store drop what they cached when
//! they see it (`ready` carries the lineage).

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::{self, Backend, Batch, Direction, KeyRange};
use super::engine::{self, Engine};
use super::files::{self, Found};
use super::staging::Staging;
use super::{Store, StoreConfig, layout, mark, recover};
use crate::audit::{self, ChainBreak};
use crate::error::StoreError;

/// The first line of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Always `latchkey-backup`.
    pub format: String,
    /// The file format's version: 1.
    pub version: u32,
    /// The newest audit event in the backup (0 for none).
    pub seq: u64,
    /// Its hash (hex).
    pub head: String,
    /// The lineage of the store it was taken from.
    pub lineage: Uuid,
    /// How many records follow.
    pub records: u64,
}

/// A backup file read whole by [`Store::check_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckedBackup {
    /// Its first line.
    pub header: BackupHeader,
    /// Where its audit chain breaks, if it does: the store's trail was edited or damaged
    /// before the backup was taken, and [`Store::restore`] refuses the file unless told to
    /// keep the chain as it is.
    pub broken: Option<ChainBreak>,
}

const FORMAT: &str = "latchkey-backup";
const VERSION: u32 = 1;
/// A header is a couple of hundred bytes; a longer first line is not a backup.
const MAX_HEADER: u64 = 4096;
/// The largest key or value a backup holds: a store's largest records (a user, group or
/// key with 256 permissions of 128 bytes, 32 KiB; a usage control with 4 KiB of meta) are
/// far below it. A larger frame is a damaged file, refused before anything is allocated
/// for it; a backup of a store holding one is refused rather than written.
const MAX_FRAME: u32 = 1 << 20;
/// Records per batch while restoring, at most.
const BATCH: usize = 10_000;
/// Bytes of keys and values per batch while restoring: a batch is written once it holds
/// this much, so a restore holds about this much at a time, whatever the backup's frames.
const BATCH_BYTES: usize = 8 << 20;

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's header.
    pub header: BackupHeader,
    /// The new store's lineage.
    pub lineage: Uuid,
}

/// Whether a restore checks the backup's audit chain before the store exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainCheck {
    /// A chain that does not verify from the first event to the header's head refuses
    /// the backup: nothing is restored.
    Verify,
    /// Restored as it is (`latchkey restore --keep-broken-chain`): to recover the keys of
    /// a store whose trail was damaged; `latchkey audit verify` then names the break.
    Keep,
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// Writes a backup of the whole store to `out`: every record as of the newest
    /// acknowledged write when it starts (on PostgreSQL, a snapshot: writers go on; on a
    /// directory, writers wait until it is done), with this
    /// process's usage figures and unspent credit slices written first, so that the
    /// balances restored are the ones the API showed (unless the disk is full, or a
    /// database shared with other processes takes no writes now).
    ///
    /// Fails with [`StoreError::Storage`] when `out` cannot be written.
    pub fn backup(&self, out: impl Write) -> Result<BackupHeader, StoreError> {
        let inner = &*self.inner;
        let serialized = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_open()?;
        if !self.disk_full() {
            match self.write_buffers() {
                Ok(()) => {}
                // A database that takes no writes (set read-only) is still copied, as a
                // full disk is, without the figures not yet written.
                Err(e @ StoreError::Unavailable(_)) if inner.follow.is_some() => tracing::warn!(
                    error = %e,
                    "this process's latest usage figures could not be written: the backup holds what the database holds"
                ),
                Err(e) => return Err(e),
            }
        }
        // The copy reads a snapshot where the storage has them (PostgreSQL), and writers go
        // on; elsewhere it holds them still: this process's, and on storage several share,
        // the others'.
        let (view, _still) = match inner.db.snapshot()? {
            Some(view) => {
                drop(serialized);
                (view, None)
            }
            None => (
                inner.db.clone(),
                Some((serialized, inner.db.lock_writers()?)),
            ),
        };
        let all = || {
            let everything = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
            // Rate limits' shared state changes without the writers' lock, and matters for
            // a window at most: no part of a backup.
            backend::scan(&view, everything, Direction::Forward)
                .filter(|item| !matches!(item, Ok((k, _)) if k.starts_with(layout::RATES)))
        };
        let records = all().try_fold(0_u64, |n, item| item.map(|_| n + 1))?;
        let header = BackupHeader {
            format: FORMAT.to_owned(),
            version: VERSION,
            seq: super::read_seq(&*view)?,
            head: recover::head_of(&*view)?,
            lineage: inner.lineage(),
            records,
        };
        // The error keeps its kind: a caller tells a full disk (its own output's) by it.
        let io_err = |e: io::Error| {
            StoreError::Storage(Box::new(io::Error::new(
                e.kind(),
                format!("writing the backup: {e}"),
            )))
        };
        let mut out = Hashing {
            inner: BufWriter::new(out),
            hasher: blake3::Hasher::new(),
        };
        let mut line = serde_json::to_vec(&header).expect("a header serializes");
        line.push(b'\n');
        out.write_all(&line).map_err(io_err)?;
        let mut written = 0u64;
        for item in all() {
            let (key, value) = item?;
            if key.len().max(value.len()) > MAX_FRAME as usize {
                return Err(StoreError::storage(format!(
                    "a record is larger than a backup holds ({} bytes at most)",
                    MAX_FRAME
                )));
            }
            for part in [&key, &value] {
                out.write_all(&(part.len() as u32).to_be_bytes())
                    .and_then(|()| out.write_all(part))
                    .map_err(io_err)?;
            }
            written += 1;
        }
        if written != header.records {
            return Err(StoreError::storage(format!(
                "the store changed during the backup ({written} records, {} expected)",
                header.records
            )));
        }
        out.write_all(&0u32.to_be_bytes()).map_err(io_err)?;
        let digest = out.hasher.finalize();
        let mut rest = out.inner;
        rest.write_all(digest.as_bytes())
            .and_then(|()| rest.flush())
            .map_err(io_err)?;
        Ok(header)
    }

    /// Makes a new store at `path` from a backup: an empty or new directory only. The
    /// store gets a new lineage; its records and audit chain are the backup's.
    ///
    /// Fails, leaving `path` as it was, when `path` holds anything, with
    /// [`StoreError::Invalid`] (field `backup`) when the file is not a whole latchkey
    /// backup, and with [`StoreError::SchemaTooNew`] when a newer build made it. A
    /// `postgres://` URL restores into that database, as [`Store::restore_at`] does.
    pub fn restore(
        path: impl AsRef<Path>,
        backup: impl Read,
        config: StoreConfig,
    ) -> Result<(Store, Restored), StoreError> {
        Store::restore_at(&super::entry::location_of(path.as_ref()), backup, config)
    }

    /// Reads a backup file whole, as a restore would before it writes anything, and
    /// answers its header and whether its audit chain holds: the check `latchkey backup`
    /// makes of the file it wrote before naming it. Fails as [`Store::restore`] does for a
    /// file that is not a whole latchkey backup, but not for a newer schema (an older CLI
    /// checks a newer daemon's backup), nor for a broken chain, which the answer names:
    /// such a backup is whole, a copy of a store whose trail was edited or damaged.
    pub fn check_backup(backup: impl Read) -> Result<CheckedBackup, StoreError> {
        // The records come in key order: the events in theirs, one after the other.
        let mut walk = Some(ChainWalk::new());
        let mut broken = None;
        let (header, version) = read_whole(backup, Schema::Any, |key, value| {
            if key.starts_with(layout::AUDIT)
                && let Some(chain) = &mut walk
                && let Err(break_) = chain.take(&(key, value))
            {
                broken = Some(break_);
                walk = None;
            }
            Ok(())
        })?;
        if let Some(chain) = walk {
            broken = chain.end(&header).err();
        }
        // A newer build's events may be written in a form this one does not read: their
        // chain is not this build's to judge.
        if super::schema_of(&version).is_err() {
            broken = None;
        }
        Ok(CheckedBackup { header, broken })
    }

    /// [`Store::restore`] into a directory.
    pub(super) fn restore_dir(
        path: &Path,
        backup: impl Read,
        config: StoreConfig,
        check: ChainCheck,
    ) -> Result<(Store, Restored), StoreError> {
        let (found, foreign) = files::inspect(path)?;
        if found != Found::Nothing || foreign.is_some() {
            return Err(StoreError::storage(format!(
                "cannot restore into {}: it is not empty (restore needs an empty or new \
                 directory)",
                path.display()
            )));
        }
        // Built beside the target and renamed into place: a failure leaves no half store.
        let staging = Staging::create(path)?;
        let restored = restore_into(
            staging.path(),
            backup,
            config.engine,
            config.cache_capacity_bytes,
            check,
        );
        let restored = match restored {
            Ok(restored) => restored,
            Err(e) => {
                staging.discard();
                return Err(full_as_such(e, path));
            }
        };
        staging.move_into_place(path)?;
        let store = Store::open_dir(path, config)?;
        Ok((store, restored))
    }
}

/// A restore's write that found the disk full, said as such for the store at `path` (not
/// the staging directory, which is gone by then): the engine's own error would be a debug
/// dump of the OS error.
fn full_as_such(e: StoreError, path: &Path) -> StoreError {
    if super::space::is_full_error(&e) {
        StoreError::StorageFull {
            path: path.to_owned(),
        }
    } else {
        e
    }
}

fn bad(reason: impl Into<String>) -> StoreError {
    StoreError::invalid("backup", reason)
}

/// Reads the backup into a new database of `engine` at `staging`, checks it whole, gives
/// it a new lineage and its mark.
fn restore_into(
    staging: &Path,
    backup: impl Read,
    engine: Engine,
    cache: u64,
    check: ChainCheck,
) -> Result<Restored, StoreError> {
    let db = engine::open(staging, engine, cache, true)?;
    // Refused before the engine writes what would not fit: twice the batch (an engine's log
    // and its tree) and the reserve a store keeps.
    let room = |bytes: usize| {
        let needed = 2 * bytes as u64 + super::space::BALLAST_BYTES;
        if super::space::below_reserve(staging, needed) {
            return Err(StoreError::StorageFull {
                path: staging.to_owned(),
            });
        }
        Ok(())
    };
    let restored = load(&*db, backup, check, room)?;
    let first = mark::Mark {
        lineage: restored.lineage,
        seq: restored.header.seq,
        head: restored.header.head.clone(),
    };
    mark::write(staging, &first, true)
        .map_err(|e| StoreError::storage(format!("cannot write the restored store's mark: {e}")))?;
    drop(db);
    Ok(restored)
}

/// Reads a backup whole: its header, each record but the schema version (given to
/// `record`, in the file's order), its end, checksum and record count. Anything else is an
/// invalid backup (`StoreError::Invalid`, field `backup`); a newer build's schema is
/// [`StoreError::SchemaTooNew`] when `schema` asks for a known one. Returns the header and the schema version's value, which a
/// restore writes last: a store without it is no store.
/// Which store schemas [`read_whole`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Only one this build knows, for a restore: a newer build's store is refused before
    /// it is complete anywhere.
    Known,
    /// Any, for a check of the file alone: a CLI older than the daemon that took the
    /// backup still checks what it wrote.
    Any,
}

fn read_whole(
    backup: impl Read,
    schema: Schema,
    mut record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(BackupHeader, Vec<u8>), StoreError> {
    let mut input = BufReader::new(backup);
    let mut hasher = blake3::Hasher::new();
    let mut line = Vec::new();
    (&mut input)
        .take(MAX_HEADER)
        .read_until(b'\n', &mut line)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let header: BackupHeader = serde_json::from_slice(&line)
        .ok()
        .filter(|h: &BackupHeader| h.format == FORMAT)
        .ok_or_else(|| bad("not a latchkey backup (its first line is not a backup header)"))?;
    if header.version != VERSION {
        return Err(bad(format!(
            "format version {} is not supported",
            header.version
        )));
    }
    hasher.update(&line);
    let truncated = |_| bad("it is truncated");
    let mut read_frame = |hasher: &mut blake3::Hasher| -> Result<Vec<u8>, StoreError> {
        let mut len = [0; 4];
        input.read_exact(&mut len).map_err(truncated)?;
        hasher.update(&len);
        let len = u32::from_be_bytes(len);
        if len > MAX_FRAME {
            return Err(bad("it is damaged (a record larger than any)"));
        }
        let mut bytes = vec![0; len as usize];
        input.read_exact(&mut bytes).map_err(truncated)?;
        hasher.update(&bytes);
        Ok(bytes)
    };
    let mut records = 0u64;
    let mut version = None;
    loop {
        let key = read_frame(&mut hasher)?;
        if key.is_empty() {
            break;
        }
        let value = read_frame(&mut hasher)?;
        records += 1;
        if key == layout::VERSION {
            if schema == Schema::Known {
                super::schema_of(&value)?;
            }
            version = Some(value);
        } else {
            record(key, value)?;
        }
    }
    let mut digest = [0; 32];
    input.read_exact(&mut digest).map_err(truncated)?;
    if blake3::Hash::from(digest) != hasher.finalize() {
        return Err(bad("it is damaged (its checksum does not match)"));
    }
    let mut after = [0; 1];
    if input
        .read(&mut after)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        != 0
    {
        return Err(bad(
            "it is damaged (bytes follow after its checksum: two files joined, or one appended to)",
        ));
    }
    if records != header.records {
        return Err(bad("it is damaged (its record count does not match)"));
    }
    let Some(version) = version else {
        return Err(bad("it holds no store (no schema version)"));
    };
    Ok((header, version))
}

/// Reads a backup into an empty backend and checks it whole (its audit chain too, unless
/// `check` keeps it as it is); gives it a new lineage. The schema version is written last,
/// so a failed restore leaves no store (the caller removes what it wrote).
///
/// `room` is asked before each batch is written whether its bytes fit (a directory's disk:
/// sled, meeting a full disk in the middle of a large write, may hang instead of failing).
pub(super) fn load(
    db: &dyn Backend,
    backup: impl Read,
    check: ChainCheck,
    room: impl Fn(usize) -> Result<(), StoreError>,
) -> Result<Restored, StoreError> {
    let write = |batch: Batch| {
        room(
            batch
                .writes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum(),
        )?;
        db.apply_batch(batch)
    };
    let mut pending = Pending::default();
    let (header, version) = read_whole(backup, Schema::Known, |key, value| {
        if key != layout::LINEAGE
            && let Some(full) = pending.insert(key, value)
        {
            write(full)?;
        }
        Ok(())
    })?;
    let lineage = Uuid::now_v7();
    let mut batch = pending.batch;
    batch.insert(layout::LINEAGE, lineage.as_bytes().as_slice());
    write(batch)?;
    if recover::head_of(db)? != header.head {
        return Err(bad("it is damaged (its newest event is not the header's)"));
    }
    if check == ChainCheck::Verify {
        verify_chain(db, &header)?;
    }
    // Whatever the check: a store whose newest event is not the one its head and sequence
    // number name would chain new events from one it does not hold (a directory's store
    // does not even open: `recover::reconcile_mark`), so it is not made.
    newest_is_the_header_s(db, &header)?;
    let mut last = Batch::default();
    last.insert(layout::VERSION, version);
    db.apply_batch(last)?;
    db.flush()?;
    Ok(Restored { header, lineage })
}

/// Fails when the restored events do not form one chain from the first to the header's
/// newest: a backup of a store whose trail was edited or damaged (its checksum, taken of
/// what the store held, matches all the same).
fn verify_chain(db: &dyn Backend, header: &BackupHeader) -> Result<(), StoreError> {
    let mut walk = ChainWalk::new();
    let mut from = Bound::Included(layout::AUDIT.to_vec());
    let broken = |b: ChainBreak| chain_broken(b.seq, &b.reason);
    loop {
        let range = KeyRange::new(from, KeyRange::prefix(layout::AUDIT).upper);
        let page = db.range(&range, backend::Take::forward(BATCH))?;
        for entry in &page {
            walk.take(entry).map_err(broken)?;
        }
        match page.last() {
            Some((key, _)) if page.len() == BATCH => from = Bound::Excluded(key.clone()),
            _ => return walk.end(header).map_err(broken),
        }
    }
}

/// The audit chain read in order, an event at a time, from the first.
struct ChainWalk {
    next: u64,
    prev: String,
}

impl ChainWalk {
    fn new() -> ChainWalk {
        ChainWalk {
            next: 1,
            prev: audit::GENESIS.to_owned(),
        }
    }

    /// The next audit event's record.
    fn take(&mut self, entry: &backend::Entry) -> Result<(), ChainBreak> {
        // Decoding fails only as `Corrupt`.
        let event = super::decode_event(entry).map_err(|why| ChainBreak {
            seq: self.next,
            reason: format!("an event cannot be read ({why})"),
        })?;
        let prev = std::mem::take(&mut self.prev);
        (self.next, self.prev) = audit::check_chain([&event], self.next, prev)?;
        Ok(())
    }

    /// Every event present links up: the chain must end at the header's newest.
    fn end(self, header: &BackupHeader) -> Result<(), ChainBreak> {
        if self.next <= header.seq {
            // Its newest events were taken out.
            return Err(ChainBreak {
                seq: self.next,
                reason: format!(
                    "an event is missing: the chain ends at #{}, the store recorded {} events",
                    self.next - 1,
                    header.seq
                ),
            });
        }
        if self.next > header.seq + 1 {
            return Err(ChainBreak {
                seq: header.seq + 1,
                reason: format!(
                    "the store recorded {} events, the chain goes on",
                    header.seq
                ),
            });
        }
        Ok(())
    }
}

/// A restore's refusal of a chain that does not verify.
fn chain_broken(seq: u64, reason: &str) -> StoreError {
    bad(format!(
        "its audit chain breaks at #{seq}: {reason} (`latchkey restore --keep-broken-chain` \
         restores it as it is)"
    ))
}

/// Fails unless the store's sequence number is the header's and the event there has the
/// header's hash (its head): new events chain from the newest event the store holds.
fn newest_is_the_header_s(db: &dyn Backend, header: &BackupHeader) -> Result<(), StoreError> {
    let seq = match super::read_seq(db) {
        Ok(seq) => Some(seq),
        Err(StoreError::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    if seq != Some(header.seq) {
        return Err(bad(
            "it is damaged (its sequence number is not the header's newest event)",
        ));
    }
    let newest = match recover::event_at(db, header.seq) {
        Ok(event) => event,
        Err(StoreError::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    let hash = match (&newest, header.seq) {
        (Some(event), _) => event.hash.as_str(),
        (None, 0) => audit::GENESIS,
        (None, _) => "",
    };
    if hash != header.head {
        return Err(bad(format!(
            "its newest event, #{}, is missing or damaged: a store restored from it would \
             chain new events from an event it does not hold (refused even with \
             `latchkey restore --keep-broken-chain`)",
            header.seq
        )));
    }
    Ok(())
}

/// The records a restore read but has not written yet.
#[derive(Default)]
struct Pending {
    batch: Batch,
    bytes: usize,
}

impl Pending {
    /// Adds a record; returns the batch to write once it holds [`BATCH`] records or
    /// [`BATCH_BYTES`] bytes.
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Batch> {
        self.bytes += key.len() + value.len();
        self.batch.writes.push((key, Some(value)));
        if self.batch.writes.len() < BATCH && self.bytes < BATCH_BYTES {
            return None;
        }
        self.bytes = 0;
        Some(std::mem::take(&mut self.batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_batch_is_written_by_records_or_by_bytes() {
        let mut pending = Pending::default();
        let frame = vec![0; MAX_FRAME as usize];
        let per_batch = BATCH_BYTES.div_ceil(MAX_FRAME as usize + 1);
        for round in 0..2 {
            for i in 1..per_batch {
                assert!(
                    pending
                        .insert(vec![round, i as u8], frame.clone())
                        .is_none()
                );
            }
            let full = pending.insert(vec![round], frame.clone()).unwrap();
            assert_eq!(full.writes.len(), per_batch);
        }
        for i in 1..BATCH {
            assert!(pending.insert(i.to_be_bytes().to_vec(), vec![]).is_none());
        }
        assert_eq!(pending.insert(vec![], vec![]).unwrap().writes.len(), BATCH);
        assert!(pending.batch.writes.is_empty());
    }
}
