//! Forms posted from another site are refused before anything reads them, on the browser's
//! own word: `Sec-Fetch-Site`, which every current browser sends and no page can set.
//!
//! The session cookie is `SameSite=Strict` and every form carries the session's token, so
//! such a form does nothing already; this also stops what needs neither (a sign-in form
//! posted from a sibling host that planted its own token, a sign-out), and says why. A
//! request without the header (an older browser, a script) is left to those checks.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::errors::UiError;

/// Middleware: answers 403 to a request that may change something (not `GET`, `HEAD`,
/// `OPTIONS` or `TRACE`) which the browser says came from another origin.
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if !request.method().is_safe() && from_elsewhere(request.headers()) {
        return UiError::CrossSite.into_response();
    }
    next.run(request).await
}

/// Whether `Sec-Fetch-Site` names another origin: `same-site` (a sibling host) and
/// `cross-site`, or a value this does not know; `same-origin` and `none` (typed by the
/// user) are the console's own.
fn from_elsewhere(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site") {
        None => false,
        Some(site) => !matches!(site.as_bytes(), b"same-origin" | b"none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_origin_is_elsewhere() {
        let with = |site: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(site) = site {
                headers.insert("sec-fetch-site", site.parse().unwrap());
            }
            from_elsewhere(&headers)
        };
        assert!(!with(None));
        assert!(!with(Some("same-origin")));
        assert!(!with(Some("none")));
        assert!(with(Some("same-site")));
        assert!(with(Some("cross-site")));
        assert!(with(Some("elsewhere")));
    }
}
