//! `serve` and `init` at start: a start that cannot succeed (plain HTTP off loopback, a
//! port taken, TLS files unreadable) creates nothing and prints no key; `--admin-key-file`
//! writes the first admin key to a new 0600 file instead of stdout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use latchkey_core::ApiKey;
use serde_json::Value;

use crate::backend::store_arg;
use crate::harness::{Daemon, Run, latchkey, secret_in, store_dir};
use crate::remote::Proc;

/// `latchkey serve --db <db>` with these arguments, run to its (failing) end.
fn serve_fails(db: &Path, args: &[&str]) -> Run {
    Run::of(
        latchkey()
            .arg("serve")
            .arg("--db")
            .arg(store_arg(db))
            .args(args),
    )
}

/// Asserts that nothing was created at `paths` and that no key was printed.
#[track_caller]
fn nothing_created(run: &Run, paths: &[&Path]) {
    for path in paths {
        assert!(!path.exists(), "{} was created: {run:#?}", path.display());
    }
    assert!(
        secret_in(&run.stdout).is_none(),
        "a key was printed: {run:#?}"
    );
    assert!(run.stdout.trim().is_empty(), "{run:#?}");
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused_at_start() {
    let (_dir, db) = store_dir();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let run = serve_fails(&db, &["--listen", listen]);
        let line = run.fails(1, "not a loopback address");
        assert!(
            line.contains("--insecure-http") && line.contains("--tls-cert"),
            "{line}"
        );
        nothing_created(&run, &[&db]);
    }
    // The metrics listener obeys the same rule.
    let run = serve_fails(
        &db,
        &["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"],
    );
    run.fails(1, "not a loopback address");
    nothing_created(&run, &[&db]);

    // With --insecure-http (a TLS-terminating proxy in front) it serves.
    let mut command = latchkey();
    command
        .args(["serve", "--insecure-http", "--listen", "0.0.0.0:0", "--db"])
        .arg(store_arg(&db));
    let daemon = Proc::spawn(command);
    let port = daemon.addr.port();
    let health = reqwest_get(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(health, 200);
}

fn reqwest_get(url: &str) -> u16 {
    crate::harness::install_crypto_provider();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .expect("an answer")
        .status()
        .as_u16()
}

#[test]
fn serve_on_a_taken_port_creates_nothing_and_prints_no_key() {
    let (dir, db) = store_dir();
    let key_file = dir.path().join("admin.key");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = serve_fails(
        &db,
        &[
            "--listen",
            &addr,
            "--admin-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    run.fails(1, "cannot listen on");
    nothing_created(&run, &[&db, &key_file]);

    // The metrics port taken: the same.
    let run = serve_fails(&db, &["--listen", "127.0.0.1:0", "--metrics-listen", &addr]);
    run.fails(1, "cannot listen on");
    nothing_created(&run, &[&db]);

    // The metrics port the API's own: said so, not as a port someone else holds.
    drop(taken);
    let run = serve_fails(&db, &["--listen", &addr, "--metrics-listen", &addr]);
    run.fails(1, "--listen's address");
    nothing_created(&run, &[&db]);
}

/// A `--db` (or `LATCHKEY_DB`, or the file's `db`) that names a database in another way
/// than a `postgres://` URL (a libpq connection string, a mistyped scheme) is refused: it is
/// not taken for a directory and made into a new store, and its text, password and all, is
/// never repeated.
#[test]
fn a_db_that_is_no_postgres_url_is_refused_and_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let password = "pw-never-shown";
    let texts = [
        format!("host=db.internal user=lk password={password} dbname=keys"),
        format!("postgress://lk:{password}@db.internal/keys"),
        format!("jdbc:postgresql://db.internal/keys?password={password}"),
    ];
    for text in &texts {
        for how in ["flag", "env", "file"] {
            let mut command = latchkey();
            command.current_dir(dir.path());
            match how {
                "flag" => command.args(["serve", "--db", text]),
                "env" => command.env("LATCHKEY_DB", text).arg("serve"),
                _ => {
                    let file = dir.path().join("latchkey.toml");
                    std::fs::write(&file, format!("db = {text:?}\n")).unwrap();
                    command.args(["serve", "--config", file.to_str().unwrap()])
                }
            };
            let run = Run::of(command.args(["--listen", "127.0.0.1:0"]));
            let line = run.fails(1, "not a store location");
            assert!(!run.stderr.contains(password), "{how}: {run:#?}");
            assert!(!run.stdout.contains(password), "{how}: {run:#?}");
            assert!(line.contains("db"), "{how}: names the setting: {line}");
        }
    }
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "latchkey.toml")
        .collect();
    assert!(made.is_empty(), "nothing made: {made:?}");
}

#[test]
fn unreadable_tls_files_create_nothing() {
    let (dir, db) = store_dir();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let run = serve_fails(
        &db,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            missing,
            "--tls-key",
            missing,
        ],
    );
    run.fails(1, "cannot read the TLS certificate");
    nothing_created(&run, &[&db]);

    // A certificate without its key (by flag, variable or file) is refused in one line.
    let run = serve_fails(&db, &["--tls-cert", missing]);
    run.fails(
        1,
        "TLS needs both a certificate (--tls-cert) and its key (--tls-key)",
    );
    nothing_created(&run, &[&db]);

    // A file that is not PEM.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let junk = junk.to_str().unwrap();
    let run = serve_fails(&db, &["--tls-cert", junk, "--tls-key", junk]);
    run.fails(1, "no PEM certificate");
    nothing_created(&run, &[&db]);
}

/// The mode bits of a file.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn serve_writes_the_first_admin_key_to_a_0600_file_instead_of_printing_it() {
    let (dir, db) = store_dir();
    let key_file = dir.path().join("admin.key");
    let daemon = Daemon::start_with(&db, &["--admin-key-file", key_file.to_str().unwrap()]);
    assert!(daemon.admin_key.is_none(), "{}", daemon.banner);
    assert!(
        daemon.banner.contains("Secret written to"),
        "{}",
        daemon.banner
    );
    assert_eq!(mode(&key_file), 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key.trim();
    let parsed = ApiKey::parse(key).expect("the file holds the key alone");
    assert!(
        !daemon.banner.contains(parsed.secret()),
        "{}",
        daemon.banner
    );
    // The display prefix is shown; the key works.
    assert!(
        daemon.banner.contains(parsed.display_prefix()),
        "{}",
        daemon.banner
    );
    daemon.cli_as(key, &["users", "list"]).ok();
    drop(daemon);

    // A restart with the same command line (a unit's, a container's): the store exists, so
    // the file is neither needed nor touched, and the daemon starts.
    let daemon = Daemon::start_with(&db, &["--admin-key-file", key_file.to_str().unwrap()]);
    assert!(daemon.banner.trim().is_empty(), "{}", daemon.banner);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    daemon.cli_as(key, &["users", "list"]).ok();
    drop(daemon);

    // Nor does a restart naming another file make one.
    let second = dir.path().join("second.key");
    let daemon = Daemon::start_with(&db, &["--admin-key-file", second.to_str().unwrap()]);
    assert!(!second.exists());
    assert!(daemon.banner.trim().is_empty(), "{}", daemon.banner);
}

/// A store made in a directory that already exists, open to others (0755), keeps the
/// directory's mode but none of its files is readable by another user: they hold the
/// hashing key and every key's hash. So for `init`, a daemon's writes, a backup and a
/// restore into such a directory.
#[test]
fn a_store_s_files_are_its_owner_s_only_in_an_open_directory() {
    if crate::backend::directory_only("a store's files") {
        return;
    }
    let (dir, _) = store_dir();
    let open_dir = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let shared = |root: &Path| -> Vec<(PathBuf, u32)> {
        let below = crate::harness::below(root).into_iter();
        below
            .map(|p| (mode(&p), p))
            .filter(|(m, _)| m & 0o077 != 0)
            .map(|(m, p)| (p, m))
            .collect()
    };
    let db = open_dir("store");
    let key_file = dir.path().join("admin.key");
    Run::of(
        latchkey()
            .args(["init", "--db"])
            .arg(&db)
            .arg("--admin-key-file")
            .arg(&key_file),
    )
    .ok();
    let daemon = Daemon::start(&db);
    let admin = std::fs::read_to_string(&key_file).unwrap();
    daemon
        .cli_as(admin.trim(), &["users", "add", "--name", "bot"])
        .ok();
    let backup = dir.path().join("store.backup");
    let out = backup.to_str().unwrap();
    daemon.cli_as(admin.trim(), &["backup", "--out", out]).ok();
    drop(daemon);
    assert_eq!(mode(&db), 0o755, "the directory keeps its mode");
    assert_eq!(shared(&db), Vec::<(PathBuf, u32)>::new());
    assert_eq!(mode(&backup) & 0o077, 0, "the backup");
    let restored = open_dir("restored");
    Run::of(
        latchkey()
            .arg("restore")
            .arg(&backup)
            .arg("--db")
            .arg(&restored),
    )
    .ok();
    assert_eq!(mode(&restored), 0o755);
    assert_eq!(shared(&restored), Vec::<(PathBuf, u32)>::new());
}

#[test]
fn init_writes_the_admin_key_to_a_new_0600_file() {
    let (dir, db) = store_dir();
    let key_file = dir.path().join("admin.key");
    let init = |db: &Path, file: &Path, json: bool| {
        let mut command = latchkey();
        if json {
            command.arg("--json");
        }
        Run::of(
            command
                .args(["init", "--db"])
                .arg(store_arg(db))
                .arg("--admin-key-file")
                .arg(file),
        )
    };
    let record = init(&db, &key_file, true).json();
    assert!(record.get("secret").is_none(), "{record}");
    assert_eq!(record["secret_file"], key_file.display().to_string());
    assert_eq!(mode(&key_file), 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(ApiKey::parse(key.trim()).is_ok());
    assert_eq!(
        record["prefix"],
        ApiKey::parse(key.trim()).unwrap().display_prefix()
    );

    // An existing file is never overwritten, and then no store is created either.
    let other_db = dir.path().join("other");
    let run = init(&other_db, &key_file, false);
    run.fails(1, "cannot create the admin key file");
    nothing_created(&run, &[&other_db]);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert!(!run.stderr.contains("is empty"), "{run:#?}");

    // An empty one, as a start killed before writing its key leaves, is named as such.
    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, "").unwrap();
    let run = init(&other_db, &empty, false);
    run.fails(
        1,
        "empty.key is empty: a start stopped before writing its key",
    );
    nothing_created(&run, &[&other_db]);

    // Human output: where the key went, never the key.
    let third = dir.path().join("third.key");
    let run = init(&dir.path().join("third"), &third, false).ok();
    let key = std::fs::read_to_string(&third).unwrap();
    assert!(!run.stdout.contains(key.trim()), "{run:#?}");
    assert!(run.stdout.contains("Secret written to"), "{run:#?}");
}

#[test]
fn a_cache_size_out_of_range_is_refused_at_start_and_a_small_one_serves() {
    let (dir, db) = store_dir();
    let run = serve_fails(&db, &["--cache-mib", "0"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--cache-mib"), "{run:#?}");
    assert!(!run.stderr.contains("environment"), "{run:#?}");
    nothing_created(&run, &[&db]);
    // From the environment, the error says which variable held it.
    let run = Run::of(
        latchkey()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env("LATCHKEY_CACHE_MIB", "0"),
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("environment variable LATCHKEY_CACHE_MIB"),
        "{run:#?}"
    );
    nothing_created(&run, &[&db]);

    let config = dir.path().join("latchkey.toml");
    std::fs::write(&config, "cache_mib = 70000\n").unwrap();
    let run = serve_fails(&db, &["--config", config.to_str().unwrap()]);
    run.fails(1, "invalid cache_mib 70000: expected 1 to 65536");
    nothing_created(&run, &[&db]);

    std::fs::write(&config, "cache_mib = 16\n").unwrap();
    let daemon = Daemon::start_with(&db, &["--config", config.to_str().unwrap()]);
    let port = daemon.url.rsplit(':').next().unwrap();
    assert_eq!(
        reqwest_get(&format!("http://127.0.0.1:{port}/healthz")),
        200
    );
}

#[test]
fn a_sigterm_right_after_listening_on_stops_it_gracefully() {
    let (_dir, db) = store_dir();
    // The signal handlers are in place before `listening on` is printed: a SIGTERM at once
    // is a graceful stop (the store flushed, exit 0), never the signal's default death.
    for _ in 0..2 {
        let (status, log) = Daemon::start(&db).stop();
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("store flushed"), "{log}");
    }
}

#[test]
fn serve_json_prints_json_throughout() {
    let (_dir, db) = store_dir();
    let mut child = latchkey()
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--db"])
        .arg(store_arg(&db))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    // JSON lines: a plain `listening on` line, or a document over several lines, would end
    // it in an error.
    let stdout = std::io::BufReader::new(guard.0.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout);
    let mut next = || {
        let line = lines.next().expect("a line").unwrap();
        serde_json::from_str::<Value>(&line).expect("a JSON document on one line")
    };
    let admin = next();
    assert!(admin["secret"].is_string(), "{admin}");
    let metrics = next();
    let metrics = metrics["metrics_listening"]
        .as_str()
        .expect("metrics_listening");
    let listening = next();
    let listening = listening["listening"].as_str().expect("listening");
    assert_eq!(reqwest_get(&format!("http://{listening}/healthz")), 200);
    assert_eq!(reqwest_get(&format!("http://{metrics}/metrics")), 200);
}

/// Kills (SIGKILL) and reaps a child when dropped, failing test or not.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sighup_is_logged_and_the_daemon_serves_on() {
    let (_dir, db) = store_dir();
    let daemon = Daemon::start(&db);
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let log = daemon.log_with("SIGHUP ignored");
    assert!(log.contains("SIGHUP ignored"), "{log}");
    assert_eq!(reqwest_get(&format!("{}/healthz", daemon.url)), 200);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused_in_one_line() {
    let (_dir, db) = store_dir();
    let run = Run::of(
        latchkey()
            .arg("serve")
            .arg("--db")
            .arg(store_arg(&db))
            .env("LATCHKEY_LOG", "latchkey=loud"),
    );
    let line = run.fails(1, "invalid log filter");
    assert!(line.contains("latchkey=loud"), "{line}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    nothing_created(&run, &[&db]);
}

#[test]
fn a_timeout_over_a_day_is_refused_at_start_in_one_line() {
    let (_dir, db) = store_dir();
    for flag in ["--header-read-timeout", "--request-timeout"] {
        let run = serve_fails(&db, &[flag, "10000000000000000000s"]);
        let line = run.fails(1, "at most a day");
        assert_eq!(run.stderr.lines().count(), 1, "{flag}: {run:#?}");
        assert!(!line.is_empty());
        nothing_created(&run, &[&db]);
    }
}

/// A value checked after the parser (an address, a timeout, the prefix) names the variable
/// it came from, as the parser's own refusals do (re-check s48 NEW-5); typed, it does not.
#[test]
fn a_setting_refused_from_a_variable_names_it() {
    let (_dir, db) = store_dir();
    for (variable, value, said) in [
        ("LATCHKEY_REQUEST_TIMEOUT", "30", "request timeout"),
        ("LATCHKEY_HEADER_READ_TIMEOUT", "0s", "header read timeout"),
        ("LATCHKEY_LISTEN", "nowhere", "listen address"),
        (
            "LATCHKEY_METRICS_LISTEN",
            "nowhere",
            "metrics listen address",
        ),
        ("LATCHKEY_PREFIX", "NO", "invalid prefix"),
    ] {
        let mut serve = latchkey();
        serve.args(["serve", "--db"]).arg(store_arg(&db));
        if variable != "LATCHKEY_LISTEN" {
            serve.args(["--listen", "127.0.0.1:0"]);
        }
        let run = Run::of(serve.env(variable, value));
        let line = run.fails(1, &format!("environment variable {variable}"));
        assert!(line.contains(said), "{line}");
        nothing_created(&run, &[&db]);
    }
    let run = serve_fails(&db, &["--request-timeout", "30"]);
    let line = run.fails(1, "request timeout");
    assert!(!line.contains("environment"), "{line}");
}

/// At DEBUG every request is logged with its path and its query's names: a key pasted into
/// a path, or sent as a query parameter, is never among them.
#[test]
fn the_request_log_never_holds_a_key_from_a_path_or_query() {
    let (_dir, db) = store_dir();
    let daemon = Daemon::spawn(
        latchkey()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(store_arg(&db))
            .env("LATCHKEY_LOG", "debug"),
        &db,
    );
    let key = daemon.admin_key.clone().expect("a new store's admin key");
    let prefix = ApiKey::parse(&key).unwrap().display_prefix().to_owned();
    for path in [
        format!("/v1/keys/{key}"),
        format!("/v1/users/{key}"),
        format!("/v1/keys?api_key={key}"),
        format!("/v1/keys/{prefix}"),
    ] {
        daemon.http("GET", &path, Some(&key), None);
    }
    let log = daemon.log_with(&format!("/v1/keys/{prefix}"));
    assert!(log.contains("/v1/keys/…"), "{log}");
    assert!(log.contains("/v1/keys?api_key=…"), "{log}");
    assert!(!log.contains(&key), "{log}");
    let secret = ApiKey::parse(&key).unwrap().secret().to_owned();
    assert!(!log.contains(&secret), "{log}");
}

/// `serve --prefix` on a store that exists is not taken (its keys keep the prefix it was
/// created with), and the daemon says so rather than ignoring it silently; the same prefix
/// asked again is no news.
#[test]
fn serve_says_a_prefix_asked_of_an_existing_store_is_not_taken() {
    let (_dir, db) = store_dir();
    Daemon::start(&db).terminate();
    let same = Daemon::start_with(&db, &["--prefix", "lk"]);
    let (_, log) = same.stop();
    assert!(!log.contains("applies only to a store"), "{log}");
    let other = Daemon::start_with(&db, &["--prefix", "acme"]);
    let log = other.log_with("applies only to a store");
    assert!(log.contains("applies only to a store"), "{log}");
    assert!(log.contains("acme"), "{log}");
}
