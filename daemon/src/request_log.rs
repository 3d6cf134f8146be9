//! What the request log (DEBUG) says of a request's URI: its path, each segment that could
//! be a secret replaced, and its query's parameter names without their values. A key can
//! arrive in either (a key pasted where an id goes, `?api_key=` on a path the daemon does
//! not serve), and a log must never hold one.

use std::fmt::Write;

use axum::http::{Request, Uri};
use latchkey_core::key::MAX_DISPLAY_PREFIX_LEN;
use tracing::Span;

/// The request's span: method and [`logged_uri`].
pub(crate) fn span<B>(request: &Request<B>) -> Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %logged_uri(request.uri()),
    )
}

/// The path with every segment longer than a display prefix (no word of a route is) that
/// is not a UUID shown as `…`, then `?` and the query's names, each `=…`.
pub(crate) fn logged_uri(uri: &Uri) -> String {
    let mut logged = String::with_capacity(uri.path().len());
    for (i, segment) in uri.path().split('/').enumerate() {
        if i > 0 {
            logged.push('/');
        }
        let shown =
            segment.len() <= MAX_DISPLAY_PREFIX_LEN || uuid::Uuid::parse_str(segment).is_ok();
        logged.push_str(if shown { segment } else { "…" });
    }
    if let Some(query) = uri.query() {
        for (i, pair) in query.split('&').enumerate() {
            let name = pair.split('=').next().unwrap_or_default();
            let name = if name.len() <= MAX_DISPLAY_PREFIX_LEN {
                name
            } else {
                "…"
            };
            let _ = write!(logged, "{}{name}=…", if i == 0 { '?' } else { '&' });
        }
    }
    logged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(uri: &str) -> String {
        logged_uri(&uri.parse().unwrap())
    }

    #[test]
    fn ids_and_prefixes_are_logged_and_longer_segments_and_query_values_are_not() {
        let prefix = latchkey_core::Prefix::new("lk").unwrap();
        let generated = latchkey_core::ApiKey::generate(&prefix, latchkey_core::Env::Live);
        let key = generated.expose();
        assert_eq!(
            logged("/v1/keys/lk_live_4fT9kQ2mX8pZ/rotate"),
            "/v1/keys/lk_live_4fT9kQ2mX8pZ/rotate"
        );
        assert_eq!(
            logged("/v1/users/01900000-0000-7000-8000-000000000000"),
            "/v1/users/01900000-0000-7000-8000-000000000000"
        );
        assert_eq!(logged(&format!("/v1/keys/{key}")), "/v1/keys/…");
        assert_eq!(
            logged(&format!("/v1/keys?api_key={key}&limit=5&{key}=x")),
            "/v1/keys?api_key=…&limit=…&…=…"
        );
        assert_eq!(logged("/"), "/");
    }
}
