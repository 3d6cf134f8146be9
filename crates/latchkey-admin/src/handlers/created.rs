//! `201 Created` answers: with `Location`, the new record's path. Without one, RFC 9110
//! §15.3.2 makes the created resource the request's target: `/v1/keys`, the collection.

use axum::Json;
use axum::extract::NestedPath;
use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};
use uuid::Uuid;

/// A 201 with `Location` (and `Cache-Control: no-store` for an answer holding a secret).
pub(crate) type Created<T, const N: usize> = (StatusCode, [(HeaderName, HeaderValue); N], Json<T>);

/// The path of record `id` in `collection` (`keys`, `users`, `groups`) of the API the
/// request came through (`api`, where the router's `/v1` is nested): `/v1/keys/{id}`, or
/// `/admin/v1/keys/{id}` in an app that nests the admin router under `/admin`.
fn location(api: &NestedPath, collection: &str, id: Uuid) -> HeaderValue {
    let api = api.as_str().trim_end_matches('/');
    HeaderValue::try_from(format!("{api}/{collection}/{id}"))
        .expect("a route's path holds no control characters")
}

/// 201 for a record created at `collection/id` of `api`.
pub(crate) fn created<T>(api: &NestedPath, collection: &str, id: Uuid, body: T) -> Created<T, 1> {
    (
        StatusCode::CREATED,
        [(LOCATION, location(api, collection, id))],
        Json(body),
    )
}

/// 201 for a record created at `collection/id` of `api` whose answer holds its secret, the
/// only answer that ever does: `Cache-Control: no-store`, so that no cache between the
/// caller and the daemon keeps it.
pub(crate) fn created_with_secret<T>(
    api: &NestedPath,
    collection: &str,
    id: Uuid,
    body: T,
) -> Created<T, 2> {
    (
        StatusCode::CREATED,
        [
            (LOCATION, location(api, collection, id)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(body),
    )
}
