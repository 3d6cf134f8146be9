//! The management API driven in-process with `oneshot` on a real store in a tempdir.

// The harness: a store, the router over it, and request helpers.
mod common;
// Edits a closed store's files: core's own test helper, one copy of its on-disk layout.
#[path = "../../../latchkey-core/tests/support/tamper.rs"]
mod tamper;

// Authentication, per-route permissions, fallbacks and the operator router.
mod auth;
// The audit trail and its check.
mod audit;
// Malformed requests of every kind.
mod errors;
// The change feed as server-sent events: replay, resume, reset, heartbeats, lag.
mod events;
// No escalation through keys, users or groups; delegation caps; the last admin key;
// no-op writes.
mod escalation;
// Groups.
mod groups;
// The OpenAPI document: every status, every input rule, and rules that match the server's.
mod openapi;
// Keys: life, lists, the secret shown once.
mod keys;
// Health, metrics, the OpenAPI document.
mod system;
// Input limits: each bound at the limit and one past it; body shape; usage reports.
mod limits;
// Tenants: a bound caller sees and changes only its tenant.
mod tenants;
// Users.
mod users;
// Remote verification.
mod usage_control;
mod verify;
