use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::Fixture;

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list")
}

/// Whether the audit trail holds an event with this action (read page by page, bounded).
fn audit_has(f: &Fixture, action: &str) -> bool {
    let mut after = "0".to_owned();
    for _ in 0..20 {
        let page = f.http("GET", &format!("/v1/audit?after={after}&limit=1000"), None);
        if items(&page.body).iter().any(|e| e["action"] == action) {
            return true;
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return false,
        }
    }
    false
}

/// `users revoke-keys` through the CLI: every key of the user is refused at once, the
/// user and other users' keys stay.
#[test]
fn users_revoke_keys_refuses_every_key_of_the_user() {
    let f = Fixture::new();
    f.user("bot", "orders:read");
    f.user("other", "orders:read");
    let keys: Vec<String> = (0..3)
        .map(|i| f.key("bot", &format!("k{i}"), &[]).1)
        .collect();
    let (_, other) = f.key("other", "kept", &[]);
    for key in &keys {
        assert!(f.verifies(key, &["orders:read"]));
    }

    let done = f.json(&["users", "revoke-keys", "bot"]);
    assert_eq!(done["revoked_now"], 3);
    assert_eq!(done["in_background"], false);
    for key in &keys {
        assert!(!f.verifies(key, &[]), "a key of the user still verifies");
    }
    assert!(f.verifies(&other, &["orders:read"]));
    let revoked = f.json(&["keys", "list", "--user", "bot", "--status", "revoked"]);
    assert_eq!(items(&revoked).len(), 3);
    f.json(&["users", "show", "bot"]);
    let text = f.cli(&["users", "revoke-keys", "bot"]).ok();
    assert!(
        text.stdout.contains("Revoked every key of user bot"),
        "{text:#?}"
    );

    f.cli(&["users", "revoke-keys", "nobody"])
        .fails(1, "not_found");
    f.http("POST", "/v1/users/nobody/revoke-keys", None)
        .problem(404, "not_found");
}

/// `users list` and `groups list` page with `--limit` and `--cursor`.
#[test]
fn users_and_groups_lists_page_through_the_cli() {
    let f = Fixture::new();
    for i in 0..4 {
        f.user(&format!("user-{i}"), "");
        f.json(&["groups", "add", "--name", &format!("group-{i}")]);
    }
    for (collection, first) in [("users", "user-"), ("groups", "group-")] {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let mut args = vec![collection, "list", "--limit", "2"];
            if let Some(c) = &cursor {
                args.extend(["--cursor", c]);
            }
            let page = f.json(&args);
            assert!(items(&page).len() <= 2);
            names.extend(
                items(&page)
                    .iter()
                    .map(|r| r["name"].as_str().unwrap().to_owned()),
            );
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let expected: Vec<String> = std::iter::once("admin".to_owned())
            .chain((0..4).map(|i| format!("{first}{i}")))
            .collect();
        assert_eq!(names, expected, "{collection}");
    }
    let text = f.cli(&["users", "list", "--limit", "1"]).ok();
    assert!(
        text.stderr
            .contains("More users: the same command with --cursor"),
        "{text:#?}"
    );
    f.cli(&["users", "list", "--cursor", "nonsense"])
        .fails(1, "cursor");
}

/// The text lists name the users and groups of their page's records (read one by one, not
/// by listing the whole store), and show the id of one the caller may not read.
#[test]
fn text_lists_name_the_users_and_groups_on_their_page() {
    let f = Fixture::new();
    f.json(&["groups", "add", "--name", "readers"]);
    f.json(&[
        "users",
        "add",
        "--name",
        "billing-bot",
        "--groups",
        "readers",
    ]);
    let (key, _) = f.key("billing-bot", "nightly", &[]);
    let keys = f.cli(&["keys", "list"]).ok();
    let row = keys.stdout.lines().find(|l| l.contains("nightly"));
    assert!(row.is_some_and(|r| r.contains("billing-bot")), "{keys:#?}");
    let users = f.cli(&["users", "list"]).ok();
    let row = users.stdout.lines().find(|l| l.contains("billing-bot"));
    assert!(row.is_some_and(|r| r.contains("readers")), "{users:#?}");
    let shown = f.cli(&["users", "show", "billing-bot"]).ok();
    assert!(shown.stdout.contains("readers"), "{shown:#?}");

    // A reader of keys that may not read users sees the user's id.
    f.user("auditor", "latchkey:keys:read");
    let (_, reader) = f.key("auditor", "look", &[]);
    let seen = f.daemon.cli_as(&reader, &["keys", "list"]).ok();
    let user_id = key["user_id"].as_str().unwrap();
    let row = seen.stdout.lines().find(|l| l.contains("nightly"));
    assert!(row.is_some_and(|r| r.contains(user_id)), "{seen:#?}");
}

/// Deleting a user with more keys than one background chunk (1,000) returns at once, none
/// of its keys verifies from then on, and the records follow in the background, with the
/// end of the work in the audit trail and the counts of `/metrics`.
#[test]
fn deleting_a_user_with_many_keys_finishes_in_the_background() {
    let f = Fixture::new();
    f.user("big", "orders:read");
    let mut sample = Vec::new();
    for i in 0..1_005 {
        let created = f.http(
            "POST",
            "/v1/keys",
            Some(json!({"name": format!("k{i}"), "user_id": "big"})),
        );
        assert_eq!(created.status.as_u16(), 201, "{created:#?}");
        if i % 100 == 0 {
            sample.push(created.body["secret"].as_str().unwrap().to_owned());
        }
    }
    let deleted = f.http("DELETE", "/v1/users/big", None);
    assert_eq!(deleted.status.as_u16(), 204, "{deleted:#?}");
    for key in &sample {
        let answer = f.http("POST", "/v1/verify", Some(json!({"key": key})));
        assert_eq!(answer.body["valid"], false, "{answer:#?}");
        assert_eq!(answer.body["code"], "key_revoked");
    }
    let started = Instant::now();
    loop {
        if audit_has(&f, "user.keys_revoked") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the background revocation never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = f.daemon.http("GET", "/metrics", None, None).text;
    assert!(
        metrics.contains("latchkey_keys{status=\"revoked\"} 1005"),
        "{metrics}"
    );
    assert!(
        metrics.contains("latchkey_keys{status=\"active\"} 1\n"),
        "{metrics}"
    );
    let audit = f.json(&["audit", "verify"]);
    assert_eq!(audit["valid"], true, "{audit}");
}
