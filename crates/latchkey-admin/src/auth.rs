//! Authentication in front of `/v1`.
//!
//! A stand-in for latchkey-tower's `ApiKeyLayer`, with the behaviour PRODUCT.md gives the
//! layer: a bearer key (scheme case-insensitive) verified against the store; no credentials
//! → 401 `missing_key` with `WWW-Authenticate: Bearer realm="latchkey"`; a key that does
//! not authenticate → 401 with `error="invalid_token"` and the verification's code; the
//! keystore unreachable → 503, never 401. On success the [`Principal`] goes into the
//! request's extensions, where [`Caller`](crate::caller::Caller) finds it.
//!
//! [`Principal`]: latchkey_core::Principal

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use latchkey_core::VerifyError;

use crate::error::AppError;
use crate::state::AppState;

/// The realm named in `WWW-Authenticate` challenges.
pub(crate) const REALM: &str = "latchkey";

/// Authenticates a request by its bearer key.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(presented) = bearer(&request) else {
        return challenge(
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "missing_key",
                "send an API key as `Authorization: Bearer <key>`",
            ),
            format!("Bearer realm=\"{REALM}\""),
        );
    };
    match state.verify(&presented) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(VerifyError::Unavailable(cause)) => {
            tracing::error!(error = %cause, "keystore unavailable during authentication");
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "keystore_unavailable",
                "the keystore is unavailable; try again",
            )
            .into_response()
        }
        Err(err) => challenge(
            AppError::new(StatusCode::UNAUTHORIZED, err.code(), err.to_string()),
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
        ),
    }
}

/// The key of an `Authorization: Bearer <key>` header, if there is one.
fn bearer(request: &Request) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

fn challenge(err: AppError, header: String) -> Response {
    let mut response = err.into_response();
    if let Ok(value) = header.try_into() {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}
