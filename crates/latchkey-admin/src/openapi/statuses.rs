//! The statuses that the layers around the handlers answer, added to every operation they
//! apply to: the handlers' annotations state only their own outcomes (201, 404 for a
//! record, 409 for a lifecycle conflict, …).
//!
//! | Applies to | Status | Codes |
//! |---|---|---|
//! | every operation under `/v1` | 400 | `invalid_request` (the key sent more than once, or in more than one place) |
//! | every operation under `/v1` | 401 | `missing_key`, `invalid_key`, `key_disabled`, `key_revoked`, `key_expired`, `user_disabled` |
//! | every operation under `/v1` | 403 | `insufficient_permission`, `ip_not_allowed` |
//! | every operation under `/v1` | 429 | `rate_limited`, `usage_exceeded` (the key's usage control) |
//! | every operation under `/v1` | 500 | `internal` (a record that does not decode, a storage failure) |
//! | every operation under `/v1` | 503 | `keystore_unavailable`, `store_locked`; `request_timeout` (the daemon's request timeout, not `GET /v1/backup`) |
//! | an operation with a body | 400, 408, 413, 415 | `invalid_json`, `invalid_field`; `body_timeout` (the daemon's request timeout); `payload_too_large`; `unsupported_media_type` |
//! | an operation with query parameters | 400 | `invalid_field` |
//! | a path with a record reference | 404 | `not_found` |
//! | a write (`POST`, `PATCH`, `DELETE`) to groups, users or keys | 507 | `storage_full` |

use utoipa::Modify;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

/// Adds the statuses of the table above where an operation does not state them already.
pub(super) struct LayerStatuses;

impl Modify for LayerStatuses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for (method, operation) in ["get", "put", "post", "delete", "patch"]
                .into_iter()
                .zip(operations)
            {
                if let Some(operation) = operation {
                    add_statuses(path, method, operation);
                }
            }
        }
    }
}

fn add_statuses(path: &str, method: &str, operation: &mut Operation) {
    let mut statuses = Vec::new();
    if path.starts_with("/v1/") {
        // The one layer status a handler's own 400 cannot know of: added to it too.
        if let Some(RefOr::T(stated)) = operation.responses.responses.get_mut("400") {
            stated.description.push_str("; or ");
            stated.description.push_str(SEVERAL_CREDENTIALS);
        }
        if let Some(RefOr::T(stated)) = operation.responses.responses.get_mut("503") {
            stated.description.push_str("; or ");
            stated.description.push_str(REQUEST_TIMEOUT);
        }
        // A handler's own 429 (`backup_in_progress`, `too_many_streams`): the layer's
        // too, whose headers the document then states.
        if let Some(RefOr::T(stated)) = operation.responses.responses.get_mut("429") {
            stated.description.push_str("; or ");
            stated.description.push_str(LIMITED);
        }
        statuses.extend([
            ("400", SEVERAL_CREDENTIALS),
            ("401", "The key is missing or does not authenticate (`missing_key`, `invalid_key`, `key_disabled`, `key_revoked`, `key_expired`, `user_disabled`)"),
            ("403", "The key lacks the operation's permission (`insufficient_permission`), or may not be used from this address (`ip_not_allowed`)"),
            ("429", LIMITED),
            ("500", "An internal error: a record that does not decode, or a storage failure (`internal`; the details are in the server log only)"),
            ("503", "The keystore is unavailable (`keystore_unavailable`, `store_locked`)"),
            ("503", REQUEST_TIMEOUT),
        ]);
    }
    if operation.request_body.is_some() {
        statuses.extend([
            ("400", "The body is not valid JSON, not an object, or a field breaks a rule (`invalid_json`, `invalid_field` with `field` naming it)"),
            ("408", "The body did not arrive within the daemon's request timeout (`body_timeout`): nothing was done"),
            ("413", "The body is, or is declared by `Content-Length` to be, larger than 64 KiB (`payload_too_large`)"),
            ("415", "The body's Content-Type is not `application/json`, or it has a `Content-Encoding` other than `identity` (`unsupported_media_type`)"),
        ]);
    }
    let has_query = operation.parameters.iter().flatten().any(|p| match p {
        RefOr::T(parameter) => parameter.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    if has_query {
        statuses.push((
            "400",
            "A query parameter is invalid or unknown (`invalid_field` with `field` naming it)",
        ));
    }
    if path.contains('{') {
        statuses.push(("404", "No such record (`not_found`)"));
    }
    let records = ["/v1/groups", "/v1/users", "/v1/keys"];
    if method != "get" && records.iter().any(|r| path.starts_with(r)) {
        statuses.push((
            "507",
            "The keystore's disk is full: nothing was changed (`storage_full`)",
        ));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in merged(statuses) {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(&description));
    }
    // Also `/healthz`'s 503 and `/metrics`' 401 and 503 (behind a key).
    for (status, name, integer, description) in LAYER_HEADERS {
        if let Some(RefOr::T(response)) = responses.get_mut(*status) {
            response
                .headers
                .entry((*name).to_owned())
                .or_insert_with(|| RefOr::T(header(*integer, description)));
        }
    }
}

/// The headers sent with these statuses, wherever an operation states one: the status,
/// the header, whether its value is an integer, what it says.
const LAYER_HEADERS: &[(&str, &str, bool, &str)] = &[
    (
        "400",
        "WWW-Authenticate",
        false,
        "Of `invalid_request` only (the key sent more than once): the `Bearer` challenge with `error=\"invalid_request\"` (RFC 6750 §3.1)",
    ),
    (
        "401",
        "WWW-Authenticate",
        false,
        "The `Bearer` challenge (RFC 6750 §3): `error=\"invalid_token\"` for a key sent that does not authenticate, no error for none sent",
    ),
    (
        "403",
        "WWW-Authenticate",
        false,
        "Of `insufficient_permission` only: the `Bearer` challenge with `error=\"insufficient_scope\"` and `scope` naming the permission lacked (RFC 6750 §3.1)",
    ),
    (
        "429",
        "Retry-After",
        true,
        "Of `rate_limited` and `usage_exceeded` (for credits that are refilled): seconds until a retry can pass",
    ),
    (
        "429",
        "RateLimit-Policy",
        false,
        "Of `rate_limited`: the limit reached, e.g. `\"default\";q=100;w=60` (draft-ietf-httpapi-ratelimit-headers)",
    ),
    (
        "429",
        "RateLimit",
        false,
        "Of `rate_limited`: what this request may count on, e.g. `\"default\";r=0;t=12`",
    ),
    (
        "503",
        "Retry-After",
        true,
        "Of `keystore_unavailable` and `store_locked`: 1 (none for a store whose directory was removed under the daemon, which retrying will not end)",
    ),
];

/// A response header's description, of an integer or a string.
fn header(integer: bool, description: &str) -> Header {
    let kind = match integer {
        true => Type::Integer,
        false => Type::String,
    };
    let mut header = Header::new(ObjectBuilder::new().schema_type(kind));
    header.description = Some(description.to_owned());
    header
}

/// The daemon's request timeout, a 503 under `/v1`; added to a handler's own 503 too.
const REQUEST_TIMEOUT: &str = "the request outlived the daemon's request timeout \
    (`request_timeout`; never for `GET /v1/backup`): its outcome is unknown, a write may \
    still have been made, so read it before retrying";

/// The layer's 429 under `/v1`.
const LIMITED: &str = "A rate limit of the key is reached (`rate_limited`, with `Retry-After`, `RateLimit-Policy` and `RateLimit`), or its credits are used up (`usage_exceeded`, with `Retry-After` and `retry_after` until they are refilled, when they are)";

/// The layer's 400 under `/v1`.
const SEVERAL_CREDENTIALS: &str =
    "The key was sent more than once, or in more than one place (`invalid_request`, RFC 6750 §3.1)";

/// One description per status, in the order the statuses first came: the layers' reasons
/// for one status (a 400 for the credentials, the body or the query) joined with "; or ".
fn merged<'a>(statuses: Vec<(&'a str, &str)>) -> Vec<(&'a str, String)> {
    let mut merged: Vec<(&str, String)> = Vec::new();
    for (status, description) in statuses {
        match merged.iter_mut().find(|(known, _)| *known == status) {
            Some((_, joined)) => {
                joined.push_str("; or ");
                joined.push_str(description);
            }
            None => merged.push((status, description.to_owned())),
        }
    }
    merged
}

/// A problem+json response.
fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = Content::new(Some(Ref::from_schema_name("Problem")));
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", content)
            .build(),
    )
}
