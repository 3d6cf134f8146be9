//! The PostgreSQL [`Backend`]: one table of ordered byte keys, a pool of connections, and
//! a small runtime of the store's own that drives them.
//!
//! The store's API is synchronous and is called from any thread, tokio workers included
//! (the tower layer verifies inline). So every database call is a future polled to its end
//! on the calling thread by `futures_executor::block_on`, which, unlike tokio's, does not
//! panic inside a runtime; the connections' I/O runs on the store's runtime. A call costs
//! the calling thread one round trip to the database, bounded by [`OP_TIMEOUT`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::causes::{WithCauses, driver_error};
use super::conn::Conn;
use crate::error::{CommitInDoubt, StoreError};
use crate::location::DatabaseUrl;
use crate::store::backend::{
    Backend, Batch, Direction, Entry, KeyRange, KvTx, Take, TxBody, TxError, WriterGuard,
};
use crate::store::layout;

/// The longest a database call may take before the store answers
/// [`StoreError::Unavailable`]. Longer than the server's `lock_timeout`, so that a wait
/// for the writers' lock ends on the server first.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times a transaction that conflicts with others (a serialization failure or a
/// deadlock) runs before the store answers `Unavailable`: each again after a pause of up
/// to 64 ms, drawn at random so that the writers that collided do not collide again, and
/// longer each time (under a second in all).
const CONFLICT_RETRIES: u32 = 16;

/// The advisory lock that serializes management writes across processes.
const WRITERS_LOCK: i64 = 0x6c61_7463_686b_6579; // "latchkey"

/// How long a caller waits for one of the pool's connections when the server has no slot
/// for another: a few seconds, well within [`OP_TIMEOUT`], since a caller that holds
/// something another waits for (the follower's `applied` tip) may be among the waiters.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// The transaction that records a follower's progress: it waits a quarter of a second at
/// most for a lock on its row.
const ACKNOWLEDGE: &str = "BEGIN; SET LOCAL lock_timeout = 250";

/// How many connections a store keeps at most.
const POOL_SIZE: usize = 16;

/// The notification channel that announces commits.
pub(super) const CHANNEL: &str = "latchkey";

/// A tokio runtime that may be dropped anywhere, an async context included.
#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// An open PostgreSQL database.
pub(crate) struct Pg {
    runtime: OwnedRuntime,
    pool: Pool,
    /// When the server last refused this pool a new connection for want of slots
    /// (`max_connections` reached): for a second from then, a caller waits for one of the
    /// pool's own connections rather than ask the server for another.
    server_full: std::sync::Mutex<Option<Instant>>,
    /// For connections outside the pool (the listener).
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) url: DatabaseUrl,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Pg {
    /// Sets up the pool; connects lazily, so an unreachable database fails the first call.
    pub(crate) fn connect(url: &DatabaseUrl) -> Result<Arc<Pg>, StoreError> {
        let config = super::url::config(url)?;
        if super::url::in_clear_off_loopback(&config) {
            tracing::warn!(
                database = %url,
                "sslmode=disable to a database off this machine: key hashes, the store's hash \
                 key and the password cross the network in clear; say sslmode=require"
            );
        }
        let tls = MakeRustlsConnect::new(super::tls::client_config()?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latchkey-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Storage(Box::new(e)))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Storage(Box::new(e)))?;
        Ok(Arc::new(Pg {
            runtime: OwnedRuntime(Some(runtime)),
            pool,
            server_full: std::sync::Mutex::new(None),
            config,
            tls,
            url: url.clone(),
        }))
    }

    /// Runs a future on this thread, within the store's runtime and [`OP_TIMEOUT`].
    pub(super) fn run<T>(
        &self,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _entered = self.handle().enter();
        // Unconstrained: called from inside a tokio task (a daemon's shutdown flush), the
        // task's cooperative budget would apply to this future too, and once spent make
        // every poll answer `Pending` and wake at once: `block_on` would spin forever, since
        // the task never yields to get its budget back.
        futures_executor::block_on(tokio::task::unconstrained(async {
            match tokio::time::timeout(OP_TIMEOUT, future).await {
                Ok(done) => done,
                Err(_) => Err(StoreError::Unavailable(
                    "the database did not answer in time".into(),
                )),
            }
        }))
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.0.as_ref().expect("running").handle()
    }

    /// A pooled connection. When the server has no slot for another (its
    /// `max_connections` taken, by this pool and others') while this pool holds some, one
    /// of them is waited for, up to [`SLOT_WAIT`]: a busy moment on a small server queues
    /// rather than fails; but never by a thread that holds one already
    /// ([`super::conn::holds_one`]), which fails at once as before.
    pub(super) fn client(&self) -> Result<Conn, StoreError> {
        let may_wait = !super::conn::holds_one();
        self.run(async {
            let mut pause = Duration::from_millis(2);
            let began = Instant::now();
            loop {
                let status = self.pool.status();
                if may_wait && status.size > 0 && status.available == 0 && self.server_was_full() {
                    if began.elapsed() > SLOT_WAIT {
                        return Err(StoreError::Unavailable(
                            "the database has no connection slot for this process".into(),
                        ));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(20));
                    continue;
                }
                match self.pool.get().await {
                    Ok(client) => return Ok(Conn::new(client)),
                    Err(deadpool_postgres::PoolError::Backend(e))
                        if may_wait
                            && e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS)
                            && self.pool.status().size > 0 =>
                    {
                        *self.server_full.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                    }
                    Err(e) => return Err(StoreError::Unavailable(Box::new(WithCauses(e)))),
                }
            }
        })
    }

    /// Whether the server refused a new connection for want of slots within the last
    /// second.
    fn server_was_full(&self) -> bool {
        let full = self.server_full.lock().unwrap_or_else(|e| e.into_inner());
        full.is_some_and(|at| at.elapsed() < Duration::from_secs(1))
    }

    /// Runs the read `read` on a pooled connection; again on another while the server
    /// turns out to have ended the connection's session before it answered (terminated by
    /// `pg_terminate_backend`, or a restart): a pooled connection is only found closed when
    /// used, and a read is safe to run twice. Any other failure is the answer.
    ///
    /// The session's end shows either as a closed connection or, when the server's last
    /// word arrives before the connection notices the socket closing, as that word: an
    /// error of severity `FATAL` ([`session_ended`]).
    pub(super) fn read<T>(
        &self,
        mut read: impl FnMut(&Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        for _ in 0..POOL_SIZE {
            let client = self.client()?;
            match read(&client) {
                Err(e) if client.is_closed() || session_ended(&e) => {}
                done => return done,
            }
        }
        read(&self.client()?)
    }

    /// Opens a transaction as [`Pg::begin`] does, on another connection (replacing
    /// `client`) while the server turns out to have ended the session of the one given
    /// before it began: nothing of the transaction ran there.
    pub(super) fn begin_live(&self, client: &mut Conn, sql: &str) -> Result<(), StoreError> {
        for _ in 0..POOL_SIZE {
            match self.begin(client, sql) {
                Err(e) if client.is_closed() || session_ended(&e) => *client = self.client()?,
                done => return done,
            }
        }
        self.begin(client, sql)
    }

    pub(super) fn query(
        &self,
        client: &Conn,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let done = self.run(async {
            let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
            client.query(&statement, params).await.map_err(pg_error)
        });
        self.after(client, done)
    }

    pub(super) fn execute(&self, client: &Conn, sql: &str) -> Result<(), StoreError> {
        let done = self.run(async { client.batch_execute(sql).await.map_err(pg_error) });
        self.after(client, done)
    }

    /// After a statement on `client`: a connection whose state is unknown is not reused
    /// ([`discard_if_unavailable`]); after a write refused as read-only, neither are the
    /// idle ones, whose sessions began with the same read-only default (the database set
    /// writable again, they would each fail one write before going).
    fn after<T>(&self, client: &Conn, done: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Unavailable(cause)) = &done
            && driver_error(&**cause)
                .and_then(tokio_postgres::Error::code)
                .is_some_and(|code| *code == SqlState::READ_ONLY_SQL_TRANSACTION)
        {
            self.pool.retain(|_, _| false);
        }
        discard_if_unavailable(client, done)
    }

    /// Opens a transaction on `client`; one that fails in any way may have opened it on
    /// the server all the same (a `BEGIN` that timed out client-side), so `client` is then
    /// discarded.
    pub(super) fn begin(&self, client: &Conn, sql: &str) -> Result<(), StoreError> {
        let begun = self.execute(client, sql);
        if begun.is_err() {
            client.discard();
        }
        begun
    }

    /// Writes `writes` in two statements.
    fn write_all(
        &self,
        client: &Conn,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in writes {
            match value {
                Some(value) => {
                    keys.push(key);
                    values.push(value);
                }
                None => gone.push(key),
            }
        }
        if !gone.is_empty() {
            self.query(
                client,
                "DELETE FROM latchkey_kv WHERE k = ANY($1::bytea[])",
                &[&gone],
            )?;
        }
        if !keys.is_empty() {
            self.query(
                client,
                "INSERT INTO latchkey_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                &[&keys, &values],
            )?;
        }
        Ok(())
    }
}

/// A database error as the store reports it: a lost connection, a server that ends
/// sessions, a wait for the writers' lock longer than `lock_timeout` (another process
/// holds it: a long backup, or one that froze until its session is dropped), or a write
/// refused as read-only (a standby after a failover, a database set read-only for
/// maintenance or at a full disk) is [`StoreError::Unavailable`], and its connection is not
/// used again (a session keeps the read-only default it began with); any other answer of
/// the server is a storage error.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let lost = match e.as_db_error() {
        None => true,
        // The server ends the session (shutdown, terminated, too many connections).
        Some(db) => {
            db.severity() == "FATAL"
                || db.severity() == "PANIC"
                || db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
                || db.code() == &tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                || ["08", "53", "57"]
                    .iter()
                    .any(|class| db.code().code().starts_with(class))
        }
    };
    if lost || e.is_closed() {
        StoreError::Unavailable(Box::new(WithCauses(e)))
    } else {
        StoreError::Storage(Box::new(WithCauses(e)))
    }
}

/// Whether `e` says the server ended the session before the statement ran: a connection
/// found closed, or the server's `FATAL` error, after which it always closes the session
/// (`57P01` for `pg_terminate_backend`, `57P02` and `57P03` around a restart). A statement
/// that timed out is no such end: it may still run on the server.
fn session_ended(e: &StoreError) -> bool {
    let StoreError::Unavailable(source) = e else {
        return false;
    };
    driver_error(&**source).is_some_and(|e| {
        e.is_closed() || e.as_db_error().is_some_and(|db| db.severity() == "FATAL")
    })
}

/// A statement that timed out client-side (or whose connection or server failed) leaves
/// its session in an unknown state: its connection is not reused.
fn discard_if_unavailable<T>(
    client: &Conn,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(StoreError::Unavailable(_)) = &result {
        client.discard();
    }
    result
}

/// Whether an error asks for the transaction to run again.
fn is_conflict(e: &StoreError) -> bool {
    let StoreError::Storage(source) = e else {
        return false;
    };
    driver_error(&**source)
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
}

fn tx_error(e: StoreError) -> TxError {
    if is_conflict(&e) {
        TxError::Conflict
    } else {
        TxError::Storage(e)
    }
}

/// A failed `COMMIT`: a conflict wrote nothing (and is retried); anything else may have
/// committed, its answer lost, and says so ([`StoreError::may_have_committed`]).
fn commit_error(e: StoreError) -> TxError {
    match tx_error(e) {
        TxError::Storage(StoreError::Unavailable(cause)) => {
            TxError::Storage(StoreError::Unavailable(Box::new(CommitInDoubt(cause))))
        }
        TxError::Storage(StoreError::Storage(cause)) => {
            TxError::Storage(StoreError::Storage(Box::new(CommitInDoubt(cause))))
        }
        other => other,
    }
}

/// One transaction: reads go to the database through its own writes so far, which are
/// kept here and written at commit, and through what it read before: a `SERIALIZABLE`
/// transaction reads one snapshot, so a second read of a key would answer the same.
struct PgTx<'a> {
    pg: &'a Pg,
    client: &'a Conn,
    writes: RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    reads: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl KvTx for PgTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        if let Some(written) = self.writes.borrow().get(key) {
            return Ok(written.clone());
        }
        if let Some(read) = self.reads.borrow().get(key) {
            return Ok(read.clone());
        }
        let rows = self
            .pg
            .query(
                self.client,
                "SELECT v FROM latchkey_kv WHERE k = $1",
                &[&key],
            )
            .map_err(tx_error)?;
        let value: Option<Vec<u8>> = rows.first().map(|row| row.get(0));
        self.reads.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn prefetch(&self, keys: &[Vec<u8>]) -> Result<(), TxError> {
        let wanted: Vec<&Vec<u8>> = {
            let (writes, reads) = (self.writes.borrow(), self.reads.borrow());
            keys.iter()
                .filter(|k| !writes.contains_key(*k) && !reads.contains_key(*k))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = self
            .pg
            .query(
                self.client,
                "SELECT k, v FROM latchkey_kv WHERE k = ANY($1::bytea[])",
                &[&wanted],
            )
            .map_err(tx_error)?;
        let mut reads = self.reads.borrow_mut();
        for key in wanted {
            reads.insert(key.clone(), None);
        }
        for row in rows {
            reads.insert(row.get(0), Some(row.get(1)));
        }
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        self.writes
            .borrow_mut()
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), TxError> {
        self.writes.borrow_mut().insert(key.to_vec(), None);
        Ok(())
    }
}

/// The writers' lock, held by a connection of its own until dropped.
struct WritersLock {
    pg: Arc<Pg>,
    client: Option<Conn>,
}

impl Drop for WritersLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let unlocked = self
            .pg
            .query(&client, "SELECT pg_advisory_unlock($1)", &[&WRITERS_LOCK]);
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool: its
            // session ends with it, and the lock with the session.
            client.discard();
        }
    }
}

/// The PostgreSQL [`Backend`].
#[derive(Debug, Clone)]
pub(crate) struct PgBackend(pub(super) Arc<Pg>);

/// One entry, read on `client`.
pub(super) fn get_on(pg: &Pg, client: &Conn, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = pg.query(client, "SELECT v FROM latchkey_kv WHERE k = $1", &[&key])?;
    Ok(rows.first().map(|row| row.get(0)))
}

/// One page of `range`'s entries, read on `client`. The primary key's B-tree answers every
/// range, forwards or backwards.
pub(super) fn range_on(
    pg: &Pg,
    client: &Conn,
    range: &KeyRange,
    take: Take,
) -> Result<Vec<Entry>, StoreError> {
    let mut sql = String::from("SELECT k, v FROM latchkey_kv WHERE true");
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for (bound, below) in [(&range.lower, false), (&range.upper, true)] {
        let (key, op) = match (bound, below) {
            (Bound::Included(k), false) => (k, ">="),
            (Bound::Excluded(k), false) => (k, ">"),
            (Bound::Included(k), true) => (k, "<="),
            (Bound::Excluded(k), true) => (k, "<"),
            (Bound::Unbounded, _) => continue,
        };
        params.push(key);
        sql.push_str(&format!(" AND k {op} ${}", params.len()));
    }
    let limit = i64::try_from(take.limit).unwrap_or(i64::MAX);
    params.push(&limit);
    let order = match take.direction {
        Direction::Forward => "ASC",
        Direction::Reverse => "DESC",
    };
    sql.push_str(&format!(" ORDER BY k {order} LIMIT ${}", params.len()));
    let rows = pg.query(client, &sql, &params)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

impl Backend for PgBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.read(|client| get_on(&self.0, client, key))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.0.read(|client| {
            self.0.query(
                client,
                "SELECT k, v FROM latchkey_kv WHERE k = ANY($1::bytea[])",
                &[&keys],
            )
        })?;
        let found: HashMap<Vec<u8>, Vec<u8>> = rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError> {
        self.0.read(|client| range_on(&self.0, client, range, take))
    }

    fn floors(&self, queries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let (lows, highs): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
            queries.iter().map(|(low, high)| (low, high)).unzip();
        // One statement for all: each query's floor is one backward step of the primary
        // key's B-tree, as `range` makes it.
        const FLOORS: &str = "SELECT f.k FROM unnest($1::bytea[], $2::bytea[]) \
            WITH ORDINALITY AS q (low, high, i) LEFT JOIN LATERAL (SELECT k FROM latchkey_kv \
            WHERE k >= q.low AND k <= q.high ORDER BY k DESC LIMIT 1) f ON true ORDER BY q.i";
        let rows = self
            .0
            .read(|client| self.0.query(client, FLOORS, &[&lows, &highs]))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn reads_during_transactions(&self) -> bool {
        // A transaction holds a connection of its own; reads take others from the pool.
        true
    }

    fn snapshot(&self) -> Result<Option<Arc<dyn Backend>>, StoreError> {
        Ok(Some(Arc::new(super::snapshot::PgSnapshot::begin(
            self.0.clone(),
        )?)))
    }

    fn transaction(&self, body: &mut TxBody<'_>) -> Result<(), TxError> {
        let pg = &*self.0;
        let mut client = pg.client().map_err(TxError::Storage)?;
        for attempt in 0..CONFLICT_RETRIES {
            if attempt > 0 {
                // Up to 2, 4, … 64 ms, then 64 ms each time.
                let most = 1_000 << attempt.min(6);
                std::thread::sleep(Duration::from_micros(fastrand::u64(0..=most)));
            }
            pg.begin_live(&mut client, "BEGIN ISOLATION LEVEL SERIALIZABLE")
                .map_err(TxError::Storage)?;
            let tx = PgTx {
                pg,
                client: &client,
                writes: RefCell::default(),
                reads: RefCell::default(),
            };
            let outcome = body(&tx).and_then(|()| {
                let writes = tx.writes.into_inner();
                let seq = writes.get(layout::SEQ).cloned().flatten();
                pg.write_all(&client, writes).map_err(tx_error)?;
                if let Some(seq) = seq.and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                    // Delivered at commit, to every listening process.
                    let payload = u64::from_be_bytes(seq).to_string();
                    pg.query(&client, "SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                        .map_err(tx_error)?;
                }
                pg.execute(&client, "COMMIT").map_err(commit_error)
            });
            let Err(e) = outcome else {
                return Ok(());
            };
            // A session in doubt (a statement timed out) ends with its connection: a
            // ROLLBACK would only wait behind what hangs.
            if client.is_discarded() && !matches!(e, TxError::Conflict) {
                return Err(e);
            }
            // After a failed COMMIT the transaction is over already; ROLLBACK then only
            // warns.
            if let Err(lost) = pg.execute(&client, "ROLLBACK") {
                // The session's state is unknown: it ends here.
                client.discard();
                return Err(match e {
                    TxError::Conflict => TxError::Storage(lost),
                    other => other,
                });
            }
            if !matches!(e, TxError::Conflict) {
                return Err(e);
            }
        }
        Err(TxError::Storage(StoreError::Unavailable(
            format!("a transaction conflicted with others {CONFLICT_RETRIES} times in a row")
                .into(),
        )))
    }

    fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let pg = &*self.0;
        let mut client = pg.client()?;
        // The last write of a key wins, as in a sled batch.
        let writes: BTreeMap<_, _> = batch.writes.into_iter().collect();
        pg.begin_live(&mut client, "BEGIN")?;
        let written = pg
            .write_all(&client, writes)
            .and_then(|()| pg.execute(&client, "COMMIT"));
        if written.is_err() && !client.is_discarded() && pg.execute(&client, "ROLLBACK").is_err() {
            client.discard();
        }
        written
    }

    fn flush(&self) -> Result<(), StoreError> {
        // A committed transaction is durable already (`synchronous_commit`).
        Ok(())
    }

    fn commits_durably(&self) -> bool {
        true
    }

    fn lock_writers(&self) -> Result<WriterGuard, StoreError> {
        let client = self.0.client()?;
        let locked = self
            .0
            .query(&client, "SELECT pg_advisory_lock($1)", &[&WRITERS_LOCK]);
        if let Err(e) = locked {
            // It may be granted after we stopped waiting: the session must end.
            client.discard();
            return Err(e);
        }
        Ok(Some(Box::new(WritersLock {
            pg: Arc::clone(&self.0),
            client: Some(client),
        })))
    }

    fn acknowledge(&self, follower: Uuid, applied: Option<u64>) -> Result<(), StoreError> {
        let client = self.0.client()?;
        match applied {
            Some(seq) => {
                let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                // A lock held on the row (by hand, or a stuck session) fails this at once
                // rather than after `lock_timeout`: the follower's thread that records
                // also reads the changes, which verifications need meanwhile.
                let recorded = self.0.begin(&client, ACKNOWLEDGE).and_then(|()| {
                    self.0.query(
                        &client,
                        "INSERT INTO latchkey_followers (id, applied, seen) VALUES ($1, $2, now()) \
                         ON CONFLICT (id) DO UPDATE SET applied = EXCLUDED.applied, seen = now()",
                        &[&follower.as_bytes().as_slice(), &seq],
                    )?;
                    self.0.execute(&client, "COMMIT")
                });
                if recorded.is_err() {
                    // Its transaction failed midway: the session goes with it.
                    client.discard();
                }
                recorded?;
            }
            None => {
                self.0.query(
                    &client,
                    "DELETE FROM latchkey_followers WHERE id = $1",
                    &[&follower.as_bytes().as_slice()],
                )?;
            }
        }
        Ok(())
    }

    fn clock(&self) -> Result<Option<i128>, StoreError> {
        let client = self.0.client()?;
        let rows = self.0.query(
            &client,
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )?;
        Ok(rows
            .first()
            .map(|row| i128::from(row.get::<_, i64>(0)) * 1_000))
    }

    fn await_followers(&self, follower: Uuid, seq: u64, bound: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + bound;
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let window = bound.as_secs_f64();
        // Others usually apply a change within milliseconds; one that is gone (killed, not
        // yet counted out) keeps every write here waiting up to `bound`. Each poll takes a
        // connection and gives it back, so such waits never hold the pool that this
        // process's catch-up and verifications need.
        // A poll that fails tells nothing: polled again until the deadline, by when a
        // process that did not apply the change has not confirmed its cache for `bound`
        // either, and so serves from it no more.
        let mut pause = Duration::from_millis(1);
        loop {
            let polled = self.0.client().and_then(|client| {
                self.0.query(
                    &client,
                    "SELECT count(*) FROM latchkey_followers WHERE id <> $1 AND applied < $2 \
                     AND seen > now() - make_interval(secs => $3)",
                    &[&follower.as_bytes().as_slice(), &seq, &window],
                )
            });
            let behind = match &polled {
                Ok(rows) => rows.first().map_or(0, |row| row.get::<_, i64>(0)),
                Err(_) => -1,
            };
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(match polled {
                    Err(e) => e,
                    Ok(_) => StoreError::storage(format!(
                        "{behind} other process(es) did not apply change {seq} within {bound:?}"
                    )),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing::TestDatabase;

    /// The database's clock reads now, as this machine's does (both are the same host's
    /// in the tests): what a daemon's clock is compared with.
    #[test]
    fn the_database_clock_reads_now() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let read = database
            .backend()
            .clock()
            .unwrap()
            .expect("a database's clock");
        assert!((read - now).abs() < 5_000_000_000, "{read} against {now}");
    }

    /// A transaction that conflicts again and again ends, `Unavailable`, after its
    /// attempts: it never spins on for ever (holding the writers' lock, for a write).
    #[test]
    fn a_transaction_that_keeps_conflicting_ends_unavailable() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let db = database.backend();
        let mut runs = 0;
        let outcome = db.transaction(&mut |_| {
            runs += 1;
            Err(TxError::Conflict)
        });
        assert!(
            matches!(outcome, Err(TxError::Storage(StoreError::Unavailable(_)))),
            "{outcome:?}"
        );
        assert_eq!(runs, CONFLICT_RETRIES);
    }

    /// A write refused at its `COMMIT` may have committed for all its caller knows (over a
    /// network the answer to a `COMMIT` that did commit can be lost: a deferred trigger
    /// stands in for that here); a write refused by an earlier statement wrote nothing.
    /// Credits taken out of memory go back only in the second case.
    #[test]
    fn only_a_write_failed_at_its_commit_may_have_committed() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let db = database.backend();
        let pg = Pg::connect(&database.url).unwrap();
        let sql = |text: &str| pg.execute(&pg.client().unwrap(), text).unwrap();
        sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for this test'; END $$",
        );
        sql(
            "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON latchkey_kv \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.k = '\\x01'::bytea) \
             EXECUTE FUNCTION refuse()",
        );
        sql("CREATE TRIGGER at_write BEFORE INSERT ON latchkey_kv \
             FOR EACH ROW WHEN (NEW.k = '\\x02'::bytea) EXECUTE FUNCTION refuse()");
        let write = |key: u8| match db.transaction(&mut |tx| tx.put(&[key], b"v")) {
            Err(TxError::Storage(e)) => e,
            other => panic!("the write to {key} was not refused in storage: {other:?}"),
        };

        let at_commit = write(1);
        assert!(at_commit.may_have_committed(), "{at_commit}");
        let before = write(2);
        assert!(!before.may_have_committed(), "{before}");
        assert!(db.transaction(&mut |tx| tx.put(&[3], b"v")).is_ok());
    }
}
