use latchkey_core::ApiKey;
use serde_json::Value;

use crate::backend::{directory_only, store_arg};
use crate::harness::{Daemon, Run, latchkey, secret_in, store_dir};

// The on-disk audit layout in sled's or redb's files, shared with core's and admin's tests.
#[path = "../../crates/latchkey-core/tests/support/tamper.rs"]
mod tamper;

fn on(db: &std::path::Path, args: &[&str]) -> Run {
    Run::of(latchkey().arg("--db").arg(store_arg(db)).args(args))
}

#[test]
fn init_creates_a_working_store_once() {
    let (_dir, db) = store_dir();
    let run = on(&db, &["init"]).ok();
    let admin = secret_in(&run.stdout).expect("init prints the admin key");
    assert!(run.stdout.contains("Secret (store immediately):"));
    let key = ApiKey::parse(&admin).unwrap();
    assert!(admin.starts_with("lk_live_"));

    // The store works directly, as the operator.
    let groups = on(&db, &["--json", "groups", "list"]).json();
    assert_eq!(groups["items"][0]["name"], "admin");
    assert_eq!(groups["items"][0]["permissions"], serde_json::json!(["*"]));
    let verified = on(&db, &["--json", "verify", &admin, "-p", "anything:at:all"]).json();
    assert_eq!(verified["valid"], true);
    assert_eq!(verified["principal"]["user_name"], "admin");
    // As the daemon answers: a key with credits has its `limits`; a key that does not
    // authenticate has a `principal` of null.
    let metered = on(
        &db,
        &[
            "--json",
            "keys",
            "add",
            "--name",
            "m",
            "--user",
            "admin",
            "--credits",
            "5",
        ],
    )
    .json();
    let metered = metered["secret"].as_str().unwrap();
    let verified = on(&db, &["--json", "verify", metered]).json();
    assert_eq!(verified["limits"][0]["remaining"], 4, "{verified}");
    let refused = on(&db, &["--json", "verify", "lk_live_nope"]);
    assert_eq!(refused.code, 1);
    let refused: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(refused["code"], "invalid_key", "{refused}");
    assert!(refused["principal"].is_null() && refused.get("principal").is_some());
    let keys_before = on(&db, &["--json", "keys", "list"]).json();
    let audit_before = on(&db, &["--json", "audit", "list"]).json();

    // A second init fails, says so in one line, and changes nothing.
    on(&db, &["init"]).fails(1, "already exists");
    on(&db, &["init", "--prefix", "other"]).fails(1, "nothing was changed");
    assert_eq!(on(&db, &["--json", "audit", "list"]).json(), audit_before);
    let keys_after = on(&db, &["--json", "keys", "list"]).json();
    assert_eq!(
        keys_after["items"].as_array().unwrap().len(),
        keys_before["items"].as_array().unwrap().len()
    );
    assert_eq!(keys_after["items"][0]["prefix"], key.display_prefix());
    assert_eq!(on(&db, &["verify", &admin]).code, 0);
}

#[test]
fn init_json_and_prefix() {
    let (dir, db) = store_dir();
    let created = on(&db, &["--json", "init", "--prefix", "acme"]).json();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("acme_live_"));
    assert_eq!(created["name"], "admin");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["prefix"],
        ApiKey::parse(secret).unwrap().display_prefix()
    );
    for field in [
        "id",
        "user_id",
        "env",
        "scopes",
        "expires_at",
        "enabled",
        "created_at",
        "usage_count",
    ] {
        assert!(created.get(field).is_some(), "init --json has {field}");
    }
    // A bad prefix creates nothing.
    let other = dir.path().join("other");
    on(&other, &["init", "--prefix", "NO"]).fails(1, "prefix");
    assert!(!other.exists());
    // A path with no store: one line, nothing created.
    let missing = dir.path().join("missing");
    on(&missing, &["keys", "list"]).fails(1, "run `latchkey init` first");
    assert!(!missing.exists());
}

#[test]
fn a_store_held_by_the_daemon_refuses_direct_commands() {
    if directory_only(
        "the store lock is an embedded engine's: daemons and commands share a PostgreSQL database",
    ) {
        return;
    }
    let (_dir, db) = store_dir();
    let daemon = Daemon::start(&db);
    let admin = daemon.admin_key.clone().unwrap();
    let shown = db.display().to_string();
    for args in [
        &["keys", "list"][..],
        &["users", "add", "--name", "x"],
        &["init"],
        &["verify", &admin],
    ] {
        let line = on(&db, args).fails(1, "held by another process");
        assert!(line.contains(&shown), "{line}");
    }
    // A second daemon on the same store refuses to start, in one line.
    let second = Run::of(
        latchkey()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db),
    );
    second.fails(1, "held by another process");

    // Changes made through the daemon are there once it is gone.
    daemon
        .cli_as(&admin, &["users", "add", "--name", "via-daemon"])
        .ok();
    assert!(daemon.terminate().success());
    let user = on(&db, &["--json", "users", "show", "via-daemon"]).json();
    assert_eq!(user["name"], "via-daemon");
}

/// Where a command works: a flag beats the environment, as everywhere. `--url` given with
/// `LATCHKEY_DB` set (a staging store's, or the one `serve` uses) asks the daemon, never
/// works on the other store unseen; `--url` and `--db` both given are refused.
#[test]
fn an_explicit_url_beats_a_store_named_by_the_environment() {
    let (_dir, db) = store_dir();
    let daemon = Daemon::start(&db);
    let admin = daemon.admin_key.clone().unwrap();
    let (_other_dir, other) = store_dir();
    on(&other, &["init"]).ok();
    let through_daemon = || {
        let mut command = latchkey();
        command.env("LATCHKEY_DB", store_arg(&other)).args([
            "--url",
            &daemon.url,
            "--admin-key",
            &admin,
        ]);
        command
    };
    Run::of(through_daemon().args(["users", "add", "--name", "via-url"])).ok();
    let user = daemon
        .cli_as(&admin, &["--json", "users", "show", "via-url"])
        .json();
    assert_eq!(user["name"], "via-url");
    on(&other, &["users", "show", "via-url"]).fails(1, "[not_found]");

    let both = Run::of(
        latchkey()
            .args(["--url", &daemon.url, "--db"])
            .arg(store_arg(&other))
            .args(["users", "add", "--name", "both"]),
    );
    both.fails(1, "--url and --db");
    assert_eq!(both.stdout, "");
    on(&other, &["users", "show", "both"]).fails(1, "[not_found]");
}

#[test]
fn direct_commands_act_as_the_operator_and_are_audited() {
    let (_dir, db) = store_dir();
    on(&db, &["init"]).ok();
    on(
        &db,
        &[
            "users",
            "add",
            "--name",
            "svc",
            "--permissions",
            "orders:read",
        ],
    )
    .ok();
    let created = on(
        &db,
        &["--json", "keys", "add", "--name", "k", "--user", "svc"],
    )
    .json();
    assert_eq!(created["created_by"], Value::Null, "the operator is no key");
    let id = created["id"].as_str().unwrap();
    on(&db, &["keys", "revoke", id]).ok();
    // Users by id, in one answer.
    let svc = created["user_id"].as_str().unwrap();
    let users = on(&db, &["--json", "users", "list", "--id", svc]).json();
    assert_eq!(users["items"][0]["name"], "svc", "{users}");
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
    on(&db, &["users", "list", "--id", "nonsense"]).fails(1, "ids");

    let table = on(&db, &["audit", "list"]).ok().stdout;
    assert!(table.starts_with("SEQ"), "{table}");
    for action in ["group.create", "user.create", "key.create", "key.revoke"] {
        assert!(table.contains(action), "{action} in {table}");
    }
    assert!(table.contains("operator"));
    let page = on(
        &db,
        &["--json", "audit", "list", "--after", "2", "--limit", "2"],
    )
    .json();
    let seqs = |page: &Value| -> Vec<u64> {
        let items = page["items"].as_array().expect("a page");
        items.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    assert_eq!(seqs(&page), [3, 4]);
    assert_eq!(page["next_cursor"], "4");
    // Newest first, and back from the cursor.
    for (args, expected, next) in [
        (&["--limit", "2"][..], [6, 5], "5"),
        (&["--limit", "2", "--before", "5"][..], [4, 3], "3"),
    ] {
        let mut command = vec!["--json", "audit", "list", "--newest-first"];
        command.extend_from_slice(args);
        let page = on(&db, &command).json();
        assert_eq!(seqs(&page), expected, "{args:?}");
        assert_eq!(page["next_cursor"], next, "{args:?}");
    }
    // One key's events: its creation and revocation.
    let page = on(
        &db,
        &["--json", "audit", "list", "--newest-first", "--target", id],
    )
    .json();
    assert_eq!(seqs(&page), [6, 5], "{page}");
    // The same, the record named as people know it: a key by its prefix or its full text
    // (sent as its prefix), a user by name.
    let prefix = created["prefix"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    for key in [prefix, secret] {
        let page = on(&db, &["--json", "audit", "list", "--key", key]).json();
        assert_eq!(seqs(&page), [5, 6], "{page}");
    }
    let page = on(&db, &["--json", "audit", "list", "--user", "svc"]).json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["action"], "user.create", "{page}");
    assert_eq!(page["items"][0]["target"], created["user_id"], "{page}");
    on(&db, &["audit", "list", "--group", "nobody"]).fails(1, "[not_found]");

    let report = on(&db, &["--json", "audit", "verify"]).json();
    assert_eq!(report["valid"], true);
    assert_eq!(report["events"], 6);
    assert!(
        on(&db, &["audit", "verify"])
            .ok()
            .stdout
            .contains("intact: 6 events")
    );
    // An update's event says what it changed, in the table too.
    on(&db, &["users", "disable", "svc"]).ok();
    let table = on(&db, &["audit", "list", "--user", "svc"]).ok().stdout;
    assert!(
        table.lines().next().unwrap().ends_with("CHANGES"),
        "{table}"
    );
    assert!(table.contains("user.update"), "{table}");
    assert!(table.contains("enabled: true → false"), "{table}");
}

#[test]
fn a_tampered_audit_trail_is_reported_with_exit_1() {
    if directory_only("it rewrites history in the engine's files") {
        return;
    }
    let (_dir, db) = store_dir();
    on(&db, &["init"]).ok();
    on(&db, &["users", "add", "--name", "svc"]).ok();
    on(&db, &["users", "add", "--name", "svc2"]).ok();
    // Rewrite history behind latchkey's back, in whichever engine's files: event 2
    // replaced by a copy of event 3.
    tamper::copy_audit_event(&db, 3, 2);
    let run = on(&db, &["audit", "verify"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("BROKEN at event 2"), "{run:#?}");
    let report: Value =
        serde_json::from_str(&on(&db, &["--json", "audit", "verify"]).stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["broken"]["seq"], 2);
    // Its backup is written, and says so; it restores nothing, unless kept as it is.
    let file = db.with_file_name("tampered.backup");
    let file = file.to_str().unwrap();
    let backup = on(&db, &["backup", "--out", file]).ok();
    assert!(
        backup.stderr.contains("warning: ") && backup.stderr.contains("breaks in it at #2"),
        "{backup:#?}"
    );
    let again = db.with_file_name("again.backup");
    let again = on(&db, &["--json", "backup", "--out", again.to_str().unwrap()]).json();
    assert_eq!(again["chain_breaks_at"], 2, "{again}");
    let new = db.with_file_name("restored");
    on(&new, &["restore", file]).fails(1, "chain breaks at #2");
    assert!(!new.exists(), "a refused restore leaves nothing");
    let kept = on(&new, &["restore", file, "--keep-broken-chain"]).ok();
    assert!(kept.stdout.contains("breaks at #2"), "{kept:#?}");
}

#[test]
fn migrate_prints_the_schema_version_and_refuses_a_missing_store() {
    let (_dir, db) = store_dir();
    if crate::backend::postgres().is_none() {
        // (An empty database is no error: migrate creates the schema in it.)
        on(&db, &["migrate"]).fails(1, "run `latchkey init` first");
    }
    on(&db, &["init"]).ok();
    let run = on(&db, &["migrate"]).ok();
    assert!(run.stdout.starts_with("Schema version "), "{run:#?}");
    let json = on(&db, &["--json", "migrate"]).json();
    let version = json["schema_version"].as_u64().expect("a version");
    assert!(version >= 1, "{json}");
    assert!(
        run.stdout
            .contains(&format!("Schema version {version} at ")),
        "{run:#?}"
    );
    // It names the store's engine.
    let engine = match crate::backend::postgres() {
        Some(_) => "postgres",
        None => crate::backend::engine().name(),
    };
    assert_eq!(json["engine"], engine, "{json}");
    assert!(
        run.stdout.trim_end().ends_with(&format!("({engine}).")),
        "{run:#?}"
    );
    // Again: nothing to do, the same version; the store still works.
    assert_eq!(
        on(&db, &["--json", "migrate"]).json()["schema_version"],
        version
    );
    on(&db, &["users", "list"]).ok();
}

#[test]
fn a_database_password_is_never_printed() {
    let password = "pw-must-not-show";
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = format!("postgres://latchkey:{password}@127.0.0.1:1/latchkey");
    let help = Run::of(latchkey().arg("--help").env("LATCHKEY_DB", &url)).ok();
    assert!(!help.stdout.contains(password), "{help:#?}");
    for args in [&["keys", "list"][..], &["migrate"]] {
        let run = Run::of(latchkey().args(["--db", &url]).args(args));
        assert_eq!(run.code, 1, "{run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run:#?}");
        assert!(run.stderr.starts_with("error: "), "{run:#?}");
        assert!(
            !run.stderr.contains(password) && !run.stdout.contains(password),
            "{run:#?}"
        );
    }
}
