use serde_json::{Value, json};

use crate::harness::Fixture;
use crate::shared;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn group_changes_reach_existing_keys_at_once() {
    let f = Fixture::new();
    let (group, user) = shared::reader(|args| f.json(args), "shop");
    assert_eq!(group["permissions"], json!(["orders:read"]));
    assert_eq!(user["groups"], json!([group["id"]]));
    let (_, key) = f.key("shop", "storefront", &[]);

    assert!(f.verifies(&key, &["orders:read"]));
    assert!(!f.verifies(&key, &["orders:write"]));

    // Widen the group: the existing key holds the new permission on the next request.
    let widened = f.json(&[
        "groups",
        "update",
        "readers",
        "--add-permissions",
        "orders:write",
    ]);
    assert_eq!(
        widened["permissions"],
        json!(["orders:read", "orders:write"])
    );
    assert!(f.verifies(&key, &["orders:write"]));

    // A wildcard covers everything under it.
    f.json(&["groups", "update", "readers", "--permissions", "orders:*"]);
    assert!(f.verifies(&key, &["orders:items:write", "orders:read"]));
    assert!(!f.verifies(&key, &["invoices:read"]));

    // Narrow it again.
    f.json(&[
        "groups",
        "update",
        "readers",
        "--remove-permissions",
        "orders:*",
        "--add-permissions",
        "orders:read",
    ]);
    assert!(!f.verifies(&key, &["orders:write"]));
    assert!(f.verifies(&key, &["orders:read"]));

    // Rename the group; lists and shows follow.
    f.json(&["groups", "update", "readers", "--name", "order-readers"]);
    assert!(names(&f.json(&["groups", "list"])).contains(&"order-readers".to_owned()));
    f.cli(&["groups", "show", "readers"])
        .fails(1, "[not_found]");
    let table = f.cli(&["groups", "list"]).ok().stdout;
    assert!(
        table.contains("order-readers") && table.contains("orders:read"),
        "{table}"
    );
    // `users show` names the user's groups.
    let shown = f.cli(&["users", "show", "shop"]).ok().stdout;
    assert!(shown.contains("order-readers"), "{shown}");

    // Deleting the group takes its permissions away from the key at once.
    assert_eq!(
        f.json(&["groups", "delete", "order-readers"])["deleted"],
        true
    );
    assert!(!f.verifies(&key, &["orders:read"]));
    assert_eq!(f.json(&["users", "show", "shop"])["groups"], json!([]));
}

#[test]
fn user_changes_reach_existing_keys_at_once() {
    let f = Fixture::new();
    f.json(&[
        "groups",
        "add",
        "--name",
        "ops",
        "--permissions",
        "deploys:*",
    ]);
    let user = f.json(&[
        "users",
        "add",
        "--name",
        "bot",
        "--permissions",
        "metrics:read",
        "--tenant-id",
        "acme",
        "--organization-id",
        "org-1",
    ]);
    assert_eq!(user["enabled"], true);
    assert_eq!(user["tenant_id"], "acme");
    let (_, key) = f.key("bot", "agent", &[]);
    let principal = &f.json(&["verify", &key])["principal"];
    assert_eq!(principal["tenant_id"], "acme");
    assert_eq!(principal["organization_id"], "org-1");

    // Direct permissions: add, replace, remove.
    f.json(&["users", "update", "bot", "--add-permissions", "logs:read"]);
    assert!(f.verifies(&key, &["metrics:read", "logs:read"]));
    f.json(&["users", "update", "bot", "--permissions", "logs:read"]);
    assert!(!f.verifies(&key, &["metrics:read"]));
    f.json(&[
        "users",
        "update",
        "bot",
        "--remove-permissions",
        "logs:read",
    ]);
    assert!(!f.verifies(&key, &["logs:read"]));

    // Groups: add and remove.
    f.json(&["users", "update", "bot", "--add-groups", "ops"]);
    assert!(f.verifies(&key, &["deploys:start"]));
    f.json(&["users", "update", "bot", "--remove-groups", "ops"]);
    assert!(!f.verifies(&key, &["deploys:start"]));

    // Tenant: change and clear.
    let cleared = f.json(&[
        "users",
        "update",
        "bot",
        "--clear-tenant-id",
        "--organization-id",
        "org-2",
    ]);
    assert_eq!(cleared["tenant_id"], Value::Null);
    assert_eq!(cleared["organization_id"], "org-2");
    assert_eq!(
        f.json(&["verify", &key])["principal"]["tenant_id"],
        Value::Null
    );

    // Disable the user: every key stops, reversibly.
    assert_eq!(f.json(&["users", "disable", "bot"])["enabled"], false);
    let answer = f.cli(&["--json", "verify", &key]);
    assert_eq!(answer.code, 1);
    let answer: Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(answer["code"], "user_disabled");
    assert_eq!(f.json(&["users", "enable", "bot"])["enabled"], true);
    assert!(f.verifies(&key, &[]));

    // Rename; the key follows.
    f.json(&["users", "update", "bot", "--name", "robot"]);
    assert_eq!(f.json(&["verify", &key])["principal"]["user_name"], "robot");
    let table = f.cli(&["users", "list"]).ok().stdout;
    assert!(table.lines().next().unwrap().starts_with("ID"));
    assert!(
        table.contains("robot") && table.contains("admin"),
        "{table}"
    );

    // Deleting the user revokes its keys in the same step.
    let (second, _) = f.key("robot", "second", &[]);
    f.json(&["users", "delete", "robot"]);
    let answer: Value = serde_json::from_str(&f.cli(&["--json", "verify", &key]).stdout).unwrap();
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["code"], "key_revoked", "{answer}");
    let second = f.daemon.http(
        "GET",
        &format!("/v1/keys/{}", second["id"].as_str().unwrap()),
        Some(&f.admin),
        None,
    );
    // The revoked keys stay listed until deleted.
    assert_eq!(second.status, 200, "{second:#?}");
    assert_eq!(second.body["status"], "revoked");
    f.cli(&["users", "show", "robot"]).fails(1, "[not_found]");
    assert!(!names(&f.json(&["users", "list"])).contains(&"robot".to_owned()));
}

#[test]
fn users_and_groups_are_referred_to_by_id_or_name() {
    let f = Fixture::new();
    let group = f.json(&["groups", "add", "--name", "g1"]);
    let gid = group["id"].as_str().unwrap();
    assert_eq!(f.json(&["groups", "show", gid])["name"], "g1");
    let user = f.json(&[
        "users",
        "add",
        "--name",
        "u1",
        "--groups",
        gid,
        "--disabled",
    ]);
    assert_eq!(user["enabled"], false);
    let uid = user["id"].as_str().unwrap();
    assert_eq!(f.json(&["users", "show", uid])["name"], "u1");
    let (key, _) = f.key(uid, "by-id", &[]);
    assert_eq!(key["user_id"], uid);
    let listed = f.json(&["keys", "list", "--user", "u1"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}
