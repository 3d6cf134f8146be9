//! One error type for every endpoint, answered as `application/problem+json` (RFC 9457).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use latchkey_core::{StoreError, without_keys};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response (`application/problem+json`, RFC 9457).
///
/// `code` is stable and machine-readable; `title` and `detail` are for people and may change.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:latchkey:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// The stable code. Of the request: `invalid_json`, `invalid_field`,
    /// `invalid_request`, `method_not_allowed`, `unsupported_media_type`,
    /// `payload_too_large`, `not_found`. Of the caller's key (as the layer answers):
    /// `missing_key`, `invalid_key`, `key_disabled`, `key_revoked`, `key_expired`,
    /// `user_disabled`, `ip_not_allowed`, `insufficient_permission`, `rate_limited`,
    /// `usage_exceeded`. Of what was asked: `tenant_forbidden`, `name_taken`,
    /// `key_not_revoked`, `key_revoked`, `key_rotated`, `key_expired`, `last_admin_key`,
    /// `too_many_streams`, `backup_in_progress`. Of the daemon: `keystore_unavailable`,
    /// `store_locked`, `storage_full`, `request_timeout`, `body_timeout`, `internal`.
    pub code: String,
    /// What went wrong with this request.
    pub detail: String,
    /// The request field at fault (body member or query parameter), when one is.
    pub field: Option<String>,
    /// Of a 429 (`rate_limited`, and `usage_exceeded` for credits that are refilled): the
    /// seconds until a retry can pass, as `Retry-After` says.
    pub retry_after: Option<u64>,
    /// Of a 429 `rate_limited`: the name of the rate limit reached (a user's shared limit
    /// with `user:` before it).
    pub limit: Option<String>,
    /// Of a 403 `insufficient_permission`: the permission the caller's key lacks (the
    /// route's, or one the request would grant beyond the caller).
    pub permission: Option<String>,
}

/// The stable code of an error response, put in the response's extensions (as the
/// authentication layer's rejections do) so that the metrics middleware counts responses by
/// outcome without reading bodies.
pub(crate) use latchkey_tower::ProblemCode;

/// Why a request failed; becomes a problem+json response.
///
/// Internal failures (storage, corrupt records, a panicked task) give the client a generic
/// message: their detail goes to `tracing` only, never into a response.
#[derive(Debug)]
pub(crate) struct AppError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<String>,
    permission: Option<String>,
    www_authenticate: Option<String>,
    /// An unavailability that retrying will not end (a displaced store): no `Retry-After`.
    lasting: bool,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            detail: detail.into(),
            field: None,
            permission: None,
            www_authenticate: None,
            lasting: false,
        }
    }

    /// A 400 naming the request field at fault.
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_field", detail).with_field(field)
    }

    /// A 400 `invalid_field` on `field` when the list `items` of the body holds more than
    /// `max`: "at most {max} {what}".
    pub(crate) fn check_len<T>(
        field: &str,
        items: &[T],
        max: usize,
        what: &str,
    ) -> Result<(), AppError> {
        if items.len() > max {
            return Err(AppError::invalid(field, format!("at most {max} {what}")));
        }
        Ok(())
    }

    /// Names the request field at fault, for errors (such as a 404 for a group named in a
    /// body) that did not know it. Only a client's error has a field at fault: a 503 met
    /// while reading the field's record (the keystore unreachable) names none.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        if self.status.is_client_error() {
            self.field = Some(field.into());
        }
        self
    }

    /// A 403 for a caller that lacks `permission`, with the RFC 6750 challenge.
    pub(crate) fn insufficient_permission(permission: &str, detail: impl Into<String>) -> Self {
        let mut err = AppError::new(StatusCode::FORBIDDEN, "insufficient_permission", detail);
        err.www_authenticate = Some(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{permission}\""
        ));
        err.permission = Some(permission.to_owned());
        err
    }

    /// A 404 `not_found` for a path nothing serves.
    pub(crate) fn no_such_endpoint() -> Self {
        AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// A 503 `keystore_unavailable` for a verification or lease (`during`) that could not
    /// read or reserve what it needs: its cause is logged, never shown. Never a refusal of
    /// the key: a remote verifier answers 503 for it, not 401.
    pub(crate) fn keystore_unavailable(during: &str, cause: &str) -> Self {
        latchkey_core::warn_limited!(error = %cause, "keystore unavailable during {during}");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "keystore_unavailable",
            "the keystore is unavailable; try again",
        )
    }

    /// A 503 `request_timeout`: the daemon's request timeout cut the request. The handler's
    /// blocking work cannot be stopped, so a write may still be made after this answer.
    fn request_timeout() -> Self {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took longer than the request timeout; its outcome is unknown: \
             a write may still have been made, so read the record before retrying",
        )
    }

    /// A 500 whose cause is logged, never shown.
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error in the management API");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; the server log has the detail",
        )
    }
}

/// A short summary per code, for the problem's `title`.
fn title(code: &str, status: StatusCode) -> &'static str {
    match code {
        "invalid_json" => "The request body is not valid JSON for this endpoint",
        "invalid_field" => "A request field is invalid",
        "not_found" => "No such record",
        "name_taken" => "The name is already taken",
        "key_not_revoked" => "The key must be revoked first",
        "key_revoked" => "The key is revoked",
        "insufficient_permission" => "Insufficient permission",
        "tenant_forbidden" => "Outside the caller's tenant",
        "last_admin_key" => "The last admin key must remain",
        "missing_key" => "An API key is required",
        "invalid_key" => "The API key is not valid",
        "keystore_unavailable" | "store_locked" => "Keystore unavailable",
        "method_not_allowed" => "Method not allowed",
        "unsupported_media_type" => "Unsupported media type",
        "payload_too_large" => "The request body is too large",
        "too_many_streams" => "Too many event streams are open",
        "backup_in_progress" => "A backup is being taken",
        "storage_full" => "The disk is full",
        "request_timeout" => "The request timed out",
        "body_timeout" => "The request's body came too slowly",
        "idempotency_key_reused" => "The Idempotency-Key came with another report",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

/// The answer to a request cut by the daemon's request timeout: a 503 problem+json with code
/// `request_timeout`, saying that the outcome is unknown (the handler's blocking work keeps
/// running, so a write may still be made).
pub fn request_timeout_response() -> Response {
    AppError::request_timeout().into_response()
}

/// The answer to a request whose body did not arrive within the daemon's request timeout,
/// refused before anything was done: a 408 problem+json with code `body_timeout`.
pub fn body_timeout_response() -> Response {
    AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request's body did not arrive within the request timeout: nothing was done",
    )
    .into_response()
}

/// The answer to an HTTP/1.1 request without a `Host` header, or with more than one: a 400
/// problem+json with code `invalid_request`, as RFC 9112 §3.2 requires of a server. For
/// the listener that serves this crate's routers (the daemon's).
pub fn host_refused_response() -> Response {
    AppError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "an HTTP/1.1 request names its host in exactly one Host header",
    )
    .into_response()
}

/// The answer to a path nothing serves: a 404 problem+json with code `not_found`, as the
/// API answers an unknown `/v1` path. For the fallback of an app that serves this crate's
/// routers among others (the daemon's).
pub fn not_found_response() -> Response {
    AppError::no_such_endpoint().into_response()
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        let code = err.code();
        match err {
            StoreError::NotFound { .. } => {
                AppError::new(StatusCode::NOT_FOUND, code, err.to_string())
            }
            StoreError::Conflict(_) => AppError::new(StatusCode::CONFLICT, code, err.to_string()),
            StoreError::Invalid { field, .. } => {
                AppError::new(StatusCode::BAD_REQUEST, code, err.to_string()).with_field(field)
            }
            StoreError::Escalation { ref permission } => {
                AppError::insufficient_permission(permission, err.to_string())
            }
            StoreError::TenantForbidden { field } => {
                AppError::new(StatusCode::FORBIDDEN, code, err.to_string()).with_field(field)
            }
            StoreError::GlobalOnly(_) => {
                AppError::new(StatusCode::FORBIDDEN, code, err.to_string())
            }
            StoreError::Locked { .. } => {
                latchkey_core::warn_limited!(error = %err, "keystore locked");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    "the keystore is held by another process",
                )
            }
            StoreError::Unavailable(_) => {
                latchkey_core::warn_limited!(error = %err, "keystore unavailable");
                let lasting = err.is_displaced();
                let detail = if lasting {
                    "the store's directory was removed or replaced under the daemon: writes \
                     are refused, since nothing would find them at its next start; what it \
                     holds is being saved beside it as a .rescued-<time>.backup file, to \
                     restore (the daemon's log says where, or why it could not be: then take \
                     a backup before the daemon stops)"
                } else if err.may_have_committed() {
                    "the keystore's database stopped answering while it committed the write, \
                     which may have been applied: check before retrying it"
                } else {
                    "the keystore cannot serve this now (its database is out of reach, or it is \
                     being reopened after a storage failure); nothing was changed: retry later"
                };
                AppError {
                    lasting,
                    ..AppError::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
                }
            }
            StoreError::StorageFull { .. } => {
                latchkey_core::warn_limited!(error = %err, "write refused: the disk is full");
                AppError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    code,
                    "the keystore's disk is full: nothing was changed; \
                     it will succeed again once space is freed",
                )
            }
            // Storage, Corrupt, and whatever core adds later: the client learns nothing.
            _ => AppError::internal(err),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_: format!("urn:latchkey:problem:{}", self.code),
            title: title(self.code, self.status).to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: without_keys(&self.detail),
            // A member or parameter *named* by a key's text is named back in `field`.
            field: self.field.as_deref().map(without_keys),
            // The layer's refusals carry these; the handlers' errors never do.
            retry_after: None,
            limit: None,
            permission: self.permission,
        };
        let mut response = (self.status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self
            .www_authenticate
            .and_then(|c| HeaderValue::try_from(c).ok())
        {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        // A keystore that cannot answer now may in a moment, as the layer's 503 says too;
        // a displaced one never will, and a client told to retry would do so for ever.
        if matches!(self.code, "keystore_unavailable" | "store_locked") && !self.lasting {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ProblemCode(self.code));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_s_error_names_a_field() {
        let refused = AppError::new(StatusCode::NOT_FOUND, "not_found", "no such user");
        assert_eq!(
            refused.with_field("user_id").field.as_deref(),
            Some("user_id")
        );
        let unreachable = AppError::from(StoreError::Unavailable("down".into()));
        assert_eq!(unreachable.with_field("user_id").field, None);
    }
}
