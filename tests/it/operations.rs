//! Operations: a full disk, a damaged store at start, backup and restore, key import.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::backend::{database_file, directory_only, store_arg};
use crate::harness::{Daemon, Fixture, Run, latchkey, store_dir};

// The tmpfs helper of latchkey-core's full-disk test.
#[path = "../../crates/latchkey-core/tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;
// Backup files edited as someone hiding their last actions would.
#[path = "../../crates/latchkey-core/tests/support/edit_backup.rs"]
mod edit_backup;

/// A 32 MiB tmpfs for a store, or `None` (said why) on PostgreSQL or where mounting is
/// refused.
fn store_tmpfs(why: &str) -> Option<Tmpfs> {
    if directory_only(why) {
        return None;
    }
    Tmpfs::mount_or_skip("32m")
}

/// A daemon whose log cannot be written (its stderr on a full disk: `/dev/full`) answers
/// every request all the same, and its log lines are lost. tracing's writer reported its
/// own failed writes with `eprintln!`, which panicked the request's task: the connection
/// closed with no answer (operations hunt, F1).
#[test]
fn a_log_that_cannot_be_written_costs_no_answer() {
    let (_dir, db) = store_dir();
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut serve = latchkey();
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(store_arg(&db))
        .env("LATCHKEY_LOG", "info");
    let daemon = Daemon::spawn_logging_to(&mut serve, &db, Some(full));
    let admin = daemon
        .admin_key
        .clone()
        .expect("the first start prints the admin key");
    for _ in 0..20 {
        let answer = daemon.try_http("GET", "/v1/keys?limit=1", Some(&admin), None);
        let answer = answer.expect("an answer, though every log line fails");
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

#[test]
fn a_full_disk_answers_507_verification_goes_on_and_writes_come_back() {
    let Some(tmpfs) = store_tmpfs("the full disk is a tmpfs under the store's directory") else {
        return;
    };
    let db = tmpfs.path().join("store");
    let daemon = Daemon::start(&db);
    let admin = daemon.admin_key.clone().unwrap();
    let user = daemon.http(
        "POST",
        "/v1/users",
        Some(&admin),
        Some(json!({"name": "bot"})),
    );
    let user_id = user.body["id"].as_str().unwrap().to_owned();
    let new_key = json!({"name": "k", "user_id": user_id});
    let key = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key.clone()));
    assert_eq!(key.status, 201, "{}", key.text);
    let (key_id, secret) = (
        key.body["id"].as_str().unwrap(),
        key.body["secret"].as_str().unwrap(),
    );
    let audit_len = |daemon: &Daemon| {
        let audit = daemon.http("GET", "/v1/audit?limit=1000", Some(&admin), None);
        audit.body["items"].as_array().unwrap().len()
    };
    // A key that expires while the disk is full: the expiry sweep, a write, cannot run.
    daemon
        .cli_as(
            &admin,
            &[
                "keys",
                "add",
                "--name",
                "soon",
                "--user",
                "bot",
                "--expires-at",
                "2s",
            ],
        )
        .ok();
    let soon = std::time::Instant::now();
    let events = audit_len(&daemon);

    let filler = tmpfs.fill();
    let refused = |daemon: &Daemon| {
        let created = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key.clone()));
        created.problem(507, "storage_full");
        assert_eq!(
            created.headers["content-type"], "application/problem+json",
            "{}",
            created.text
        );
        let revoked = daemon.http(
            "POST",
            &format!("/v1/keys/{key_id}/revoke"),
            Some(&admin),
            None,
        );
        revoked.problem(507, "storage_full");
    };
    let verifies = |daemon: &Daemon| {
        let answer = daemon.http(
            "POST",
            "/v1/verify",
            Some(&admin),
            Some(json!({"key": secret})),
        );
        assert_eq!(answer.body["valid"], true, "{}", answer.text);
    };
    refused(&daemon);
    verifies(&daemon);
    assert_eq!(
        audit_len(&daemon),
        events,
        "a refused write changes nothing"
    );

    // A restart while the disk is full: it starts, serves verification, refuses writes.
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}; its log:\n{log}");
    let daemon = Daemon::start(&db);
    assert_eq!(daemon.admin_key, None, "{}", daemon.banner);
    verifies(&daemon);
    refused(&daemon);
    // Reads that sweep first answer as they are: monitoring matters most now.
    std::thread::sleep(std::time::Duration::from_secs(3).saturating_sub(soon.elapsed()));
    for path in ["/metrics", "/v1/keys?status=active"] {
        let read = daemon.http("GET", path, Some(&admin), None);
        assert_eq!(read.status, 200, "{path}: {}", read.text);
    }

    // Space comes back: writes work again without a restart.
    fs::remove_file(filler).unwrap();
    let created = daemon.http("POST", "/v1/keys", Some(&admin), Some(new_key));
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(audit_len(&daemon), events + 1);
    let chain = daemon.http("GET", "/v1/audit/verify", Some(&admin), None);
    assert_eq!(chain.status, 200, "{}", chain.text);
    assert!(chain.body["broken"].is_null(), "{}", chain.text);
}

#[test]
fn a_damaged_store_is_refused_at_start_and_never_reinitialised() {
    if directory_only("it damages the engine's files") {
        return;
    }
    let f = Fixture::new();
    f.user("bot", "");
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    let records = db.join(database_file());
    fs::remove_file(&records).unwrap();
    for args in [vec!["serve", "--listen", "127.0.0.1:0"], vec!["init"]] {
        let run = Run::of(latchkey().args(&args).arg("--db").arg(&db));
        let line = run.fails(1, "latchkey restore");
        assert!(line.contains(&db.display().to_string()), "{line}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        assert!(
            !run.stdout.contains("Secret"),
            "no new admin key: {}",
            run.stdout
        );
    }
    assert!(!records.exists(), "nothing re-created the store");
    assert!(
        !db.join("db").exists() && !db.join("latchkey.redb").exists(),
        "nor made another"
    );
    drop(dir);
}

/// A store's directory removed under the daemon (by hand, by a clean-up job) leaves the
/// engine writing into files no path leads to: writes are refused (they would be gone at the
/// next start), `/healthz` fails, an online backup still saves what the daemon holds, and
/// the stop says what was lost.
#[test]
fn a_store_directory_removed_under_the_daemon_refuses_writes_and_fails_health() {
    if directory_only("it removes the store's directory") {
        return;
    }
    let f = Fixture::new();
    let db = f.db();
    f.user("before", "");
    fs::remove_dir_all(&db).unwrap();
    f.cli(&["users", "add", "--name", "after"])
        .fails(1, "removed or replaced");
    let refused = f.http(
        "POST",
        "/v1/users",
        Some(serde_json::json!({"name": "later"})),
    );
    refused.problem(503, "keystore_unavailable");
    // Retrying will not help: no `Retry-After` to have clients retry for ever.
    assert!(refused.headers.get("retry-after").is_none(), "{refused:#?}");
    let health = f.daemon.http("GET", "/healthz", None, None);
    health.problem(503, "keystore_unavailable");
    assert!(health.headers.get("retry-after").is_none(), "{health:#?}");
    assert!(health.text.contains("removed or replaced"), "{health:#?}");
    let scrape = f.daemon.http("GET", "/metrics", None, None).text;
    assert!(scrape.contains("\nlatchkey_keystore_up 0\n"), "{scrape}");
    // What the daemon still holds is saved beside where the store was, at once.
    let rescued = || {
        let parent = db.parent().unwrap();
        fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.contains(".rescued-") && name.ends_with(".backup")
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let saved = loop {
        if let Some(saved) = rescued() {
            break saved;
        }
        assert!(std::time::Instant::now() < deadline, "no rescued backup");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let restored = f.dir.path().join("restored");
    let mut restore = latchkey();
    restore
        .arg("restore")
        .arg(&saved)
        .arg("--db")
        .arg(&restored);
    Run::of(&mut restore).ok();
    let Fixture { daemon, .. } = f;
    let (status, log) = daemon.stop();
    assert!(
        !status.success(),
        "no clean stop after losing the store: {log}"
    );
    let said = format!("saved in {}", saved.display());
    assert!(log.contains(&said), "{log}");
    assert!(!db.exists(), "nothing made a new store at its path");
    // Restarted (a service manager would: the stop failed), `serve` makes no empty store
    // in its place while the rescued backup lies beside it.
    let mut restart = Command::new("timeout");
    restart
        .arg("20")
        .arg(crate::harness::bin())
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let restarted = Run::of(restart.arg("--db").arg(&db));
    assert_eq!(restarted.code, 1, "{restarted:#?}");
    assert!(restarted.stderr.contains("rescued"), "{restarted:#?}");
    assert!(!db.exists(), "nothing made a new store at its path");
    let users = Run::of(
        latchkey()
            .args(["--json", "users", "list", "--db"])
            .arg(&restored),
    );
    let users = users.json();
    let has = |name: &str| {
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == name)
    };
    assert!(has("before") && !has("after"), "{users}");
}

#[test]
fn a_backup_during_writes_restores_every_acknowledged_write_as_a_new_lineage() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let f = Fixture::new();
    let file = f.dir.path().join("store.backup");
    let acknowledged = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let before = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Bounded: stopped once the backup is done, and at most this many writes.
            for i in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let created = f.http("POST", "/v1/users", Some(json!({"name": format!("u{i}")})));
                assert_eq!(created.status, 201, "{}", created.text);
                let id = created.body["id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push(id);
            }
        });
        // Bounded: the writer acknowledges a write every few milliseconds.
        for _ in 0..10_000 {
            if acknowledged.lock().unwrap().len() >= 20 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let before = acknowledged.lock().unwrap().clone();
        let run = f.cli(&["backup", "--out", file.to_str().unwrap()]).ok();
        assert!(run.stdout.contains("Backed up to"), "{run:#?}");
        stop.store(true, Ordering::Relaxed);
        before
    });
    assert!(before.len() >= 20);
    assert!(
        acknowledged.lock().unwrap().len() > before.len(),
        "writes went on"
    );

    let target = f.dir.path().join("restored");
    let restored = Run::of(
        latchkey()
            .arg("restore")
            .arg(&file)
            .arg("--db")
            .arg(store_arg(&target)),
    )
    .ok();
    assert!(
        restored.stdout.contains("The audit chain verifies"),
        "{restored:#?}"
    );
    // The file holds the store's hash key and every key's hash: its owner's only, as is a
    // restored directory, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    if target.is_dir() {
        assert_eq!(mode(&target), 0o700);
    }
    let daemon = Daemon::start(&target);
    assert_eq!(daemon.admin_key, None, "a restored store is no new store");
    for id in &before {
        let user = daemon.http("GET", &format!("/v1/users/{id}"), Some(&f.admin), None);
        assert_eq!(user.status, 200, "acknowledged before the backup: {id}");
    }
    let chain = daemon.http("GET", "/v1/audit/verify", Some(&f.admin), None);
    assert!(chain.body["broken"].is_null(), "{}", chain.text);

    // Never onto a store: refused, and the store still opens.
    let again = Run::of(
        latchkey()
            .arg("restore")
            .arg(&file)
            .arg("--db")
            .arg(store_arg(&target)),
    );
    again.fails(1, "empty");
    // A key without latchkey:backup cannot take one.
    f.user("reader", "latchkey:keys:read");
    let (_, weak) = f.key("reader", "weak", &[]);
    let refused = f.daemon.http("GET", "/v1/backup", Some(&weak), None);
    refused.problem(403, "insufficient_permission");
}

#[test]
fn a_backup_through_the_daemon_names_its_seq_past_a_partial_file_left_over() {
    let f = Fixture::new();
    f.user("bot", "");
    let out = f.dir.path().join("latchkey.backup");
    // What a run killed mid-download left when partial files had no name of their own,
    // and what one killed now leaves (under another day's name): a backup cut short.
    fs::write(f.dir.path().join("latchkey.backup.partial"), "cut short").unwrap();
    let killed = f.dir.path().join("yesterday.backup.0123456789ab.partial");
    fs::write(&killed, r#"{"format":"latchkey-backup","version":1,"seq"#).unwrap();
    let done = f.json(&["backup", "--out", out.to_str().unwrap()]);
    let bytes = fs::read(&out).unwrap();
    assert_eq!(done["bytes"], bytes.len(), "{done}");
    let end = bytes.iter().position(|b| *b == b'\n').unwrap();
    let header: serde_json::Value = serde_json::from_slice(&bytes[..end]).unwrap();
    assert!(
        header["seq"].as_u64().is_some_and(|seq| seq > 0),
        "{header}"
    );
    assert_eq!(done["seq"], header["seq"], "{done}");
    assert!(done["chain_breaks_at"].is_null(), "{done}");
    // This run's partial file is gone, and so is the killed one's; the old one, not named
    // as latchkey names them, is left to its owner.
    let partials: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert_eq!(partials, ["latchkey.backup.partial"]);
}

/// A backup through the daemon is copied into its temporary directory (`TMPDIR`) first: one
/// that cannot be written is named in the answer and the log, and one whose disk is full
/// answers 507 `storage_full`, as any write does; once there is room, backups work again.
#[test]
fn a_temporary_directory_that_takes_no_backup_copy_is_named() {
    let (dir, db) = store_dir();
    let tmpfs = Tmpfs::mount("8m");
    let tmp = match &tmpfs {
        Some(tmpfs) => tmpfs.path().join("tmp"),
        None => dir.path().join("tmp"),
    };
    let daemon = Daemon::spawn(
        latchkey()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(store_arg(&db))
            .env("LATCHKEY_LOG", "info")
            .env("TMPDIR", &tmp),
        &db,
    );
    let admin = daemon.admin_key.clone().unwrap();
    let backup = || daemon.http("GET", "/v1/backup", Some(&admin), None);
    // Not there (as a read-only one would be): a 500 that says where to look.
    let missing = backup();
    let detail = missing.problem(500, "internal")["detail"].as_str().unwrap();
    assert!(detail.contains("TMPDIR"), "{detail}");
    let log = daemon.log_with("could not be copied into the temporary directory");
    assert!(log.contains(tmp.to_str().unwrap()), "{log}");
    fs::create_dir(&tmp).unwrap();
    assert_eq!(backup().status, 200);
    let Some(tmpfs) = tmpfs else {
        eprintln!("full disk skipped: cannot mount a tmpfs here (the test needs root)");
        return;
    };
    let filler = tmpfs.fill();
    let full = backup();
    let detail = full.problem(507, "storage_full")["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("TMPDIR"), "{detail}");
    fs::remove_file(filler).unwrap();
    assert_eq!(backup().status, 200);
}

/// What answers `GET /v1/backup` with a 200 that is no backup (a proxy's page, a stream
/// cut short) is never named as one: the command fails and leaves no file.
#[test]
fn an_answer_that_is_no_whole_backup_is_never_named_one() {
    let f = Fixture::new();
    let file = f.dir.path().join("whole.backup");
    f.cli(&["backup", "--out", file.to_str().unwrap()]).ok();
    let whole = fs::read(&file).unwrap();
    let cut = whole[..whole.len() - 10].to_vec();
    for (name, body) in [("page", b"<html>sign in</html>".to_vec()), ("cut", cut)] {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.local_addr().unwrap());
        let answering = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let (stream, _) = server.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let mut stream = stream;
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        });
        let out = f.dir.path().join(format!("{name}.backup"));
        let run = Run::of(latchkey().args([
            "backup",
            "--out",
            out.to_str().unwrap(),
            "--url",
            &url,
            "--admin-key",
            &f.admin,
        ]));
        run.fails(1, "not a whole backup");
        answering.join().unwrap();
        assert!(!out.exists(), "{name}: no file named");
        let left = fs::read_dir(f.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count();
        assert_eq!(left, 0, "{name}: no partial file left");
    }
    // A failure before the download starts (a CA file that cannot be read): the same.
    let out = f.dir.path().join("early.backup");
    let missing = f.dir.path().join("missing-ca.pem");
    let run = Run::of(latchkey().args([
        "backup",
        "--out",
        out.to_str().unwrap(),
        "--url",
        "https://127.0.0.1:9",
        "--ca-cert",
        missing.to_str().unwrap(),
        "--admin-key",
        &f.admin,
    ]));
    assert_eq!(run.code, 1, "{run:#?}");
    let names: Vec<String> = fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("early"))
        .collect();
    assert!(names.is_empty(), "nothing left: {names:?}");
}

/// A proxy in the environment never sees the admin key: plain HTTP (here to loopback)
/// goes straight to the daemon, whatever `HTTP_PROXY` and `ALL_PROXY` say.
#[test]
fn the_cli_speaks_plain_http_to_the_daemon_never_through_a_proxy() {
    let f = Fixture::new();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let run = Run::of(
        latchkey()
            .args(["--json", "users", "list"])
            .env("LATCHKEY_URL", &f.daemon.url)
            .env("LATCHKEY_ADMIN_KEY", &f.admin)
            .env("HTTP_PROXY", &proxy_url)
            .env("http_proxy", &proxy_url)
            .env("ALL_PROXY", &proxy_url),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["items"][0]["name"], "admin");
    assert!(
        proxy.accept().is_err(),
        "the proxy was asked (it would have seen the admin key)"
    );
}

/// A daemon with a user, and its backup through the daemon in `name` in its directory.
fn backed_up(name: &str) -> (Fixture, std::path::PathBuf) {
    let f = Fixture::new();
    f.user("bot", "");
    let file = f.dir.path().join(name);
    f.cli(&["backup", "--out", file.to_str().unwrap()]).ok();
    (f, file)
}

#[test]
fn an_offline_backup_holds_what_the_daemon_serves() {
    let (f, online) = backed_up("online.backup");
    let exists = f.cli(&["backup", "--out", online.to_str().unwrap()]);
    exists.fails(1, "already exists");
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    let offline = dir.path().join("offline.backup");
    Run::of(
        latchkey()
            .args(["--db"])
            .arg(store_arg(&db))
            .args(["backup", "--out"])
            .arg(&offline),
    )
    .ok();
    // The same store at the same change (usage figures, persisted at shutdown, differ).
    let header = |file: &Path| {
        let bytes = fs::read(file).unwrap();
        let end = bytes.iter().position(|b| *b == b'\n').unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes[..end]).unwrap()
    };
    let (online, offline) = (header(&online), header(&offline));
    assert_eq!(online, offline);
    assert_eq!(online["format"], "latchkey-backup");

    // A restore killed midway left its unfinished copy beside the store: the next restore
    // into that store removes it, says so, and restores.
    if directory_only("a restore's staging directory") {
        return;
    }
    let target = dir.path().join("restored");
    let left = dir
        .path()
        .join("restored.restoring-01a2473e0c5a7e3b9f6e2d1c0b9a8f7e");
    fs::create_dir(&left).unwrap();
    let restore =
        |file: &Path| Run::of(latchkey().arg("restore").arg(file).arg("--db").arg(&target)).ok();
    let run = restore(&dir.path().join("offline.backup"));
    assert!(run.stderr.contains(left.to_str().unwrap()), "{run:#?}");
    assert!(run.stderr.contains("stopped midway"), "{run:#?}");
    assert!(!left.exists(), "{run:#?}");
    assert!(target.join("conf").exists() || target.join("latchkey.redb").exists());
}

#[test]
fn a_restore_onto_a_nearly_full_disk_warns_of_nothing_it_did_not_lose() {
    let Some(tmpfs) = store_tmpfs("the nearly full disk is a tmpfs") else {
        return;
    };
    let (dir, source) = store_dir();
    Run::of(latchkey().arg("--db").arg(&source).arg("init")).ok();
    let backup = dir.path().join("store.backup");
    Run::of(
        latchkey()
            .arg("--db")
            .arg(&source)
            .args(["backup", "--out"])
            .arg(&backup),
    )
    .ok();
    // 6 MiB left: room for the restore, below the 8 MiB reserve of a store at close.
    tmpfs.fill_leaving(6 << 20);
    let target = tmpfs.path().join("restored");
    let run = Run::of(
        latchkey()
            .arg("restore")
            .arg(&backup)
            .arg("--db")
            .arg(&target),
    )
    .ok();
    // A restore counts no usage: a warning that usage figures were not persisted would be
    // about nothing (it was said twice, once at the flush and once at the close).
    assert!(!run.stderr.contains("not persisted"), "{run:#?}");
    assert!(!run.stderr.contains("the disk is full"), "{run:#?}");
}

#[test]
fn a_backup_without_its_newest_event_restores_nothing_on_any_backend() {
    let (f, good) = backed_up("good.backup");
    let cut = f.dir.path().join("cut.backup");
    fs::write(
        &cut,
        edit_backup::without_newest_event(&fs::read(&good).unwrap()),
    )
    .unwrap();
    let (_target_dir, target) = store_dir();
    let restore = |file: &Path, extra: &[&str]| {
        Run::of(
            latchkey()
                .arg("restore")
                .arg(file)
                .args(extra)
                .arg("--db")
                .arg(store_arg(&target)),
        )
    };
    restore(&cut, &[]).fails(1, "an event is missing");
    restore(&cut, &["--keep-broken-chain"]).fails(1, "is missing or damaged");
    // Nothing was left: the whole backup restores into the same place, and verifies.
    let run = restore(&good, &[]).ok();
    assert!(run.stdout.contains("The audit chain verifies"), "{run:#?}");
}

/// The hex SHA-256 of each text, from the system's `sha256sum`, so that the test does not
/// share latchkey's code.
fn sha256_hex(texts: &[String]) -> Vec<String> {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let path = dir.path().join(format!("{i}"));
        fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        paths.push(path);
    }
    let mut digests = Vec::new();
    for batch in paths.chunks(2_000) {
        let output = Command::new("sha256sum").args(batch).output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        digests.extend(text.lines().map(|l| l[..64].to_owned()));
    }
    digests
}

#[test]
fn ten_thousand_keys_of_each_kind_import_and_verify_under_their_old_text() {
    // Not about sled, but too slow on PostgreSQL for CI today: the import writes (and
    // re-hashes) key by key, each a round trip, and ran past 10 minutes there.
    if directory_only(
        "20,000 imported keys take over 10 minutes on PostgreSQL (a round trip per key)",
    ) {
        return;
    }
    let f = Fixture::new();
    f.user("legacy", "orders:read");
    let full: Vec<String> = (0..10_000).map(|i| format!("sk_live_{i:026}")).collect();
    let hashed: Vec<String> = (0..10_000).map(|i| format!("unkey_{i:030}")).collect();
    let digests = sha256_hex(&hashed);
    let mut lines: Vec<String> = full.iter().map(|k| json!({"key": k}).to_string()).collect();
    lines.extend(
        digests
            .iter()
            .map(|d| json!({"sha256": d, "prefix": "unkey", "name": "from unkey"}).to_string()),
    );
    // Line 5,001 is not JSON and line 5,002 has a bad digest: both refused, nothing else.
    lines.insert(5_000, "{not json".to_owned());
    lines.insert(5_001, json!({"sha256": "abc", "prefix": "x"}).to_string());
    let file = f.dir.path().join("keys.jsonl");
    fs::write(&file, lines.join("\n")).unwrap();

    let run = import_as_json(&f, &file, "legacy");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], 20_000);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0]["line"], 5_001);
    assert_eq!(rejected[0]["code"], "invalid_line");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("not JSON"));
    assert_eq!(rejected[1]["line"], 5_002);
    assert_eq!(rejected[1]["code"], "invalid_field");
    assert_eq!(rejected[1]["field"], "sha256");
    assert!(rejected[1]["reason"].as_str().unwrap().contains("sha256"));
    // Each key imported, by its line: the record a script goes on with.
    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 20_000);
    assert_eq!(keys[5_000]["line"], 5_003, "{}", keys[5_000]);
    let id = keys[5_000]["id"].as_str().unwrap();
    let shown = f.json(&["keys", "show", id]);
    assert_eq!(shown["prefix"], keys[5_000]["prefix"], "{shown}");

    let admin = f.admin.clone();
    let verifies = |daemon: &Daemon, key: &str| {
        let answer = daemon.http(
            "POST",
            "/v1/verify",
            Some(&admin),
            Some(json!({"key": key, "permissions": ["orders:read"]})),
        );
        answer.body["valid"] == true
    };
    // Every 50th of each kind (the SHA-256 ones are re-hashed at this first use), and a
    // text that was never imported.
    for key in full.iter().chain(&hashed).step_by(50) {
        assert!(verifies(&f.daemon, key), "{key} does not verify");
    }
    assert!(!verifies(&f.daemon, "sk_live_never_imported_000000"));

    // `--db` runs the same handler.
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    let small = dir.path().join("small.jsonl");
    fs::write(
        &small,
        json!({"key": "gh_pat_0123456789abcdefghij"}).to_string(),
    )
    .unwrap();
    let direct = Run::of(
        latchkey()
            .arg("--db")
            .arg(store_arg(&db))
            .args(["keys", "import"])
            .arg(&small)
            .args(["--user", "legacy"]),
    )
    .ok();
    assert!(direct.stdout.contains("Imported 1 key for"), "{direct:#?}");
    let daemon = Daemon::start(&db);
    let answer = daemon.http(
        "POST",
        "/v1/verify",
        Some(&admin),
        Some(json!({"key": "gh_pat_0123456789abcdefghij"})),
    );
    assert_eq!(answer.body["valid"], true, "{}", answer.text);
    assert_eq!(answer.body["principal"]["prefix"], "gh_pat");
    // The hashed ones verified before the restart were re-hashed; they still verify.
    assert!(verifies(&daemon, &hashed[0]));
}

#[test]
fn imported_keys_pass_the_layer_with_their_users_permissions() {
    let f = Fixture::new();
    f.user("reader", "latchkey:keys:read");
    let full = "ext_live_0123456789abcdefXYZ".to_owned();
    let hashed = "ext_hash_9876543210zyxwvuABC".to_owned();
    let digest = &sha256_hex(std::slice::from_ref(&hashed))[0];
    let file = f.dir.path().join("keys.jsonl");
    let lines = [
        json!({"key": full, "meta": {"plan": "legacy"}}).to_string(),
        json!({"sha256": digest, "prefix": "ext_hash"}).to_string(),
    ];
    fs::write(&file, lines.join("\n")).unwrap();
    let run = f
        .cli(&["keys", "import", file.to_str().unwrap(), "--user", "reader"])
        .ok();
    assert!(run.stdout.contains("Imported 2 keys"), "{run:#?}");
    // `meta` came through the CLI and the API to the key, and goes to the app.
    let verified = f.daemon.http(
        "POST",
        "/v1/verify",
        Some(&f.admin),
        Some(json!({"key": full})),
    );
    assert_eq!(
        verified.body["principal"]["meta"],
        json!({"plan": "legacy"}),
        "{}",
        verified.text
    );
    // Twice each: the SHA-256 one is re-hashed at its first use.
    for key in [&full, &hashed, &full, &hashed] {
        let listed = f.daemon.http("GET", "/v1/keys", Some(key), None);
        assert_eq!(listed.status, 200, "{}", listed.text);
        let created = f
            .daemon
            .http("POST", "/v1/users", Some(key), Some(json!({"name": "x"})));
        created.problem(403, "insufficient_permission");
    }
    let unknown = f.daemon.http(
        "GET",
        "/v1/keys",
        Some("ext_live_0123456789abcdefXYQ"),
        None,
    );
    unknown.problem(401, "invalid_key");
    // Counted in /metrics like any verification: eight imported ones passed (with the
    // admin's own), and the unknown text is the only failure.
    let metrics = f.daemon.http("GET", "/metrics", None, None).text;
    let count = |code: &str| -> u64 {
        let series = format!("latchkey_verifications_total{{code=\"{code}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.and_then(|l| l[series.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert_eq!(count("invalid_key"), 1, "{metrics}");
    assert!(count("ok") >= 8, "{metrics}");
}

#[test]
fn an_import_never_takes_what_passes_for_a_native_key() {
    let f = Fixture::new();
    f.user("legacy", "orders:read");
    // The admin's key with its last character changed: a wrong checksum.
    let mut mistyped = f.admin.clone();
    let last = if mistyped.ends_with('A') { "B" } else { "A" };
    mistyped.replace_range(mistyped.len() - 1.., last);
    let shown = &f.admin[..f.admin.len() - 39];
    let digest = &sha256_hex(&["ext_0123456789abcdefXYZ".to_owned()])[0];
    let lines = [
        json!({"key": mistyped}).to_string(),
        json!({"sha256": digest, "prefix": shown.to_ascii_uppercase()}).to_string(),
        json!({"key": "ext_live_0123456789abcdefXYZ"}).to_string(),
    ];
    let file = f.dir.path().join("keys.jsonl");
    fs::write(&file, lines.join("\n")).unwrap();
    let run = import_as_json(&f, &file, "legacy");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], 1, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0]["line"], 1);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("latchkey key"),
        "{rejected:?}"
    );
    assert_eq!(rejected[1]["line"], 2);
    assert!(
        rejected[1]["reason"].as_str().unwrap().contains("prefix"),
        "{rejected:?}"
    );
    assert!(!run.stdout.contains(&mistyped) && !run.stderr.contains(&mistyped));
    // The mistyped text authenticates as nothing.
    let answer = f.daemon.http("GET", "/v1/keys", Some(&mistyped), None);
    answer.problem(401, "invalid_key");
}

/// `latchkey --json keys import FILE --user USER`.
fn import_as_json(f: &Fixture, file: &Path, user: &str) -> Run {
    f.cli(&[
        "--json",
        "keys",
        "import",
        file.to_str().unwrap(),
        "--user",
        user,
    ])
}

/// An import line of exactly `len` bytes as the request body holds it (compact JSON): a
/// key with many long `scopes` and up to 4 KiB of `meta`.
fn import_line(i: usize, len: usize) -> String {
    let scopes: Vec<String> = (0..40)
        .map(|j| format!("orders:p{j:02}:{}", "a".repeat(100)))
        .collect();
    let line = |note: &str| {
        json!({"key": format!("sk_live_{i:024}"), "scopes": scopes, "meta": {"note": note}})
            .to_string()
    };
    let note = "n".repeat(len - line("").len());
    assert!(note.len() < 4_000, "meta stays under its 4 KiB");
    let text = line(&note);
    assert_eq!(text.len(), len);
    text
}

/// Eight lines of 8,190 bytes: the CLI sends them in two requests, each under the API's
/// 64 KiB body limit (it used to check the size after adding a line, and sent all eight
/// in one body of over 64 KiB, answered 413).
#[test]
fn an_import_of_long_lines_stays_under_the_body_limit() {
    let f = Fixture::new();
    f.user("legacy", "orders:read");
    let lines: Vec<String> = (0..8).map(|i| import_line(i, 8_190)).collect();
    let file = f.dir.path().join("long.jsonl");
    fs::write(&file, lines.join("\n")).unwrap();
    let run = import_as_json(&f, &file, "legacy");
    assert_eq!(run.code, 0, "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], 8, "{report}");
    assert_eq!(report["rejected"], json!([]), "{report}");
}

/// A daemon that takes a request to `/v1/keys/import` and hangs up without an answer may
/// have imported it all the same: the run says its lines are not known either way, never
/// that they were not imported (import hunt I1: it said "Not imported", and the run again
/// answered "already imported"). Here a fake daemon answers the first request (lines 1-7)
/// and hangs up on the second (lines 8-9) once it has read it whole.
#[test]
fn an_import_whose_answer_is_lost_says_its_lines_are_not_known() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..9).map(|i| import_line(i, 8_190)).collect();
    let file = dir.path().join("lost.jsonl");
    fs::write(&file, lines.join("\n")).unwrap();
    for json in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let daemon = std::thread::spawn(move || {
            for answer in [true, false] {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(&stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let items = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["items"]
                    .as_array()
                    .unwrap()
                    .len();
                if !answer {
                    return items;
                }
                let imported: Vec<_> = (0..items)
                    .map(|index| {
                        let id = format!("0190c0de-0000-7000-8000-{index:012}");
                        json!({"index": index, "id": id, "prefix": "sk_live"})
                    })
                    .collect();
                let report = json!({"imported": imported, "rejected": []}).to_string();
                write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{report}",
                    report.len()
                )
                .unwrap();
            }
            unreachable!()
        });
        let args = ["keys", "import", file.to_str().unwrap(), "--user", "legacy"];
        let json_flag = &["--json"][..usize::from(json)];
        let run = Run::of(
            latchkey().args(
                [
                    json_flag,
                    &args[..],
                    &["--url", &url, "--admin-key", "lk_live_x"],
                ]
                .concat(),
            ),
        );
        assert_eq!(
            daemon.join().unwrap(),
            2,
            "lines 8 and 9 went in the second request"
        );
        assert_eq!(run.code, 1, "{run:#?}");
        let error = run.stderr.lines().find(|l| l.starts_with("error: "));
        assert!(
            error.is_some_and(
                |e| e.contains("whether lines 8-9 were imported is not known")
                    && e.contains("no line after 9 was")
                    && e.contains("importing again from line 8")
            ),
            "{run:#?}"
        );
        if json {
            let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(report["imported"], 7, "{report}");
            assert_eq!(report["imported_lines"], json!([[1, 7]]), "{report}");
            assert_eq!(report["unknown_lines"], json!([8, 9]), "{report}");
            assert_eq!(report["not_imported_from_line"], 8, "{report}");
        } else {
            assert!(run.stdout.contains("Lines imported: 1-7."), "{run:#?}");
            assert!(
                run.stdout.contains("Not known whether imported: lines 8-9"),
                "{run:#?}"
            );
            assert!(
                run.stdout.contains("Not imported: any line after 9."),
                "{run:#?}"
            );
            assert!(!run.stdout.contains("line 8 and after"), "{run:#?}");
        }
    }
}

/// A line as long as the API takes an item (256 scopes of 128 bytes: about 34 KB) is read
/// and imported: the CLI refused lines over 8 KiB.
#[test]
fn an_import_line_as_long_as_the_api_takes_is_read() {
    let f = Fixture::new();
    let scopes: Vec<String> = (0..256)
        .map(|j| format!("orders:p{j:03}:{}", "a".repeat(116)))
        .collect();
    f.user("legacy", "orders:read");
    let line = json!({"key": "sk_live_0123456789abcdefLONGLINE", "scopes": scopes});
    let line = line.to_string();
    assert!(line.len() > 32_000, "{}", line.len());
    let file = f.dir.path().join("long.jsonl");
    fs::write(&file, line).unwrap();
    let run = import_as_json(&f, &file, "legacy");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], 1, "{report}");
}

/// A request that fails midway (here: the daemon refuses the second request whole) ends
/// the run with exit 1; it says which lines the earlier requests imported and from which
/// line on nothing was, and those keys are in the store.
#[test]
fn an_import_stopped_by_a_failing_request_reports_what_was_imported() {
    let f = Fixture::new();
    f.user("legacy", "orders:read");
    let mut lines: Vec<String> = (0..7).map(|i| import_line(i, 8_190)).collect();
    // Line 8 is a request of its own (the first seven fill one): its item is nested as
    // deep as the CLI reads (127 levels), two more than the daemon reads inside a body,
    // so the daemon refuses the whole request with 400, and line 9 with it.
    let nested = format!("{}{}", "[".repeat(125), "]".repeat(125));
    lines.push(format!(
        r#"{{"key": "sk_live_{:024}", "meta": {{"deep": {nested}}}}}"#,
        7
    ));
    lines.push(json!({"key": format!("sk_live_{:024}", 8)}).to_string());
    let file = f.dir.path().join("stopped.jsonl");
    fs::write(&file, lines.join("\n")).unwrap();
    let args = ["keys", "import", file.to_str().unwrap(), "--user", "legacy"];

    let run = f.cli(&args);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("Imported 7 keys"), "{run:#?}");
    assert!(run.stdout.contains("Lines imported: 1-7."), "{run:#?}");
    assert!(
        run.stdout.contains("Not imported: line 8 and after."),
        "{run:#?}"
    );
    let error = run.stderr.lines().find(|l| l.starts_with("error: "));
    assert!(
        error.is_some_and(|e| e.contains("lines from 8 on were not imported")),
        "{run:#?}"
    );
    for i in 0..9 {
        let key = format!("sk_live_{i:024}");
        assert_eq!(f.verifies(&key, &[]), i < 7, "line {}", i + 1);
    }

    // The same with --json; the first seven are refused now, as already imported.
    let run = f.cli(&[&["--json"], &args[..]].concat());
    assert_eq!(run.code, 1, "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["imported"], 0, "{report}");
    assert_eq!(report["rejected"].as_array().unwrap().len(), 7, "{report}");
    let refusal = report["rejected"][0].to_string();
    assert!(refusal.contains("is already imported"), "{refusal}");
    assert!(!refusal.contains("named"), "{refusal}");
    assert_eq!(report["imported_lines"], json!([]), "{report}");
    assert_eq!(report["not_imported_from_line"], 8, "{report}");

    // Stopped before any line was taken: its error alone, with no report of nothing.
    for json in [false, true] {
        let no_user = [&args[..3], &["--user", "nosuch"]].concat();
        let run = f.cli(&[&["--json"][..usize::from(json)], &no_user[..]].concat());
        run.fails(1, "lines from 1 on were not imported");
        assert_eq!(run.stdout, "", "{run:#?}");
    }
}
