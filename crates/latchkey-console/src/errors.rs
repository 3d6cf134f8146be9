//! What goes wrong, as pages: a problem from the API keeps its status and its words.

use askama::Template;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;
use latchkey_admin::Problem;

/// A console handler's error.
#[derive(Debug)]
pub(crate) enum UiError {
    /// No live session: go and sign in.
    SignIn,
    /// A POST without its CSRF token (or with another one).
    Csrf,
    /// A one-time form submitted again (a reload): nothing done, no secret shown.
    Resubmitted,
    /// A form the console cannot read.
    BadForm(String),
    /// The API refused.
    Api(Box<Problem>),
    /// No such page.
    NotFound,
    /// A bug or an unavailable store: the detail goes to the log only.
    Internal(String),
}

impl UiError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> UiError {
        UiError::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: crate::view::Nav,
    title: &'a str,
    detail: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match &self {
            UiError::SignIn => return Redirect::to("/ui/signin").into_response(),
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused".to_owned(),
                "The form did not carry this session's token (CSRF). Reload the page and try again.".to_owned(),
            ),
            UiError::Resubmitted => (
                StatusCode::CONFLICT,
                "Already submitted".to_owned(),
                "This form was already submitted: nothing was done again, and a secret is never shown twice.".to_owned(),
            ),
            UiError::BadForm(why) => (StatusCode::BAD_REQUEST, "Bad form".to_owned(), why.clone()),
            UiError::Api(problem) => (
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST),
                problem.title.clone(),
                // The field at fault, when the API names it, so that a form says which.
                match &problem.field {
                    Some(field) => format!("{field}: {}", problem.detail),
                    None => problem.detail.clone(),
                },
            ),
            UiError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found".to_owned(),
                "There is no such page.".to_owned(),
            ),
            UiError::Internal(detail) => {
                tracing::error!(%detail, "console error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error".to_owned(),
                    "Something went wrong; the server log says what.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            nav: Default::default(),
            title: &title,
            detail: &detail,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, detail).into_response(),
        }
    }
}

/// The fallback under `/ui`.
pub(crate) async fn not_found() -> UiError {
    UiError::NotFound
}
