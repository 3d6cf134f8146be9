//! What an authentication tells `tracing`: never the secret, nothing formatted when the
//! level is off, and nothing above DEBUG per request: a refused key is a DEBUG event, so a
//! flood of bad keys cannot flood an INFO log (only a keystore failure is a WARN). Events
//! are emitted inside the span (the caller has entered it), so they also keep any request
//! span around it (tower-http's `TraceLayer`).

use latchkey_core::{Principal, VerifyError};
use tracing::{Level, Span, field};

use crate::rejection::Reason;

/// The span of one authentication; `Span::none()` unless a tracing subscriber wants DEBUG.
pub(super) fn span() -> Span {
    // `debug_span!` alone is not free when tracing's `log` feature is on (axum's default
    // `tower-log` turns it on): a disabled span then keeps its metadata and asks `log` on
    // every enter, exit and drop, about 250 instructions a request. Checking the level first
    // (two loads) makes the disabled span `Span::none()`, for which all of that is a no-op.
    if !tracing::level_enabled!(Level::DEBUG) {
        return Span::none();
    }
    tracing::debug_span!(
        "api_key",
        prefix = field::Empty,
        key_id = field::Empty,
        user_id = field::Empty,
        outcome = field::Empty,
    )
}

/// Records which key was presented: its display prefix only.
pub(super) fn presented(span: &Span, display_prefix: &str) {
    if !span.is_disabled() {
        span.record("prefix", display_prefix);
    }
}

pub(super) fn accepted(span: &Span, principal: &Principal) {
    if !span.is_disabled() {
        span.record("key_id", field::display(principal.key_id));
        span.record("user_id", field::display(principal.user_id));
        span.record("outcome", "ok");
    }
    tracing::event!(Level::DEBUG, outcome = "ok", "api key accepted");
}

pub(super) fn rejected(span: &Span, reason: Reason, error: Option<&VerifyError>) {
    let code = reason.code();
    if !span.is_disabled() {
        span.record("outcome", code);
    }
    match (reason, error) {
        (Reason::Unavailable, Some(error)) => {
            // Core's messages name storage failures, never key material.
            latchkey_core::warn_limited!(outcome = code, %error, "api key not verified")
        }
        (Reason::Missing | Reason::OtherScheme, _) => {
            tracing::event!(Level::DEBUG, outcome = code, "no api key")
        }
        _ => tracing::event!(
            Level::DEBUG,
            outcome = code,
            reason = ?reason,
            "api key refused"
        ),
    }
}

/// A key that authenticated but was refused by its usage control (IP, limits, credits).
pub(super) fn rejected_usage(span: &Span, code: &'static str) {
    if !span.is_disabled() {
        span.record("outcome", code);
    }
    tracing::event!(
        Level::DEBUG,
        outcome = code,
        "api key refused by its usage control"
    );
}
