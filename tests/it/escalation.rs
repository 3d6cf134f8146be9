use serde_json::{Value, json};

use crate::harness::Fixture;

/// A user that manages keys and users but holds only `orders:read` beyond that.
const LIMITED: &str = "latchkey:keys:read,latchkey:keys:write,latchkey:users:read,latchkey:users:write,latchkey:groups:read,orders:read";

/// A key of the user `limited`, which holds [`LIMITED`].
fn limited_key(f: &Fixture) -> String {
    f.user("limited", LIMITED);
    f.key("limited", "delegate", &[]).1
}

#[test]
fn a_limited_key_cannot_mint_a_stronger_key() {
    let f = Fixture::new();
    let limited = limited_key(&f);
    f.user("strong", "orders:*,invoices:*");
    let as_limited = |args: &[&str]| f.daemon.cli_as(&limited, args);

    // Not for a stronger user.
    as_limited(&["keys", "add", "--name", "x", "--user", "strong"])
        .fails(1, "[insufficient_permission]");
    as_limited(&["keys", "add", "--name", "x", "--user", "admin"])
        .fails(1, "[insufficient_permission]");
    // Not scoped down to something it lacks either.
    as_limited(&[
        "keys",
        "add",
        "--name",
        "x",
        "--user",
        "strong",
        "--scopes",
        "invoices:read",
    ])
    .fails(1, "[insufficient_permission]");
    // Not a rotation of a stronger user's key (the new key would be as strong).
    let (strong_key, _) = f.key("strong", "s", &[]);
    let strong_id = strong_key["id"].as_str().unwrap();
    as_limited(&["keys", "rotate", strong_id]).fails(1, "[insufficient_permission]");

    // But a key within its own permissions, for a weaker user, is fine.
    let weak = f.daemon.cli_as(
        &limited,
        &[
            "--json",
            "users",
            "add",
            "--name",
            "weak",
            "--permissions",
            "orders:read",
        ],
    );
    let weak: serde_json::Value = weak.json();
    assert_eq!(weak["permissions"], json!(["orders:read"]));
    let created = as_limited(&["--json", "keys", "add", "--name", "ok", "--user", "weak"]).json();
    let secret = created["secret"].as_str().unwrap();
    assert!(f.verifies(secret, &["orders:read"]));
    // Its own user, narrowed by scopes: fine.
    let scoped = as_limited(&[
        "--json",
        "keys",
        "add",
        "--name",
        "mine",
        "--user",
        "limited",
        "--scopes",
        "orders:read",
    ])
    .json();
    assert_eq!(
        scoped["created_by"],
        f.json(&["verify", &limited])["principal"]["key_id"]
    );
    // A user stronger than itself: refused.
    as_limited(&[
        "users",
        "add",
        "--name",
        "boss",
        "--permissions",
        "orders:write",
    ])
    .fails(1, "[insufficient_permission]");
    as_limited(&["users", "add", "--name", "boss", "--groups", "admin"])
        .fails(1, "[insufficient_permission]");
}

#[test]
fn a_limited_key_cannot_widen_its_own_user() {
    let f = Fixture::new();
    let limited = limited_key(&f);
    let as_limited = |args: &[&str]| f.daemon.cli_as(&limited, args);

    as_limited(&[
        "users",
        "update",
        "limited",
        "--add-permissions",
        "orders:write",
    ])
    .fails(1, "[insufficient_permission]");
    as_limited(&["users", "update", "limited", "--permissions", "*"])
        .fails(1, "[insufficient_permission]");
    as_limited(&["users", "update", "limited", "--add-groups", "admin"])
        .fails(1, "[insufficient_permission]");
    // Groups it may read but not write.
    as_limited(&["groups", "update", "admin", "--name", "mine"])
        .fails(1, "[insufficient_permission]");
    as_limited(&["groups", "add", "--name", "wide", "--permissions", "*"])
        .fails(1, "[insufficient_permission]");
    // Nothing changed.
    let user = f.json(&["users", "show", "limited"]);
    assert_eq!(user["groups"], json!([]));
    assert!(!f.verifies(&limited, &["orders:write"]));
    assert!(f.verifies(&limited, &["orders:read"]));
    // The raw API says the same.
    let answer = f.daemon.http(
        "PATCH",
        "/v1/users/limited",
        Some(&limited),
        Some(json!({"add_permissions": ["invoices:read"]})),
    );
    answer.problem(403, "insufficient_permission");
}

#[test]
fn a_tenant_bound_key_sees_and_changes_only_its_tenant() {
    let f = Fixture::new();
    let bound = "latchkey:keys:read,latchkey:keys:write,latchkey:users:read,latchkey:users:write,latchkey:groups:read,latchkey:groups:write,latchkey:audit:read,orders:*";
    f.json(&[
        "users",
        "add",
        "--name",
        "acme-admin",
        "--permissions",
        bound,
        "--tenant-id",
        "acme",
    ]);
    f.json(&["users", "add", "--name", "acme-bot", "--tenant-id", "acme"]);
    f.json(&[
        "users",
        "add",
        "--name",
        "globex-bot",
        "--tenant-id",
        "globex",
    ]);
    let (_, acme) = f.key("acme-admin", "tenant admin", &[]);
    let (globex_key, _) = f.key("globex-bot", "g", &[]);
    let globex_key = globex_key["id"].as_str().unwrap();
    let as_acme = |args: &[&str]| f.daemon.cli_as(&acme, args);

    // Lists and reads: only its tenant.
    let users = as_acme(&["--json", "users", "list"]).json();
    let mut names: Vec<&str> = users
        .as_array()
        .unwrap_or_else(|| users["items"].as_array().unwrap())
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["acme-admin", "acme-bot"]);
    as_acme(&["users", "show", "globex-bot"]).fails(1, "[not_found]");
    as_acme(&["keys", "show", globex_key]).fails(1, "[not_found]");
    // Changes: as if absent, or forbidden.
    as_acme(&["keys", "revoke", globex_key]).fails(1, "[not_found]");
    as_acme(&["users", "disable", "globex-bot"]).fails(1, "[not_found]");
    as_acme(&["keys", "add", "--name", "x", "--user", "globex-bot"]).fails(1, "[not_found]");
    as_acme(&["users", "add", "--name", "spy", "--tenant-id", "globex"])
        .fails(1, "[tenant_forbidden]");
    let answer = f.daemon.http(
        "PATCH",
        "/v1/users/acme-bot",
        Some(&acme),
        Some(json!({"tenant_id": "globex"})),
    );
    answer.problem(403, "tenant_forbidden");
    // Groups are global: it writes none, even one it could see no other member of.
    f.json(&["groups", "add", "--name", "empty"]);
    as_acme(&["groups", "add", "--name", "squat"]).fails(1, "[tenant_forbidden]");
    as_acme(&[
        "groups",
        "update",
        "empty",
        "--add-permissions",
        "orders:read",
    ])
    .fails(1, "[tenant_forbidden]");
    as_acme(&["groups", "delete", "empty"]).fails(1, "[tenant_forbidden]");
    // What it creates lands in its tenant.
    let made = as_acme(&["--json", "users", "add", "--name", "new-bot"]).json();
    assert_eq!(made["tenant_id"], "acme");
    // Its audit trail holds its tenant's events only.
    let audit = f
        .daemon
        .http("GET", "/v1/audit?limit=1000", Some(&acme), None);
    assert_eq!(audit.status.as_u16(), 200, "{audit:#?}");
    let ids: Vec<Value> = ["acme-admin", "acme-bot", "new-bot"]
        .iter()
        .map(|n| f.json(&["users", "show", n])["id"].clone())
        .collect();
    let events = audit.body["items"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| ids.contains(&e["user_id"])),
        "{events:#?}"
    );
    // Nothing happened to globex.
    let globex = f.json(&["users", "show", "globex-bot"]);
    assert_eq!(globex["enabled"], true);
    assert_eq!(f.json(&["keys", "show", globex_key])["status"], "active");
}

#[test]
fn a_delegated_key_stays_capped_and_the_last_admin_key_stays() {
    let f = Fixture::new();
    let limited = limited_key(&f);
    f.user("bot", "orders:read");
    let minted = f
        .daemon
        .cli_as(
            &limited,
            &["--json", "keys", "add", "--name", "m", "--user", "bot"],
        )
        .json();
    let secret = minted["secret"].as_str().unwrap();
    assert!(minted["scopes"].as_array().is_some(), "{minted:#?}");
    // Widened later by the admin: the delegated key does not follow.
    f.json(&[
        "users",
        "update",
        "bot",
        "--add-permissions",
        "orders:write,invoices:*",
    ]);
    assert!(f.verifies(secret, &["orders:read"]));
    assert!(!f.verifies(secret, &["orders:write"]));
    assert!(!f.verifies(secret, &["invoices:read"]));

    // The only admin key can neither be revoked nor disabled, nor its user disabled.
    let admin_id = f.json(&["verify", &f.admin])["principal"]["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.cli(&["keys", "revoke", &admin_id])
        .fails(1, "[last_admin_key]");
    f.cli(&["keys", "disable", &admin_id])
        .fails(1, "[last_admin_key]");
    f.cli(&["users", "disable", "admin"])
        .fails(1, "[last_admin_key]");
    f.daemon
        .http(
            "POST",
            &format!("/v1/keys/{admin_id}/revoke"),
            Some(&f.admin),
            None,
        )
        .problem(409, "last_admin_key");
    assert!(f.verifies(&f.admin, &["latchkey:keys:write"]));
}

/// Audit s60 M1: a command asks no permission its endpoint does not. A key that may write
/// keys, users and groups, and read none of them, deletes a key by display prefix, revokes
/// a user's keys and deletes a user and a group by name: the CLI read each record first and
/// was refused `latchkey:keys:read` or `latchkey:users:read`, where the API served.
#[test]
fn a_command_asks_no_permission_its_endpoint_does_not() {
    let f = Fixture::new();
    let writes = "latchkey:keys:write,latchkey:users:write,latchkey:groups:write";
    f.user("writer", writes);
    let writer = f.key("writer", "w", &[]).1;
    let as_writer = |args: &[&str]| f.daemon.cli_as(&writer, args);
    f.user("gone", "");

    let (old, _) = f.key("gone", "old", &[]);
    let (id, prefix) = (old["id"].as_str().unwrap(), old["prefix"].as_str().unwrap());
    f.json(&["keys", "revoke", id]);
    let deleted = as_writer(&["keys", "delete", prefix]).ok().stdout;
    assert_eq!(deleted.trim(), format!("Deleted key {prefix}."));
    f.cli(&["keys", "show", id]).fails(1, "[not_found]");

    let (_, secret) = f.key("gone", "live", &[]);
    as_writer(&["users", "revoke-keys", "gone"]).ok();
    let run = f.cli(&["--json", "verify", &secret]);
    let verified: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(verified["code"], "key_revoked", "{run:#?}");

    let deleted = as_writer(&["--json", "users", "delete", "gone"]).json();
    assert_eq!(deleted, json!({"id": "gone", "deleted": true}));
    f.cli(&["users", "show", "gone"]).fails(1, "[not_found]");

    f.json(&["groups", "add", "--name", "temp"]);
    as_writer(&["groups", "delete", "temp"]).ok();
    f.cli(&["groups", "show", "temp"]).fails(1, "[not_found]");
}
