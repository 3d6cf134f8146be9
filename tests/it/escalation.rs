use serde_json::json;

use crate::harness::Fixture;

/// A user that manages keys and users but holds only `orders:read` beyond that.
const LIMITED: &str = "latchkey:keys:read,latchkey:keys:write,latchkey:users:read,latchkey:users:write,latchkey:groups:read,orders:read";

#[test]
fn a_limited_key_cannot_mint_a_stronger_key() {
    let f = Fixture::new();
    f.user("limited", LIMITED);
    f.user("strong", "orders:*,invoices:*");
    let (_, limited) = f.key("limited", "delegate", &[]);
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
    f.user("limited", LIMITED);
    let (_, limited) = f.key("limited", "delegate", &[]);
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
