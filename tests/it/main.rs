//! Black-box tests of the `latchkey` binary: each starts the real daemon on 127.0.0.1 with
//! port 0, reads the port it prints, and drives it with the CLI and raw HTTP.
//!
//! Run with `cargo test -p latchkey-tests` (or `cargo nextest run -p latchkey-tests`); see
//! `harness.rs` for how the binary is found.

// Finding and building the binary, daemons with a kill-on-drop guard, CLI runs, HTTP.
mod harness;

// The backend switch: LATCHKEY_TEST_POSTGRES runs every test on a fresh PostgreSQL database,
// LATCHKEY_TEST_ENGINE=redb on redb stores.
mod backend;

// Records several modules start from (a group and a user in it).
mod shared;

// The whole life of a key through the CLI: create, use, list, filter, rename, disable,
// enable, rotate, revoke, delete.
mod key_life;

// Users and groups: permission changes reach existing keys at once.
mod principals;

// Every endpoint's error paths over raw HTTP: status, problem code, field.
mod http_errors;

// The same error paths through the CLI: exit codes and one line on stderr.
mod cli_errors;

// No escalation: a limited key cannot mint a stronger key or widen its own user; tenants;
// delegation caps; the last admin key.
mod escalation;

// Restarts, kill -9 and SIGTERM: what returned 2xx survives.
mod durability;

// `--db` on the store directly, `init`, and a store held by the daemon.
mod direct;

// `scan`, `verify`, `completions`, `default-config` and the config file.
mod tools;

// Remote verification: a daemon and two example-remote-orders apps, revocations, a kill
// and a restart.
mod remote;

// Many records: users and groups in pages, revoking all keys of a user, and a deletion
// whose per-key work finishes in the background.
mod bulk;
// HTTPS end to end with a CA made at test time: the CLI with --ca-cert, a wrong CA refused,
// a remote verifier over https.
mod tls;

// `serve` and `init` at start: refusals that create nothing, --admin-key-file.
mod startup;

// Header-read timeouts, /metrics on its own listener or behind a key, logs.
mod listeners;

// What /metrics says is open (connections, event streams, console sessions) and what the
// listeners shed.
mod live_metrics;

// Several daemons on one PostgreSQL database with their remote apps: a write on one applies
// on the other, kill -9 mid-write, PostgreSQL stopped and back (PostgreSQL only).
mod cluster;

// The embedded engine: `--engine` on init, serve and restore, refusals that change nothing,
// a sled store moved to redb by backup and restore.
mod engines;

// Operations: a full disk (on a tmpfs, as root), a damaged store at start, backup and
// restore during writes, key import.
mod operations;

// The web console in a real Chromium: sign in, users, keys (secret once), search, rotate,
// revoke, delete, sign out; a read-only key sees and may do no writes.
mod console;

// The shipped deployment files: the container image's command and the systemd unit's, run
// as their engines would run them.
mod deploy;

// Usage control: the CLI's flags, and the daemon's layer enforcing them.
mod usage_control;

// Bounded memory on endless input: import, scan, verify under an address-space limit.
mod bounded;
