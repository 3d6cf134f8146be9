//! The PostgreSQL backend: a store several processes share.
//!
//! - `client`: the [`Backend`](super::backend::Backend) over one table, its transactions
//!   and the writers' lock;
//! - `conn`: a pooled connection, dropped from the pool when its state is unknown;
//! - `causes`: a driver error displayed with what the server said;
//! - `schema`: the versioned schema and its migrations;
//! - `listen`: the commit notifications that wake the catch-up (`follow.rs`);
//! - `tls`: rustls for connections that ask for TLS;
//! - `url`: from the URL to the connection settings.

mod causes;
mod client;
mod conn;
mod listen;
mod schema;
mod snapshot;
mod tls;
mod url;

use std::path::PathBuf;
use std::sync::Arc;

use client::{Pg, PgBackend};

use std::ops::Bound;

use super::Restored;
use super::backend::{Backend, Direction, KeyRange, scan};
use super::backup::ChainCheck;
use super::follow::{Follow, Tip};
use super::mark::Mark;
use super::{Store, StoreConfig, layout, write_new_store};
use crate::error::StoreError;
use crate::key::Prefix;
use crate::location::{DatabaseUrl, Location};
use crate::model::CreatedKey;

/// Migrates the schema forward (see `schema`), returning its version.
pub(crate) fn migrate(url: &DatabaseUrl) -> Result<u32, StoreError> {
    let pg = Pg::connect(url)?;
    let version = schema::migrate(&pg)?;
    // And what the first open would build of a store written by an older layout: its
    // indexes and counts, once, under the writers' lock. Done here, it holds up neither
    // the daemons' starts nor their writes during an upgrade.
    let db: Arc<dyn Backend> = Arc::new(PgBackend(Arc::clone(&pg)));
    if db.get(layout::VERSION)?.is_some() {
        let chunk_positions = super::chunks::CHUNK_POSITIONS;
        super::rebuild::ensure(&db, time::OffsetDateTime::now_utc(), chunk_positions)?;
    }
    Ok(version)
}

/// Opens the store in the database.
pub(crate) fn open(url: &DatabaseUrl, config: StoreConfig) -> Result<Store, StoreError> {
    let (pg, db) = connect(url)?;
    if db.get(layout::VERSION)?.is_none() {
        // `init` would refuse part of a store: so is opening it, rather than pointing there.
        refuse_part_of_a_store(url, &db)?;
        return Err(StoreError::NotInitialized {
            path: PathBuf::from(url.redacted()),
        });
    }
    start(url, pg, db, config)
}

/// Refuses a database without a store's version that holds anything beyond a new store's
/// settings: part of a store (a restore that was cut off commits a batch at a time), never
/// opened as none nor initialised over.
fn refuse_part_of_a_store(url: &DatabaseUrl, db: &Arc<dyn Backend>) -> Result<(), StoreError> {
    let settings = [
        layout::PREFIX,
        layout::HASH_KEY,
        super::rebuild::INDEXED,
        // Written by a new store of the build before the indexes of users by group.
        b"m:tenants_indexed",
        layout::LINEAGE,
    ];
    let everything = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
    for item in scan(db, everything, Direction::Forward).take(settings.len() + 1) {
        if !settings.contains(&item?.0.as_slice()) {
            return Err(StoreError::storage(format!(
                "{} holds part of a store without its version (a restore that did not \
                 finish?): empty it (`TRUNCATE latchkey_kv`), or restore into an empty database",
                url.redacted()
            )));
        }
    }
    Ok(())
}

/// Creates an empty store in the database.
pub(crate) fn create_empty(
    url: &DatabaseUrl,
    prefix: &str,
    config: StoreConfig,
) -> Result<Store, StoreError> {
    prepare(url, prefix, config)?.complete_empty()
}

/// Creates a store with its admin key in the database, as `latchkey init` does.
pub(crate) fn create_with_admin(
    url: &DatabaseUrl,
    prefix: &str,
    config: StoreConfig,
) -> Result<(Store, CreatedKey), StoreError> {
    prepare(url, prefix, config)?.complete_with_admin()
}

fn connect(url: &DatabaseUrl) -> Result<(Arc<Pg>, Arc<dyn Backend>), StoreError> {
    let pg = Pg::connect(url)?;
    schema::migrate(&pg)?;
    let db: Arc<dyn Backend> = Arc::new(PgBackend(Arc::clone(&pg)));
    Ok((pg, db))
}

/// Restores a backup into an empty database (see [`Store::restore`]).
pub(crate) fn restore(
    url: &DatabaseUrl,
    backup: impl std::io::Read,
    config: StoreConfig,
    check: ChainCheck,
) -> Result<(Store, Restored), StoreError> {
    let (pg, db) = connect(url)?;
    let restored = {
        let _writers = db.lock_writers()?;
        let everything = KeyRange::new(Bound::Unbounded, Bound::Unbounded);
        if db.first(&everything, Direction::Forward)?.is_some() {
            return Err(StoreError::storage(format!(
                "cannot restore into {url}: it holds a store or part of one (restore needs an \
                 empty database)"
            )));
        }
        match super::backup::load(&*db, backup, check, |_| Ok(())) {
            Ok(restored) => restored,
            Err(e) => {
                // No half store stays behind: the table was empty before (checked under the
                // writers' lock, still held), and TRUNCATE empties it again in one
                // statement whatever the load wrote, where deleting each key could outlast
                // `OP_TIMEOUT`. Whatever happens here, the restore's own error is returned.
                let emptied = pg
                    .client()
                    .and_then(|client| pg.execute(&client, "TRUNCATE latchkey_kv"));
                if let Err(cleanup) = emptied {
                    tracing::error!(error = %cleanup, "could not empty the database after a failed restore: run `TRUNCATE latchkey_kv` before restoring again");
                }
                return Err(e);
            }
        }
    };
    Ok((start(url, pg, db, config)?, restored))
}

/// Writes a new store's settings, unless the database holds a store already.
fn prepare(url: &DatabaseUrl, prefix: &str, config: StoreConfig) -> Result<Store, StoreError> {
    let prefix = Prefix::new(prefix).map_err(|e| StoreError::invalid("prefix", e.to_string()))?;
    let (pg, db) = connect(url)?;
    {
        let _writers = db.lock_writers()?;
        if db.get(layout::VERSION)?.is_some() {
            return Err(StoreError::AlreadyInitialized {
                path: PathBuf::from(url.redacted()),
            });
        }
        refuse_part_of_a_store(url, &db)?;
        // Settings without a version: another process is creating the store right now, or
        // one failed to. Either way they are kept when the prefix is the same, so that two
        // processes creating one store at once make one hash key, never two.
        let same_prefix = db.get(layout::PREFIX)?.as_deref() == Some(prefix.as_str().as_bytes());
        if !same_prefix || db.get(layout::HASH_KEY)?.is_none() {
            write_new_store(&*db, &prefix)?;
        }
    }
    start(url, pg, db, config)
}

/// The store over an opened database, following the changes of every process.
fn start(
    url: &DatabaseUrl,
    pg: Arc<Pg>,
    db: Arc<dyn Backend>,
    config: StoreConfig,
) -> Result<Store, StoreError> {
    let lineage = match db.get(layout::LINEAGE)? {
        Some(bytes) => uuid::Uuid::from_slice(&bytes)
            .map_err(|_| StoreError::Corrupt("bad lineage id".into()))?,
        None => return Err(StoreError::Corrupt("missing lineage".into())),
    };
    // The newest event's seq and hash, read together: a write of another process may
    // commit meanwhile.
    let tip = Tip::of(&*db)?;
    let mark = Mark {
        lineage,
        seq: tip.seq,
        head: tip.hash.clone(),
    };
    let follow = Follow::new(tip, config.max_staleness);
    let location = Location::Postgres(url.clone());
    let store = Store::from_backend(location, db, None, Some(follow), mark, config)?;
    // Counted among the followers from now on: writes of other processes wait for it. A
    // database that refuses the record (read-only, a lock on the row, a privilege revoked)
    // still opens: its verifications read the changes before they answer.
    store.read_changes_now()?;
    if let Err(e) = store.acknowledge_applied() {
        tracing::warn!(error = %e, "cannot record this process among the database's followers: its verifications read the changes first, and its change feed opens no stream, until it can");
    }
    listen::start(&pg, &store);
    Ok(store)
}

/// Databases for the unit tests, on the server of `LATCHKEY_TEST_POSTGRES`.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::client::Pg;
    use super::connect;
    use crate::location::{DatabaseUrl, Location};
    use crate::store::backend::Backend;

    /// A database of its own for one test, dropped with it.
    pub(crate) struct TestDatabase {
        pub(crate) url: DatabaseUrl,
        server: Arc<Pg>,
        name: String,
    }

    impl TestDatabase {
        /// A new database with the schema; `None` when the tests run on sled only.
        pub(crate) fn create() -> Option<TestDatabase> {
            let server = std::env::var("LATCHKEY_TEST_POSTGRES").ok()?;
            let Location::Postgres(server_url) = Location::parse(&server) else {
                return None;
            };
            let name = format!("lk_unit_{}", uuid::Uuid::now_v7().simple());
            let server = Pg::connect(&server_url).unwrap();
            server
                .execute(
                    &server.client().unwrap(),
                    &format!("CREATE DATABASE {name}"),
                )
                .unwrap();
            let url = match server_url.expose().split_once('?') {
                Some((base, query)) => format!("{}/{name}?{query}", base.rsplit_once('/')?.0),
                None => format!("{}/{name}", server_url.expose().rsplit_once('/')?.0),
            };
            let Location::Postgres(url) = Location::parse(&url) else {
                return None;
            };
            Some(TestDatabase { url, server, name })
        }

        /// Its backend, the schema migrated.
        pub(crate) fn backend(&self) -> Arc<dyn Backend> {
            connect(&self.url).unwrap().1
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if let Ok(client) = self.server.client() {
                let dropped = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                let _ = self.server.execute(&client, &dropped);
            }
        }
    }
}
