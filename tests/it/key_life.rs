use latchkey_core::ApiKey;
use serde_json::Value;

use crate::harness::{Fixture, secret_in};

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("a list has items")
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

fn verify_code(f: &Fixture, key: &str) -> String {
    let run = f.cli(&["--json", "verify", key]);
    let answer: Value = serde_json::from_str(&run.stdout).expect("verify --json prints JSON");
    assert_eq!(answer["valid"], run.code == 0, "{run:#?}");
    answer["code"].as_str().unwrap().to_owned()
}

#[test]
fn the_whole_life_of_a_key() {
    let f = Fixture::new();
    f.user("billing", "invoices:read,invoices:write");

    // Create: the human output ends with the secret alone on the line after the marker.
    let run = f
        .cli(&[
            "keys",
            "add",
            "--name",
            "nightly export",
            "--user",
            "billing",
            "--description",
            "cron job",
        ])
        .ok();
    let secret = secret_in(&run.stdout).expect("the secret follows its marker");
    let parsed = ApiKey::parse(&secret).expect("a well-formed key");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("id "), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("name ") && l.ends_with("nightly export"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("user ") && l.contains("billing"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("prefix ") && l.ends_with(parsed.display_prefix()))
    );
    assert_eq!(lines[lines.len() - 2], "Secret (store immediately):");
    assert_eq!(lines[lines.len() - 1], secret);
    let id = lines[0].split_whitespace().nth(1).unwrap().to_owned();

    // The secret is never shown again: not by show, list or the daemon's log.
    let shown = f.cli(&["--json", "keys", "show", &id]).ok();
    assert!(!shown.stdout.contains(parsed.secret()));
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["name"], "nightly export");
    assert_eq!(shown["description"], "cron job");
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["prefix"], parsed.display_prefix());
    assert!(shown.get("secret").is_none());
    // By display prefix too.
    assert_eq!(
        f.json(&["keys", "show", parsed.display_prefix()])["id"],
        id.as_str()
    );

    // Use it.
    assert!(f.verifies(&secret, &["invoices:read"]));
    assert!(f.verifies(&secret, &["invoices:read", "invoices:write"]));
    assert!(!f.verifies(&secret, &["orders:read"]));
    let verified = f.json(&["verify", &secret, "--permission", "invoices:read"]);
    assert_eq!(verified["valid"], true);
    assert_eq!(verified["code"], "ok");
    assert_eq!(verified["principal"]["key_id"], id.as_str());
    assert_eq!(verified["principal"]["user_name"], "billing");
    assert_eq!(verified["principal"]["prefix"], parsed.display_prefix());

    // A second key, scoped; list and filter.
    let (ci, ci_secret) = f.key("billing", "ci deploy", &["--scopes", "invoices:read"]);
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    assert_eq!(ci["scopes"], serde_json::json!(["invoices:read"]));
    assert!(f.verifies(&ci_secret, &["invoices:read"]));
    assert!(!f.verifies(&ci_secret, &["invoices:write"]));

    let table = f.cli(&["keys", "list", "--user", "billing"]).ok().stdout;
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(
        table.contains(parsed.display_prefix()) && table.contains("ci deploy"),
        "{table}"
    );
    assert!(!table.contains(parsed.secret()));
    let by_user = f.json(&["keys", "list", "--user", "billing"]);
    assert_eq!(ids(&by_user).len(), 2);
    let searched = f.json(&["keys", "list", "--search", "nightly"]);
    assert_eq!(ids(&searched), [id.as_str()]);
    let by_name = f.json(&["keys", "list", "--user", "billing", "--sort", "name"]);
    assert_eq!(ids(&by_name), [ci_id.as_str(), id.as_str()]);
    let by_name_desc = f.json(&["keys", "list", "--user", "billing", "--sort", "-name"]);
    assert_eq!(ids(&by_name_desc), [id.as_str(), ci_id.as_str()]);

    // Pagination: one key per page, the cursor leads to the other.
    let first = f.json(&[
        "keys", "list", "--user", "billing", "--sort", "name", "--limit", "1",
    ]);
    assert_eq!(ids(&first), [ci_id.as_str()]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let second = f.json(&[
        "keys", "list", "--user", "billing", "--sort", "name", "--limit", "1", "--cursor", &cursor,
    ]);
    assert_eq!(ids(&second), [id.as_str()]);

    // Rename, and clear the description.
    let renamed = f.json(&[
        "keys",
        "update",
        &id,
        "--name",
        "nightly export v2",
        "--clear-description",
    ]);
    assert_eq!(renamed["name"], "nightly export v2");
    assert_eq!(renamed["description"], Value::Null);
    assert!(
        f.verifies(&secret, &["invoices:read"]),
        "renaming keeps the key working"
    );

    // Disable and enable: reversible, effective at once.
    assert_eq!(f.json(&["keys", "disable", &ci_id])["status"], "disabled");
    assert_eq!(verify_code(&f, &ci_secret), "key_disabled");
    assert_eq!(
        ids(&f.json(&["keys", "list", "--status", "disabled"])),
        [ci_id.as_str()]
    );
    let active = ids(&f.json(&["keys", "list", "--status", "active", "--user", "billing"]));
    assert_eq!(active, [id.as_str()]);
    assert_eq!(f.json(&["keys", "enable", &ci_id])["status"], "active");
    assert_eq!(verify_code(&f, &ci_secret), "ok");

    // Rotate with a grace period: both keys work; the new one keeps name, user and scopes.
    let rotated = f.json(&["keys", "rotate", &ci_id, "--grace", "1h"]);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, ci_id);
    assert_eq!(rotated["name"], "ci deploy");
    assert_eq!(rotated["user_id"], ci["user_id"]);
    assert_eq!(rotated["scopes"], ci["scopes"]);
    assert_eq!(rotated["rotated_from"], ci_id.as_str());
    assert_eq!(
        verify_code(&f, &ci_secret),
        "ok",
        "the old key works during the grace period"
    );
    assert_eq!(verify_code(&f, &new_secret), "ok");
    assert!(f.json(&["keys", "show", &ci_id])["expires_at"].is_string());

    // Rotate without grace: the old key stops at once.
    let again = f.json(&["keys", "rotate", &new_id, "--grace", "0"]);
    let newest = again["secret"].as_str().unwrap().to_owned();
    assert_eq!(verify_code(&f, &new_secret), "key_expired");
    assert_eq!(verify_code(&f, &newest), "ok");
    // The human form of rotate prints the secret block too.
    let newest_id = again["id"].as_str().unwrap().to_owned();
    let human = f
        .cli(&["keys", "rotate", &newest_id, "--grace", "24h"])
        .ok()
        .stdout;
    let rotated_secret = secret_in(&human).expect("rotate prints the new secret");
    assert!(ApiKey::parse(&rotated_secret).is_ok());
    assert!(human.contains("24h"), "{human}");

    // Revoke: irreversible.
    let revoked = f.json(&["keys", "revoke", &id]);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(verify_code(&f, &secret), "key_revoked");
    f.cli(&["keys", "enable", &id]).fails(1, "[key_revoked]");
    f.cli(&["keys", "disable", &id]).fails(1, "[key_revoked]");
    // Revoking again is idempotent.
    assert_eq!(f.json(&["keys", "revoke", &id])["status"], "revoked");

    // Delete: only once revoked.
    f.cli(&["keys", "delete", &newest_id])
        .fails(1, "[key_not_revoked]");
    let deleted = f.json(&["keys", "delete", &id]);
    assert_eq!(deleted["deleted"], true);
    f.cli(&["keys", "show", &id]).fails(1, "[not_found]");
    assert_eq!(verify_code(&f, &secret), "invalid_key");

    // No secret ever reached the daemon's log.
    let log = f.daemon.log();
    for s in [
        &secret,
        &ci_secret,
        &new_secret,
        &newest,
        &rotated_secret,
        &f.admin,
    ] {
        let key = ApiKey::parse(s).unwrap();
        assert!(!log.contains(key.secret()), "a secret in the log");
    }
}

/// `field  value` lines as a map.
fn fields(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (field, value) = line.split_once("  ")?;
            Some((field.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[test]
fn people_read_what_the_json_answer_holds() {
    let f = Fixture::new();
    let user_id = f.user("billing", "invoices:read,invoices:write");
    let (key, _) = f.key(
        "billing",
        "export",
        &[
            "--description",
            "cron job",
            "--scopes",
            "invoices:read",
            "--expires-at",
            "2031-02-03T04:05:06.789Z",
            "--credits",
            "7",
            "--allow-ip",
            "10.0.0.0/8",
        ],
    );
    let id = key["id"].as_str().unwrap();
    let json = f.json(&["keys", "show", id]);
    let human = fields(&f.cli(&["keys", "show", id]).ok().stdout);
    for field in ["id", "name", "description", "prefix", "env", "status"] {
        assert_eq!(
            human[field],
            json[field].as_str().unwrap(),
            "{field}: {human:?}"
        );
    }
    assert_eq!(human["user"], format!("billing ({user_id})"));
    assert_eq!(human["scopes"], "invoices:read");
    assert_eq!(human["expires_at"], "2031-02-03T04:05:06Z");
    assert_eq!(human["revoked_at"], "-");
    assert_eq!(
        human["created_at"],
        json["created_at"].as_str().unwrap()[..19].to_owned() + "Z"
    );
    assert_eq!(human["created_by"], json["created_by"].as_str().unwrap());
    assert_eq!(human["rotated_from"], "-");
    assert_eq!(human["usage_count"], json["usage_count"].to_string());
    assert_eq!(human["credits"], "7");
    assert_eq!(human["allowed_ips"], "10.0.0.0/8");
    // A new key's block says when it expires, without a `keys show`.
    let add = [
        "keys",
        "add",
        "--name",
        "later",
        "--user",
        "billing",
        "--expires-at",
        "2031-02-03T04:05:06Z",
    ];
    let created = fields(&f.cli(&add).ok().stdout);
    assert_eq!(created["expires_at"], "2031-02-03T04:05:06Z", "{created:?}");

    // A user and a group, shown with the group by name; the audit trail's table.
    f.json(&[
        "groups",
        "add",
        "--name",
        "readers",
        "--permissions",
        "invoices:read",
    ]);
    f.json(&["users", "update", "billing", "--add-groups", "readers"]);
    let user = fields(&f.cli(&["users", "show", "billing"]).ok().stdout);
    assert_eq!(user["id"], user_id);
    assert_eq!(user["enabled"], "true");
    assert_eq!(user["groups"], "readers");
    assert_eq!(user["permissions"], "invoices:read,invoices:write");
    assert_eq!(user["tenant_id"], "-");
    let audit = f.cli(&["audit", "list"]).ok().stdout;
    let row = audit
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{audit}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[2], json["created_by"].as_str().unwrap(), "{row}");
    assert_eq!(cells[3..], ["key.create", id, &user_id, "-"], "{row}");
    // An update's row ends with what it changed.
    let row = audit.lines().rfind(|l| l.contains("user.update"));
    let row = row.unwrap_or_else(|| panic!("{audit}"));
    assert!(row.contains("groups: +[\""), "{row}");
}

/// The human form of a rotation without grace of the very key the CLI sends names the
/// key's user: read before the rotation, since the old key can read nothing after it.
#[test]
fn rotating_the_cli_s_own_key_without_grace_names_its_user() {
    let f = Fixture::new();
    let prefix = ApiKey::parse(&f.admin).unwrap().display_prefix().to_owned();
    let list = f.json(&["keys", "list"]);
    let own = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .expect("the admin key is listed");
    let run = f
        .cli(&[
            "keys",
            "rotate",
            own["id"].as_str().unwrap(),
            "--grace",
            "0",
        ])
        .ok();
    let user = run
        .stdout
        .lines()
        .find(|line| line.starts_with("user"))
        .expect("a user line");
    assert!(user.contains("admin ("), "{run:#?}");
}
