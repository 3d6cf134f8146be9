//! The embedded engine of a store in a directory: `init`, `serve` and `restore` make the one
//! asked for (`--engine`, `LATCHKEY_ENGINE`, `engine` in the config file) and name it; an
//! existing store opens with its own, and asking for the other is refused, changing
//! nothing; a sled store moves to redb through `backup` and `restore --engine redb`.
//!
//! Each test names its engines explicitly (`--engine` beats the suite's `LATCHKEY_ENGINE`),
//! so they run alike under `LATCHKEY_TEST_ENGINE=redb`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::backend::directory_only;
use crate::harness::{Daemon, Run, latchkey, secret_in, store_dir};

/// A command on the store at `db` directly (`--db`).
fn on(db: &Path, args: &[&str]) -> Run {
    Run::of(latchkey().arg("--db").arg(db).args(args))
}

/// The files of an embedded engine in a store's directory: what makes it that engine's.
fn engine_files(engine: &str) -> &'static [&'static str] {
    match engine {
        "sled" => &["conf", "db"],
        "redb" => &["latchkey.redb"],
        other => panic!("no engine {other}"),
    }
}

/// Asserts the directory holds a store of `engine`, and no file of the other.
#[track_caller]
fn assert_engine(db: &Path, engine: &str) {
    for (name, files) in [
        ("sled", engine_files("sled")),
        ("redb", engine_files("redb")),
    ] {
        for file in files {
            assert_eq!(
                db.join(file).exists(),
                name == engine,
                "{} in a {engine} store",
                db.join(file).display()
            );
        }
    }
}

/// Every file under `dir` with its bytes: to show that a refusal changed nothing.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::harness::below(dir)
        .into_iter()
        .filter(|path| !path.is_dir())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn a_sled_store_moved_to_redb_by_backup_and_restore_keeps_its_keys() {
    if directory_only("engines are for stores in a directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    let file = dir.path().join("store.backup");
    let file = file.to_str().unwrap();

    let init = on(&old, &["init", "--engine", "sled"]).ok();
    assert!(init.stdout.contains(" (sled)."), "{init:#?}");
    let admin = secret_in(&init.stdout).expect("init prints the admin key");
    assert_engine(&old, "sled");
    let shop: Vec<&str> = "users add --name shop --permissions orders:read"
        .split(' ')
        .collect();
    on(&old, &shop).ok();
    let key = |name: &str| {
        on(
            &old,
            &["--json", "keys", "add", "--name", name, "--user", "shop"],
        )
        .json()
    };
    let kept = key("kept")["secret"].as_str().unwrap().to_owned();
    let revoked = key("revoked");
    on(&old, &["keys", "revoke", revoked["id"].as_str().unwrap()]).ok();
    on(&old, &["backup", "--out", file]).ok();

    let restored = on(&new, &["--json", "restore", file, "--engine", "redb"]).json();
    assert_eq!(restored["engine"], "redb", "{restored}");
    assert_eq!(restored["chain_verified"], true, "{restored}");
    assert_engine(&new, "redb");

    // The daemon opens it as the redb store it is, and names its engine.
    let daemon = Daemon::start(&new);
    assert_eq!(daemon.admin_key, None, "a restored store is no new store");
    let log = daemon.log_with("latchkey daemon started");
    assert!(log.contains("engine=redb"), "{log}");
    let verify = |key: &str| {
        let answer = daemon.http(
            "POST",
            "/v1/verify",
            Some(&admin),
            Some(json!({"key": key, "permissions": ["orders:read"]})),
        );
        assert_eq!(answer.status, 200, "{answer:#?}");
        answer.body
    };
    let answer = verify(&kept);
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["principal"]["user_name"], "shop", "{answer}");
    let answer = verify(revoked["secret"].as_str().unwrap());
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["code"], "key_revoked", "{answer}");
    // The sled store is still there, as it was: a restore reads the file only.
    assert_engine(&old, "sled");
}

#[test]
fn the_other_engine_on_an_existing_store_is_refused_and_changes_nothing() {
    if directory_only("engines are for stores in a directory") {
        return;
    }
    for (made, other) in [("sled", "redb"), ("redb", "sled")] {
        for created_by in ["init", "serve"] {
            let (dir, db) = store_dir();
            let admin = match created_by {
                "init" => {
                    let run = on(&db, &["init", "--engine", made]).ok();
                    assert!(run.stdout.contains(&format!(" ({made}).")), "{run:#?}");
                    secret_in(&run.stdout)
                }
                _ => {
                    let daemon = Daemon::start_with(&db, &["--engine", made]);
                    assert!(
                        daemon.banner.contains(&format!(" ({made}).")),
                        "{daemon:#?}"
                    );
                    let log = daemon.log_with("latchkey daemon started");
                    assert!(log.contains(&format!("engine={made}")), "{log}");
                    let admin = daemon.admin_key.clone();
                    // A request served first: SIGTERM finds the daemon serving, past
                    // start-up (its signal handler in place), and ends it gracefully.
                    let served = daemon.http("GET", "/v1/users", admin.as_deref(), None);
                    assert_eq!(served.status, 200, "{served:#?}");
                    let (status, log) = daemon.stop();
                    assert!(status.success(), "{status:?}: {log}");
                    admin
                }
            }
            .expect("the admin key");
            assert_engine(&db, made);
            let before = contents(&db);

            let config = dir.path().join("latchkey.toml");
            std::fs::write(&config, format!("engine = \"{other}\"\n")).unwrap();
            let serve = ["serve", "--listen", "127.0.0.1:0"];
            let refused = [
                on(&db, &["init", "--engine", other]),
                on(&db, &[&serve[..], &["--engine", other]].concat()),
                Run::of(
                    latchkey()
                        .args(serve)
                        .arg("--db")
                        .arg(&db)
                        .env("LATCHKEY_ENGINE", other),
                ),
                // The suite's LATCHKEY_ENGINE would beat the file: removed.
                Run::of(
                    latchkey()
                        .args(serve)
                        .arg("--db")
                        .arg(&db)
                        .arg("--config")
                        .arg(&config)
                        .env_remove("LATCHKEY_ENGINE"),
                ),
            ];
            for run in refused {
                let line = run.fails(1, &format!("holds a {made} store"));
                assert!(
                    line.contains(&format!("restore FILE --engine {other}")),
                    "{line}"
                );
                assert!(run.stdout.is_empty(), "{run:#?}");
            }
            assert!(before == contents(&db), "a refusal changed the store");

            // It still opens with its own engine, its admin key in place.
            let daemon = Daemon::start_with(&db, &["--engine", made]);
            assert_eq!(daemon.admin_key, None);
            let answer = daemon.http("GET", "/v1/users", Some(&admin), None);
            assert_eq!(answer.status, 200, "{answer:#?}");
        }
    }
}

#[test]
fn an_engine_with_a_postgresql_db_is_refused_before_connecting() {
    let password = "pw-must-not-show";
    // Port 1 on loopback: nothing listens; the refusal comes before any connection.
    let url = format!("postgres://latchkey:{password}@127.0.0.1:1/latchkey");
    for args in [
        &["init", "--engine", "redb"][..],
        &["serve", "--listen", "127.0.0.1:0", "--engine", "sled"],
        &["restore", "store.backup", "--engine", "redb"],
    ] {
        let run = Run::of(latchkey().args(["--db", &url]).args(args));
        let line = run.fails(1, "an engine is chosen for a store in a directory only");
        assert!(line.contains("PostgreSQL"), "{line}");
        assert!(!line.contains(password), "{line}");
    }
}

/// redb asserts (panics) on some damage rather than returning an error, such as a file
/// cut shorter than its header says: the store reports it as damaged in its one line,
/// with no panic message before it.
#[test]
fn a_truncated_redb_file_is_refused_in_one_line() {
    if directory_only("engines are for stores in a directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    on(&db, &["init", "--engine", "redb"]).ok();
    let file = db.join("latchkey.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for args in [&["keys", "list"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let run = on(&db, args);
        let line = run.fails(1, "latchkey restore");
        assert!(line.contains("damaged"), "{line}");
    }
}
