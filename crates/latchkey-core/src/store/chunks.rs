//! Index chunks: the positions of one index packed several to a stored entry.
//!
//! sled 0.34 splits a leaf past 16 entries whatever their size, and keeps a few hundred
//! bytes per page resident: one entry per index position cost ~330 MiB at a million keys.
//! So an index (`x:<scope><field>`, `x:e`) is a sequence of **chunks**:
//!
//! ```text
//! <index prefix><start>  →  Chunk { high, positions }
//! ```
//!
//! `positions` are sorted, all `≥ start` and `< high`; `high` is the next chunk's start,
//! `None` for the last chunk. The head chunk's start is the empty position (its key is the
//! prefix itself) and stays while the index holds a position. Chunks partition the
//! positions, B-link style: a chunk found from a stale hint leads right, by `high`, to the
//! one that holds a position.
//!
//! - A chunk holds at most `max` positions (16 by default) and about [`CHUNK_BYTES`]. A
//!   full chunk splits in two halves, except past the last position of the last chunk
//!   (created_at, last_used_at grow there): then a new chunk starts with the new position
//!   alone, so append-only indexes stay full.
//! - A chunk that becomes empty takes over its successor (its positions and `high`), which
//!   is removed: no predecessor is ever needed, so a writer never reads a range inside a
//!   transaction (sled deadlocks on that). An empty last chunk stays (one per index at
//!   most); an empty head that is also the last goes, so an empty index has no entry.
//!   Underfull neighbours are not merged.
//! - A writer finds the chunk of a position from a hint: the greatest chunk start at or
//!   below it in the committed state, read before its transaction (or beside it, where
//!   the backend reads during transactions: PostgreSQL). Every index write runs
//!   under the store's write lock (and, on a shared database, the writers' lock), so the
//!   committed state differs from the writer's view only by the writer's own changes: a
//!   hint is either still a chunk, or a chunk this writer removed, which [`Writer`]
//!   follows to the chunk that took it over; from there it moves right.
//! - A reader ([`scan`]) checks that consecutive chunks chain by `high`; when a concurrent
//!   split or take-over breaks the chain it seeks again from the last position it
//!   returned, and never returns a position twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::backend::{self, Backend, Batch, Direction, KeyRange, KvTx, TxError};
use super::{decode, encode};
use crate::error::StoreError;

/// The most positions in one chunk, by default.
pub(crate) const CHUNK_POSITIONS: usize = 16;
/// The most bytes of positions in one chunk (names can be long).
pub(crate) const CHUNK_BYTES: usize = 2_048;
/// How often a reader seeks again before it calls the index broken.
const MAX_RESEEKS: usize = 1_000;

/// One stored chunk of an index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The next chunk's start; `None` for the last chunk.
    pub(crate) high: Option<Vec<u8>>,
    /// Sorted positions, each at or above this chunk's start and below `high`.
    pub(crate) positions: Vec<Vec<u8>>,
}

impl Chunk {
    fn bytes(&self) -> usize {
        self.positions.iter().map(Vec::len).sum()
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("index chunks: {what}"))
}

/// Where a [`Writer`] reads and writes chunks.
pub(crate) trait ChunkStore {
    /// What a read or write fails with.
    type Error: From<StoreError>;
    /// The greatest chunk key in `[prefix, key]` in the committed state (a hint).
    fn committed_floor(
        &mut self,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, Self::Error>;
    /// A chunk as the writer sees it (its own writes included).
    fn get(&mut self, key: &[u8]) -> Result<Option<Chunk>, Self::Error>;
    fn put(&mut self, key: &[u8], chunk: &Chunk) -> Result<(), Self::Error>;
    fn remove(&mut self, key: &[u8]) -> Result<(), Self::Error>;
}

/// Inserts and removes positions of indexes, chunk by chunk: one writer's changes.
pub(crate) struct Writer<S> {
    pub(crate) store: S,
    max: usize,
    /// Chunks this writer removed, each to the chunk that took over its positions.
    taken_over: HashMap<Vec<u8>, Vec<u8>>,
    /// Chunks this writer wrote and did not remove: hints too, for positions it placed
    /// in chunks the committed state does not have yet.
    written: BTreeSet<Vec<u8>>,
}

impl<S: ChunkStore> Writer<S> {
    /// A writer of chunks of at most `max` positions (at least 2).
    pub(crate) fn new(store: S, max: usize) -> Writer<S> {
        Writer {
            store,
            max: max.max(2),
            taken_over: HashMap::new(),
            written: BTreeSet::new(),
        }
    }

    fn put(&mut self, key: &[u8], chunk: &Chunk) -> Result<(), S::Error> {
        self.taken_over.remove(key);
        self.written.insert(key.to_vec());
        self.store.put(key, chunk)
    }

    fn remove_chunk(&mut self, key: &[u8]) -> Result<(), S::Error> {
        self.written.remove(key);
        self.store.remove(key)
    }

    /// The chunk that holds (or would hold) `position`, as (key, chunk); `None` when the
    /// index is empty.
    fn locate(
        &mut self,
        prefix: &[u8],
        position: &[u8],
    ) -> Result<Option<(Vec<u8>, Chunk)>, S::Error> {
        let target = [prefix, position].concat();
        let own = self
            .written
            .range::<[u8], _>((Bound::Included(prefix), Bound::Included(target.as_slice())))
            .next_back()
            .cloned();
        if let Some(own) = &own {
            // A chunk this writer wrote that reaches past the position holds it: no hint
            // needed (the chunks partition the positions).
            let chunk = self.store.get(own)?;
            if let Some(chunk) = chunk.filter(|c| c.high.as_deref().is_none_or(|h| position < h)) {
                return Ok(Some((own.clone(), chunk)));
            }
        }
        let committed = self.store.committed_floor(prefix, &target)?;
        let mut key = committed.max(own).unwrap_or_else(|| prefix.to_vec());
        while let Some(next) = self.taken_over.get(&key) {
            key.clone_from(next);
        }
        let Some(mut chunk) = self.store.get(&key)? else {
            return if key == prefix {
                Ok(None)
            } else {
                Err(corrupt("a hint leads to no chunk").into())
            };
        };
        while let Some(high) = chunk.high.take_if(|h| position >= h.as_slice()) {
            // Starts only grow along the chain: a damaged one that leads back would
            // otherwise be followed forever, under the write lock.
            if high.as_slice() <= &key[prefix.len()..] {
                return Err(corrupt("a chunk's high is not above its start").into());
            }
            key = [prefix, &high].concat();
            chunk = self
                .store
                .get(&key)?
                .ok_or_else(|| corrupt("a chunk's high leads to no chunk"))?;
        }
        Ok(Some((key, chunk)))
    }

    fn over(&self, chunk: &Chunk) -> bool {
        chunk.positions.len() > self.max || chunk.bytes() > CHUNK_BYTES
    }

    /// Adds `position` to the index at `prefix` (nothing when it is there).
    pub(crate) fn insert(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), S::Error> {
        let Some((key, mut chunk)) = self.locate(prefix, position)? else {
            let head = Chunk {
                high: None,
                positions: vec![position.to_vec()],
            };
            return self.put(prefix, &head);
        };
        let Err(at) = chunk
            .positions
            .binary_search_by(|p| p.as_slice().cmp(position))
        else {
            return Ok(());
        };
        chunk.positions.insert(at, position.to_vec());
        if !self.over(&chunk) {
            return self.put(&key, &chunk);
        }
        let appending = chunk.high.is_none() && at + 1 == chunk.positions.len();
        let split = if appending {
            at
        } else {
            chunk.positions.len() / 2
        };
        if split == 0 {
            // One position alone over the byte cap: it stays where it is.
            return self.put(&key, &chunk);
        }
        let right = Chunk {
            high: chunk.high.take(),
            positions: chunk.positions.split_off(split),
        };
        let start = right.positions[0].clone();
        chunk.high = Some(start.clone());
        self.put(&key, &chunk)?;
        self.put(&[prefix, &start].concat(), &right)
    }

    /// Takes `position` out of the index at `prefix` (nothing when it is not there).
    pub(crate) fn remove(&mut self, prefix: &[u8], position: &[u8]) -> Result<(), S::Error> {
        let Some((key, mut chunk)) = self.locate(prefix, position)? else {
            return Ok(());
        };
        let Ok(at) = chunk
            .positions
            .binary_search_by(|p| p.as_slice().cmp(position))
        else {
            return Ok(());
        };
        chunk.positions.remove(at);
        if chunk.positions.is_empty()
            && let Some(high) = chunk.high.take()
        {
            // Take over the successor: its positions are all below its own high.
            let next = [prefix, &high].concat();
            chunk = self
                .store
                .get(&next)?
                .ok_or_else(|| corrupt("a chunk's high leads to no chunk"))?;
            self.remove_chunk(&next)?;
            self.taken_over.insert(next, key.clone());
        }
        if chunk.positions.is_empty() && chunk.high.is_none() && key == prefix {
            return self.remove_chunk(&key);
        }
        self.put(&key, &chunk)
    }
}

/// The chunks of a batch (usage flush, rebuild): read from the committed state, changed
/// in memory, written into a [`Batch`] by [`Overlay::write_into`].
pub(crate) struct Overlay<'a> {
    db: &'a dyn Backend,
    changed: BTreeMap<Vec<u8>, Option<Chunk>>,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(db: &'a dyn Backend) -> Overlay<'a> {
        Overlay {
            db,
            changed: BTreeMap::new(),
        }
    }

    /// Moves the changed chunks into `batch`; the overlay is empty afterwards.
    pub(crate) fn write_into(&mut self, batch: &mut Batch) {
        for (key, chunk) in std::mem::take(&mut self.changed) {
            match chunk {
                Some(chunk) => batch.insert(key, encode(&chunk)),
                None => batch.remove(key),
            }
        }
    }
}

impl Writer<Overlay<'_>> {
    /// Moves the changed chunks into `batch`, once the batch is the committed state.
    pub(crate) fn write_into(&mut self, batch: &mut Batch) {
        self.store.write_into(batch);
        self.taken_over.clear();
        self.written.clear();
    }
}

impl ChunkStore for Overlay<'_> {
    type Error = StoreError;

    fn committed_floor(
        &mut self,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        backend::floor_by_range(self.db, prefix, key)
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Chunk>, StoreError> {
        match self.changed.get(key) {
            Some(chunk) => Ok(chunk.clone()),
            None => self.db.get(key)?.map(|b| decode(&b)).transpose(),
        }
    }

    fn put(&mut self, key: &[u8], chunk: &Chunk) -> Result<(), StoreError> {
        self.changed.insert(key.to_vec(), Some(chunk.clone()));
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.changed.insert(key.to_vec(), None);
        Ok(())
    }
}

/// One change of an index, kept until the end of a transaction's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) prefix: Vec<u8>,
    pub(crate) position: Vec<u8>,
    pub(crate) insert: bool,
}

impl Change {
    fn target(&self) -> Vec<u8> {
        [self.prefix.as_slice(), &self.position].concat()
    }
}

/// Chunk keys read from the committed state before a transaction, which finds the chunk
/// of a position from the greatest of them at or below it.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    /// Committed chunk keys.
    chunks: BTreeSet<Vec<u8>>,
    /// Indexes (prefixes) with no committed chunk.
    empty: HashSet<Vec<u8>>,
    /// Whether a change without a hint starts from the index's head (correct, but a walk
    /// right through the whole index): after a few rounds, for a write whose positions
    /// change from one attempt to the next (new random ids) and keep missing theirs.
    from_head: bool,
}

impl Hints {
    /// The greatest committed chunk key at or below `target`, as far as known: `None` for
    /// none (an empty index), `Some(None)` when unknown.
    fn floor(&self, prefix: &[u8], target: &[u8]) -> Option<Option<Vec<u8>>> {
        if self.empty.contains(prefix) {
            return Some(None);
        }
        let known = self
            .chunks
            .range::<[u8], _>((Bound::Included(prefix), Bound::Included(target)))
            .next_back();
        match known {
            Some(key) => Some(Some(key.clone())),
            None if self.from_head => Some(Some(prefix.to_vec())),
            None => None,
        }
    }

    /// The changes of `changes` whose hint is not known.
    pub(crate) fn missing(&self, changes: &[Change]) -> Vec<Change> {
        changes
            .iter()
            .filter(|c| self.floor(&c.prefix, &c.target()).is_none())
            .cloned()
            .collect()
    }

    /// Reads the hints of `changes` that are not known, from the committed state (outside
    /// the transaction that uses them, under the writers' lock), with one
    /// [`Backend::floors`] call.
    pub(crate) fn read(&mut self, db: &dyn Backend, changes: &[Change]) -> Result<(), StoreError> {
        let queries: BTreeSet<(Vec<u8>, Vec<u8>)> = self
            .missing(changes)
            .into_iter()
            .map(|c| {
                let target = c.target();
                (c.prefix, target)
            })
            .collect();
        if queries.is_empty() {
            return Ok(());
        }
        let queries: Vec<_> = queries.into_iter().collect();
        let floors = db.floors(&queries)?;
        if floors.len() != queries.len() {
            return Err(StoreError::storage(format!(
                "{} index hints read for {} asked",
                floors.len(),
                queries.len()
            )));
        }
        for ((prefix, _), floor) in queries.into_iter().zip(floors) {
            match floor {
                Some(key) => self.chunks.insert(key),
                None => self.empty.insert(prefix),
            };
        }
        Ok(())
    }

    /// Lets changes without a hint start from their index's head.
    pub(crate) fn start_from_heads(&mut self) {
        self.from_head = true;
    }
}

/// The chunks of a transaction, with hints read before it.
struct TxChunks<'t> {
    tx: &'t dyn KvTx,
    hints: &'t Hints,
}

impl ChunkStore for TxChunks<'_> {
    type Error = TxError;

    fn committed_floor(&mut self, prefix: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        self.hints
            .floor(prefix, key)
            .ok_or_else(|| TxError::Abort(corrupt("a hint was not read")))
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Chunk>, TxError> {
        self.tx
            .get(key)?
            .map(|b| decode(&b))
            .transpose()
            .map_err(TxError::Abort)
    }

    fn put(&mut self, key: &[u8], chunk: &Chunk) -> Result<(), TxError> {
        self.tx.put(key, &encode(chunk))
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), TxError> {
        self.tx.remove(key)
    }
}

/// Applies `changes` in a transaction. When `hints` lacks some they need, writes nothing
/// and answers those changes: read their hints ([`Hints::read`]) and run the transaction
/// again.
pub(crate) fn apply_in_tx(
    tx: &dyn KvTx,
    changes: Vec<Change>,
    hints: &Hints,
    max: usize,
) -> Result<Vec<Change>, TxError> {
    let missing = hints.missing(&changes);
    if !missing.is_empty() {
        return Ok(missing);
    }
    // The chunks the hints lead to (an empty index's head: its prefix), read ahead: one
    // round trip on PostgreSQL, not one per change.
    let starts: BTreeSet<Vec<u8>> = changes
        .iter()
        .filter_map(|c| {
            let hint = hints.floor(&c.prefix, &c.target())?;
            Some(hint.unwrap_or_else(|| c.prefix.clone()))
        })
        .collect();
    tx.prefetch(&starts.into_iter().collect::<Vec<_>>())?;
    let mut writer = Writer::new(TxChunks { tx, hints }, max);
    for change in changes {
        if change.insert {
            writer.insert(&change.prefix, &change.position)?;
        } else {
            writer.remove(&change.prefix, &change.position)?;
        }
    }
    Ok(Vec::new())
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Abort(e)
    }
}

/// The positions of one index after `after`, in order or in reverse, read chunk by chunk.
pub(crate) fn scan(
    db: &Arc<dyn Backend>,
    prefix: Vec<u8>,
    descending: bool,
    after: Option<&[u8]>,
) -> Scan {
    Scan {
        db: Arc::clone(db),
        prefix,
        descending,
        bound: after.map(<[u8]>::to_vec),
        chunks: None,
        expect: Expect::Nothing,
        buffered: VecDeque::new(),
        reseeks: 0,
        done: false,
    }
}

/// What the next chunk read must be for the chain to hold.
#[derive(Debug)]
enum Expect {
    /// The first chunk after a seek: forward, it starts at this start; reverse, it ends
    /// above the bound.
    First(Option<Vec<u8>>),
    /// Forward: this start (`None`: no more chunks). Reverse: a chunk whose high is this.
    Chain(Option<Vec<u8>>),
    Nothing,
}

/// The iterator of [`scan`].
#[derive(Debug)]
pub(crate) struct Scan {
    db: Arc<dyn Backend>,
    prefix: Vec<u8>,
    descending: bool,
    /// `after`, then the last position returned.
    bound: Option<Vec<u8>>,
    chunks: Option<backend::Scan>,
    expect: Expect,
    buffered: VecDeque<Vec<u8>>,
    reseeks: usize,
    done: bool,
}

impl Scan {
    /// Starts reading chunks from the one holding the bound.
    fn seek(&mut self) -> Result<(), StoreError> {
        self.reseeks += 1;
        if self.reseeks > MAX_RESEEKS {
            return Err(corrupt("the chunks do not chain"));
        }
        let mut end = self.prefix.clone();
        // The last byte of an index prefix is a letter: its successor bounds the index.
        *end.last_mut().expect("non-empty") += 1;
        let at = self
            .bound
            .as_ref()
            .map(|b| [self.prefix.as_slice(), b].concat());
        let (range, direction) = if self.descending {
            let upper = at.map_or(Bound::Excluded(end), Bound::Included);
            let range = KeyRange::new(Bound::Included(self.prefix.clone()), upper);
            self.expect = Expect::First(None);
            (range, Direction::Reverse)
        } else {
            let first = match &at {
                None => Some(self.prefix.clone()),
                Some(at) => backend::floor_by_range(&*self.db, &self.prefix, at)?,
            };
            let Some(first) = first else {
                self.done = true;
                return Ok(());
            };
            self.expect = Expect::First(Some(first[self.prefix.len()..].to_vec()));
            let range = KeyRange::new(Bound::Included(first), Bound::Excluded(end));
            (range, Direction::Forward)
        };
        self.chunks = Some(backend::scan(&self.db, range, direction));
        Ok(())
    }

    /// Whether `chunk` at `start` continues the chain; moves the expectation on.
    fn chains(&mut self, start: &[u8], chunk: &Chunk) -> bool {
        let holds = match (&self.expect, self.descending) {
            (Expect::First(want), false) => want.as_deref() == Some(start),
            (Expect::Chain(want), false) => want.as_deref() == Some(start),
            (Expect::First(_), true) => match (&self.bound, &chunk.high) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(bound), Some(high)) => high > bound,
            },
            (Expect::Chain(want), true) => *want == chunk.high && want.is_some(),
            (Expect::Nothing, _) => false,
        };
        self.expect = if self.descending {
            Expect::Chain(Some(start.to_vec()))
        } else {
            Expect::Chain(chunk.high.clone())
        };
        holds
    }

    /// Whether the chunks read so far reach the end of the index.
    fn complete(&self) -> bool {
        match (&self.expect, self.descending) {
            // Forward: the last chunk read was the last; reverse: it was the head.
            (Expect::Chain(want), false) => want.is_none(),
            (Expect::Chain(want), true) => want.as_deref() == Some(&[][..]),
            // Nothing at or past the seek: forward, no chunk at or below the bound (an
            // empty index); reverse, no chunk at or below it.
            (Expect::First(_), _) => true,
            (Expect::Nothing, _) => true,
        }
    }

    fn fill(&mut self) -> Result<(), StoreError> {
        while self.buffered.is_empty() && !self.done {
            if self.chunks.is_none() {
                self.seek()?;
                continue;
            }
            let next = self.chunks.as_mut().and_then(Iterator::next);
            let Some(item) = next else {
                if self.complete() {
                    self.done = true;
                } else {
                    self.chunks = None;
                }
                continue;
            };
            let (key, value) = item?;
            let start = key
                .get(self.prefix.len()..)
                .ok_or_else(|| corrupt("a key outside its index"))?;
            let chunk: Chunk = decode(&value)?;
            if !self.chains(start, &chunk) {
                self.chunks = None;
                continue;
            }
            let bound = self.bound.as_deref();
            if self.descending {
                self.buffered.extend(
                    chunk
                        .positions
                        .into_iter()
                        .rev()
                        .filter(|p| bound.is_none_or(|b| p.as_slice() < b)),
                );
            } else {
                self.buffered.extend(
                    chunk
                        .positions
                        .into_iter()
                        .filter(|p| bound.is_none_or(|b| p.as_slice() > b)),
                );
            }
        }
        Ok(())
    }
}

impl Iterator for Scan {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            self.done = true;
            self.buffered.clear();
            return Some(Err(e));
        }
        let position = self.buffered.pop_front()?;
        self.bound = Some(position.clone());
        Some(Ok(position))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::store::db::Db;

    const PREFIXES: [&[u8]; 2] = [b"x:ac", b"x:an"];

    /// One index change: which index, insert or remove, which position.
    type Op = (usize, bool, Vec<u8>);

    fn op() -> impl Strategy<Value = Op> {
        (
            0..PREFIXES.len(),
            proptest::bool::weighted(0.6),
            proptest::collection::vec(0_u8..6, 1..3),
        )
    }

    fn open() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 1 << 20).unwrap();
        (dir, Arc::new(db))
    }

    /// Commits `ops` as one writer does (`Store::write_prepared`): in a transaction, with
    /// hints read first, or within it where the backend reads during transactions.
    fn commit_in_tx(db: &Arc<dyn Backend>, ops: &[Op], max: usize) {
        let changes: Vec<Change> = ops
            .iter()
            .map(|(i, insert, position)| Change {
                prefix: PREFIXES[*i].to_vec(),
                position: position.clone(),
                insert: *insert,
            })
            .collect();
        let hints = RefCell::new(Hints::default());
        let within = db.reads_during_transactions();
        for _ in 0..2 {
            let missing = db
                .transact(|tx| {
                    if within {
                        let lacking = hints.borrow().missing(&changes);
                        hints.borrow_mut().read(&**db, &lacking)?;
                    }
                    apply_in_tx(tx, changes.clone(), &hints.borrow(), max)
                })
                .map_err(|_| "transaction failed")
                .unwrap();
            if missing.is_empty() {
                return;
            }
            assert!(!within, "hints read within the transaction lack nothing");
            hints.borrow_mut().read(&**db, &missing).unwrap();
        }
        panic!("one round of hints is enough when positions do not change");
    }

    #[test]
    fn a_chain_of_chunks_that_leads_back_is_damage_not_a_loop() {
        let (_dir, db) = open();
        let prefix = PREFIXES[0];
        let chunk = |high: &[u8]| Chunk {
            high: Some(high.to_vec()),
            positions: Vec::new(),
        };
        let mut batch = Batch::default();
        batch.insert(prefix, encode(&chunk(b"a")));
        batch.insert([prefix, b"a"].concat(), encode(&chunk(b"b")));
        batch.insert([prefix, b"b"].concat(), encode(&chunk(b"a")));
        db.apply_batch(batch).unwrap();
        let mut writer = Writer::new(Overlay::new(&*db), 4);
        assert!(writer.insert(prefix, b"c").is_err());
    }

    /// Commits `ops` as a batch does: chunks changed in an overlay, then written at once.
    fn commit_in_batch(db: &Arc<dyn Backend>, ops: &[Op], max: usize) {
        let mut writer = Writer::new(Overlay::new(&**db), max);
        for (i, insert, position) in ops {
            if *insert {
                writer.insert(PREFIXES[*i], position).unwrap();
            } else {
                writer.remove(PREFIXES[*i], position).unwrap();
            }
        }
        let mut batch = Batch::default();
        writer.write_into(&mut batch);
        db.apply_batch(batch).unwrap();
    }

    /// Checks the chunks of one index against the positions it must hold.
    fn check_chunks(db: &Arc<dyn Backend>, prefix: &[u8], want: &BTreeSet<Vec<u8>>, max: usize) {
        let chunks: Vec<(Vec<u8>, Chunk)> =
            backend::scan(db, KeyRange::prefix(prefix), Direction::Forward)
                .map(|item| {
                    let (key, value) = item.unwrap();
                    (key[prefix.len()..].to_vec(), decode(&value).unwrap())
                })
                .collect();
        assert_eq!(chunks.is_empty(), want.is_empty(), "a head iff positions");
        let mut all = Vec::new();
        for (i, (start, chunk)) in chunks.iter().enumerate() {
            if i == 0 {
                assert!(start.is_empty(), "the first chunk is the head");
            }
            let next = chunks.get(i + 1).map(|(s, _)| s.clone());
            assert_eq!(chunk.high, next, "highs chain");
            assert!(chunk.positions.len() <= max, "at most {max} positions");
            assert!(
                !chunk.positions.is_empty() || (chunk.high.is_none() && i > 0),
                "only a last chunk that is not the head may be empty"
            );
            assert!(chunk.positions.windows(2).all(|w| w[0] < w[1]), "sorted");
            for p in &chunk.positions {
                assert!(p >= start, "within the chunk");
                assert!(chunk.high.as_ref().is_none_or(|h| p < h), "below high");
            }
            all.extend(chunk.positions.iter().cloned());
        }
        assert_eq!(all, want.iter().cloned().collect::<Vec<_>>());
    }

    fn check_scans(db: &Arc<dyn Backend>, prefix: &[u8], want: &BTreeSet<Vec<u8>>, after: &[u8]) {
        let read = |descending, after: Option<&[u8]>| -> Vec<Vec<u8>> {
            scan(db, prefix.to_vec(), descending, after)
                .map(Result::unwrap)
                .collect()
        };
        let all: Vec<_> = want.iter().cloned().collect();
        assert_eq!(read(false, None), all);
        assert_eq!(
            read(true, None),
            all.iter().rev().cloned().collect::<Vec<_>>()
        );
        let above: Vec<_> = all
            .iter()
            .filter(|p| p.as_slice() > after)
            .cloned()
            .collect();
        assert_eq!(read(false, Some(after)), above, "after {after:?}");
        let below: Vec<_> = all
            .iter()
            .rev()
            .filter(|p| p.as_slice() < after)
            .cloned()
            .collect();
        assert_eq!(read(true, Some(after)), below, "before {after:?}");
    }

    /// Several writers, each `(in a transaction, its ops)`.
    type Writers = Vec<(bool, Vec<Op>)>;

    fn writers() -> impl Strategy<Value = Writers> {
        proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec(op(), 1..24)),
            1..8,
        )
    }

    fn afters() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(0_u8..7, 0..3), 4)
    }

    /// Commits every writer's ops in turn, checking the chunks and scans after each.
    fn check_writers(db: &Arc<dyn Backend>, writers: &Writers, max: usize, afters: &[Vec<u8>]) {
        let mut model = vec![BTreeSet::new(); PREFIXES.len()];
        for (in_tx, ops) in writers {
            if *in_tx {
                commit_in_tx(db, ops, max);
            } else {
                commit_in_batch(db, ops, max);
            }
            for (i, insert, position) in ops {
                if *insert {
                    model[*i].insert(position.clone());
                } else {
                    model[*i].remove(position);
                }
            }
            for (i, prefix) in PREFIXES.iter().enumerate() {
                check_chunks(db, prefix, &model[i], max);
                for after in afters {
                    check_scans(db, prefix, &model[i], after);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random inserts and removes by several writers, in transactions and in batches,
        /// with chunks of 2 or 3 positions: the chunks hold exactly the positions, keep
        /// their invariants, and scans from anywhere answer the positions' ranges.
        #[test]
        fn chunks_hold_exactly_the_positions(
            writers in writers(),
            max in 2_usize..4,
            afters in afters(),
        ) {
            let (_dir, db) = open();
            check_writers(&db, &writers, max, &afters);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// The same on redb, whose transactions read their hints within too, beside the
        /// open writer.
        #[test]
        fn chunks_hold_exactly_the_positions_on_redb(
            writers in writers(),
            max in 2_usize..4,
            afters in afters(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db: Arc<dyn Backend> =
                Arc::new(crate::store::redb_db::RedbDb::open(dir.path(), 1 << 20, true).unwrap());
            check_writers(&db, &writers, max, &afters);
        }
    }

    #[cfg(feature = "postgres")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// The same on PostgreSQL (when the tests run on it), whose transactions read
        /// their hints within, with one `floors` statement.
        #[test]
        fn chunks_hold_exactly_the_positions_on_postgres(
            writers in writers(),
            max in 2_usize..4,
            afters in afters(),
        ) {
            if let Some(database) = super::super::postgres::testing::TestDatabase::create() {
                check_writers(&database.backend(), &writers, max, &afters);
            }
        }
    }

    /// A scan under changes answers every position that is there throughout once, in
    /// order: chunks split behind and ahead of it, and chunks emptied and taken over
    /// across the boundary of the first page of chunks it reads (16 of 25), which breaks
    /// its chain so it seeks again.
    #[test]
    fn a_scan_survives_splits_and_take_overs_under_it() {
        let (_dir, db) = open();
        let prefix = PREFIXES[0];
        let evens = |range: std::ops::Range<u8>| -> Vec<Op> {
            range.map(|n| (0, true, vec![n * 2])).collect()
        };
        for (descending, split) in [(false, false), (false, true), (true, false), (true, true)] {
            commit_in_batch(&db, &evens(0..100), 4);
            let mut reading = scan(&db, prefix.to_vec(), descending, None);
            let first: Vec<_> = (&mut reading).take(2).map(Result::unwrap).collect();
            // Chunk k holds 8k, 8k+2, 8k+4, 8k+6: split them all, or empty chunks 8 and 15.
            let emptied: Vec<Vec<u8>> = (32..36).chain(60..64).map(|n| vec![n * 2]).collect();
            if split {
                let odds: Vec<Op> = (0..100_u8).map(|n| (0, true, vec![n * 2 + 1])).collect();
                commit_in_batch(&db, &odds, 4);
            } else {
                let removals: Vec<Op> = emptied.iter().map(|p| (0, false, p.clone())).collect();
                commit_in_batch(&db, &removals, 4);
            }
            let rest: Vec<_> = reading.map(Result::unwrap).collect();
            let seen: Vec<_> = first.into_iter().chain(rest).collect();
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            if descending {
                sorted.reverse();
            }
            assert_eq!(seen, sorted, "in order, none twice");
            for n in (0..100_u8).map(|n| vec![n * 2]) {
                assert!(
                    emptied.contains(&n) || seen.contains(&n),
                    "{n:?} was there throughout, descending {descending}"
                );
            }
            let cleanup: Vec<Op> = (0..200_u8).map(|n| (0, false, vec![n])).collect();
            commit_in_batch(&db, &cleanup, 4);
            check_chunks(&db, prefix, &BTreeSet::new(), 4);
        }
    }
}
