//! `201 Created` answers: with `Location`, the new record's path. Without one, RFC 9110
//! §15.3.2 makes the created resource the request's target: `/v1/keys`, the collection.

use axum::Json;
use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};
use uuid::Uuid;

/// A 201 with `Location` (and `Cache-Control: no-store` for an answer holding a secret).
pub(crate) type Created<T, const N: usize> = (StatusCode, [(HeaderName, HeaderValue); N], Json<T>);

/// The path of record `id` in `collection` (`/v1/keys`, `/v1/users`, `/v1/groups`).
fn location(collection: &str, id: Uuid) -> HeaderValue {
    HeaderValue::try_from(format!("{collection}/{id}"))
        .expect("a path of ASCII letters, digits, slashes and hyphens")
}

/// 201 for a record created at `collection/id`.
pub(crate) fn created<T>(collection: &str, id: Uuid, body: T) -> Created<T, 1> {
    (
        StatusCode::CREATED,
        [(LOCATION, location(collection, id))],
        Json(body),
    )
}

/// 201 for a record created at `collection/id` whose answer holds its secret, the only
/// answer that ever does: `Cache-Control: no-store`, so that no cache between the caller
/// and the daemon keeps it.
pub(crate) fn created_with_secret<T>(collection: &str, id: Uuid, body: T) -> Created<T, 2> {
    (
        StatusCode::CREATED,
        [
            (LOCATION, location(collection, id)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(body),
    )
}
