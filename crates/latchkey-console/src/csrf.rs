//! CSRF tokens: every form carries its session's token, compared in constant time.

use crate::errors::UiError;
use crate::extract::Fields;

/// A session's token as a page holds it to write into its forms: shown by `Display`, left
/// out by `Debug`.
#[derive(Clone, Default)]
pub(crate) struct Token(pub(crate) String);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The form field that carries the token.
pub(crate) const FIELD: &str = "csrf";

/// Checks the token a form submitted (its [`FIELD`]) against the expected one; 403 when
/// absent, blank or different.
pub(crate) fn check(expected: &str, fields: &Fields) -> Result<(), UiError> {
    let submitted = fields.get(FIELD);
    if !expected.is_empty()
        && !submitted.is_empty()
        && constant_time_eq::constant_time_eq(expected.as_bytes(), submitted.as_bytes())
    {
        Ok(())
    } else {
        Err(UiError::Csrf)
    }
}
