//! [`Rejection`]: a refused request as the response it becomes.
//!
//! Every body the layer sends is a `&'static str` built at compile time by [`problem!`], so
//! a rejection costs no formatting and no allocation beyond the response itself (and its
//! [`ProblemCode`] extension). Only the
//! 403 names a permission; [`RequirePermissionLayer`](crate::RequirePermissionLayer) builds
//! that body once, when it is configured.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use latchkey_core::{Permission, VerifyError};

use crate::auth::Realm;

/// The URI prefix of every problem `type`: `urn:latchkey:problem:<code>`.
pub(crate) const PROBLEM_TYPE_PREFIX: &str = "urn:latchkey:problem:";

/// An RFC 9457 body as a string literal.
macro_rules! problem {
    ($status:literal, $code:literal, $title:literal, $detail:literal) => {
        concat!(
            "{\"type\":\"urn:latchkey:problem:",
            $code,
            "\",\"title\":\"",
            $title,
            "\",\"status\":",
            $status,
            ",\"code\":\"",
            $code,
            "\",\"detail\":\"",
            $detail,
            "\"}"
        )
    };
}

/// Why the layer refused a request. Each reason has one static body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No credentials at all.
    Missing,
    /// An `Authorization` header with another scheme, and no key elsewhere.
    OtherScheme,
    /// One place sent twice: several `Authorization` (or extra key) headers, or the same
    /// query parameter more than once.
    Repeated,
    /// A key in more than one place, e.g. a header and the query (RFC 6750 §2: one method
    /// per request).
    SeveralPlaces,
    /// Longer than any key can be.
    TooLong,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// Not a well-formed key (checked offline, no store read).
    Malformed,
    /// This service does not accept keys of this environment.
    RefusedEnv,
    /// An unknown id or a wrong secret: the same answer, byte for byte.
    Invalid,
    /// The key is disabled.
    Disabled,
    /// The key is revoked.
    Revoked,
    /// The key has expired.
    Expired,
    /// The key's user is disabled.
    UserDisabled,
    /// The keystore could not answer.
    Unavailable,
}

impl Reason {
    /// The reason for a verifier's error.
    pub(crate) fn of(error: &VerifyError) -> Reason {
        match error {
            VerifyError::Malformed(_) => Reason::Malformed,
            VerifyError::Invalid => Reason::Invalid,
            VerifyError::Disabled => Reason::Disabled,
            VerifyError::Revoked => Reason::Revoked,
            VerifyError::Expired => Reason::Expired,
            VerifyError::UserDisabled => Reason::UserDisabled,
            VerifyError::Unavailable(_) => Reason::Unavailable,
            // A reason added to core later is refused, never let through.
            _ => Reason::Invalid,
        }
    }

    /// The stable `code` of the problem+json body (the crate docs' *Responses* table): a
    /// client may match on it; it never changes for a given refusal.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Reason::Missing | Reason::OtherScheme => "missing_key",
            Reason::Repeated | Reason::SeveralPlaces => "invalid_request",
            Reason::TooLong
            | Reason::NotUtf8
            | Reason::Malformed
            | Reason::RefusedEnv
            | Reason::Invalid => "invalid_key",
            Reason::Disabled => "key_disabled",
            Reason::Revoked => "key_revoked",
            Reason::Expired => "key_expired",
            Reason::UserDisabled => "user_disabled",
            Reason::Unavailable => "keystore_unavailable",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Reason::Missing => problem!(
                401,
                "missing_key",
                "API key required",
                "Send the key as `Authorization: Bearer <key>`."
            ),
            Reason::OtherScheme => problem!(
                401,
                "missing_key",
                "API key required",
                "The Authorization header must use the Bearer scheme: `Authorization: Bearer <key>`."
            ),
            Reason::Repeated => problem!(
                400,
                "invalid_request",
                "Several credentials",
                "The key was sent more than once; send it once."
            ),
            Reason::SeveralPlaces => problem!(
                400,
                "invalid_request",
                "Several credentials",
                "A key was sent in more than one place; send it in one."
            ),
            Reason::TooLong => problem!(
                401,
                "invalid_key",
                "Invalid API key",
                "The credential is longer than any API key."
            ),
            Reason::NotUtf8 => problem!(
                401,
                "invalid_key",
                "Invalid API key",
                "The credential is not valid UTF-8."
            ),
            Reason::Malformed => problem!(
                401,
                "invalid_key",
                "Invalid API key",
                "The credential is not a well-formed API key."
            ),
            Reason::RefusedEnv => problem!(
                401,
                "invalid_key",
                "Invalid API key",
                "This service does not accept keys of this environment."
            ),
            Reason::Invalid => problem!(
                401,
                "invalid_key",
                "Invalid API key",
                "The API key does not authenticate."
            ),
            Reason::Disabled => problem!(
                401,
                "key_disabled",
                "API key disabled",
                "The API key is disabled."
            ),
            Reason::Revoked => problem!(
                401,
                "key_revoked",
                "API key revoked",
                "The API key is revoked."
            ),
            Reason::Expired => problem!(
                401,
                "key_expired",
                "API key expired",
                "The API key has expired."
            ),
            Reason::UserDisabled => problem!(
                401,
                "user_disabled",
                "User disabled",
                "The API key's user is disabled."
            ),
            Reason::Unavailable => problem!(
                503,
                "keystore_unavailable",
                "Keystore unavailable",
                "The keystore cannot verify keys right now; retry later."
            ),
        }
    }

    /// The rejection, given the layer's two challenges.
    pub(crate) fn rejection(self, challenges: &Challenges) -> Rejection {
        let (status, challenge) = match self {
            Reason::Missing | Reason::OtherScheme => {
                (StatusCode::UNAUTHORIZED, Some(challenges.missing.clone()))
            }
            // RFC 6750 §3.1: a request with more than one method of sending the token is
            // `invalid_request`, answered 400.
            Reason::Repeated | Reason::SeveralPlaces => (
                StatusCode::BAD_REQUEST,
                Some(challenges.invalid_request.clone()),
            ),
            Reason::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            _ => (StatusCode::UNAUTHORIZED, Some(challenges.invalid.clone())),
        };
        // A keystore that cannot answer now may in a moment (RFC 9110 §10.2.3): clients
        // that honour it come back after a second rather than at once.
        let headers = match self {
            Reason::Unavailable => vec![(RETRY_AFTER, HeaderValue::from_static("1"))],
            _ => Vec::new(),
        };
        Rejection {
            status,
            code: self.code(),
            challenge,
            body: Bytes::from_static(self.body().as_bytes()),
            headers,
        }
    }
}

/// The `WWW-Authenticate` values of a realm, built once.
#[derive(Debug, Clone)]
pub(crate) struct Challenges {
    /// `Bearer realm="<realm>"`.
    pub(crate) missing: HeaderValue,
    /// `Bearer realm="<realm>", error="invalid_token"`.
    pub(crate) invalid: HeaderValue,
    /// `Bearer realm="<realm>", error="invalid_request"`.
    pub(crate) invalid_request: HeaderValue,
}

impl Challenges {
    /// The challenges naming `realm`.
    pub(crate) fn new(realm: &Realm) -> Challenges {
        let realm = realm.as_str();
        let challenge =
            |text: String| HeaderValue::try_from(text).expect("a realm is valid header text");
        Challenges {
            missing: challenge(format!("Bearer realm=\"{realm}\"")),
            invalid: challenge(format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")),
            invalid_request: challenge(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\""
            )),
        }
    }

    /// The challenges of the default realm, `api`: also what the extractor and
    /// `RequirePermission` answer when no layer authenticated the request.
    pub(crate) fn default_realm() -> Challenges {
        Challenges {
            missing: HeaderValue::from_static("Bearer realm=\"api\""),
            invalid: HeaderValue::from_static("Bearer realm=\"api\", error=\"invalid_token\""),
            invalid_request: HeaderValue::from_static(
                "Bearer realm=\"api\", error=\"invalid_request\"",
            ),
        }
    }
}

/// Why a request was refused, ready to become its response: 400, 401, 403 or 503 with a
/// `WWW-Authenticate` challenge (except 503) and an `application/problem+json` body (RFC 9457)
/// holding `type`, `title`, `status`, `code` and `detail`.
///
/// With the `axum` feature it implements `IntoResponse`, so a handler can return it, for
/// example from [`Principal::require`](crate::Principal::require) with `?`. Otherwise
/// [`Rejection::into_http_response`] builds the response for any body that is `From<Bytes>`.
///
/// # Example
///
/// ```
/// use latchkey_tower::Rejection;
///
/// let rejection = Rejection::missing_key();
/// assert_eq!(rejection.status(), 401);
/// assert_eq!(rejection.code(), "missing_key");
/// let response = rejection.into_http_response::<bytes::Bytes>();
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="api""#);
/// ```
#[derive(Debug, Clone)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
    challenge: Option<HeaderValue>,
    body: Bytes,
    /// More headers (a 429's `Retry-After` and rate-limit fields); empty for the others.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A rejection without a challenge: the usage refusals (`usage.rs`).
    pub(crate) fn from_parts(
        status: StatusCode,
        code: &'static str,
        body: Bytes,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Rejection {
        Rejection {
            status,
            code,
            challenge: None,
            body,
            headers,
        }
    }

    /// 401 `missing_key` for the default realm `api`: what the extractor answers when no
    /// layer authenticated the request.
    pub fn missing_key() -> Rejection {
        Reason::Missing.rejection(&Challenges::default_realm())
    }

    /// 403 `insufficient_permission`, with
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="<permission>"`.
    pub fn insufficient_permission(permission: &Permission) -> Rejection {
        // Permission strings are `[a-z0-9_.-:*]`: nothing to escape in a header or in JSON.
        let permission = permission.as_str();
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{permission}\"");
        let body = format!(
            "{{\"type\":\"{PROBLEM_TYPE_PREFIX}insufficient_permission\",\
             \"title\":\"Insufficient permission\",\"status\":403,\
             \"code\":\"insufficient_permission\",\
             \"detail\":\"This key lacks the permission `{permission}`.\",\
             \"permission\":\"{permission}\"}}"
        );
        Rejection {
            status: StatusCode::FORBIDDEN,
            code: "insufficient_permission",
            challenge: Some(HeaderValue::try_from(challenge).expect("permissions are header-safe")),
            body: Bytes::from(body),
            headers: Vec::new(),
        }
    }

    /// 403 `insufficient_permission` without a `scope`: the permission asked for is not a
    /// valid permission string.
    pub(crate) fn insufficient_permission_unnamed() -> Rejection {
        Rejection {
            status: StatusCode::FORBIDDEN,
            code: "insufficient_permission",
            challenge: Some(HeaderValue::from_static(
                "Bearer error=\"insufficient_scope\"",
            )),
            body: Bytes::from_static(
                problem!(
                    403,
                    "insufficient_permission",
                    "Insufficient permission",
                    "This key lacks a permission this route requires."
                )
                .as_bytes(),
            ),
            headers: Vec::new(),
        }
    }

    /// The HTTP status: 400, 401, 403, 429 or 503.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code: `missing_key`, `invalid_request`, `invalid_key`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `user_disabled`, `insufficient_permission`, `keystore_unavailable`,
    /// `ip_not_allowed`, `rate_limited` or `usage_exceeded`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The response, for any body type that can be made from [`Bytes`] (axum's `Body`,
    /// `http_body_util::Full<Bytes>`, `String`-like test bodies…).
    pub fn into_http_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response.extensions_mut().insert(ProblemCode(self.code));
        response
    }
}

/// The stable `code` of a problem+json response, in the response's extensions, so that
/// middleware (metrics, logs) can read the outcome without parsing the body. Every
/// [`Rejection`] carries one; latchkey-admin's errors do too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemCode(pub &'static str);
