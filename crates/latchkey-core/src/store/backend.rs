//! The storage boundary: an ordered key-value store with transactions.
//!
//! Everything the store keeps is a byte key in one ordered keyspace ([`layout`](super::layout)):
//! records, the list indexes, counters, background jobs and the audit chain. Every query the
//! store makes is one of three things, and a backend provides exactly these:
//! - a point read ([`Backend::get`]),
//! - a bounded, ordered range read ([`Backend::range`]): an index page, a job's chunk of
//!   1,000 keys, a stretch of the audit chain; [`scan`] pages through a longer range,
//! - the floors of many ranges at once ([`Backend::floors`]): the index hints of a write,
//!   one range read each by default, one round trip on PostgreSQL,
//! - a transaction of point reads and writes ([`Backend::transaction`]), retried by the
//!   backend when it conflicts with another, plus unconditional batches for rebuilds.
//!
//! Domain logic (permissions, escalation and tenant checks, the audit chain, indexes,
//! counters, jobs, verification and its cache) is written once above this line. Two
//! backends implement it: sled (`db.rs`) and PostgreSQL (`postgres/`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::error::StoreError;

/// One stored entry: key and value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// The order of a range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// Where a range read starts and how far it goes: up to `limit` entries from the range's
/// low end (`Forward`) or its high end (`Reverse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Take {
    pub(crate) direction: Direction,
    pub(crate) limit: usize,
}

impl Take {
    pub(crate) fn new(direction: Direction, limit: usize) -> Take {
        Take { direction, limit }
    }

    /// Up to `limit` entries from the low end.
    pub(crate) fn forward(limit: usize) -> Take {
        Take::new(Direction::Forward, limit)
    }

    /// Up to `limit` entries from the high end.
    pub(crate) fn reverse(limit: usize) -> Take {
        Take::new(Direction::Reverse, limit)
    }

    /// This page of a range whose entries `items` gives in ascending order: what an
    /// engine's range iterator, which runs both ways, is turned into.
    pub(crate) fn collect<E>(
        self,
        items: impl DoubleEndedIterator<Item = Result<Entry, E>>,
    ) -> Result<Vec<Entry>, E> {
        match self.direction {
            Direction::Forward => items.take(self.limit).collect(),
            Direction::Reverse => items.rev().take(self.limit).collect(),
        }
    }
}

/// A range of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) lower: Bound<Vec<u8>>,
    pub(crate) upper: Bound<Vec<u8>>,
}

impl KeyRange {
    pub(crate) fn new(lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> KeyRange {
        KeyRange { lower, upper }
    }

    /// The bounds as slices, as an engine's range read takes them.
    pub(crate) fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            self.lower.as_ref().map(Vec::as_slice),
            self.upper.as_ref().map(Vec::as_slice),
        )
    }

    /// Whether the range holds no key at all by its bounds (its lower bound above its
    /// upper).
    pub(crate) fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        }
    }

    /// Every key that starts with `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> KeyRange {
        let upper = successor_of_prefix(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        KeyRange::new(Bound::Included(prefix.to_vec()), upper)
    }
}

/// The smallest key greater than every key that starts with `prefix`; `None` when there is
/// none (a prefix of 0xFF bytes only).
fn successor_of_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Why a transaction's step failed.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The transaction's own decision (not found, conflict of a lifecycle rule, ...): it
    /// ends, nothing is written, the error is the answer.
    Abort(StoreError),
    /// Another transaction changed what this one read: the backend runs it again.
    Conflict,
    /// The storage failed.
    Storage(StoreError),
}

/// The reads and writes of one transaction. A transaction's reads see its own writes.
pub(crate) trait KvTx {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxError>;
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), TxError>;
    fn remove(&self, key: &[u8]) -> Result<(), TxError>;

    /// Announces the point reads a transaction is about to make, so that a backend whose
    /// reads are round trips (PostgreSQL) makes one for all of them: a bulk write (an
    /// import of 1,000 keys) then costs a few round trips, not a few per key. What `get`
    /// answers is unchanged. The default reads nothing: a local read costs no more one at
    /// a time.
    fn prefetch(&self, keys: &[Vec<u8>]) -> Result<(), TxError> {
        let _ = keys;
        Ok(())
    }
}

/// Writes applied at once, outside any transaction (rebuilds, creation).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.writes.push((key.as_ref().to_vec(), None));
    }
}

/// A transaction body, run once per attempt.
pub(crate) type TxBody<'a> = dyn FnMut(&dyn KvTx) -> Result<(), TxError> + 'a;

/// An ordered key-value store with transactions: what the store needs of its storage.
pub(crate) trait Backend: Send + Sync + Debug {
    /// One entry.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Several entries, in the order of `keys`: what a list page reads for the positions
    /// it scanned. A backend across a network answers them in one round trip.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// One page of `range`'s entries.
    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError>;

    /// For each `(low, high)` of `queries`, in order, the greatest key in `[low, high]`
    /// (`None`: no key there). A write reads the index hints of all its changes this way
    /// (`chunks.rs`), so a backend whose reads are round trips (PostgreSQL) answers them
    /// in one. The default makes one range read per query: a local read costs no more one
    /// at a time.
    fn floors(&self, queries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        queries
            .iter()
            .map(|(low, high)| floor_by_range(self, low, high))
            .collect()
    }

    /// Whether a thread that has a transaction open ([`Backend::transaction`]) may read
    /// outside it meanwhile (`get`, `range`, `floors`): then a write reads the index hints
    /// it lacks inside the transaction that needs them, rather than abandoning that attempt
    /// to read them first. PostgreSQL may (another connection reads); sled may not, a read
    /// of its tree deadlocks inside one of its transactions: the default.
    fn reads_during_transactions(&self) -> bool {
        false
    }

    /// A consistent read-only view of the whole storage, taken now, that writers do not
    /// wait for (PostgreSQL: one read-only serializable transaction). `None` where the
    /// storage has none: a reader that needs one holds the writers still instead.
    fn snapshot(&self) -> Result<Option<Arc<dyn Backend>>, StoreError> {
        Ok(None)
    }

    /// Runs `body` in a transaction that commits atomically, running it again while it
    /// conflicts with another. Returns `Abort` and `Storage` as the body or storage gave
    /// them; never `Conflict`.
    fn transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError>;

    /// Applies writes at once (atomically).
    fn apply_batch(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes every committed write durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// [`Backend::transaction`], durable when it returns: committed, then, where a commit
    /// is not durable by itself, flushed on the very instance that committed it. For a
    /// write made without the store's write lock (a credit reservation), which a reopen
    /// does not wait for: a flush of the instance a reopen put in place meanwhile would
    /// report durable a commit that the dropped one lost.
    fn durable_transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        self.transaction(body)?;
        if self.commits_durably() {
            return Ok(());
        }
        self.flush().map_err(TxError::Storage)
    }

    /// Whether a commit is durable when [`Backend::transaction`] returns (redb,
    /// PostgreSQL): then a write stands whatever a later [`Backend::flush`] says. Not on
    /// sled (the default), whose commits are durable only once flushed, and whose failed
    /// flush drops them at the reopen that follows (`recover.rs`).
    fn commits_durably(&self) -> bool {
        false
    }

    /// Serializes management writes across every process that shares the storage, until
    /// the guard is dropped: none for a store only one process opens (its write lock is
    /// enough).
    fn lock_writers(&self) -> Result<WriterGuard, StoreError> {
        Ok(None)
    }

    /// On storage several processes share: records that process `follower` has applied
    /// every change up to `applied` and is alive, or, with `None`, that it left.
    fn acknowledge(&self, follower: Uuid, applied: Option<u64>) -> Result<(), StoreError> {
        let _ = (follower, applied);
        Ok(())
    }

    /// On storage several processes share: the storage's own clock, in Unix nanoseconds,
    /// the one time those processes have in common. `None` for an embedded engine.
    fn clock(&self) -> Result<Option<i128>, StoreError> {
        Ok(None)
    }

    /// On storage several processes share: waits until every live process other than
    /// `follower` has applied the change `seq`, for at most `bound` (a process that
    /// acknowledged nothing for `bound` is not waited for: it stopped serving).
    fn await_followers(&self, follower: Uuid, seq: u64, bound: Duration) -> Result<(), StoreError> {
        let _ = (follower, seq, bound);
        Ok(())
    }
}

/// The greatest key in `[low, high]`, by one range read.
pub(crate) fn floor_by_range<B: Backend + ?Sized>(
    db: &B,
    low: &[u8],
    high: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let range = KeyRange::new(
        Bound::Included(low.to_vec()),
        Bound::Included(high.to_vec()),
    );
    Ok(db
        .range(&range, Take::reverse(1))?
        .into_iter()
        .next()
        .map(|(k, _)| k))
}

/// Runs `body` through `commit` (a kind of transaction), answering what its committed run
/// gave.
fn with_result<T>(
    body: impl Fn(&dyn KvTx) -> Result<T, TxError>,
    commit: impl FnOnce(&mut TxBody<'_>) -> Result<(), TxError>,
) -> Result<T, TxError> {
    let mut out = None;
    commit(&mut |tx| {
        out = Some(body(tx)?);
        Ok(())
    })?;
    Ok(out.expect("a committed transaction ran its body"))
}

/// Held while a write runs; see [`Backend::lock_writers`].
pub(crate) type WriterGuard = Option<Box<dyn Send>>;

impl dyn Backend {
    /// [`Backend::transaction`] with a result.
    pub(crate) fn transact<T>(
        &self,
        body: impl Fn(&dyn KvTx) -> Result<T, TxError>,
    ) -> Result<T, TxError> {
        with_result(body, |run| self.transaction(run))
    }

    /// [`Backend::durable_transaction`] with a result.
    pub(crate) fn transact_durably<T>(
        &self,
        body: impl Fn(&dyn KvTx) -> Result<T, TxError>,
    ) -> Result<T, TxError> {
        with_result(body, |run| self.durable_transaction(run))
    }

    /// Whether an entry exists.
    pub(crate) fn contains_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }

    /// The first entry of a range, in `direction`.
    pub(crate) fn first(
        &self,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .range(range, Take::new(direction, 1))?
            .into_iter()
            .next())
    }
}

/// How many entries [`scan`] reads per range read.
const SCAN_PAGE: usize = 256;

/// Every entry of a range, in order, read a page at a time: a long range never sits in
/// memory at once, and a short walk (the first page of a list) reads no more than a page.
pub(crate) fn scan(db: &Arc<dyn Backend>, range: KeyRange, direction: Direction) -> Scan {
    Scan {
        db: Arc::clone(db),
        range,
        direction,
        buffered: VecDeque::new(),
        done: false,
        page: 16,
    }
}

/// The iterator of [`scan`].
#[derive(Debug)]
pub(crate) struct Scan {
    db: Arc<dyn Backend>,
    range: KeyRange,
    direction: Direction,
    buffered: VecDeque<Entry>,
    done: bool,
    /// The next page's size: small at first, up to [`SCAN_PAGE`].
    page: usize,
}

impl Iterator for Scan {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            match self
                .db
                .range(&self.range, Take::new(self.direction, self.page))
            {
                Ok(entries) => {
                    self.done = entries.len() < self.page;
                    self.page = (self.page * 4).min(SCAN_PAGE);
                    if let Some((last, _)) = entries.last() {
                        let after = Bound::Excluded(last.clone());
                        match self.direction {
                            Direction::Forward => self.range.lower = after,
                            Direction::Reverse => self.range.upper = after,
                        }
                    }
                    self.buffered = entries.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_at_the_prefix_successor() {
        let r = KeyRange::prefix(b"k:");
        assert_eq!(r.lower, Bound::Included(b"k:".to_vec()));
        assert_eq!(r.upper, Bound::Excluded(b"k;".to_vec()));
        assert_eq!(successor_of_prefix(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor_of_prefix(b"\xff\xff"), None);
    }
}
