//! Records that several test modules start from, made through the CLI.

use serde_json::Value;

/// Creates the group `readers` (`orders:read`) and the user `user` in it through `json`, a
/// `--json` CLI run as the admin (`Fixture::json`, or a cluster's); returns both records.
#[track_caller]
pub(crate) fn reader(json: impl Fn(&[&str]) -> Value, user: &str) -> (Value, Value) {
    let group = json(&[
        "groups",
        "add",
        "--name",
        "readers",
        "--permissions",
        "orders:read",
    ]);
    let user = json(&["users", "add", "--name", user, "--groups", "readers"]);
    (group, user)
}
