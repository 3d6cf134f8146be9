//! The headers on every console answer (and HSTS on every one under TLS).

use axum::response::Response;
use http::HeaderValue;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

/// Only the daemon's own script, stylesheet and images; no inline code, no framing, forms
/// post back to the console only.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Under TLS: browsers come back over HTTPS only, for a year, so a session cookie is never
/// offered to a plain-HTTP page of the same host.
pub(crate) const HSTS: &str = "max-age=31536000";

/// Adds the policy headers, and under TLS (`tls`) [`HSTS`]. Pages are never cached: one
/// may hold a secret just created.
pub(crate) async fn secure(response: Response, tls: bool) -> Response {
    secured(response, tls)
}

/// [`secure`], for a caller that is not a middleware.
pub(crate) fn secured(mut response: Response, tls: bool) -> Response {
    let headers = response.headers_mut();
    if tls {
        headers.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
