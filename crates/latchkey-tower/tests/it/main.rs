//! The layer through a real axum app on a real store, driven with `oneshot`.

// A fixture store, the test app and response assertions.
mod support;
// Every verification outcome: statuses, challenges, codes, principal fields.
mod outcomes;
// Permissions: RequirePermission, `principal.require`, scopes, wildcards, live changes.
mod permissions;
// Configuration: extra header, query parameter, hide_credentials, envs, public paths, realm.
mod config;
// Malformed requests: several headers, non-UTF-8, 64 KiB values; never a 500.
mod malformed;
// Verifiers that are not a store: closures, pending futures, an unavailable keystore, one
// that charges a route's extra cost itself.
mod verifiers;
// A revoke while requests are in flight: nothing that starts after it succeeds.
mod concurrency;
mod usage;
// The layer on a PostgreSQL store: cold verifications off the async worker.
mod postgres;
