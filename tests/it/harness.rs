//! The test harness: find (and build) the `latchkey` binary, start daemons on loopback,
//! run CLI commands, send raw HTTP.
//!
//! # How the binary is found
//!
//! `CARGO_BIN_EXE_latchkey` exists only inside the daemon's own package, so this package
//! builds the binary itself, once per test process (a `OnceLock`): it runs
//! `cargo build -p latchkey-daemon --bin latchkey` with the cargo that built these tests,
//! into the same target directory and profile (found from this test executable's path:
//! the directory holding `CACHEDIR.TAG`), and takes the executable's path from cargo's JSON
//! messages. Cargo releases its build lock before it runs tests, so this works under
//! `cargo test` and nextest alike; after the first run it is a no-op build of well under a
//! second. Set `LATCHKEY_BIN` to test a binary built elsewhere.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::backend::{drop_store, engine_env, store_arg};

/// Every file and directory below `dir`, at any depth.
pub(crate) fn below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// A temporary directory and the store's path in it (on PostgreSQL, the name of the
/// store's database: `store_arg` turns it into what `--db` takes).
pub(crate) fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("store");
    (dir, store)
}

/// The `latchkey` binary under test.
pub(crate) fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("LATCHKEY_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_binary("latchkey-daemon", "latchkey"),
    })
}

/// The repository's root (the workspace).
pub(crate) fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// Builds `bin` of `package` into this test's target directory and profile (once per call),
/// and answers the executable's path as cargo reports it.
pub(crate) fn build_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // …/<target dir>/[<triple>/]<profile>/deps/it-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    // Cargo tags the target directory it creates; one made before cargo ran (a venv under
    // `target/`, say) has no tag, and then it is the profile directory's parent.
    let target_dir = profile_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .or_else(|| profile_dir.parent())
        .expect("a cargo target directory above the test executable");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(["build", "-p", package, "--bin", bin])
        .args(["--profile", profile, "--message-format", "json"])
        .arg("--target-dir")
        .arg(target_dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(output.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable"))
}

/// A `latchkey` command, with no `LATCHKEY_*` variable inherited from the environment but
/// the suite's engine (`LATCHKEY_ENGINE=redb` under `LATCHKEY_TEST_ENGINE=redb`).
pub(crate) fn latchkey() -> Command {
    let mut command = Command::new(bin());
    for var in [
        "LATCHKEY_URL",
        "LATCHKEY_ADMIN_KEY",
        "LATCHKEY_DB",
        "LATCHKEY_CONFIG",
        "LATCHKEY_LISTEN",
        "LATCHKEY_LOG",
        "LATCHKEY_LOG_FORMAT",
        "LATCHKEY_CA_CERT",
        "LATCHKEY_TLS_CERT",
        "LATCHKEY_TLS_KEY",
        "LATCHKEY_ENGINE",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    if let Some(engine) = engine_env() {
        command.env("LATCHKEY_ENGINE", engine);
    }
    command.stdin(Stdio::null());
    command
}

/// What a finished command did.
#[derive(Debug)]
pub(crate) struct Run {
    /// The exit code.
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Run {
    /// Runs a command to completion.
    pub(crate) fn of(command: &mut Command) -> Run {
        let output = command.output().expect("running latchkey");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub(crate) fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    /// Asserts exit 0 and parses stdout as one JSON document.
    #[track_caller]
    pub(crate) fn json(self) -> Value {
        let run = self.ok();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {run:#?}"))
    }

    /// Asserts the command failed with `code`, printing exactly one line on stderr, which
    /// starts with `error: ` and contains `needle`. Returns that line.
    #[track_caller]
    pub(crate) fn fails(&self, code: i32, needle: &str) -> String {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        assert!(
            lines[0].contains(needle),
            "expected {needle:?} on stderr: {self:#?}"
        );
        lines[0].to_owned()
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) status: StatusCode,
    /// The headers.
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`null` when empty or not JSON).
    pub(crate) body: Value,
    /// The body as text.
    pub(crate) text: String,
}

impl Answer {
    /// Asserts a problem+json answer with this status and code; returns the body.
    #[track_caller]
    pub(crate) fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{self:#?}"
        );
        assert_eq!(self.body["code"], code, "{self:#?}");
        assert_eq!(self.body["status"], status, "{self:#?}");
        self.body.get("title").expect("a problem has a title");
        &self.body
    }
}

/// Output a child writes after start-up, kept for failure messages.
type Captured = Arc<Mutex<String>>;

fn drain(stream: impl Read + Send + 'static, into: Captured) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
}

/// A running `latchkey serve`, killed when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
    /// `http://<addr>`.
    pub(crate) url: String,
    /// Its store.
    pub(crate) db: PathBuf,
    /// The admin key, when this start initialised the store.
    pub(crate) admin_key: Option<String>,
    /// Everything it printed before `listening on`.
    pub(crate) banner: String,
    stderr: Captured,
}

impl Daemon {
    /// Starts `latchkey serve --db <db> --listen 127.0.0.1:0` and waits for its
    /// `listening on` line (no sleeping: it blocks on the pipe). On PostgreSQL `db` names a
    /// database (see `backend.rs`).
    pub(crate) fn start(db: &Path) -> Daemon {
        Daemon::start_with(db, &[])
    }

    /// [`Daemon::start`] with extra arguments for `serve`.
    pub(crate) fn start_with(db: &Path, extra: &[&str]) -> Daemon {
        let mut daemon = Daemon::start_on(&store_arg(db), extra);
        db.clone_into(&mut daemon.db);
        daemon
    }

    /// Starts `latchkey serve --db <db>` with `db` as given: a database of the test's own.
    pub(crate) fn start_on(db: &OsStr, extra: &[&str]) -> Daemon {
        Daemon::spawn(
            latchkey()
                .args(["serve", "--listen", "127.0.0.1:0", "--db"])
                .arg(db)
                .args(extra)
                .env("LATCHKEY_LOG", "info"),
            Path::new(db),
        )
    }

    /// Starts a `latchkey serve` command made by the caller, whose store is `db`, and waits
    /// for its `listening on` line, as [`Daemon::start`] does.
    pub(crate) fn spawn(command: &mut Command, db: &Path) -> Daemon {
        Daemon::spawn_logging_to(command, db, None)
    }

    /// [`Daemon::spawn`] with its log (stderr) written to `log` rather than kept for
    /// [`Daemon::log`].
    pub(crate) fn spawn_logging_to(
        command: &mut Command,
        db: &Path,
        log: Option<std::fs::File>,
    ) -> Daemon {
        let piped = log.is_none();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log.map_or_else(Stdio::piped, Stdio::from))
            .spawn()
            .expect("spawning latchkey serve");
        let stderr: Captured = Arc::default();
        if piped {
            drain(child.stderr.take().unwrap(), stderr.clone());
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let mut addr = None;
        // Bounded: the banner is a handful of lines; EOF means the daemon exited.
        for _ in 0..64 {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(rest) = line.trim().strip_prefix("listening on ") {
                addr = Some(rest.parse::<SocketAddr>().expect("a socket address"));
                break;
            }
            banner.push_str(&line);
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "latchkey serve did not start ({status:?})\nstdout:\n{banner}\nstderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        drain(stdout, Arc::default());
        let admin_key = secret_in(&banner);
        Daemon {
            child,
            url: format!("http://{addr}"),
            db: db.to_path_buf(),
            admin_key,
            banner,
            stderr,
        }
    }

    /// The daemon's log so far.
    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the daemon's log holds `needle`; returns the log.
    pub(crate) fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A CLI command aimed at this daemon, authenticated with `key`.
    pub(crate) fn cli_as(&self, key: &str, args: &[&str]) -> Run {
        Run::of(
            latchkey()
                .args(args)
                .env("LATCHKEY_URL", &self.url)
                .env("LATCHKEY_ADMIN_KEY", key),
        )
    }

    /// Sends a request with an optional bearer key and JSON body.
    pub(crate) fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.try_http(method, path, key, body)
            .expect("the daemon answers")
    }

    /// [`Daemon::http`], answering `None` when the daemon does not (it is gone).
    pub(crate) fn try_http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Option<Answer> {
        let mut request = client().request(
            method.parse().expect("an HTTP method"),
            format!("{}{path}", self.url),
        );
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().ok().map(answer)
    }

    /// Sends a request with a raw body and content type.
    pub(crate) fn http_raw(
        &self,
        method: &str,
        path: &str,
        key: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut request = client()
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(key)
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        answer(request.send().expect("the daemon answers"))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or power cut would; waits for the process to go.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping the daemon");
    }

    /// SIGTERM; waits for a graceful exit and returns its status.
    pub(crate) fn terminate(self) -> ExitStatus {
        self.stop().0
    }

    /// [`Daemon::terminate`], with everything the daemon logged, its shutdown included: for
    /// a failure message.
    pub(crate) fn stop(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(status.success());
        let status = self.child.wait().expect("waiting for the daemon");
        // The log's reader sees the pipe close right after the exit.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Every test ends with its daemons gone, whatever happened.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        install_crypto_provider();
        Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
    })
}

/// Makes `ring` the process's rustls provider, once. reqwest is built here with TLS but
/// without a provider of its own (the workspace picks ring, see the root manifest), so a
/// client built without one panics.
pub(crate) fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err only when a provider is already installed: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn answer(response: reqwest::blocking::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// Seconds from now to 00:00 UTC on the 1st of next month: when a `…/month` refill comes.
pub(crate) fn until_next_month() -> u64 {
    let now = time::OffsetDateTime::now_utc();
    let (year, month) = match now.month() {
        time::Month::December => (now.year() + 1, time::Month::January),
        month => (now.year(), month.next()),
    };
    let first = time::Date::from_calendar_date(year, month, 1).expect("a first of the month");
    let seconds = (first.midnight().assume_utc() - now).whole_seconds();
    u64::try_from(seconds).expect("the 1st of next month is ahead")
}

/// The line after `Secret (store immediately):`, if any.
pub(crate) fn secret_in(text: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == "Secret (store immediately):")?;
    lines.next().map(|l| l.trim().to_owned())
}

/// A fresh store directory and a daemon initialised on it, with its admin key.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// Keeps the directory alive.
    pub(crate) dir: tempfile::TempDir,
    /// The daemon.
    pub(crate) daemon: Daemon,
    /// The admin key printed at first start.
    pub(crate) admin: String,
    /// Drops the PostgreSQL database last (a field of its own, so that tests may still take
    /// the fixture apart with `let Fixture { dir, daemon, .. } = f`).
    _store: StoreGuard,
}

/// Drops the database standing for a path when the test is done with it.
#[derive(Debug)]
struct StoreGuard(PathBuf);

impl Drop for StoreGuard {
    fn drop(&mut self) {
        drop_store(&self.0);
    }
}

impl Fixture {
    /// Starts a daemon on an empty directory: it initialises the store.
    pub(crate) fn new() -> Fixture {
        let (dir, store) = store_dir();
        let daemon = Daemon::start(&store);
        let admin = daemon
            .admin_key
            .clone()
            .expect("the first start prints the admin key");
        // The engine switch took: the daemon made a store of the suite's engine.
        if crate::backend::on_redb() {
            assert!(store.join("latchkey.redb").is_file(), "not a redb store");
        }
        Fixture {
            dir,
            daemon,
            admin,
            _store: StoreGuard(store),
        }
    }

    /// The store's path (on PostgreSQL, the name of its database: `store_arg` turns it into
    /// what `--db` takes).
    pub(crate) fn db(&self) -> PathBuf {
        self.daemon.db.clone()
    }

    /// A CLI command as the admin.
    pub(crate) fn cli(&self, args: &[&str]) -> Run {
        self.daemon.cli_as(&self.admin, args)
    }

    /// `--json` CLI command as the admin, which must succeed.
    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.cli(&all).json()
    }

    /// Raw HTTP as the admin.
    pub(crate) fn http(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.daemon.http(method, path, Some(&self.admin), body)
    }

    /// Creates a user with these direct permissions; returns its id.
    #[track_caller]
    pub(crate) fn user(&self, name: &str, permissions: &str) -> String {
        let mut args = vec!["users", "add", "--name", name];
        if !permissions.is_empty() {
            args.extend(["--permissions", permissions]);
        }
        self.json(&args)["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key for a user; returns (record, secret).
    #[track_caller]
    pub(crate) fn key(&self, user: &str, name: &str, extra: &[&str]) -> (Value, String) {
        let mut args = vec!["keys", "add", "--name", name, "--user", user];
        args.extend_from_slice(extra);
        let created = self.json(&args);
        let secret = created["secret"].as_str().unwrap().to_owned();
        (created, secret)
    }

    /// Whether `key` verifies holding `permissions` (exit 0 of `latchkey verify`).
    #[track_caller]
    pub(crate) fn verifies(&self, key: &str, permissions: &[&str]) -> bool {
        let mut args = vec!["verify", key];
        for p in permissions {
            args.extend(["--permission", p]);
        }
        let run = self.cli(&args);
        assert!(run.code == 0 || run.code == 1, "{run:#?}");
        run.code == 0
    }
}

/// Sends `each` requests from one thread per client, each `gap(client, i)` after the
/// answer before it (never catching up: a slow machine only sends slower), and collects
/// what `refused` makes of every answer it does not admit.
pub(crate) fn paced<C: Sync, R: Send>(
    clients: &[C],
    each: usize,
    gap: impl Fn(usize, usize) -> std::time::Duration + Sync,
    refused: impl Fn(&C) -> Option<R> + Sync,
) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(c, client)| {
                let (gap, refused) = (&gap, &refused);
                scope.spawn(move || {
                    let mut found = Vec::new();
                    for i in 0..each {
                        found.extend(refused(client));
                        std::thread::sleep(gap(c, i));
                    }
                    found
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client"))
            .collect()
    })
}
