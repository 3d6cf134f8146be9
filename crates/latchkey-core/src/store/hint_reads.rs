//! Tests: what reading a write's index hints costs, on each backend. All the hints of a
//! write are one [`Backend::floors`] call (one statement on PostgreSQL), and where reads
//! may run beside a transaction (PostgreSQL) the write's first attempt commits.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use uuid::Uuid;

use super::backend::{
    Backend, Batch, Entry, KeyRange, Take, TxBody, TxError, WriterGuard, floor_by_range,
};
use super::db::Db;
use super::mark::Mark;
use super::postgres::testing::TestDatabase;
use super::{Store, StoreConfig, write_new_store};
use crate::actor::Actor;
use crate::audit::GENESIS;
use crate::error::StoreError;
use crate::key::Prefix;
use crate::location::Location;
use crate::model::NewKey;

/// A backend that counts the calls made through it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Backend>,
    floors: AtomicUsize,
    /// Range reads while a transaction is open.
    ranges: AtomicUsize,
    bodies: AtomicUsize,
    in_transaction: AtomicBool,
}

impl Counting {
    /// (floors calls, range reads during transactions, transaction bodies run) since the
    /// last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.floors.swap(0, Ordering::SeqCst),
            self.ranges.swap(0, Ordering::SeqCst),
            self.bodies.swap(0, Ordering::SeqCst),
        )
    }
}

impl Backend for Counting {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError> {
        if self.in_transaction.load(Ordering::SeqCst) {
            self.ranges.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.range(range, take)
    }

    fn floors(&self, queries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.floors.fetch_add(1, Ordering::SeqCst);
        self.inner.floors(queries)
    }

    fn reads_during_transactions(&self) -> bool {
        self.inner.reads_during_transactions()
    }

    fn commits_durably(&self) -> bool {
        self.inner.commits_durably()
    }

    fn transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        self.in_transaction.store(true, Ordering::SeqCst);
        let outcome = self.inner.transaction(&mut |tx| {
            self.bodies.fetch_add(1, Ordering::SeqCst);
            body(tx)
        });
        self.in_transaction.store(false, Ordering::SeqCst);
        outcome
    }

    fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.apply_batch(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn lock_writers(&self) -> Result<WriterGuard, StoreError> {
        self.inner.lock_writers()
    }

    fn acknowledge(&self, follower: Uuid, applied: Option<u64>) -> Result<(), StoreError> {
        self.inner.acknowledge(follower, applied)
    }

    fn await_followers(&self, follower: Uuid, seq: u64, bound: Duration) -> Result<(), StoreError> {
        self.inner.await_followers(follower, seq, bound)
    }
}

/// Creates a store with its admin over `db`, then creates and revokes a key: each write
/// reads all its hints with one `floors` call, and no range one by one inside its
/// transaction, in `attempts` runs of its transaction body.
fn check_writes(db: Arc<dyn Backend>, location: Location, attempts: usize) {
    let counting = Arc::new(Counting {
        inner: db,
        floors: AtomicUsize::new(0),
        ranges: AtomicUsize::new(0),
        bodies: AtomicUsize::new(0),
        in_transaction: AtomicBool::new(false),
    });
    let prefix = Prefix::new("lk").unwrap();
    let lineage = write_new_store(&*counting, &prefix).unwrap();
    let mark = Mark {
        lineage,
        seq: 0,
        head: GENESIS.to_owned(),
    };
    let config = StoreConfig::default()
        .usage_flush_interval(None)
        .background_jobs(false);
    let store = Store::from_backend(location, counting.clone(), None, None, mark, config).unwrap();
    counting.take();
    let (store, admin) = store.complete_with_admin().unwrap();
    // The admin's group, user and key. The user's own indexes are named by its id, drawn
    // anew by each attempt: where hints are read before an attempt (sled), each attempt
    // lacks those of the next, until changes start from their index heads (`tx.rs`).
    let first = counting.take();
    if attempts == 1 {
        assert_eq!(first, (1, 0, 1), "the store's first write");
    }
    let system = Actor::system();
    let new = NewKey {
        name: "second".into(),
        user_id: admin.key.user_id,
        ..NewKey::default()
    };
    let created = store.create_key(&system, new).unwrap();
    assert_eq!(counting.take(), (1, 0, attempts), "a key's creation");
    store.revoke_key(&system, created.key.id).unwrap();
    assert_eq!(counting.take(), (1, 0, attempts), "a key's revocation");
}

/// sled reads the hints before the transaction (a read inside one deadlocks): its first
/// attempt names them and writes nothing.
#[test]
fn a_write_reads_its_hints_in_one_call_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 1 << 20).unwrap();
    check_writes(Arc::new(db), Location::Dir(dir.path().to_owned()), 2);
}

/// PostgreSQL reads them in one statement within the write's first attempt, which commits.
#[test]
fn a_write_reads_its_hints_in_one_statement_within_its_first_attempt_on_postgres() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    check_writes(
        database.backend(),
        Location::Postgres(database.url.clone()),
        1,
    );
}

/// Every floor of many queries at once is the floor one range read answers: bounds
/// included, empty ranges, a query whose low is above its high, keys with bytes 0x00 and
/// 0xFF, the same query twice, and no query at all.
fn check_floors(db: &dyn Backend) {
    let keys: [&[u8]; 7] = [b"a", b"a\x00", b"ab", b"abc", b"b", b"b\xff", b"c\xff\xff"];
    let mut batch = Batch::default();
    for key in keys {
        batch.insert(key, b"v");
    }
    db.apply_batch(batch).unwrap();
    let bounds: [&[u8]; 12] = [
        b"",
        b"\x00",
        b"a",
        b"a\x00",
        b"a\x01",
        b"ab",
        b"abd",
        b"b",
        b"b\xff",
        b"b\xff\x00",
        b"c\xff\xff",
        b"\xff",
    ];
    let mut queries = Vec::new();
    for low in bounds {
        for high in bounds {
            queries.push((low.to_vec(), high.to_vec()));
        }
    }
    queries.push(queries[17].clone());
    let want: Vec<Option<Vec<u8>>> = queries
        .iter()
        .map(|(low, high)| floor_by_range(db, low, high).unwrap())
        .collect();
    assert!(want.iter().any(Option::is_none) && want.iter().any(Option::is_some));
    assert_eq!(db.floors(&queries).unwrap(), want);
    assert_eq!(db.floors(&[]).unwrap(), Vec::<Option<Vec<u8>>>::new());
    let everything = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
    assert_eq!(
        db.range(&everything, Take::forward(100)).unwrap().len(),
        keys.len()
    );
}

#[test]
fn floors_answer_as_range_reads_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    check_floors(&Db::open(dir.path(), 1 << 20).unwrap());
}

#[test]
fn floors_answer_as_range_reads_on_postgres() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    check_floors(&*database.backend());
}
