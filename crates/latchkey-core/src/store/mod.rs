//! The sled keystore: the only module that touches sled.
//!
//! One sled tree holds every record under a namespace ([`layout`]). Management writes go
//! through [`Store::write`](tx), one transaction each, flushed before they return.
//! Verification reads through the verify cache; usage figures are buffered in memory and
//! persisted in batches.

mod backend;
mod backup;
mod chunks;
mod clock_step;
mod controls;
mod counters;
mod cursor;
mod db;
mod engine;
mod entry;
mod files;
mod follow;
mod groups;
#[cfg(all(test, feature = "postgres"))]
mod hint_reads;
mod import;
mod index;
mod jobs;
mod key_writes;
mod keys;
mod last_admin;
mod layout;
mod mark;
mod names;
mod outage;
mod pages;
mod place;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod rate_state;
mod rebuild;
mod recover;
mod redb_db;
mod scoped;
mod single_flight;
#[cfg(feature = "postgres")]
mod skew;
mod space;
mod staging;
mod sweep;
mod tx;
mod usage;
mod user_index;
mod user_limits;
mod users;

use follow::Freshness;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

pub use backup::{BackupHeader, CheckedBackup, Restored};
pub use engine::Engine;
pub use import::{ImportKey, ImportSecret};
pub use jobs::KeysRevocation;
pub use keys::{Standing, Stats};
pub use query::{KeyQuery, KeySort, Page, SortField};
pub use scoped::AuditRange;
pub(crate) use usage::KeyUsage;

use crate::actor::Actor;
use crate::audit::{self, AuditEvent, ChainBreak};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::hash::{HashKey, SecretHash};
use crate::key::{ApiKey, Prefix};
use crate::location::Location;
use crate::model::{CreatedKey, NewGroup, NewKey, NewUser};
use crate::permission::PermissionSet;
use crate::verify::{Cold, Principal, VerifyCache, VerifyError};
use backend::{Backend, Direction, Entry, KeyRange, Take};
use engine::Embedded;
use files::Found;
use keys::KeyRecord;
use mark::Mark;
use outage::Outage;
use usage::{UsageBuffer, Use};

/// How a store is opened.
///
/// # Example
///
/// ```
/// use latchkey_core::StoreConfig;
/// let config = StoreConfig::default().cache_capacity_bytes(8 << 20).verify_cache_entries(50_000);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    cache_capacity_bytes: u64,
    verify_cache_entries: usize,
    usage_flush_interval: Option<Duration>,
    min_free_bytes: u64,
    clock: Arc<dyn Clock>,
    job_chunk_keys: usize,
    job_pause: Duration,
    background_jobs: bool,
    max_staleness: Duration,
    index_chunk_positions: usize,
    admin_scan_keys: usize,
    tenant_list_users: usize,
    engine: Engine,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: 24 << 20,
            verify_cache_entries: 20_000,
            usage_flush_interval: Some(Duration::from_secs(5)),
            min_free_bytes: 8 << 20,
            clock: Arc::new(SystemClock),
            job_chunk_keys: 100,
            job_pause: Duration::from_millis(10),
            background_jobs: true,
            max_staleness: Duration::from_secs(5),
            index_chunk_positions: chunks::CHUNK_POSITIONS,
            admin_scan_keys: last_admin::ADMIN_SCAN,
            tenant_list_users: query::TENANT_LIST_USERS,
            engine: Engine::default(),
        }
    }
}

impl StoreConfig {
    /// The embedded engine's cache, in bytes (sled's page cache, redb's cache). sled
    /// defaults to 1 GiB; latchkey to 24 MiB. sled 0.34.7
    /// charges a cached page the bytes it takes in its log, not in memory, where small
    /// entries (index entries) take two to four times that: through list pages, 60 s of
    /// key creation and a user's deletion over 100,000 keys, the daemon held at most 100 MiB
    /// with 24 MiB, 139 MiB with 32 and 157 MiB with 64. A smaller cache slows cold
    /// verifications of large stores, whose tree's inner pages stop fitting: at a million
    /// keys ~9–19 µs with 32 or 64 MiB, ~14–31 µs with 24, ~28 µs with 16 (the `core` bench;
    /// bench/RESULTS.md, *Core*): give a store of a million keys 32 MiB or more. This bounds
    /// only the cache: sled also keeps a few hundred bytes per page of its tree resident,
    /// whatever this setting. redb keeps nothing per page beyond its cache: with 24 MiB, a
    /// daemon on a million keys held 15 MiB after opening and at most 55 MiB through list
    /// pages, 60 s of key creation and a user's deletion (`bench/scale.sh`).
    pub fn cache_capacity_bytes(mut self, bytes: u64) -> Self {
        self.cache_capacity_bytes = bytes;
        self
    }

    /// The embedded engine of a store this creates (default [`Engine::Sled`]). An existing
    /// store opens with the engine whose files its directory holds, whatever this says.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// How many verified keys to keep in memory (default 20,000; 0 disables the cache).
    /// An entry is a few hundred bytes. Unknown ids and wrong secrets are kept apart, in a
    /// tenth of that (at most 4,096), so that they never push out a verified key.
    pub fn verify_cache_entries(mut self, entries: usize) -> Self {
        self.verify_cache_entries = entries;
        self
    }

    /// How often buffered usage figures are persisted (default 5 s; `None`: only on
    /// [`Store::flush`] and when the store is dropped).
    pub fn usage_flush_interval(mut self, interval: Option<Duration>) -> Self {
        self.usage_flush_interval = interval;
        self
    }

    /// How much free disk space a write needs (default 8 MiB; 0: no check). Below it a
    /// write is refused with [`StoreError::StorageFull`] before it touches the store, so
    /// the disk never fills under sled (which poisons itself on a failed write).
    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    /// The clock, for expiry and timestamps (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many keys a background job revokes per transaction (default 100, at least 1).
    /// A user with no more keys than this has them revoked inline. A sled transaction keeps
    /// every leaf it supersedes until it commits, so a chunk's memory grows with its size:
    /// deleting a user of 100,000 keys peaked at 297 MiB of daemon RSS with chunks of 100
    /// against 334 MiB with chunks of 1,000, and took 47 s instead of 34 s (bench/RESULTS.md, *At scale*).
    pub fn job_chunk_keys(mut self, keys: usize) -> Self {
        self.job_chunk_keys = keys.max(1);
        self
    }

    /// The most positions in one index chunk (default 16, at least 2): for tests, which
    /// make chunks split and empty with a few keys.
    #[doc(hidden)]
    pub fn index_chunk_positions(mut self, positions: usize) -> Self {
        self.index_chunk_positions = positions.clamp(2, 1_024);
        self
    }

    /// How deep the last-admin check reads one admin user's keys before it logs that it
    /// reads on (default 10,000, at least 1): for tests, which reach past it with a few
    /// keys.
    #[doc(hidden)]
    pub fn admin_scan_keys(mut self, keys: usize) -> Self {
        self.admin_scan_keys = keys.max(1);
        self
    }

    /// How many users of one tenant a tenant-bound caller's key list merges the indexes of
    /// (default 100: a page seeks each one's index): a tenant with more is listed through the index of every key,
    /// passing over the other tenants' keys. For tests, which reach past it with a few
    /// users.
    #[doc(hidden)]
    pub fn tenant_list_users(mut self, users: usize) -> Self {
        self.tenant_list_users = users;
        self
    }

    /// The pause between two chunks of a background job (default 10 ms), which leaves the
    /// write lock and the disk to other work.
    pub fn job_pause(mut self, pause: Duration) -> Self {
        self.job_pause = pause;
        self
    }

    /// On a database several processes share (PostgreSQL): how long verification keeps
    /// serving cached answers while it cannot confirm that no other process changed them
    /// (default 5 s, as a remote verifier's). Beyond it, verification answers
    /// [`VerifyError::Unavailable`] (a 503), never a 401. Give every process of one
    /// database the same bound: a write waits for the others' acknowledgement up to its
    /// own process's bound, and counts a process silent that long as no longer serving.
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// Whether a thread runs background jobs and the expiry sweep (default `true`). Without
    /// it, jobs wait for [`Store::run_jobs`] or the next open with the thread on.
    pub fn background_jobs(mut self, on: bool) -> Self {
        self.background_jobs = on;
        self
    }
}

/// A latchkey keystore on disk.
///
/// Cheap to clone; all clones share one open database, cache and usage buffer.
///
/// # Example
///
/// ```
/// use latchkey_core::{Actor, NewKey, NewUser, PermissionSet, Store, StoreConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
/// let admin = Actor::system();
/// let user = store
///     .create_user(&admin, NewUser {
///         name: "billing-bot".into(),
///         permissions: PermissionSet::parse(["invoices:read"]).unwrap(),
///         ..NewUser::default()
///     })
///     .unwrap();
/// let created = store
///     .create_key(&admin, NewKey { name: "nightly export".into(), user_id: user.id, ..NewKey::default() })
///     .unwrap();
///
/// let principal = store.verify(created.secret.expose()).unwrap();
/// assert!(principal.has("invoices:read"));
///
/// store.revoke_key(&admin, created.key.id).unwrap();
/// assert_eq!(store.verify(created.secret.expose()).unwrap_err().code(), "key_revoked");
/// ```
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A handle on a [`Store`] that does not keep it open ([`Store::downgrade`]): for a task
/// that should end when the store's last [`Store`] is dropped, not hold it open.
#[derive(Clone, Debug)]
pub struct WeakStore(Weak<Inner>);

impl WeakStore {
    /// The store, while some [`Store`] of it is still held.
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

struct Inner {
    path: PathBuf,
    /// Where the store lives, as opened.
    location: Location,
    /// The directory as opened (`None` on PostgreSQL): writes and health checks compare
    /// it with what stands at `path` (`place.rs`).
    place: Option<place::Place>,
    /// The backup written when the directory was found gone, once (`place::rescue`).
    rescue: Mutex<Option<place::Rescue>>,
    rescue_started: std::sync::atomic::AtomicBool,
    /// What holds the records.
    db: Arc<dyn Backend>,
    /// The same, for what only a store in a directory has (reopen, mark, space); `None` on
    /// PostgreSQL.
    local: Option<Arc<dyn Embedded>>,
    /// On a database shared by several processes: the changes of the cluster applied so
    /// far (see `follow`).
    follow: Option<follow::Follow>,
    /// The store's lineage and last acknowledged write, as the mark file holds them.
    mark: recover::Marker,
    min_free_bytes: u64,
    /// Whether the store holds imported keys: only then does a text that is not a
    /// latchkey key get looked up (see `import`).
    has_imports: std::sync::atomic::AtomicBool,
    hash_key: HashKey,
    /// Keys the change feed's hashes (`Store::feed_hash`), derived from `hash_key`.
    feed_key: HashKey,
    /// Seals list cursors (`cursor.rs`).
    cursors: cursor::CursorSeal,
    /// The audit chain's checks, one at a time (`single_flight.rs`).
    audit_check: single_flight::SingleFlight<AuditReport>,
    prefix: Prefix,
    clock: Arc<dyn Clock>,
    cache: VerifyCache,
    usage: UsageBuffer,
    /// Metered keys' allowlists, rate limiters and credit slices (`controls.rs`).
    meters: controls::Meters,
    /// Users' rate limiters, one set per user shared by its keys (`user_limits.rs`).
    user_meters: user_limits::UserMeters,
    /// Serializes management writes (see [`Store::write`]). A std mutex: it is held only
    /// for a transaction and a flush, never across an `.await`.
    write_lock: Mutex<()>,
    events: broadcast::Sender<AuditEvent>,
    /// On a store only this process opens: the newest change sent on `events`, every one up
    /// to it flushed first (`follow.rs`). A shared database's is its `Follow`'s.
    published: std::sync::atomic::AtomicU64,
    /// Counts the breaks in the feed: changes the database lost or that do not decode,
    /// which `events` never carried and never will (`follow.rs`).
    breaks: watch::Sender<u64>,
    /// Dropping the sender stops the usage flusher thread.
    _stop_flusher: Option<mpsc::Sender<()>>,
    /// Wakes the jobs thread; dropping it stops the thread.
    wake_jobs: Option<mpsc::Sender<()>>,
    /// Says the store closed once dropped, after `Drop for Inner` ran: [`Store::close`]
    /// waits for it.
    closed: Closed,
    job_chunk_keys: usize,
    /// The most positions in one index chunk.
    chunk_positions: usize,
    /// How deep the last-admin check reads an admin user's keys.
    admin_scan_keys: usize,
    /// `StoreConfig::tenant_list_users`.
    tenant_list_users: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .field("prefix", &self.prefix)
            .field("lineage", &self.lineage())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lineage(&self) -> Uuid {
        self.mark.current().lineage
    }

    /// Whether several processes share the storage (PostgreSQL): then what must hold across
    /// them (rate limits, credits) lives in the store, not in this process alone.
    fn shares_storage(&self) -> bool {
        self.follow.is_some()
    }

    /// Whether the embedded store's disk is below its reserve (never on PostgreSQL).
    fn disk_full(&self) -> bool {
        self.local.is_some() && space::below_reserve(&self.path, self.min_free_bytes)
    }

    /// On a full disk, at a flush or the close: warns that usage figures are not persisted,
    /// when there are any to lose (usage figures, or the state of a metered key). A store
    /// that served no verification (a restore's, an offline command's) has none.
    fn warn_unpersisted(&self) {
        if self.usage.any_pending() || self.meters.any() {
            tracing::warn!(store = %self.location, "the disk is full: usage figures since the last flush are not persisted");
        }
    }
}

/// Whether a store closed, set when its `Inner` is dropped: a field, so dropped after
/// `Drop for Inner` ran, whichever way it returned.
#[derive(Debug, Default)]
struct Closed(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Drop for Closed {
    fn drop(&mut self) {
        let (done, changed) = &*self.0;
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(follow) = &self.follow {
            // No write of another process waits for this one any more.
            let _ = self.db.acknowledge(follow.id(), None);
        }
        if self.local.as_ref().is_some_and(|db| !db.is_open()) {
            return;
        }
        if self.disk_full() {
            self.warn_unpersisted();
        } else if let Err(e) =
            controls::flush(&*self.db, &self.meters, self.clock.unix_nanos(), true)
                .and_then(|()| usage::flush(&*self.db, &self.usage, self.chunk_positions))
        {
            tracing::warn!(error = %e, "could not persist usage figures at close");
        }
        let _ = self.db.flush();
        if self.local.is_some() {
            files::closed_here(&self.path);
        }
    }
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// How many events were checked.
    pub events: u64,
    /// Where the chain breaks, if it does.
    pub broken: Option<ChainBreak>,
}

impl Store {
    /// Opens an initialised store.
    ///
    /// Fails with [`StoreError::NotInitialized`] when there is none at `path` (creating
    /// nothing), with [`StoreError::Locked`] when another process holds it, and with
    /// [`StoreError::Damaged`] when its files are missing or damaged, or when it is behind
    /// the last write it acknowledged (its mark): a store never silently forgets.
    ///
    /// A `postgres://` or `postgresql://` URL opens that database, as
    /// [`Store::open_at`] does: `path` is read as `--db` reads its value.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, StoreError> {
        Store::open_at(&entry::location_of(path.as_ref()), config)
    }

    /// [`Store::open`] on a directory.
    fn open_dir(path: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        let (db, _, mark) = open_checked(path, config.cache_capacity_bytes)?;
        Self::from_local(path, db, mark, config)
    }

    /// Creates an empty store (no users, no groups) with the given key prefix.
    ///
    /// Fails with [`StoreError::AlreadyInitialized`] on an initialised store, changing
    /// nothing. A `postgres://` URL creates the store in that database, as
    /// [`Store::create_empty_at`] does.
    pub fn create_empty(
        path: impl AsRef<Path>,
        prefix: &str,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        Store::create_empty_at(&entry::location_of(path.as_ref()), prefix, config)
    }

    /// Commits the version of a prepared store: now it is one.
    fn complete_empty(self) -> Result<Store, StoreError> {
        self.write(&Actor::system(), |tx| {
            self.still_uninitialized(tx)?;
            tx.put_raw(layout::VERSION, layout::SCHEMA_VERSION)
        })?;
        self.write_first_mark()?;
        Ok(self)
    }

    /// Creates a store as `latchkey init` does: an `admin` group granting `*`, an `admin`
    /// user in it, and a key for that user, returned once. All in one transaction: a crash
    /// leaves either no store or a complete one. A `postgres://` URL creates the store in
    /// that database, as [`Store::create_with_admin_at`] does.
    pub fn create_with_admin(
        path: impl AsRef<Path>,
        prefix: &str,
        config: StoreConfig,
    ) -> Result<(Store, CreatedKey), StoreError> {
        Store::create_with_admin_at(&entry::location_of(path.as_ref()), prefix, config)
    }

    /// Commits a prepared store's admin group, user and key with its version.
    fn complete_with_admin(self) -> Result<(Store, CreatedKey), StoreError> {
        let store = self;
        let system = Actor::system();
        let admin = store.write(&system, |tx| {
            store.still_uninitialized(tx)?;
            let everything = PermissionSet::parse(["*"]).expect("valid");
            let group = store.create_group_in(
                tx,
                &system,
                &NewGroup {
                    name: "admin".into(),
                    permissions: everything,
                },
            )?;
            let user = store.create_user_in(
                tx,
                &system,
                &NewUser {
                    name: "admin".into(),
                    groups: vec![group.id],
                    ..NewUser::default()
                },
            )?;
            let new_key = NewKey {
                name: "admin".into(),
                user_id: user.id,
                description: Some("created by latchkey init".into()),
                ..NewKey::default()
            };
            let key = store.create_key_in(tx, &system, &new_key, None)?;
            tx.put_raw(layout::VERSION, layout::SCHEMA_VERSION)?;
            Ok(key)
        })?;
        store.write_first_mark()?;
        Ok((store, admin))
    }

    /// Aborts a prepared store's completion with [`StoreError::AlreadyInitialized`] when
    /// another process completed it meanwhile: on a shared database, two processes that
    /// start at once on an empty one both prepare the same settings, and the writers' lock
    /// each completion holds lets only the first one commit a version (and an admin key).
    fn still_uninitialized(&self, tx: &tx::Tx<'_>) -> tx::TxResult<()> {
        if tx.get_raw(layout::VERSION)?.is_none() {
            return Ok(());
        }
        let path = match self.location() {
            Location::Dir(path) => path.clone(),
            Location::Postgres(url) => PathBuf::from(url.redacted()),
        };
        tx::abort(StoreError::AlreadyInitialized { path })
    }

    /// Opens a store that is not initialised yet and writes its prefix, hash key and
    /// lineage; the caller commits `m:version` in the same transaction as whatever makes it
    /// complete.
    ///
    /// Never initialises a directory that holds a store which acknowledged writes (it has
    /// a mark), or files that are no part of a store; only an empty or new directory, or
    /// the remains of an `init` that never committed.
    fn prepare(path: &Path, prefix: &str, config: StoreConfig) -> Result<Store, StoreError> {
        let prefix =
            Prefix::new(prefix).map_err(|e| StoreError::invalid("prefix", e.to_string()))?;
        let (found, foreign) = files::inspect(path)?;
        if let Some(name) = foreign {
            return Err(StoreError::storage(format!(
                "{} holds files that are no part of a latchkey store (such as {name:?}); \
                 choose an empty or new directory",
                path.display()
            )));
        }
        if found == Found::Marked {
            // A store that acknowledged writes, healthy or not: sled is not even opened on
            // it, since opening damaged files can rewrite them.
            files::ensure_complete(path)?;
            if files::is_locked_after(path, files::lock_wait(path)) {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                });
            }
            return Err(StoreError::AlreadyInitialized {
                path: path.to_owned(),
            });
        }
        if found == Found::Unmarked {
            files::ensure_not_partial(path)?;
        }
        files::create_private_dir(path)?;
        // Remains of an interrupted `init` keep their engine.
        let engine = engine::found_in(path).unwrap_or(config.engine);
        let db = engine::open(path, engine, config.cache_capacity_bytes, true)?;
        if db.get(layout::VERSION)?.is_some() {
            return Err(StoreError::AlreadyInitialized {
                path: path.to_owned(),
            });
        }
        let lineage = write_new_store(&*db, &prefix)?;
        let mark = Mark {
            lineage,
            seq: 0,
            head: audit::GENESIS.to_owned(),
        };
        Self::from_local(path, db, mark, config)
    }

    /// The store over an embedded engine's database in the directory `path`.
    fn from_local(
        path: &Path,
        db: Arc<dyn Embedded>,
        mark: Mark,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        space::ensure_ballast(path);
        let backend: Arc<dyn Backend> = db.clone();
        let location = Location::Dir(path.to_owned());
        Self::from_backend(location, backend, Some(db), None, mark, config)
    }

    /// The store over an opened backend: reads its settings, completes its indexes, and
    /// starts its threads.
    fn from_backend(
        location: Location,
        db: Arc<dyn Backend>,
        local: Option<Arc<dyn Embedded>>,
        follow: Option<follow::Follow>,
        mark: Mark,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let has_imports = import::any_imported(&db)?;
        let prefix = db
            .get(layout::PREFIX)?
            .ok_or_else(|| StoreError::Corrupt("missing prefix".into()))?;
        let prefix = Prefix::new(&String::from_utf8_lossy(&prefix))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let hash_key = db
            .get(layout::HASH_KEY)?
            .ok_or_else(|| StoreError::Corrupt("missing hash key".into()))?;
        let hash_key: [u8; 32] = hash_key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("bad hash key".into()))?;
        rebuild::ensure(&db, config.clock.now(), config.index_chunk_positions)?;
        let published = read_seq(&*db)?.into();
        let (events, _) = broadcast::channel(1024);
        let (breaks, _) = watch::channel(0);
        let (stop, stopped) = mpsc::channel::<()>();
        let (wake, woken) = mpsc::channel::<()>();
        let mark = recover::Marker::new(mark, location.as_dir());
        let inner = Arc::new(Inner {
            path: location.as_dir().map(Path::to_owned).unwrap_or_default(),
            place: location
                .as_dir()
                .map(place::Place::of)
                .transpose()
                .map_err(|e| StoreError::Storage(Box::new(e)))?,
            rescue: Mutex::new(None),
            rescue_started: false.into(),
            location,
            db,
            local,
            follow,
            has_imports: has_imports.into(),
            mark,
            min_free_bytes: config.min_free_bytes,
            cursors: cursor::CursorSeal::new(&HashKey::from_bytes(hash_key)),
            audit_check: single_flight::SingleFlight::default(),
            hash_key: HashKey::from_bytes(hash_key),
            feed_key: HashKey::from_bytes(blake3::derive_key(
                "latchkey 2026-12-06 change feed hashes",
                &hash_key,
            )),
            prefix,
            clock: config.clock,
            cache: VerifyCache::new(config.verify_cache_entries),
            usage: UsageBuffer::default(),
            meters: controls::Meters::default(),
            user_meters: user_limits::UserMeters::default(),
            write_lock: Mutex::new(()),
            events,
            published,
            breaks,
            _stop_flusher: config.usage_flush_interval.map(|_| stop),
            wake_jobs: config.background_jobs.then_some(wake),
            closed: Closed::default(),
            job_chunk_keys: config.job_chunk_keys,
            chunk_positions: config.index_chunk_positions,
            admin_scan_keys: config.admin_scan_keys,
            tenant_list_users: config.tenant_list_users,
        });
        if let Some(interval) = config.usage_flush_interval {
            spawn_usage_flusher(Arc::downgrade(&inner), interval, stopped);
        }
        if config.background_jobs {
            spawn_jobs(Arc::downgrade(&inner), config.job_pause, woken);
        }
        Ok(Store { inner })
    }

    /// The store's lineage: an id made when the store was created, and anew when it is
    /// restored from a backup, so whoever follows its change feed can tell a restored
    /// store from the one it knew.
    pub fn lineage(&self) -> Uuid {
        self.inner.lineage()
    }

    /// A change's chain hash (`hash`, `prev_hash`) as the change feed shows it to a caller
    /// that may not read the audit trail. The chain's hashes cover each change's actor,
    /// which that caller is not shown: a plain hash could be checked against each key id
    /// the feed names, and so give the actor back. This one is keyed by the store (its
    /// hashing key, through a key of its own), so no guess can be checked, and is the same
    /// wherever the store is served: a follower still compares two hashes to tell another
    /// store, or a diverged backup, from this one.
    pub fn feed_hash(&self, hash: &str) -> String {
        hex::encode(self.inner.feed_key.hash(hash).to_bytes())
    }

    /// The store's directory (empty for a store in PostgreSQL: see [`Store::location`]).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where the store lives.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// The embedded engine holding the store (`None` for a store in PostgreSQL).
    pub fn engine(&self) -> Option<Engine> {
        self.inner.local.as_ref().map(|db| db.engine())
    }

    /// The store's key prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.inner.prefix
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Verifies a presented key and returns who it authenticates as.
    ///
    /// A key text verified before is recognised in the verify cache by its keyed tag
    /// ([`Store::verify_known`]). Any other text is parsed strictly, and a malformed key
    /// never reaches the store. Then: look-up by public id (cached), the secret's keyed
    /// hash compared in constant time, and only after it matched, the key's and user's
    /// statuses. Usage is counted in memory.
    ///
    /// A text that is not a latchkey key is looked up among imported keys, when the
    /// store holds any ([`Store::verify_imported`]).
    ///
    /// # What an answer tells
    ///
    /// An unknown id and a wrong secret give the same [`VerifyError::Invalid`], and the
    /// layer turns both into the same response, status, headers and body, and they cost the
    /// same work: the secret's hash, one read of the id's key record (absent or not) at
    /// the first try and a cold cache hit after it, and one constant-time comparison. What
    /// is behind a key (its user, groups, usage controls) is read only for a caller that
    /// holds its secret, so a wrong secret can neither time nor fail on those reads. What
    /// timing may still tell: a wrong secret for a key in active use (hot in the verify
    /// cache) is answered from memory without the cold part, and a record found is decoded
    /// where an absent one is not (under a microsecond); ids are public anyway (each key's
    /// display prefix shows its id), and nothing about a secret shows: hashes and tags are
    /// compared in constant time.
    pub fn verify(&self, presented: &str) -> Result<Principal, VerifyError> {
        if let Some(principal) = self.verify_known(presented.as_bytes()) {
            return Ok(principal);
        }
        self.verify_text(presented, Use::Counted)
    }

    /// A text parsed and verified as a latchkey key, or else looked up among imported keys.
    fn verify_text(&self, presented: &str, counted: Use) -> Result<Principal, VerifyError> {
        match ApiKey::parse(presented) {
            Ok(key) => self
                .verify_key_reading(&key, true, counted)
                .expect("a verification that may read always answers"),
            Err(_) if self.may_be_imported(presented) => {
                self.verify_imported_text(presented, counted)
            }
            Err(e) => Err(VerifyError::Malformed(e)),
        }
    }

    /// The fast path for a key text that verified before: `Some` when the verify cache
    /// recognises it by its keyed tag and the key authenticates now (usage counted); `None`
    /// otherwise, for the caller to parse the text and call [`Store::verify_key`], which
    /// gives every other answer. Needs neither the checksum nor the BLAKE3 hash; why that
    /// is as safe is told in the verify cache's docs (`verify.rs`).
    ///
    /// # Example
    ///
    /// ```
    /// # use latchkey_core::{Actor, NewKey, NewUser, Store, StoreConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
    /// # let admin = Actor::system();
    /// # let user = store.create_user(&admin, NewUser { name: "u".into(), ..NewUser::default() }).unwrap();
    /// # let new = NewKey { name: "k".into(), user_id: user.id, ..NewKey::default() };
    /// let text = store.create_key(&admin, new).unwrap().secret.expose().to_owned();
    /// assert!(store.verify_known(text.as_bytes()).is_none()); // never verified yet
    /// store.verify(&text).unwrap();
    /// assert!(store.verify_known(text.as_bytes()).is_some());
    /// ```
    pub fn verify_known(&self, presented: &[u8]) -> Option<Principal> {
        let inner = &*self.inner;
        // Not acknowledged: a verification reads the changes first, off this path.
        if self.freshness() != Freshness::Confirmed {
            return None;
        }
        let resolved = inner.cache.recognise(presented)?;
        let now = inner.clock.unix_nanos();
        let principal = resolved.status(now).ok()?.clone();
        resolved.usage.record(now);
        Some(principal)
    }

    /// [`Store::verify`] for an already parsed key.
    pub fn verify_key(&self, key: &ApiKey) -> Result<Principal, VerifyError> {
        self.verify_key_reading(key, true, Use::Counted)
            .expect("a verification that may read always answers")
    }

    /// [`Store::verify`] without counting a use of the key: for a request about a key
    /// rather than one made with it, such as a remote verifier asking for slices of its
    /// limits (`POST /v1/leases`), whose requests it counts and reports itself.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, VerifyError> {
        self.verify_text(presented, Use::Uncounted)
    }

    /// [`Store::verify_key`] from memory alone: `None` when the answer needs a read of the
    /// storage (a key the verify cache does not hold).
    ///
    /// On PostgreSQL ([`Store::reads_over_network`]) that read is a round trip to the
    /// database; a caller on an async worker can answer from this and run
    /// [`Store::verify_key`] on a blocking thread when it gives `None`. (Called inline, it
    /// does not panic: it blocks the calling thread for that round trip.)
    pub fn verify_key_cached(&self, key: &ApiKey) -> Option<Result<Principal, VerifyError>> {
        self.verify_key_reading(key, false, Use::Counted)
    }

    /// Whether a read of the storage crosses a network (PostgreSQL) rather than the page
    /// cache of an embedded database (sled, redb).
    pub fn reads_over_network(&self) -> bool {
        self.inner.local.is_none()
    }

    /// When the key of a principal that just verified expires (`None`: never).
    ///
    /// Answered from the verify cache, which holds every key it verified, so that a
    /// verification followed by this stays off the storage (on PostgreSQL, a round trip
    /// saved on every `/v1/verify`); read from the key's record only when the entry has
    /// been evicted or invalidated since.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the key was deleted since, and the errors of a read
    /// of the storage.
    pub fn expiry(
        &self,
        principal: &Principal,
    ) -> Result<Option<time::OffsetDateTime>, StoreError> {
        let cache = &self.inner.cache;
        let cached = layout::public_id_of(principal.key_id).and_then(|id| {
            cache
                .hot(&id)
                .map(|hot| hot.resolved)
                .or_else(|| cache.cold(&id)?.imported().cloned())
        });
        match cached {
            Some(resolved) if resolved.principal.key_id == principal.key_id => Ok(resolved
                .expires_at
                .and_then(|at| time::OffsetDateTime::from_unix_timestamp_nanos(at).ok())),
            _ => Ok(self.key(principal.key_id)?.expires_at),
        }
    }

    fn verify_key_reading(
        &self,
        key: &ApiKey,
        may_read: bool,
        counted: Use,
    ) -> Option<Result<Principal, VerifyError>> {
        let inner = &*self.inner;
        // Hash before looking up, so the hash costs the same for an unknown id and a wrong
        // secret; the lookup does not (see `verify`'s docs: what an answer tells).
        let presented = inner.hash_key.hash_bytes(key.secret_bytes());
        if key.prefix_bytes() != inner.prefix.as_str().as_bytes() {
            return Some(Err(VerifyError::Invalid));
        }
        // On a shared database whose others' writes do not wait for this process (its
        // progress is not recorded), what they committed before this began is read first.
        match self.ready_to_verify(may_read) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e)),
        }
        let id = key.id();
        let resolved = match inner.cache.hot(&id) {
            Some(hot) => hot.resolved,
            None => {
                // Read before the cold part and the store: an answer read before a
                // concurrent write is then never cached after it.
                let generation = inner.cache.generation();
                match inner.cache.cold(&id) {
                    Some(cold) if !cold.admits(key, &presented) => {
                        return Some(Err(VerifyError::Invalid));
                    }
                    // The secret's holder after a wrong secret: read below, whole.
                    Some(_) | None if !may_read => return None,
                    Some(_) | None => {}
                }
                // The key's record alone first: a caller that does not hold its secret
                // learns no more, and costs no more, than one with an unknown id.
                let record = match self.get::<KeyRecord>(&layout::key(&id)) {
                    Ok(record) => record,
                    Err(e) => return Some(Err(VerifyError::Unavailable(e.to_string()))),
                };
                let cold = match &record {
                    Some(record) => Cold::Stranger {
                        hash: SecretHash::from_bytes(record.hash),
                        env: record.env,
                    },
                    None => Cold::Absent,
                };
                match record {
                    // Only a caller holding the secret makes a key hot, and has what is
                    // behind it read; every other answer goes to the small cold part.
                    Some(record) if cold.admits(key, &presented) => {
                        match self.resolve_record(&id, record) {
                            Ok(resolved) => {
                                let resolved = Arc::new(resolved);
                                inner
                                    .cache
                                    .insert_hot(key, Arc::clone(&resolved), generation);
                                resolved
                            }
                            Err(e) => return Some(Err(VerifyError::Unavailable(e.to_string()))),
                        }
                    }
                    _ => {
                        inner.cache.insert_cold(id, cold, generation);
                        return Some(Err(VerifyError::Invalid));
                    }
                }
            }
        };
        if !resolved.is_key(key, &presented) {
            return Some(Err(VerifyError::Invalid));
        }
        let now = inner.clock.unix_nanos();
        Some(resolved.status(now).cloned().inspect(|_| {
            if counted == Use::Counted {
                resolved.usage.record(now);
            }
        }))
    }

    /// Drops this handle and, when it is the last one, waits until the store has closed:
    /// usage figures persisted, the engine flushed, and on a shared database this process
    /// counted out of the followers that other processes' writes wait for. A background
    /// thread may hold the store for the rest of one round of its work: a process that
    /// exits right after dropping its last handle may exit before the store closes, and on
    /// PostgreSQL leave the others' writes waiting up to the staleness bound (5 s) for it.
    /// Waits at most `bound` (other handles alive keep it open), and answers whether it
    /// closed.
    pub fn close(self, bound: Duration) -> bool {
        let closed = Arc::clone(&self.inner.closed.0);
        drop(self);
        let (done, changed) = &*closed;
        let done = done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = changed
            .wait_timeout_while(done, bound, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }

    /// Persists buffered usage figures and flushes the store to disk. Call at shutdown;
    /// dropping the last clone does the same.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Before the writers' lock, which the rescue's backup takes.
        if self.ensure_in_place().is_err() {
            // What the engine holds is in files no path leads to any more: nothing to flush
            // it into, and no stop to call clean. The rescue says where it went.
            let saved = match self.rescued() {
                Some(Ok(file)) => format!("what it held is saved in {}", file.display()),
                Some(Err(why)) => format!("what it held could not be saved ({why})"),
                None => "what it held could not be saved".to_owned(),
            };
            return Err(StoreError::storage(format!(
                "the store's directory {} was removed or replaced while this process held it open: {saved}; restore with `latchkey restore` (into an empty directory: remove first what writes under way may have left at the path, a latchkey.mark and latchkey.reserve)",
                self.inner.path.display()
            )));
        }
        let _serialized = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let db = &*self.inner.db;
        if self.disk_full() {
            // Every acknowledged write was durable before it was acknowledged: what a flush
            // adds now is best effort (usage figures, credit slices given back, which stay
            // spent), and a full disk is no reason to fail a shutdown. The engine may still
            // hold such a write from before the disk filled, or have been closed by one.
            self.inner.warn_unpersisted();
            if let Err(e) = self.ensure_open().and_then(|()| db.flush()) {
                tracing::warn!(store = %self.inner.location, error = %e, "the disk is full: the store's last flush failed (nothing acknowledged is lost)");
            }
            return Ok(());
        }
        self.ensure_open()?;
        // A failed write leaves the engine refusing writes (and redb reads): reopened now,
        // as after a failed management write.
        self.write_buffers()
            .and_then(|()| db.flush())
            .map_err(|e| self.failed_write(e))
    }

    /// Whether the embedded store's disk is below its reserve (never on PostgreSQL).
    fn disk_full(&self) -> bool {
        self.inner.disk_full()
    }

    /// Writes what this process holds only in memory to the storage: usage figures, and
    /// the unspent credit slices it reserved, given back. The caller holds the write lock.
    fn write_buffers(&self) -> Result<(), StoreError> {
        let db = &*self.inner.db;
        controls::flush(db, &self.inner.meters, self.inner.clock.unix_nanos(), true)?;
        usage::flush(db, &self.inner.usage, self.inner.chunk_positions)
    }

    /// The sequence number of the newest change (0 for none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        read_seq(&*self.inner.db)
    }

    /// Whether the store can serve: its newest change reads, and an embedded store's
    /// directory is still the one it opened (one removed or replaced meanwhile fails with
    /// `Unavailable`, and so does every write).
    pub fn check_health(&self) -> Result<(), StoreError> {
        self.ensure_in_place()?;
        self.last_seq().map(drop)
    }

    /// `Ok` unless the embedded store's directory was removed or replaced since it was
    /// opened (`place.rs`).
    fn ensure_in_place(&self) -> Result<(), StoreError> {
        let Some(place) = self.inner.place else {
            return Ok(());
        };
        let checked = place.check(&self.inner.path);
        let first = || {
            !self
                .inner
                .rescue_started
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        };
        if checked.is_err() && first() {
            match place::rescue(self.clone()) {
                Ok(rescue) => {
                    *self.inner.rescue.lock().unwrap_or_else(|e| e.into_inner()) = Some(rescue)
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start saving what the removed store holds: take a backup now with `latchkey backup`")
                }
            }
        }
        checked
    }

    /// Waits for the backup of a store whose directory was removed, if one was started:
    /// where it went, or why it did not.
    fn rescued(&self) -> Option<Result<PathBuf, String>> {
        let rescue = self
            .inner
            .rescue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(
            rescue
                .join()
                .unwrap_or_else(|_| Err("the backup panicked".to_owned())),
        )
    }

    /// Up to `limit` changes (audit events) with `seq > after`, oldest first.
    pub fn events_since(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.events_in(AuditRange::after(after), limit)
    }

    /// Up to `limit` audit events in `range`, in its order: from either end of the trail,
    /// a bounded read at any size of it.
    pub fn events_in(
        &self,
        range: AuditRange,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let first = range.after.saturating_add(1);
        if range.before.is_some_and(|before| before <= first) {
            return Ok(Vec::new());
        }
        let keys = KeyRange::new(
            Bound::Included(layout::audit(first)),
            range.before.map_or_else(
                || Bound::Included(layout::audit(u64::MAX)),
                |before| Bound::Excluded(layout::audit(before)),
            ),
        );
        let take = if range.newest_first {
            Take::reverse(limit)
        } else {
            Take::forward(limit)
        };
        self.inner
            .db
            .range(&keys, take)?
            .iter()
            .map(decode_event)
            .collect()
    }

    /// A handle that does not keep the store open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// Changes as they commit. Receivers that fall behind by more than 1024 events get
    /// `Lagged` and should resume from [`Store::events_since`]. Once every [`Store`] of it
    /// is dropped, the receiver answers `Closed`.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.inner.events.subscribe()
    }

    /// Changes at each break in the feed: on a database several processes share, changes
    /// this process had applied that the database no longer holds (a failover that lost
    /// commits, an older backup restored under it), or one that does not decode. Neither
    /// [`Store::subscribe`] nor [`Store::events_since`] will carry them, so whoever
    /// derived something from the feed must forget it: a change feed ends its streams,
    /// whose clients then resume and learn it. Never changes on a store only this process
    /// opens.
    pub fn feed_breaks(&self) -> watch::Receiver<u64> {
        self.inner.breaks.subscribe()
    }

    /// Checks the whole audit chain: each event's hash, each link, no gap, and that the
    /// newest event is the head the store recorded (so a truncated tail is noticed too).
    ///
    /// The chain is checked up to the end the store recorded when the check began: writes
    /// that commit meanwhile append after it and are not mistaken for a break. An event past
    /// that end is one only if the store counts it once the walk is done.
    ///
    /// One check runs at a time: a caller who asks while one runs waits for it and then
    /// shares the next one, begun after it asked (`single_flight.rs`).
    pub fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.inner
            .audit_check
            .run(std::time::Instant::now(), || self.walk_audit_chain())
    }

    /// [`Store::verify_audit`]'s walk of the chain.
    fn walk_audit_chain(&self) -> Result<AuditReport, StoreError> {
        // The mark first: it advances after its write commits, outside the write lock, so
        // read after the chain's end it could name a write committed since (and the chain
        // would seem rolled back). Read before, it is never past the end read next.
        let mark = match self.inner.local {
            Some(_) => mark::read(&self.inner.path).ok().flatten(),
            None => None,
        };
        let (last, head) = self.chain_end()?;
        let mut next = 1;
        let mut prev = audit::GENESIS.to_owned();
        let mut broken = None;
        let mut at_mark = None;
        let mut past_end = None;
        let audit = backend::scan(
            &self.inner.db,
            KeyRange::prefix(layout::AUDIT),
            Direction::Forward,
        );
        for item in audit {
            // An event that cannot be read is where the chain breaks, said as such: the
            // report names it rather than failing the whole check.
            let entry = item?;
            let event = match decode_event(&entry) {
                Ok(event) => event,
                Err(StoreError::Corrupt(why)) => {
                    let seq = seq_of(&entry.0).unwrap_or(next);
                    let reason = format!("event {seq} cannot be read ({why})");
                    broken = Some(ChainBreak { seq, reason });
                    break;
                }
                Err(e) => return Err(e),
            };
            if event.seq > last {
                past_end = Some(event.seq);
                break;
            }
            if mark.as_ref().is_some_and(|m| m.seq == event.seq) {
                at_mark = Some(event.hash.clone());
            }
            match audit::check_chain([&event], next, prev.clone()) {
                Ok((n, hash)) => (next, prev) = (n, hash),
                Err(b) => {
                    broken = Some(b);
                    break;
                }
            }
        }
        let events = next - 1;
        if broken.is_none() {
            if last != events {
                let reason =
                    format!("the store recorded {last} events but the chain ends at {events}");
                broken = Some(ChainBreak {
                    seq: events + 1,
                    reason,
                });
            } else if head != prev {
                let reason = "the newest event is not the head the store recorded".to_owned();
                broken = Some(ChainBreak {
                    seq: events,
                    reason,
                });
            } else if let Some(seq) = past_end.filter(|&seq| {
                // Appended since the check began, or never counted by the store?
                self.last_seq().map_or(true, |now| seq > now)
            }) {
                let reason = format!("event {seq} is past the last event the store recorded");
                broken = Some(ChainBreak { seq, reason });
            }
        }
        if let (None, Some(mark)) = (&broken, mark.filter(|m| m.seq > 0)) {
            broken = recover::check_against_mark(&mark, events, at_mark.as_deref());
        }
        Ok(AuditReport { events, broken })
    }

    /// The sequence number of the newest event and its hash, read together: under the write
    /// lock (an embedded store has no other writer), in one statement on PostgreSQL.
    fn chain_end(&self) -> Result<(u64, String), StoreError> {
        let _serialized = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let tip = follow::Tip::of(&*self.inner.db)?;
        Ok((tip.seq, tip.hash))
    }

    /// Reads and decodes one record from the plain tree.
    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.inner
            .db
            .get(key)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// [`Store::get`] of several records at once (one round trip on PostgreSQL), in the
    /// order of `keys`.
    fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<T>>, StoreError> {
        self.inner
            .db
            .get_many(keys)?
            .into_iter()
            .map(|found| found.map(|bytes| decode(&bytes)).transpose())
            .collect()
    }

    /// Decodes every record under a namespace.
    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        backend::scan(&self.inner.db, KeyRange::prefix(prefix), Direction::Forward)
            .map(|item| decode(&item?.1))
            .collect()
    }
}

/// An audit event from its stored record; the sequence number is in the key.
fn decode_event((key, value): &Entry) -> Result<AuditEvent, StoreError> {
    let seq = seq_of(key).ok_or_else(|| StoreError::Corrupt("bad audit key".into()))?;
    let stored =
        audit::StoredEvent::decode(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(stored.into_event(seq))
}

/// The sequence number an audit event's key (`a:` + big-endian u64) names.
fn seq_of(key: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = key.get(layout::AUDIT.len()..)?.try_into().ok()?;
    Some(u64::from_be_bytes(seq))
}

/// Records are stored with postcard: compact, and sled's memory grows with stored bytes.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records serialize")
}

/// The jobs thread: every second, and when woken, the expiry sweep and then background
/// jobs chunk by chunk (sweep chunks too while a backlog lasts), pausing between chunks.
/// Holds the store only during a chunk. Failures (the database away, a full disk) are
/// retried every second and logged once an outage ([`Outage`]).
fn spawn_jobs(inner: Weak<Inner>, pause: Duration, wake: mpsc::Receiver<()>) {
    let spawned = std::thread::Builder::new()
        .name("latchkey-jobs".into())
        .spawn(move || {
            // Pending jobs of an earlier process start at once.
            let mut woken = true;
            let mut sweeping = Outage::new("sweeping expired keys");
            let mut jobs = Outage::new("running the background jobs");
            let mut steps = inner
                .upgrade()
                .map(|inner| clock_step::StepWatch::new(&*inner.clock));
            loop {
                if !woken {
                    match wake.recv_timeout(Duration::from_secs(1)) {
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                }
                woken = false;
                if let (Some(steps), Some(inner)) = (&mut steps, inner.upgrade()) {
                    steps.say(&*inner.clock);
                }
                let mut job_failed: Option<std::time::Instant> = None;
                loop {
                    let Some(inner) = inner.upgrade() else { return };
                    let store = Store { inner };
                    // A whole chunk swept may leave more: the loop goes on for it too.
                    let swept_all = match store.sweep_expired() {
                        Ok(n) => {
                            sweeping.succeeded();
                            n < sweep::SWEEP_CHUNK
                        }
                        Err(e) => {
                            sweeping.failed(&e);
                            true
                        }
                    };
                    // A failed job waits a second, even while a sweep backlog keeps this
                    // loop going.
                    let more_jobs = job_failed
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                        && match store.run_job_chunk() {
                            Ok(more) => {
                                job_failed = None;
                                jobs.succeeded();
                                more
                            }
                            Err(e) => {
                                jobs.failed(&e);
                                job_failed = Some(std::time::Instant::now());
                                false
                            }
                        };
                    if swept_all && !more_jobs {
                        break;
                    }
                    drop(store);
                    std::thread::sleep(pause);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the jobs thread; jobs run at the next open");
    }
}

fn spawn_usage_flusher(inner: Weak<Inner>, interval: Duration, stop: mpsc::Receiver<()>) {
    let spawned = std::thread::Builder::new()
        .name("latchkey-usage".into())
        .spawn(move || {
            let mut persisting = Outage::new("persisting usage figures");
            // Wakes every `interval` until the store is dropped (the sender goes away).
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
                let Some(inner) = inner.upgrade() else { return };
                let store = Store { inner };
                let _serialized = store
                    .inner
                    .write_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // A store closed by a storage failure reopens by itself, from here too; one
                // whose directory was removed is not written to.
                if store.ensure_in_place().is_err()
                    || store.ensure_open().is_err()
                    || store.disk_full()
                {
                    continue;
                }
                let now = store.inner.clock.unix_nanos();
                let flushed = controls::flush(&*store.inner.db, &store.inner.meters, now, false)
                    .and_then(|()| {
                        usage::flush(
                            &*store.inner.db,
                            &store.inner.usage,
                            store.inner.chunk_positions,
                        )
                    });
                match flushed {
                    Ok(()) => persisting.succeeded(),
                    Err(e) => {
                        persisting.failed(&e);
                        // Reopened now rather than at the next write: redb refuses every
                        // read of its file after a failed write.
                        store.failed_write(e);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the usage flusher; usage is persisted at flush and close only");
    }
}

/// Opens the engine of the store in the directory `path` as every open must: never on a
/// store missing some of its files (the engine would re-create them empty), and only to
/// refuse a store of a newer schema or one behind or beside its mark. Returns the open
/// database, its schema version and its mark.
fn open_checked(
    path: &Path,
    cache_capacity: u64,
) -> Result<(Arc<dyn Embedded>, u32, Mark), StoreError> {
    let engine = engine::found_in(path);
    match files::inspect(path)?.0 {
        Found::Marked => files::ensure_complete(path)?,
        Found::Unmarked => files::ensure_not_partial(path)?,
        Found::Nothing => {}
    }
    let Some(engine) = engine else {
        return Err(StoreError::NotInitialized {
            path: path.to_owned(),
        });
    };
    let db = engine::open(path, engine, cache_capacity, false)?;
    let schema = stored_schema(path, &*db)?;
    let mark = recover::reconcile_mark(path, &*db)?;
    Ok((db, schema, mark))
}

/// Writes a new store's settings (prefix, hash key, lineage) and returns its lineage; the
/// caller commits `m:version` with whatever makes the store complete.
fn write_new_store(db: &dyn Backend, prefix: &Prefix) -> Result<Uuid, StoreError> {
    let lineage = Uuid::now_v7();
    let mut batch = backend::Batch::default();
    batch.insert(layout::PREFIX, prefix.as_str().as_bytes());
    batch.insert(layout::HASH_KEY, HashKey::generate().as_bytes().as_slice());
    // An empty store's indexes and counts are complete.
    batch.insert(rebuild::INDEXED, rebuild::INDEX_VERSION);
    batch.insert(layout::LINEAGE, lineage.as_bytes().as_slice());
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(lineage)
}

/// The schema version a directory store's records were written in (`m:version`): refused
/// when newer than this build knows; a store without one never was (or, when its mark
/// says it was, has lost its records).
fn stored_schema(path: &Path, db: &dyn Backend) -> Result<u32, StoreError> {
    let Some(version) = db.get(layout::VERSION)? else {
        if mark::read(path).ok().flatten().is_some() {
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                reason: "has lost its records (its database holds no store)".into(),
            });
        }
        return Err(StoreError::NotInitialized {
            path: path.to_owned(),
        });
    };
    schema_of(&version)
}

/// The schema version `m:version` holds; refused when newer than this build knows.
fn schema_of(version: &[u8]) -> Result<u32, StoreError> {
    let found = std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| StoreError::Corrupt("bad schema version".into()))?;
    if found > layout::SCHEMA {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: layout::SCHEMA,
        });
    }
    Ok(found)
}

/// The sequence number of the newest change (0 for none).
fn read_seq(db: &dyn Backend) -> Result<u64, StoreError> {
    decode_seq(db.get(layout::SEQ)?)
}

/// The stored `m:seq`: the newest event's sequence number (0 for none).
fn decode_seq(stored: Option<Vec<u8>>) -> Result<u64, StoreError> {
    Ok(match stored {
        Some(bytes) => u64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad seq".into()))?,
        ),
        None => 0,
    })
}

/// The stored `m:head`: the newest event's hash, as hex (the genesis hash for none). A
/// malformed one is `Corrupt`, never read as some default that new events would chain from.
fn decode_head(stored: Option<Vec<u8>>) -> Result<String, StoreError> {
    Ok(match stored {
        Some(bytes) => audit::hash_hex(
            &bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad audit head".into()))?,
        ),
        None => audit::GENESIS.to_owned(),
    })
}
