//! What goes wrong, as pages: a problem from the API keeps its status and its words; a
//! signed-in session's error page keeps its navigation and its sign-out.

use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;
use latchkey_admin::Problem;

use crate::view::Nav;

/// A console handler's error.
#[derive(Debug)]
pub(crate) enum UiError {
    /// No session cookie: go and sign in.
    SignIn,
    /// A session cookie naming no live session (ended, or its key no longer
    /// authenticates): go and sign in, the cookie cleared. `secure` names the cookie.
    SessionEnded { secure: bool },
    /// A POST without its CSRF token (or with another one).
    Csrf,
    /// A request the browser says came from another site (`Sec-Fetch-Site`), not a page
    /// opened: nothing done.
    CrossSite,
    /// The session's key may not be used from the browser's address (its `allowed_ips`):
    /// the session stays, for an address the key allows.
    IpNotAllowed,
    /// A page the session's key lacks the permission for (named): the API would refuse
    /// what it offers.
    NotAllowed(&'static str),
    /// A one-time form submitted again (a reload), or one this session did not issue (or
    /// no longer remembers): nothing done, no secret shown.
    Resubmitted,
    /// A form the console cannot read.
    BadForm(String),
    /// The API refused.
    Api(Box<Problem>),
    /// No such page.
    NotFound,
    /// The keystore cannot be read (the detail goes to the log only): the session stays.
    Unavailable(String),
    /// Cut short by the daemon's request timeout.
    TimedOut(TimedOut),
    /// A bug or an unavailable store: the detail goes to the log only.
    Internal(String),
}

impl UiError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> UiError {
        UiError::Internal(e.to_string())
    }

    /// A refusal of what a form said (the API's 4xx problem, or a field the console cannot
    /// read): its status and words, for the form to show again; `None` for other errors,
    /// and for the API's 5xx (a write that may have been done: its form is not offered
    /// again, which would invite a second key).
    pub(crate) fn refusal(&self) -> Option<(StatusCode, String)> {
        self.said().filter(|(status, _)| status.is_client_error())
    }

    /// The status and words of a form's error or the API's problem.
    fn said(&self) -> Option<(StatusCode, String)> {
        match self {
            // It may repeat what was typed, and a key pasted by mistake is not shown again
            // (the API's own words are kept so already).
            UiError::BadForm(why) => {
                Some((StatusCode::BAD_REQUEST, latchkey_core::without_keys(why)))
            }
            UiError::Api(problem) => Some((
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST),
                // The field at fault, when the API names it, so that a form says which.
                match &problem.field {
                    Some(field) if !problem.detail.starts_with(&format!("{field}:")) => {
                        format!("{field}: {}", problem.detail)
                    }
                    _ => problem.detail.clone(),
                },
            )),
            _ => None,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    title: &'a str,
    detail: &'a str,
}

/// An error page's words, kept in its response's extensions so that [`with_signed_nav`]
/// can render it again with the session's navigation.
#[derive(Debug, Clone)]
struct Shown {
    title: String,
    detail: String,
}

/// The navigation of the request's signed-in session, once its key verified: the
/// [`Signed`](crate::extract::Signed) extractor fills it in.
#[derive(Debug, Clone, Default)]
pub(crate) struct SignedNav(Arc<Mutex<Option<Nav>>>);

impl SignedNav {
    pub(crate) fn set(&self, nav: Nav) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(nav);
    }

    fn take(&self) -> Option<Nav> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Middleware: an error page answered to a signed-in session shows its navigation (its
/// sections and its sign-out), not the signed-out header.
pub(crate) async fn with_signed_nav(mut request: Request, next: Next) -> Response {
    let slot = SignedNav::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(shown) = response.extensions_mut().remove::<Shown>()
        && let Some(nav) = slot.take()
        && let Ok(html) = render(nav, &shown)
    {
        *response.body_mut() = html.into();
    }
    response
}

fn render(nav: Nav, shown: &Shown) -> askama::Result<String> {
    ErrorPage {
        nav,
        title: &shown.title,
        detail: &shown.detail,
    }
    .render()
}

/// What the daemon's request timeout cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// A form's body that did not arrive in time: nothing was done (408).
    Body,
    /// A request that ran too long: it may have been done (503).
    Request,
}

impl TimedOut {
    fn status(self) -> StatusCode {
        match self {
            TimedOut::Body => StatusCode::REQUEST_TIMEOUT,
            TimedOut::Request => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn said(self) -> String {
        match self {
            TimedOut::Body => "The form took too long to arrive: nothing was done. Try again.",
            TimedOut::Request => {
                "The request took too long and was cut short: what it asked may still have \
                 been done. Look before trying again."
            }
        }
        .to_owned()
    }
}

/// The console's page for a request the daemon's request timeout cut short, with the
/// headers of every console answer (under TLS, `tls`). The timeout runs around the whole
/// daemon, outside the console's router and its layers.
pub fn timed_out_page(what: TimedOut, tls: bool) -> Response {
    crate::headers::secured(UiError::TimedOut(what).into_response(), tls)
}

/// The way to the sign-in page, clearing the session cookie (named by `secure`).
pub(crate) fn to_sign_in_clearing(secure: bool) -> Response {
    let mut response = Redirect::to("/ui/signin").into_response();
    if let Ok(value) = crate::cookies::clear(crate::cookies::SESSION, secure).parse() {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, value);
    }
    response
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match &self {
            UiError::SignIn => return Redirect::to("/ui/signin").into_response(),
            UiError::SessionEnded { secure } => return to_sign_in_clearing(*secure),
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused".to_owned(),
                "The form did not carry this session's token (CSRF). Reload the page and try again.".to_owned(),
            ),
            UiError::CrossSite => (
                StatusCode::FORBIDDEN,
                "Refused".to_owned(),
                "It was sent from another site: nothing was done. Open the console from its own address.".to_owned(),
            ),
            UiError::IpNotAllowed => (
                StatusCode::FORBIDDEN,
                "Address not allowed".to_owned(),
                "The key you signed in with may not be used from this address.".to_owned(),
            ),
            UiError::NotAllowed(permission) => (
                StatusCode::FORBIDDEN,
                "Not allowed".to_owned(),
                format!("The key you signed in with does not hold {permission}."),
            ),
            UiError::Resubmitted => (
                StatusCode::CONFLICT,
                "Already submitted".to_owned(),
                "This form was already submitted, or is too old: nothing was done, and a secret is never shown twice. Open the form again.".to_owned(),
            ),
            UiError::BadForm(_) | UiError::Api(_) => {
                let (status, detail) = self.said().unwrap_or_default();
                let title = match &self {
                    UiError::Api(problem) => problem.title.clone(),
                    _ => "Bad form".to_owned(),
                };
                (status, title, detail)
            }
            UiError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found".to_owned(),
                "There is no such page.".to_owned(),
            ),
            UiError::Unavailable(detail) => {
                latchkey_core::warn_limited!(%detail, "console: the keystore is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Keystore unavailable".to_owned(),
                    "The keystore cannot be read just now. You are still signed in: try again shortly.".to_owned(),
                )
            }
            UiError::TimedOut(what) => (what.status(), "Too slow".to_owned(), what.said()),
            UiError::Internal(detail) => {
                tracing::error!(%detail, "console error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error".to_owned(),
                    "Something went wrong; the server log says what.".to_owned(),
                )
            }
        };
        // A 429's wait, as the API says it: a browser or a script retrying reads it here.
        let retry_after = match &self {
            UiError::Api(problem) => problem.retry_after,
            _ => None,
        };
        let shown = Shown { title, detail };
        let mut response = match render(Nav::default(), &shown) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, shown.detail.clone()).into_response(),
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(shown);
        response
    }
}

/// The fallback under `/ui`: signed in, with the session's navigation.
pub(crate) async fn not_found(_signed: Result<crate::extract::Signed, UiError>) -> UiError {
    UiError::NotFound
}
