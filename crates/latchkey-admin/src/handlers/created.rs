//! `201 Created` answers: with `Location`, the new record's path. Without one, RFC 9110
//! §15.3.2 makes the created resource the request's target: `/v1/keys`, the collection.

use axum::Json;
use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use uuid::Uuid;

/// A 201 with `Location` (and `Cache-Control: no-store` for an answer holding a secret).
pub(crate) type Created<T, const N: usize> = (StatusCode, [(HeaderName, HeaderValue); N], Json<T>);

/// The path of record `id` in `collection` (`keys`, `users`, `groups`), under the path the
/// request came by (`uri`, as the app received it: `OriginalUri`) up to its last
/// `collection` segment: `/v1/keys/{id}` for `POST /v1/keys` and `POST
/// /v1/keys/{old}/rotate`, `/t1/admin/v1/keys/{id}` in an app that nests the admin router
/// under `/{tenant}/admin`.
fn location(uri: &Uri, collection: &str, id: Uuid) -> HeaderValue {
    let path = uri.path();
    let base = path
        .match_indices(&format!("/{collection}"))
        .map(|(at, found)| at + found.len())
        .filter(|&end| matches!(path.as_bytes().get(end), None | Some(b'/')))
        .last()
        .map_or_else(|| format!("/v1/{collection}"), |end| path[..end].to_owned());
    // A path may hold raw bytes past ASCII, which a header may too but clients read badly:
    // percent-encoded, every byte is a header's.
    let base = percent_encoding::percent_encode(base.as_bytes(), percent_encoding::CONTROLS);
    HeaderValue::try_from(format!("{base}/{id}")).expect("visible ASCII only")
}

/// 201 for a record created at `collection/id`, under `uri` (see [`location`]).
pub(crate) fn created<T>(uri: &Uri, collection: &str, id: Uuid, body: T) -> Created<T, 1> {
    (
        StatusCode::CREATED,
        [(LOCATION, location(uri, collection, id))],
        Json(body),
    )
}

/// [`created`] for a record whose answer holds its secret, the only answer that ever does:
/// `Cache-Control: no-store`, so that no cache between the caller and the daemon keeps it.
pub(crate) fn created_with_secret<T>(
    uri: &Uri,
    collection: &str,
    id: Uuid,
    body: T,
) -> Created<T, 2> {
    (
        StatusCode::CREATED,
        [
            (LOCATION, location(uri, collection, id)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(body),
    )
}
