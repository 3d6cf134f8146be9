//! A problem+json error answer (RFC 9457), as the CLI reports it.

use std::fmt;

use ::http::StatusCode;
use serde::Deserialize;

/// An error answered by the management API.
///
/// Its `Display` is the one line the CLI prints: the detail (or title) and the stable code.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code, e.g. `not_found`, `key_not_revoked`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The field a 400 is about.
    pub field: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    title: Option<String>,
    detail: Option<String>,
    code: Option<String>,
    field: Option<String>,
}

impl Problem {
    /// Whether the request may have been acted on all the same: any 5xx. The daemon's 503
    /// `request_timeout` leaves its work running, a PostgreSQL commit cut off may have
    /// committed (503 `keystore_unavailable`), and a gateway's 502 or 504, or a 500, says
    /// nothing of what the daemon did. A 4xx is a refusal before anything was done.
    pub fn outcome_unknown(&self) -> bool {
        self.status.is_server_error()
    }

    /// Reads an error answer; a body that is not problem+json still gives a useful line.
    pub fn from_response(status: StatusCode, body: &[u8]) -> Problem {
        let wire: Option<Wire> = serde_json::from_slice(body).ok();
        let (title, detail, code, field) = match wire {
            Some(w) => (w.title, w.detail, w.code, w.field),
            None => (None, None, None, None),
        };
        let message = detail
            .or(title)
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() || text.len() > 200 {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {text}")
                }
            });
        Problem {
            status,
            code: code.unwrap_or_else(|| format!("http_{}", status.as_u16())),
            message,
            field,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hint follows after `;`: the detail's own full stop goes ("….; the admin key was
        // refused" read badly).
        write!(f, "{}", self.message.trim_end_matches('.'))?;
        if let Some(field) = self
            .field
            .as_ref()
            .filter(|f| !self.message.contains(f.as_str()))
        {
            write!(f, " (field `{field}`)")?;
        }
        // Only a 401 is about the admin key: a 409 `key_revoked` is about the key worked on.
        // What to do comes before the code, which ends the line.
        let hint = match (self.status, self.code.as_str()) {
            (StatusCode::UNAUTHORIZED, "missing_key") => {
                "; pass --admin-key or set LATCHKEY_ADMIN_KEY"
            }
            (
                StatusCode::UNAUTHORIZED,
                "invalid_key" | "key_disabled" | "key_revoked" | "key_expired" | "user_disabled",
            ) => "; the admin key was refused",
            _ => "",
        };
        write!(f, "{hint} [{}]", self.code)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's refusals (4xx) say nothing was done; a 5xx does not.
    #[test]
    fn which_answers_leave_the_outcome_unknown() {
        let problem = |status, code: &str| {
            let body = format!(r#"{{"code":"{code}"}}"#);
            Problem::from_response(status, body.as_bytes())
        };
        for (status, code, unknown) in [
            (StatusCode::SERVICE_UNAVAILABLE, "request_timeout", true),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "keystore_unavailable",
                true,
            ),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", true),
            (StatusCode::BAD_GATEWAY, "", true),
            (StatusCode::GATEWAY_TIMEOUT, "", true),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout", false),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited", false),
            (StatusCode::BAD_REQUEST, "invalid_json", false),
        ] {
            let p = problem(status, code);
            assert_eq!(p.outcome_unknown(), unknown, "{status} {code}");
            let error = anyhow::Error::from(p).context("importing");
            assert_eq!(super::super::outcome_unknown(&error), unknown, "{status}");
        }
    }

    #[test]
    fn problem_lines() {
        let p = Problem::from_response(
            StatusCode::NOT_FOUND,
            br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"key \"x\" not found","code":"not_found"}"#,
        );
        assert_eq!(p.to_string(), r#"key "x" not found [not_found]"#);
        let p = Problem::from_response(
            StatusCode::BAD_REQUEST,
            br#"{"title":"Bad Request","detail":"bad value","code":"invalid_field","field":"scopes"}"#,
        );
        assert_eq!(p.to_string(), "bad value (field `scopes`) [invalid_field]");
        let p = Problem::from_response(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(p.to_string(), "HTTP 502 Bad Gateway [http_502]");
        let p = Problem::from_response(
            StatusCode::UNAUTHORIZED,
            br#"{"title":"Unauthorized","code":"missing_key"}"#,
        );
        assert!(p.to_string().contains("--admin-key"));
        let refused = br#"{"title":"Unauthorized","code":"key_revoked"}"#;
        let p = Problem::from_response(StatusCode::UNAUTHORIZED, refused);
        assert!(
            p.to_string()
                .ends_with("; the admin key was refused [key_revoked]")
        );
        let malformed = br#"{"title":"Unauthorized","detail":"The credential is not a well-formed API key.","code":"invalid_key"}"#;
        let p = Problem::from_response(StatusCode::UNAUTHORIZED, malformed);
        assert_eq!(
            p.to_string(),
            "The credential is not a well-formed API key; the admin key was refused [invalid_key]"
        );
        // The key worked on is revoked: nothing about the admin key.
        let p = Problem::from_response(
            StatusCode::CONFLICT,
            br#"{"title":"Conflict","detail":"the key is revoked","code":"key_revoked"}"#,
        );
        assert_eq!(p.to_string(), "the key is revoked [key_revoked]");
    }
}
