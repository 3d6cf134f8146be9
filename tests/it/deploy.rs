//! The shipped deployment files (`deploy/`) run the real binary as they say: the container
//! image's environment and command, and the systemd unit's command line. No container engine
//! or systemd runs here (CI checks the unit's directives with `systemd-analyze`), so each is
//! run as its engine would run it, with its fixed paths moved into a temporary directory and
//! its fixed port onto a free one. The test reads the files themselves: a change to either
//! that the binary does not accept fails here.

use std::path::{Path, PathBuf};

use crate::harness::{Daemon, Run, latchkey, workspace};

/// The repository's `deploy/` folder.
fn deploy(file: &str) -> String {
    let path = workspace().join("deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The instructions of a Containerfile's last stage, continuation lines joined: `(word,
/// rest)`, e.g. `("ENV", "A=1 B=2")`.
fn last_stage(containerfile: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in containerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let joined = std::mem::take(&mut pending);
                let (word, rest) = joined.split_once(' ').unwrap_or((&joined, ""));
                if word == "FROM" {
                    instructions.clear();
                }
                instructions.push((word.to_owned(), rest.trim().to_owned()));
            }
        }
    }
    instructions
}

/// The one instruction `word` of `stage`.
fn instruction<'a>(stage: &'a [(String, String)], word: &str) -> &'a str {
    let found: Vec<&str> = stage
        .iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one {word} in the image's last stage");
    found[0]
}

/// An exec-form (JSON array) instruction's words.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{rest} is not exec form: {e}"))
}

/// Moves a path under `from` to the same place under `to`.
fn moved(path: &str, from: &str, to: &Path) -> PathBuf {
    let rest = path
        .strip_prefix(from)
        .unwrap_or_else(|| panic!("{path} is not under {from}"));
    to.join(rest.trim_start_matches('/'))
}

/// `HOST:PORT` with the port 0: the fixed port may be taken on a test machine.
fn any_port(address: &str, port: &str) -> String {
    let host = address
        .strip_suffix(&format!(":{port}"))
        .unwrap_or_else(|| panic!("{address} does not listen on the exposed port {port}"));
    format!("{host}:0")
}

/// The daemon, reached on loopback whatever address it listens on.
fn on_loopback(mut daemon: Daemon) -> Daemon {
    daemon.url = daemon.url.replace("0.0.0.0", "127.0.0.1");
    daemon
}

/// Whether `key` reads the key list: the store it was minted in is the one served.
fn admits(daemon: &Daemon, key: &str) -> bool {
    daemon
        .http("GET", "/v1/keys?limit=1", Some(key), None)
        .status
        == 200
}

/// Checks a daemon's first start on a new store at `db`: it made the store there, wrote
/// the admin key to `key_file` (its owner's only) and printed it nowhere (a service's output
/// goes to a log), which key it admits, and stops cleanly on SIGTERM (the signal both files
/// stop it with). Returns the key.
fn first_start(daemon: Daemon, db: &Path, key_file: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(daemon.admin_key, None, "printed:\n{}", daemon.banner);
    let key = std::fs::read_to_string(key_file)
        .unwrap_or_else(|e| panic!("no admin key in {}: {e}", key_file.display()));
    let key = key.trim().to_owned();
    assert!(!daemon.banner.contains(&key), "{}", daemon.banner);
    let mode = key_file.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(db.is_dir(), "the store is at {}", db.display());
    assert!(admits(&daemon, &key));
    let (status, log) = daemon.stop();
    assert!(status.success(), "SIGTERM ends it cleanly: {status}\n{log}");
    key
}

#[test]
fn the_container_image_s_command_serves_its_volume_and_keeps_it_across_restarts() {
    let stage = last_stage(&deploy("Containerfile"));
    let volume = exec_form(instruction(&stage, "VOLUME"));
    let [volume] = volume.as_slice() else {
        panic!("one volume: {volume:?}")
    };
    let port = instruction(&stage, "EXPOSE");
    assert_eq!(
        instruction(&stage, "STOPSIGNAL"),
        "SIGTERM",
        "what first_start sends"
    );
    // The binary the image runs is the one the build stage made.
    let entrypoint = exec_form(instruction(&stage, "ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/latchkey"]);
    assert!(
        stage.iter().any(|(word, rest)| word == "COPY"
            && rest.ends_with("/src/target/release/latchkey /usr/local/bin/latchkey")),
        "the image copies the release binary: {stage:?}"
    );
    let volume_dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = stage
        .iter()
        .filter(|(word, _)| word == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("ENV NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let mut args = exec_form(instruction(&stage, "CMD"));
    let option = |args: &[String], name: &str| {
        args.iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("CMD names {name}"))
            + 1
    };
    let listen = option(&args, "--listen");
    args[listen] = any_port(&args[listen], port);
    let at = option(&args, "--db");
    let db = moved(&args[at], volume, volume_dir.path());
    args[at] = db.to_str().unwrap().to_owned();
    let at = option(&args, "--admin-key-file");
    let key_file = moved(&args[at], volume, volume_dir.path());
    args[at] = key_file.to_str().unwrap().to_owned();
    let start = || {
        on_loopback(Daemon::spawn(
            latchkey().args(&args).envs(env.iter().cloned()),
            &db,
        ))
    };

    // The first start initialises the store on the volume and writes the admin key there.
    let key = first_start(start(), &db, &key_file);

    // The next start opens the same store, and prints no key.
    let second = start();
    assert_eq!(second.admin_key, None, "{}", second.banner);
    assert!(admits(&second, &key), "the key minted at the first start");
    second
        .http("GET", "/v1/keys", None, None)
        .problem(401, "missing_key");

    // A command run in the container (`podman exec`), with the image's environment, asks
    // the daemon: a backup while it runs.
    let out = volume_dir.path().join("backup");
    Run::of(
        latchkey()
            .envs(env.iter().cloned())
            .args(["--url", &second.url, "--admin-key", &key, "backup", "--out"])
            .arg(&out),
    )
    .ok();
    assert!(out.metadata().unwrap().len() > 0);

    // The image's health check, run as the engine runs it (in the container, with its
    // environment, no key): healthy while the daemon serves, not once it stopped.
    let check = instruction(&stage, "HEALTHCHECK");
    let (_, command) = check
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK … CMD [...]: {check}"));
    let check = exec_form(command);
    assert_eq!(check[0], entrypoint[0], "the check runs the image's binary");
    // It asks LATCHKEY_URL (what a container serving TLS sets), by default the exposed port.
    assert!(
        !check.contains(&"--url".to_owned()),
        "a flag would beat LATCHKEY_URL: {check:?}"
    );
    let help = Run::of(latchkey().args(["health", "--help"])).ok().stdout;
    let exposed = format!("[default: http://127.0.0.1:{port}]");
    assert!(
        help.contains(&exposed),
        "the default URL is the exposed port: {help}"
    );
    let url = second.url.clone();
    let health = || {
        let url = ("LATCHKEY_URL".to_owned(), url.clone());
        let env = env.iter().cloned().chain([url]);
        Run::of(latchkey().envs(env).args(&check[1..]))
    };
    assert_eq!(health().ok().stdout.trim(), "ok");
    let (status, _) = second.stop();
    assert!(status.success());
    let refused = health();
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("cannot connect"), "{refused:?}");
}

#[test]
fn the_systemd_unit_s_command_serves_its_state_directory() {
    let unit = deploy("latchkey.service");
    let setting = |name: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    let [exec] = setting("ExecStart")[..] else {
        panic!("one ExecStart")
    };
    let [state] = setting("StateDirectory")[..] else {
        panic!("one StateDirectory")
    };
    assert_eq!(setting("KillSignal"), ["SIGTERM"], "what first_start sends");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/latchkey"));
    let state_dir = tempfile::tempdir().unwrap();
    // systemd makes /var/lib/<StateDirectory> for the service.
    let state_path = format!("/var/lib/{state}");
    let mut args: Vec<String> = words.map(str::to_owned).collect();
    let (mut db, mut key_file) = (None, None);
    for i in 1..args.len() {
        match args[i - 1].as_str() {
            "--db" => {
                let path = moved(&args[i], &state_path, state_dir.path());
                args[i] = path.to_str().unwrap().to_owned();
                db = Some(path);
            }
            "--admin-key-file" => {
                let path = moved(&args[i], &state_path, state_dir.path());
                args[i] = path.to_str().unwrap().to_owned();
                key_file = Some(path);
            }
            "--listen" => {
                let port = args[i].rsplit(':').next().unwrap().to_owned();
                args[i] = any_port(&args[i], &port);
            }
            _ => {}
        }
    }
    let db = db.expect("ExecStart names the store with --db, in the state directory");
    let key_file = key_file.expect("ExecStart names --admin-key-file, in the state directory");
    let env = setting("Environment")
        .into_iter()
        .map(|pair| pair.split_once('=').expect("Environment=NAME=value"));

    let daemon = on_loopback(Daemon::spawn(latchkey().args(&args).envs(env), &db));
    first_start(daemon, &db, &key_file);
}

/// A `major.minor[.patch]` version, comparable.
fn version(text: &str) -> Vec<u64> {
    text.split('.')
        .map(|part| part.parse().unwrap_or_else(|_| panic!("a version: {text}")))
        .chain(std::iter::repeat(0))
        .take(3)
        .collect()
}

#[test]
fn the_image_builds_with_the_rust_version_every_locked_dependency_needs() {
    let metadata = Run::of(
        std::process::Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args(["metadata", "--format-version", "1", "--locked"]),
    )
    .json();
    let packages = metadata["packages"].as_array().unwrap();
    // The workspace's own rust-version (every member inherits it).
    let ours = packages
        .iter()
        .find(|p| p["name"] == "latchkey-daemon")
        .and_then(|p| p["rust_version"].as_str())
        .expect("the daemon declares a rust-version");
    let newer: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs) > version(ours))
                .then(|| format!("{} {} needs {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "rust-version {ours} is too old: {newer:?}"
    );
    // The image's build stage uses that toolchain: an older one cannot build the lock file.
    let from = deploy("Containerfile")
        .lines()
        .find_map(|line| line.strip_prefix("FROM docker.io/library/rust:"))
        .map(|tag| tag.split_whitespace().next().unwrap().to_owned())
        .expect("the image builds on the official rust image");
    assert_eq!(from, format!("{ours}-bookworm"));
}
