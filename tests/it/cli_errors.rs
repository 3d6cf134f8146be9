use crate::harness::{Fixture, Run, latchkey};

/// A well-formed display prefix that no key has.
const ABSENT: &str = "lk_live_000000000000";

#[test]
fn every_command_fails_with_one_line_and_exit_1() {
    let f = Fixture::new();
    f.user("svc", "orders:read");
    let (active, _) = f.key("svc", "active", &[]);
    let active = active["id"].as_str().unwrap().to_owned();
    let (revoked, _) = f.key("svc", "revoked", &[]);
    let revoked = revoked["id"].as_str().unwrap().to_owned();
    f.json(&["keys", "revoke", &revoked]);

    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        // groups
        (&["groups", "add", "--name", "admin"], "[name_taken]"),
        (&["groups", "add", "--name", "g", "--permissions", "Bad Perm"], "[invalid_field]"),
        (&["groups", "show", "nope"], "[not_found]"),
        (&["groups", "update", "nope", "--name", "x"], "[not_found]"),
        (&["groups", "update", "admin"], "nothing to change"),
        (&["groups", "delete", "nope"], "[not_found]"),
        // users
        (&["users", "add", "--name", "admin"], "[name_taken]"),
        (&["users", "add", "--name", "two words"], "[invalid_field]"),
        (&["users", "add", "--name", "u", "--groups", "nope"], "[not_found]"),
        (&["users", "show", "nope"], "[not_found]"),
        (&["users", "update", "nope", "--name", "x"], "[not_found]"),
        (&["users", "update", "svc", "--add-groups", "nope"], "[not_found]"),
        (&["users", "update", "svc"], "nothing to change"),
        (&["users", "enable", "nope"], "[not_found]"),
        (&["users", "disable", "nope"], "[not_found]"),
        (&["users", "delete", "nope"], "[not_found]"),
        // keys
        (&["keys", "add", "--name", "k", "--user", "nobody"], "[not_found]"),
        (&["keys", "add", "--name", "k", "--user", "svc", "--scopes", "NOPE"], "[invalid_field]"),
        (&["keys", "add", "--name", "k", "--user", "svc", "--expires-at", "2000-01-01T00:00:00Z"], "[invalid_field]"),
        (&["keys", "add", "--name", "k", "--user", "svc", "--expires-at", "someday"], "RFC 3339"),
        (&["keys", "add", "--name", "k", "--user", "svc", "--expires-at", "100000y"], "too far in the future"),
        (&["keys", "list", "--user", "nobody"], "[not_found]"),
        (&["keys", "list", "--cursor", "garbage"], "[invalid_field]"),
        (&["keys", "show", ABSENT], "[not_found]"),
        (&["keys", "update", ABSENT, "--name", "x"], "[not_found]"),
        (&["keys", "update", &active], "nothing to change"),
        (&["keys", "disable", ABSENT], "[not_found]"),
        (&["keys", "enable", &revoked], "[key_revoked]"),
        (&["keys", "revoke", ABSENT], "[not_found]"),
        (&["keys", "delete", &active], "[key_not_revoked]"),
        (&["keys", "delete", ABSENT], "[not_found]"),
        (&["keys", "rotate", &revoked], "[key_revoked]"),
        (&["keys", "show", "nope"], "not a key reference"),
        (&["keys", "revoke", "sk_live_51H8xQ2eZvKYlo2C9aXbWq7Tz0pLmN3sV"], "that looks like a full key"),
        (&["keys", "rotate", &active, "--grace", "soon"], "invalid duration"),
        (&["keys", "rotate", &active, "--grace", "1000w"], "at most 365d"),
        (&["keys", "rotate", &active, "--grace", "1y"], "`1y` is 365.25"),
        // verify and audit
        (&["verify", "x", "--permission", "Bad Perm"], "[invalid_field]"),
        (&["audit", "list", "--limit", "0"], "[invalid_field]"),
        // backup: `-` is no file name for it
        (&["backup", "--out", "-"], "give a path"),
    ];
    for (args, needle) in cases {
        let run = f.cli(args);
        let line = run.fails(1, needle);
        assert!(!line.contains(&f.admin), "{line}");
        // `--json` changes stdout only: errors stay one line on stderr, stdout stays empty.
        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        let run = f.cli(&json);
        run.fails(1, needle);
        assert_eq!(run.stdout, "", "{run:#?}");
    }
    // Nothing above changed the active key.
    assert_eq!(f.json(&["keys", "show", &active])["status"], "active");
}

#[test]
fn transport_and_credential_errors() {
    let f = Fixture::new();
    // No admin key.
    let run = Run::of(latchkey().args(["keys", "list", "--url", &f.daemon.url]));
    run.fails(1, "[missing_key]");
    assert!(run.stderr.contains("LATCHKEY_ADMIN_KEY"));
    // A wrong admin key.
    f.daemon
        .cli_as("lk_live_nope", &["keys", "list"])
        .fails(1, "[invalid_key]");
    // The admin key with the line end of the file or secret it was read from (hunt CLI
    // L4: it was refused as the HTTP client's "builder error", blamed on HTTPS).
    for end in ["\n", "\r\n"] {
        let run = f
            .daemon
            .cli_as(&format!("{}{end}", f.admin), &["keys", "list"]);
        assert_eq!(run.code, 0, "{end:?}: {run:#?}");
    }
    // One with a line break inside is refused by name, before any request, by a command
    // that sends it; one that sends none does not look at it.
    let broken = format!("lk_live\n{}", f.admin);
    f.daemon
        .cli_as(&broken, &["keys", "list"])
        .fails(1, "the admin key holds a character");
    let health = f.daemon.cli_as(&broken, &["health"]);
    assert_eq!(health.code, 0, "{health:#?}");
    // A key without the permission.
    f.user("reader", "latchkey:keys:read");
    let (_, reader) = f.key("reader", "r", &[]);
    f.daemon
        .cli_as(&reader, &["users", "list"])
        .fails(1, "[insufficient_permission]");
    // Nothing listening: pick a port, free it, aim at it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    Run::of(latchkey().args(["keys", "list", "--url", &url, "--admin-key", &f.admin]))
        .fails(1, "cannot connect to the latchkey daemon");
    // Not a URL; not http(s).
    Run::of(latchkey().args(["keys", "list", "--url", "not a url"])).fails(1, "invalid --url");
    Run::of(latchkey().args(["keys", "list", "--url", "ftp://127.0.0.1:1"]))
        .fails(1, "expected an http:// or https:// URL");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["keys", "add", "--user", "svc"][..],
        &["keys", "frobnicate"],
        &["keys", "list", "--status", "sleeping"],
        &["audit", "list", "--target", "nope"],
        &["audit", "list", "--user", "svc", "--key", "lk_live_x"],
        &["keys", "add", "--name", "k", "--user", "u", "--env", "prod"],
        &["keys", "list", "--sort", "size"],
        &[
            "users",
            "update",
            "u",
            "--tenant-id",
            "t",
            "--clear-tenant-id",
        ],
        &["completions", "tcsh"],
        &["scan"],
        &[],
    ] {
        let run = Run::of(latchkey().args(args));
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        // No command at all shows the help, on stderr; anything else is clap's error.
        assert!(
            run.stderr.starts_with("error: ") || args.is_empty(),
            "{run:#?}"
        );
        assert!(!run.stderr.trim().is_empty(), "{run:#?}");
        assert_eq!(run.stdout, "");
    }
}

/// Hunt (CLI) INFO: `health` says `ok` only for latchkey's answer, not for any 200.
#[test]
fn health_is_ok_only_for_a_latchkey_daemon() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let body = "<html>a page of something else</html>";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).unwrap();
    });
    let run = Run::of(latchkey().args(["health", "--url", &url]));
    run.fails(1, "not as a latchkey daemon does");
    assert_eq!(run.stdout, "", "{run:#?}");
    server.join().unwrap();
}

/// Re-check s51 C: a backup is not written to a file named by a key's full text (a key
/// pasted where the name goes), which a listing and the command's answer would show.
#[test]
fn a_backup_is_not_named_by_a_key() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(&f.admin);
    let run = f.cli(&["backup", "--out", out.to_str().unwrap()]);
    run.fails(1, "--out holds a key's full text");
    assert!(!run.stderr.contains(&f.admin), "{run:#?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// Hunt (CLI) L3: a whole key given by mistake to a flag that takes something else is not
/// printed back, whether clap refuses the value or the command does.
#[test]
fn a_key_given_to_the_wrong_flag_is_not_printed_back() {
    let key = latchkey_core::ApiKey::generate(
        &latchkey_core::Prefix::default(),
        latchkey_core::Env::Live,
    );
    let key = key.expose();
    let nowhere = ["--url", "http://127.0.0.1:1", "--admin-key", "lk_live_x"];
    for args in [
        &["audit", "list", "--target", key][..],
        &["audit", "list", "--limit", key],
        &["keys", "list", "--status", key],
        &[
            "keys",
            "add",
            "--name",
            "k",
            "--user",
            "u",
            "--expires-at",
            key,
        ],
        &["keys", "rotate", "abc", "--grace", key],
        &["verify", "x", "--client-ip", key],
    ] {
        let run = Run::of(latchkey().args(nowhere).args(args));
        assert_ne!(run.code, 0, "{args:?}: {run:#?}");
        assert!(!run.stderr.is_empty(), "{args:?}: {run:#?}");
        assert!(!run.stderr.contains(key), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.contains(key), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn a_reference_that_is_no_key_reference_is_refused_before_any_request() {
    // Nothing listens there: a request would fail to connect.
    let secret = "51H8xQ2eZvKYlo2C9aXbWq7Tz0pLmN3sV";
    let theirs = format!("sk_live_{secret}");
    let nowhere = ["--url", "http://127.0.0.1:1", "--admin-key", "lk_live_x"];
    for command in [
        &["keys", "show"][..],
        &["keys", "update", "--name", "x"],
        &["keys", "disable"],
        &["keys", "enable"],
        &["keys", "revoke"],
        &["keys", "delete"],
        &["keys", "rotate"],
    ] {
        let (verb, flags) = command.split_at(2);
        let run = Run::of(latchkey().args(nowhere).args(verb).arg(&theirs).args(flags));
        let line = run.fails(
            1,
            "that looks like a full key: give its display prefix or id",
        );
        assert!(!line.contains(secret), "{line}");
        let run = Run::of(latchkey().args(nowhere).args(verb).arg("nope").args(flags));
        run.fails(1, "not a key reference");
    }
}

/// A storage error whose message shows its cause says it once, not the cause again after.
#[test]
fn a_storage_error_says_its_cause_once() {
    if crate::backend::directory_only("a directory of other files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let run = Run::of(latchkey().arg("init").arg("--db").arg(dir.path()));
    let line = run.fails(1, "no part of a latchkey store");
    assert_eq!(
        line.matches("no part of a latchkey store").count(),
        1,
        "{line}"
    );
}
