//! Requests from another site are refused before anything reads them, on the browser's
//! own word: `Sec-Fetch-Site`, which every current browser sends and no page can set.
//!
//! The session cookie is `SameSite=Strict` and every form carries the session's token, so
//! a form posted from elsewhere does nothing already; this also stops what needs neither (a
//! sign-in form posted from a sibling host that planted its own token, a sign-out), and
//! says why. A page of a sibling host (`same-site`: its requests carry the cookie) may not
//! load the console's pages as images, scripts or fetches either, each of which would spend
//! the signed-in key's rate limits and credits (a resource isolation policy); following a
//! link to the console, from anywhere, opens it. A request without the header (an older
//! browser, a script) is left to the other checks.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::errors::UiError;

/// Middleware: answers 403 to a request the browser says came from another origin, unless
/// it opens a page (a `GET` or `HEAD` navigation to a document).
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if from_elsewhere(headers) && !(request.method().is_safe() && opens_a_page(headers)) {
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

/// Whether the browser loads the answer as a page of its own (`Sec-Fetch-Mode: navigate`,
/// `Sec-Fetch-Dest: document`): a link followed, not a resource another page embeds or
/// fetches (the console's pages refuse frames anyway).
fn opens_a_page(headers: &HeaderMap) -> bool {
    let is = |name: &str, value: &[u8]| headers.get(name).is_some_and(|v| v.as_bytes() == value);
    is("sec-fetch-mode", b"navigate") && is("sec-fetch-dest", b"document")
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

    #[test]
    fn only_a_navigation_to_a_document_opens_a_page() {
        let with = |mode: &'static str, dest: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("sec-fetch-mode", mode.parse().unwrap());
            headers.insert("sec-fetch-dest", dest.parse().unwrap());
            opens_a_page(&headers)
        };
        assert!(with("navigate", "document"));
        assert!(!with("navigate", "iframe"));
        assert!(!with("no-cors", "image"));
        assert!(!with("cors", "empty"));
        assert!(!opens_a_page(&HeaderMap::new()));
    }
}
