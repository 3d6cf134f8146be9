//! How commands reach the management API: one [`Transport`] trait, two implementations.
//!
//! Every management command is written once, as HTTP requests against the API of
//! `latchkey-admin`. [`HttpTransport`] sends them to a daemon; [`LocalTransport`] opens the
//! store itself and sends them through the admin router in process, acting as the operator.
//! So `--db` and `--url` cannot drift apart: they run the same handlers.

mod http;
mod local;
mod problem;

use std::future::Future;

use bytes::Bytes;

pub use self::http::{HttpTransport, check_url, shown_text};
pub use self::local::LocalTransport;
pub use self::problem::Problem;

/// One request to the management API. Its body may hold a key (`latchkey verify`), so its
/// `Debug` shows the body's size only.
#[derive(Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: ::http::Method,
    /// Path and query, e.g. `/v1/keys?status=active`.
    pub path: String,
    /// A JSON body, if any.
    pub body: Option<serde_json::Value>,
}

/// The answer: status and body bytes. The body may hold a new key's secret, so its `Debug`
/// shows the body's size only.
#[derive(Clone)]
pub struct ApiResponse {
    /// The status.
    pub status: ::http::StatusCode,
    /// The body.
    pub body: Bytes,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self
            .body
            .as_ref()
            .map(|b| format!("<{} bytes>", b.to_string().len()));
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &body)
            .finish()
    }
}

impl std::fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// A request that failed after it may have reached the daemon: no answer says whether the
/// daemon did what it asked (a timeout or a lost connection after it was sent, an answer
/// lost on the way). Found in an error's chain by [`outcome_unknown`].
#[derive(Debug)]
pub struct Unanswered(pub String);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unanswered {}

/// The error of a request that may have reached the daemon and whose answer was lost:
/// [`Unanswered`] for a change (the daemon may have made it), a plain error for a read.
pub(crate) fn lost_answer(method: &::http::Method, message: String) -> anyhow::Error {
    if method == ::http::Method::GET {
        anyhow::anyhow!(message)
    } else {
        Unanswered(message).into()
    }
}

/// Whether the daemon may have acted on a request that failed: it was sent, and nothing
/// answered says it was not acted on. So a request that never left, or one the daemon
/// refused (a 4xx), is not; one [`Unanswered`] is, and so is any 5xx answer
/// ([`Problem::outcome_unknown`]).
pub fn outcome_unknown(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<Unanswered>()
            || cause
                .downcast_ref::<Problem>()
                .is_some_and(Problem::outcome_unknown)
    })
}

/// Whether the daemon refused a request for want of a permission (403).
pub fn forbidden(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<Problem>()
            .is_some_and(|p| p.status == ::http::StatusCode::FORBIDDEN)
    })
}

/// Sends requests to the management API.
pub trait Transport {
    /// Sends one request and returns the response, whatever its status. Fails only when no
    /// response could be had (connection refused, I/O).
    fn send(&self, request: ApiRequest) -> impl Future<Output = anyhow::Result<ApiResponse>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::{ApiKey, Env, Prefix};

    #[test]
    fn debug_never_shows_a_body() {
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        let request = ApiRequest {
            method: ::http::Method::POST,
            path: "/v1/verify".into(),
            body: Some(serde_json::json!({"key": key.expose()})),
        };
        let response = ApiResponse {
            status: ::http::StatusCode::CREATED,
            body: Bytes::from(format!(r#"{{"secret":"{}"}}"#, key.expose())),
        };
        for text in crate::testing::debug_texts(&[&request, &response]) {
            assert!(!text.contains(key.secret()), "{text}");
            assert!(text.contains("bytes>"), "{text}");
        }
    }
}
