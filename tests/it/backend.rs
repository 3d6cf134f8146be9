//! The backend switch: `LATCHKEY_TEST_POSTGRES=postgres://USER:PASSWORD@HOST:PORT/DB` runs every
//! black-box test on PostgreSQL instead of sled (`.ci/postgres.sh` starts a throwaway cluster
//! and sets it; the role must be allowed to create databases).
//!
//! Tests name a store by a path, as they always did (`dir/store`). Without the switch the
//! daemon gets that path. With it, the path stands for a database created at its first use
//! (`CREATE DATABASE t_<pid>_<n>`) and the daemon gets that database's URL, so a restart on the
//! same path reopens the same database. A [`Fixture`](crate::harness::Fixture)'s database is
//! dropped with it; others are left to the throwaway cluster.
//!
//! `LATCHKEY_TEST_ENGINE=redb` runs every test on the embedded redb engine instead: every
//! `latchkey` command the harness starts gets `LATCHKEY_ENGINE=redb`, so each store `init`,
//! `serve` or `restore` creates is a redb store (a test that wants a sled store says
//! `--engine sled`, which beats the variable). It has no effect on PostgreSQL.
//!
//! Tests that are about a store's directory (a full disk, a damaged directory, the store
//! lock, the engine's files) call [`directory_only`] first and return on PostgreSQL,
//! printing why they skip. They run on either engine: none is about the sled crate alone
//! (one that is would also return when [`on_redb`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable that switches the suite to PostgreSQL.
pub(crate) const SWITCH: &str = "LATCHKEY_TEST_POSTGRES";

/// The server URL the tests create their databases on, when the switch is set.
pub(crate) fn postgres() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| std::env::var(SWITCH).ok().filter(|url| !url.is_empty()))
        .as_deref()
}

/// The variable that makes the suite's stores redb stores (`redb`; unset or `sled`: sled).
pub(crate) const ENGINE_SWITCH: &str = "LATCHKEY_TEST_ENGINE";

/// The embedded engine the suite's directory stores are made with.
pub(crate) fn engine() -> latchkey_core::Engine {
    static ENGINE: OnceLock<latchkey_core::Engine> = OnceLock::new();
    *ENGINE.get_or_init(|| match std::env::var(ENGINE_SWITCH).as_deref() {
        Ok("" | "sled") | Err(_) => latchkey_core::Engine::Sled,
        Ok("redb") => latchkey_core::Engine::Redb,
        Ok(other) => panic!("{ENGINE_SWITCH}={other}: expected sled or redb"),
    })
}

/// Whether the suite's stores are redb stores (never on PostgreSQL).
pub(crate) fn on_redb() -> bool {
    postgres().is_none() && engine() == latchkey_core::Engine::Redb
}

/// What every `latchkey` command the harness starts gets as `LATCHKEY_ENGINE`, if anything.
pub(crate) fn engine_env() -> Option<&'static str> {
    on_redb().then_some("redb")
}

/// The file of a directory store that holds its records: sled's `db`, or `latchkey.redb`.
pub(crate) fn database_file() -> &'static str {
    if on_redb() { "latchkey.redb" } else { "db" }
}

/// On PostgreSQL, prints why this test does not apply and answers true: the caller returns.
pub(crate) fn directory_only(why: &str) -> bool {
    if postgres().is_some() {
        eprintln!("skipped on PostgreSQL ({SWITCH} is set): {why}");
        return true;
    }
    false
}

/// What the daemon's `--db` gets for the store named by `path`.
pub(crate) fn store_arg(path: &Path) -> OsString {
    match postgres() {
        None => path.as_os_str().to_owned(),
        Some(server) => {
            let mut names = databases().lock().unwrap();
            let name = names
                .entry(path.to_owned())
                .or_insert_with(|| create_database(server));
            database_url(server, name).into()
        }
    }
}

/// Drops the database that stands for `path`, if one was made (on PostgreSQL).
pub(crate) fn drop_store(path: &Path) {
    let (Some(server), Some(name)) = (postgres(), databases().lock().unwrap().remove(path)) else {
        return;
    };
    // FORCE (PostgreSQL 13+) ends what a killed daemon may have left connected.
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    if let Err(e) = connect(server).and_then(|mut client| client.batch_execute(&sql)) {
        eprintln!("could not drop the test database {name}: {e}");
    }
}

/// Runs `statements` on the database that stands for `path` (on PostgreSQL): for tests that
/// change what latchkey wrote behind its back.
pub(crate) fn execute(path: &Path, statements: &str) {
    assert!(postgres().is_some(), "PostgreSQL tests only");
    let url = store_arg(path).into_string().expect("a UTF-8 URL");
    connect(&url)
        .and_then(|mut client| client.batch_execute(statements))
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// Runs `statements` on the database that stands for `path` (on PostgreSQL) and keeps the
/// session: for a transaction left open (a lock held) until the test ends it.
pub(crate) fn hold(path: &Path, statements: &str) -> postgres::Client {
    assert!(postgres().is_some(), "PostgreSQL tests only");
    let url = store_arg(path).into_string().expect("a UTF-8 URL");
    let mut client = connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    client
        .batch_execute(statements)
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
    client
}

/// The first column of the first row `query` answers on the database that stands for
/// `path` (on PostgreSQL), as a number.
pub(crate) fn count(path: &Path, query: &str) -> i64 {
    assert!(postgres().is_some(), "PostgreSQL tests only");
    let url = store_arg(path).into_string().expect("a UTF-8 URL");
    connect(&url)
        .and_then(|mut client| client.query_one(query, &[]))
        .map(|row| row.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn databases() -> &'static Mutex<HashMap<PathBuf, String>> {
    static NAMES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

/// Creates a fresh, empty database on `server`; answers its name.
pub(crate) fn create_database(server: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    connect(server)
        .and_then(|mut client| client.batch_execute(&format!("CREATE DATABASE {name}")))
        .unwrap_or_else(|e| panic!("creating a test database on {SWITCH}: {e}"));
    name
}

fn connect(server: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(server, postgres::NoTls)
}

/// `server` with its database name replaced by `name` (the query string stays).
pub(crate) fn database_url(server: &str, name: &str) -> String {
    let after_scheme = server.find("://").map_or(0, |i| i + 3);
    let path = server[after_scheme..]
        .find('/')
        .map_or(server.len(), |i| after_scheme + i);
    let query = server[path..].find('?').map_or("", |i| &server[path + i..]);
    format!("{}/{name}{query}", &server[..path])
}

#[test]
fn database_urls_keep_the_server_and_the_query() {
    for (server, expected) in [
        (
            "postgres://u:p@127.0.0.1:5/postgres",
            "postgres://u:p@127.0.0.1:5/t_1",
        ),
        ("postgresql://h:5", "postgresql://h:5/t_1"),
        (
            "postgres://u@h/db?sslmode=require",
            "postgres://u@h/t_1?sslmode=require",
        ),
    ] {
        assert_eq!(database_url(server, "t_1"), expected);
    }
}
