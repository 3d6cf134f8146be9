use latchkey_core::{ApiKey, Env, Prefix};
use serde_json::Value;

use crate::harness::{Fixture, Run, latchkey};

#[test]
fn scan_finds_a_key_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    // A key glued to the letters around it is found as well.
    let glued = ApiKey::generate(&Prefix::default(), Env::Test);
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let file = dir.path().join("config/app.env");
    std::fs::write(
        &file,
        format!(
            "# settings\nPORT=80\nAPI_KEY={}\nDEPLOY_{}_2024\n",
            key.expose(),
            glued.expose()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("README.md"),
        "lk_live_notakey_xxxxxxxx and other text\n",
    )
    .unwrap();

    let run = Run::of(latchkey().arg("scan").arg(dir.path()));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        format!(
            "{0}:3: {1}\n{0}:4: {2}\n",
            file.display(),
            key.display_prefix(),
            glued.display_prefix()
        )
    );
    for secret in [key.secret(), glued.secret()] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    // A single file, and JSON.
    let run = Run::of(latchkey().args(["--json", "scan"]).arg(&file));
    assert_eq!(run.code, 1);
    let found: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(found["findings"][0]["line"], 3);
    assert_eq!(found["findings"][0]["prefix"], key.display_prefix());
    // stdin.
    let out = scan_stdin(&key, true);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("-:1: {}\n", key.display_prefix())
    );
}

#[test]
fn scan_passes_a_clean_tree_and_fails_on_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    // A look-alike: one checksum character changed.
    let mut forged = key.expose().to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    std::fs::write(dir.path().join("docs.md"), format!("example: {forged}\n")).unwrap();
    let run = Run::of(latchkey().arg("scan").arg(dir.path()));
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "");
    // A path that cannot be read is exit 2, not 1 (a key found), and the other paths are
    // scanned all the same (hunt CLI INFO).
    Run::of(latchkey().arg("scan").arg(dir.path().join("missing"))).fails(2, "cannot read");
    let leaked = dir.path().join("leaked.env");
    std::fs::write(&leaked, format!("KEY={}\n", key.expose())).unwrap();
    let run = Run::of(
        latchkey()
            .arg("scan")
            .arg(dir.path().join("missing"))
            .arg(&leaked),
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.contains(key.display_prefix()), "{run:#?}");
    assert!(run.stderr.contains("cannot read"), "{run:#?}");
    // So is a directory given that cannot be listed (re-check s51 D: a warning, exit 0).
    // Root lists any directory, so as root the scan runs as `nobody`.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &std::path::Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        mode(dir.path(), 0o755);
        mode(&closed, 0);
        let id = std::process::Command::new("id").arg("-u").output().unwrap();
        let mut scan = if String::from_utf8_lossy(&id.stdout).trim() == "0" {
            let mut as_nobody = std::process::Command::new("runuser");
            as_nobody
                .args(["-u", "nobody", "--"])
                .arg(crate::harness::bin());
            as_nobody
        } else {
            latchkey()
        };
        Run::of(scan.arg("scan").arg(&closed)).fails(2, "cannot read");
        mode(&closed, 0o700);
    }
}

#[test]
fn verify_exit_codes() {
    let f = Fixture::new();
    f.user("svc", "orders:read");
    let (_, key) = f.key("svc", "k", &[]);
    assert_eq!(
        f.cli(&["verify", &key]).ok().stdout.lines().next(),
        Some("valid")
    );
    assert_eq!(f.cli(&["verify", &key, "-p", "orders:read"]).code, 0);
    let run = f.cli(&["verify", &key, "-p", "orders:read", "-p", "orders:write"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "invalid: insufficient_permission\n");
    let run = f.cli(&["--json", "verify", &key, "-p", "orders:write"]);
    assert_eq!(run.code, 1);
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["code"], "insufficient_permission");
    assert_eq!(answer["principal"]["user_name"], "svc");
    let run = f.cli(&["--json", "verify", "lk_live_garbage"]);
    assert_eq!(run.code, 1);
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    // The daemon's answer (on a shared database it also names the change it had applied,
    // `seq`), with its principal null.
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["code"], "invalid_key", "{answer}");
    assert!(
        answer.get("principal").is_some_and(Value::is_null),
        "{answer}"
    );
    // The key can come from stdin, out of shell history.
    let out = latchkey()
        .args([
            "verify",
            "-",
            "--url",
            &f.daemon.url,
            "--admin-key",
            &f.admin,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{key}\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn completions_and_default_config_print() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = Run::of(latchkey().args(["completions", shell])).ok();
        assert!(run.stdout.contains("latchkey"), "{shell}");
        assert!(
            run.stdout.contains("rotate"),
            "{shell} completes subcommands"
        );
    }
    let config = Run::of(latchkey().arg("default-config")).ok().stdout;
    for setting in [
        "url",
        "admin_key",
        "db",
        "listen",
        "prefix",
        "request_timeout",
        "log",
    ] {
        assert!(
            config.contains(&format!("# {setting} = ")),
            "{setting} in {config}"
        );
    }
}

#[test]
fn the_config_file_is_read_and_flags_win() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    std::fs::write(
        &config,
        format!("url = \"{}\"\nadmin_key = \"{}\"\n", f.daemon.url, f.admin),
    )
    .unwrap();
    // From the file alone.
    let run = Run::of(
        latchkey()
            .arg("--config")
            .arg(&config)
            .args(["--json", "users", "list"]),
    );
    assert_eq!(run.json()["items"][0]["name"], "admin");
    // From the environment variable naming the file.
    let run = Run::of(
        latchkey()
            .env("LATCHKEY_CONFIG", &config)
            .args(["--json", "groups", "list"]),
    );
    assert_eq!(run.json()["items"][0]["name"], "admin");
    // A flag beats the file: a wrong key on the command line is used, and refused.
    Run::of(latchkey().arg("--config").arg(&config).args([
        "users",
        "list",
        "--admin-key",
        "lk_live_x",
    ]))
    .fails(1, "[invalid_key]");
    // The environment beats the file too.
    Run::of(
        latchkey()
            .arg("--config")
            .arg(&config)
            .env("LATCHKEY_ADMIN_KEY", "nope")
            .args(["users", "list"]),
    )
    .fails(1, "[invalid_key]");
    // A typo in the file is an error naming it.
    std::fs::write(&config, "urll = \"x\"\n").unwrap();
    Run::of(
        latchkey()
            .arg("--config")
            .arg(&config)
            .args(["users", "list"]),
    )
    .fails(1, "invalid config file");
    // A value out of its form in the file is an error naming the file, not a flag.
    let with = |setting: &str, args: &[&str]| {
        std::fs::write(&config, setting).unwrap();
        Run::of(latchkey().arg("--config").arg(&config).args(args))
    };
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    for (setting, args, said) in [
        (
            "url = \"not a url\"\n",
            &["users", "list"][..],
            "invalid url \"not a url\"",
        ),
        (
            "prefix = \"A\"\n",
            &["init", "--db", store],
            "invalid prefix \"A\"",
        ),
    ] {
        let line = with(setting, args).fails(1, said);
        assert!(line.contains("in the config file"), "{line}");
        assert!(!line.contains("--"), "{line}");
    }
    assert!(!std::path::Path::new(store).exists(), "nothing was made");
    // The secret in the file never shows in `--help`.
    let help = Run::of(latchkey().env("LATCHKEY_ADMIN_KEY", &f.admin).arg("--help")).ok();
    assert!(!help.stdout.contains(&f.admin));
}

/// The README's pre-commit hook line, in a git repository: it reads what the commit adds
/// as staged, so a key staged then blanked in the working tree is found, and a commit that
/// deletes a file or stages nothing passes.
#[test]
fn the_pre_commit_hook_line_scans_what_the_commit_adds() {
    let readme = std::fs::read_to_string(crate::harness::workspace().join("README.md")).unwrap();
    let hook = readme
        .lines()
        .find(|line| line.starts_with("git diff --cached") && line.contains("latchkey scan"))
        .expect("the README's hook line");
    // The hook calls `latchkey` by name: the binary under test, first on the PATH.
    let latchkey_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(crate::harness::bin(), latchkey_dir.path().join("latchkey"))
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(repo.path())
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    let run_hook = || {
        let path = format!(
            "{}:{}",
            latchkey_dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .current_dir(repo.path())
            .env("PATH", path)
            .args(["-c", hook])
            .output()
            .unwrap();
        out.status.code()
    };
    git(&["init", "-q", "."]);
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    let file = repo.path().join("app.env");
    std::fs::write(&file, "PORT=80\n").unwrap();
    git(&["add", "app.env"]);
    assert_eq!(run_hook(), Some(0), "a clean change");
    git(&["commit", "-q", "-m", "clean"]);
    assert_eq!(run_hook(), Some(0), "nothing staged");
    std::fs::write(&file, format!("API_KEY={}\n", key.expose())).unwrap();
    git(&["add", "app.env"]);
    std::fs::write(&file, "PORT=80\n").unwrap();
    assert_eq!(
        run_hook(),
        Some(1),
        "a key staged, then blanked in the working tree"
    );
    git(&["checkout", "-q", "--", "app.env"]);
    git(&["commit", "-q", "-m", "key"]);
    git(&["rm", "-q", "app.env"]);
    assert_eq!(run_hook(), Some(0), "a file deleted");
}

#[test]
fn a_command_whose_reader_went_away_ends_by_sigpipe_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;

    // `latchkey scan - | head -0`: the reader is gone before the finding is printed.
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    let out = scan_stdin(&key, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    const SIGPIPE: i32 = 13;
    assert_eq!(
        out.status.signal(),
        Some(SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

/// `latchkey scan -` reading `key` on stdin; with `read` false its stdout is closed before
/// it prints, as by `| head -0`.
fn scan_stdin(key: &ApiKey, read: bool) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;

    let mut child = latchkey()
        .args(["scan", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !read {
        drop(child.stdout.take());
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.expose().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
