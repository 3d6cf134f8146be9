//! Where a test's store lives: a temporary directory (sled, or redb when
//! `LATCHKEY_TEST_ENGINE=redb`), or, when `LATCHKEY_TEST_POSTGRES` holds a PostgreSQL URL,
//! a database of its own created on that server and dropped after the test.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use latchkey_core::{Engine, Location, ManualClock, Store, StoreConfig};
use time::OffsetDateTime;

mod child;
mod records;
#[allow(unused_imports)]
pub use child::*;
#[allow(unused_imports)]
pub use records::*;

/// The environment variable that switches the tests to PostgreSQL.
pub const POSTGRES_ENV: &str = "LATCHKEY_TEST_POSTGRES";

/// The environment variable that makes the tests' directory stores redb stores
/// (`LATCHKEY_TEST_ENGINE=redb`; unset or `sled`: sled).
pub const ENGINE_ENV: &str = "LATCHKEY_TEST_ENGINE";

/// The embedded engine of the stores the tests create in a directory.
pub fn engine() -> Engine {
    match std::env::var(ENGINE_ENV).as_deref() {
        Ok("redb") => Engine::Redb,
        Ok("" | "sled") | Err(_) => Engine::Sled,
        Ok(other) => panic!("{ENGINE_ENV}={other}: expected sled or redb"),
    }
}

/// Whether the tests' directory stores are redb stores.
pub fn on_redb() -> bool {
    engine() == Engine::Redb
}

/// The default configuration, with the tests' engine: what every test starts from.
pub fn config() -> StoreConfig {
    StoreConfig::default().engine(engine())
}

/// A test's store location, removed when dropped.
pub struct TestLocation {
    pub location: Location,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl TestLocation {
    /// Whether the store lives in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.location.is_postgres()
    }
}

/// Whether the tests run on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty())
}

/// A fresh location on the backend the tests run on.
pub fn location() -> TestLocation {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            let database = TestDatabase::create(&url);
            TestLocation {
                location: Location::parse(&database.url),
                _dir: None,
                _database: Some(database),
            }
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            TestLocation {
                location: Location::Dir(dir.path().to_owned()),
                _dir: Some(dir),
                _database: None,
            }
        }
    }
}

/// A new store at a fresh [`location`], its clock a [`ManualClock`] at `t0` and its usage
/// flushed only when the test asks; `tune` adds the test's own settings. The location must
/// outlive the store.
pub fn clocked_store(
    t0: OffsetDateTime,
    tune: impl FnOnce(StoreConfig) -> StoreConfig,
) -> (TestLocation, Store, Arc<ManualClock>) {
    let dir = location();
    let clock = Arc::new(ManualClock::new(t0));
    let config = config().clock(clock.clone()).usage_flush_interval(None);
    let store = Store::create_empty_at(&dir.location, "lk", tune(config)).unwrap();
    (dir, store, clock)
}

/// A fresh PostgreSQL database; `None` when the tests run on sled only.
pub fn postgres_location() -> Option<TestLocation> {
    on_postgres().then(location)
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    fn create(admin_url: &str) -> TestDatabase {
        let name = format!("lk_test_{}", uuid::Uuid::now_v7().simple());
        sql(admin_url, &format!("CREATE DATABASE {name}"));
        TestDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        sql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs SQL statements on the database at `url`, panicking on failure.
pub fn sql(url: &str, statements: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute(statements).await.unwrap();
        drop(client);
        let _ = driver.await;
    });
}

/// The URL of a test location on PostgreSQL.
pub fn url_of(location: &TestLocation) -> String {
    location
        ._database
        .as_ref()
        .expect("a PostgreSQL location")
        .url
        .clone()
}

/// Ends every connection to the database of `location` and accepts no new one, until the
/// returned function is called.
pub fn cut_off(location: &TestLocation) -> impl FnOnce() {
    let url = url_of(location);
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin_url = std::env::var(POSTGRES_ENV).unwrap();
    sql(
        &admin_url,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    );
    move || {
        sql(
            &admin_url,
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        );
    }
}
