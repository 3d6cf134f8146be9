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

pub use self::http::HttpTransport;
pub use self::local::LocalTransport;
pub use self::problem::Problem;

/// One request to the management API.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: ::http::Method,
    /// Path and query, e.g. `/v1/keys?status=active`.
    pub path: String,
    /// A JSON body, if any.
    pub body: Option<serde_json::Value>,
}

/// The answer: status and body bytes.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// The status.
    pub status: ::http::StatusCode,
    /// The body.
    pub body: Bytes,
}

/// Sends requests to the management API.
pub trait Transport {
    /// Sends one request and returns the response, whatever its status. Fails only when no
    /// response could be had (connection refused, I/O).
    fn send(&self, request: ApiRequest) -> impl Future<Output = anyhow::Result<ApiResponse>>;
}
