use serde_json::Value;

use crate::harness::{Daemon, Fixture};
use crate::shared;

#[test]
fn records_survive_a_restart() {
    let f = Fixture::new();
    shared::reader(|args| f.json(args), "shop");
    let (key, secret) = f.key("shop", "storefront", &["--description", "web"]);
    let admin = f.admin.clone();
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");

    let daemon = Daemon::start(&db);
    assert_eq!(
        daemon.admin_key, None,
        "an initialised store prints no key: {}",
        daemon.banner
    );
    let show = daemon.cli_as(
        &admin,
        &["--json", "keys", "show", key["id"].as_str().unwrap()],
    );
    let shown: Value = show.json();
    assert_eq!(shown["name"], "storefront");
    assert_eq!(shown["description"], "web");
    let verified = daemon.cli_as(
        &admin,
        &["--json", "verify", &secret, "--permission", "orders:read"],
    );
    assert_eq!(verified.json()["valid"], true);
    let groups = daemon.cli_as(&admin, &["--json", "groups", "list"]).json();
    assert_eq!(groups["items"].as_array().unwrap().len(), 2);
    drop(dir);
}

#[test]
fn a_graceful_shutdown_persists_usage_figures() {
    let f = Fixture::new();
    f.user("svc", "orders:read");
    let (key, secret) = f.key("svc", "counted", &[]);
    for _ in 0..3 {
        assert!(f.verifies(&secret, &["orders:read"]));
    }
    let (admin, db) = (f.admin.clone(), f.db());
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    let daemon = Daemon::start(&db);
    let shown = daemon
        .cli_as(
            &admin,
            &["--json", "keys", "show", key["id"].as_str().unwrap()],
        )
        .json();
    assert_eq!(shown["usage_count"], 3, "{shown}");
    assert!(shown["last_used_at"].is_string(), "{shown}");
    drop(dir);
}

/// Adds a key named `name` for the user `svc`; returns its record, secret included.
#[track_caller]
fn add_svc_key(daemon: &Daemon, admin: &str, name: &str) -> Value {
    let args = ["--json", "keys", "add", "--name", name, "--user", "svc"];
    daemon.cli_as(admin, &args).json()
}

#[test]
fn an_acknowledged_revoke_survives_kill_9() {
    let f = Fixture::new();
    f.user("svc", "orders:read");
    let (admin, db) = (f.admin.clone(), f.db());
    let Fixture { dir, daemon, .. } = f;
    let mut daemon = daemon;
    let mut revoked: Vec<(String, String)> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for round in 0..5 {
        // A key that stays, a key revoked: both acknowledged with 2xx, then a crash.
        let keep = add_svc_key(&daemon, &admin, &format!("keep-{round}"));
        kept.push(keep["secret"].as_str().unwrap().to_owned());
        let doomed = add_svc_key(&daemon, &admin, &format!("doomed-{round}"));
        let id = doomed["id"].as_str().unwrap().to_owned();
        let answer = daemon.http("POST", &format!("/v1/keys/{id}/revoke"), Some(&admin), None);
        assert_eq!(answer.status, 200, "{answer:#?}");
        revoked.push((id, doomed["secret"].as_str().unwrap().to_owned()));
        daemon.kill();

        daemon = Daemon::start(&db);
        for (id, secret) in &revoked {
            let shown = daemon.http("GET", &format!("/v1/keys/{id}"), Some(&admin), None);
            assert_eq!(shown.body["status"], "revoked", "round {round}: {shown:#?}");
            let verdict = daemon.cli_as(&admin, &["--json", "verify", secret]);
            assert_eq!(verdict.code, 1);
            assert_eq!(
                serde_json::from_str::<Value>(&verdict.stdout).unwrap()["code"],
                "key_revoked"
            );
        }
        for secret in &kept {
            let verdict = daemon.cli_as(&admin, &["verify", secret]);
            assert_eq!(verdict.code, 0, "round {round}: {verdict:#?}");
        }
    }
    // The audit chain is whole after five crashes.
    let audit = daemon.cli_as(&admin, &["audit", "verify"]).ok();
    assert!(audit.stdout.contains("intact"), "{audit:#?}");
    drop(daemon);
    drop(dir);
}

/// A store whose mark was deleted, or copied without it, opens (nothing in it is wrong) and
/// says so once: the writes it may have lost before this open can no longer be told.
#[test]
fn a_store_without_its_mark_opens_and_says_so() {
    if crate::backend::directory_only("the mark is a file beside a directory store") {
        return;
    }
    let f = Fixture::new();
    let db = f.db();
    let Fixture { dir, daemon, .. } = f;
    assert!(daemon.terminate().success());
    let mark = db.join("latchkey.mark");
    std::fs::remove_file(&mark).unwrap();

    let daemon = Daemon::start(&db);
    let log = daemon.log_with("is missing");
    assert!(log.contains("latchkey.mark) is missing"), "{log}");
    assert!(mark.exists(), "a new mark is written at open");
    assert!(daemon.terminate().success());

    let daemon = Daemon::start(&db);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("is missing"),
        "a store with its mark opens quietly: {log}"
    );
    drop(dir);
}
