//! The console's extractors: the signed-in session, and a POSTed form checked against it.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use http::Method;
use http::request::Parts;
use latchkey_core::{Principal, VerifyError};
use serde::de::DeserializeOwned;

use crate::cookies;
use crate::csrf;
use crate::errors::{SignedNav, UiError};
use crate::origin::Origin;
use crate::session::SessionKey;
use crate::state::Console;
use crate::verify;
use crate::view::Nav;

/// Largest form the console reads: an editor carries what its page showed beside what was
/// typed (`edits`), a user's 256 permissions of up to 128 bytes twice, percent-encoded.
const MAX_FORM: usize = 128 * 1024;

/// A request from a live session whose key still authenticates. Its `Debug` shows neither
/// the session's id nor its token.
#[derive(Clone)]
pub(crate) struct Signed {
    pub(crate) session_id: String,
    pub(crate) key: SessionKey,
    pub(crate) csrf: String,
    /// The key as it verified at this request: its effective permissions now decide what
    /// is shown.
    pub(crate) principal: Principal,
    /// Where the browser's request came from: the API calls carry it.
    pub(crate) origin: Origin,
    /// The console serving the request.
    pub(crate) console: Console,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("principal", &self.principal)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Signed {
    /// Whether the key holds `permission` (what to show; the API decides what is done).
    pub(crate) fn can(&self, permission: &str) -> bool {
        self.principal.permissions.allows_str(permission)
    }

    /// The navigation and identity every page shows.
    pub(crate) fn nav(&self) -> Nav {
        Nav::new(self)
    }

    /// `GET path` of the management API, as the session's key.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, UiError> {
        self.console.api.get(&self.key, &self.origin, path).await
    }

    /// `method path` of the management API with a JSON body (`null`: none), as the
    /// session's key.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, UiError> {
        self.console
            .api
            .send(&self.key, &self.origin, method, path, body)
            .await
    }
}

impl<S> FromRequestParts<S> for Signed
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Signed, UiError> {
        let console = Console::from_ref(state);
        let id = cookies::get(&parts.headers, cookies::SESSION, console.secure)
            .ok_or(UiError::SignIn)?;
        let ended = UiError::SessionEnded {
            secure: console.secure,
        };
        let session = console.sessions.get(id).ok_or(ended)?;
        // The key is checked at every request: a key disabled or revoked since sign-in
        // ends its session at once, and permissions shown are those of now. A store that
        // cannot be read says nothing about the key: the session stays.
        // Its allowed IPs too, against the browser's address, as at sign-in: a page that
        // makes no API call (the key form, the fallback) shows nothing to a stolen cookie
        // used from elsewhere.
        let origin = Origin::of(&parts.extensions);
        let principal = match verify::key_from(
            &console.store,
            session.key.expose(),
            origin.client_ip(),
        )
        .await
        {
            Ok(principal) => principal,
            Err(VerifyError::Unavailable(detail)) => return Err(UiError::Unavailable(detail)),
            Err(VerifyError::IpNotAllowed) => return Err(UiError::IpNotAllowed),
            Err(_) => {
                console.sessions.close(id);
                return Err(UiError::SessionEnded {
                    secure: console.secure,
                });
            }
        };
        console.sessions.touch(id);
        let signed = Signed {
            session_id: id.to_owned(),
            key: session.key,
            csrf: session.csrf,
            principal,
            origin,
            console,
        };
        // An error page of this request shows the signed-in navigation.
        if let Some(slot) = parts.extensions.get::<SignedNav>() {
            slot.set(signed.nav());
        }
        Ok(signed)
    }
}

/// A form's fields, as sent. Its `Debug` shows their names only: a sign-in form holds a
/// key, every form a token.
#[derive(Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Fields {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Fields, UiError> {
        if !utf8_once_decoded(bytes) {
            return Err(UiError::BadForm("the form is not UTF-8 text".to_owned()));
        }
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
            .map_err(|e| UiError::BadForm(format!("the form could not be read: {e}")))?;
        // As the API refuses a member given twice: which one was meant is not for the
        // console to guess. Unnamed, since a name is whatever the request made it.
        let mut names = std::collections::HashSet::new();
        if !fields.iter().all(|(name, _)| names.insert(name)) {
            return Err(UiError::BadForm(
                "a field of the form is given twice".to_owned(),
            ));
        }
        Ok(Fields(fields))
    }

    /// Field `name`, trimmed; `""` when absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Refuses a form that lacks one of `names` (blank is given): an editor's field left out
    /// would otherwise read as emptied.
    pub(crate) fn require(&self, names: &[&str]) -> Result<(), UiError> {
        match names.iter().find(|name| !self.has(name)) {
            Some(name) => Err(UiError::BadForm(format!(
                "the form has no `{name}` field: nothing was changed"
            ))),
            None => Ok(()),
        }
    }

    /// Whether the form has field `name`, blank or not.
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Field `name`, `None` when absent or blank.
    pub(crate) fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

/// A POSTed form from a live session, its CSRF token checked before anything else.
#[derive(Debug)]
pub(crate) struct Posted {
    pub(crate) signed: Signed,
    pub(crate) fields: Fields,
}

impl<S> FromRequest<S> for Posted
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request(request: Request, state: &S) -> Result<Posted, UiError> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let fields = read_form(body).await?;
        csrf::check(&signed.csrf, &fields)?;
        Ok(Posted { signed, fields })
    }
}

/// A sign-out's form: the session cookie and the session's CSRF token, nothing more. The
/// key is not verified, so that signing out works while the keystore cannot be read (and
/// whatever became of the key since). `session_id` is `None` when the cookie names no live
/// session: there is nothing to end, nor a token to check against.
pub(crate) struct SignOut {
    pub(crate) session_id: Option<String>,
    /// Whether the request carried a session cookie, to clear: a form posted from
    /// another site carries none (`SameSite=Strict`), and clears nothing.
    pub(crate) cookie: bool,
}

impl std::fmt::Debug for SignOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignOut")
            .field("live", &self.session_id.is_some())
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl<S> FromRequest<S> for SignOut
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request(request: Request, state: &S) -> Result<SignOut, UiError> {
        let console = Console::from_ref(state);
        let (parts, body) = request.into_parts();
        let Some(id) = cookies::get(&parts.headers, cookies::SESSION, console.secure) else {
            return Ok(SignOut {
                session_id: None,
                cookie: false,
            });
        };
        let Some(session) = console.sessions.get(id) else {
            return Ok(SignOut {
                session_id: None,
                cookie: true,
            });
        };
        let fields = read_form(body).await?;
        csrf::check(&session.csrf, &fields)?;
        Ok(SignOut {
            session_id: Some(id.to_owned()),
            cookie: true,
        })
    }
}

/// Reads a urlencoded body of at most [`MAX_FORM`] bytes.
/// Whether URL-encoded `bytes` are UTF-8 once percent-decoded. The parsers put U+FFFD for
/// bytes that are not, and the API refuses such a body: a form or an address's query that
/// is not is refused, rather than stored or searched for as something no one typed.
fn utf8_once_decoded(bytes: &[u8]) -> bool {
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .is_ok()
}

/// Middleware: a 400 page, the console's, for an address whose path or query is no UTF-8
/// once decoded (a path segment would otherwise get axum's plain-text rejection).
pub(crate) async fn refuse_non_utf8_address(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    for (part, text) in [
        ("path", uri.path()),
        ("query", uri.query().unwrap_or_default()),
    ] {
        if !utf8_once_decoded(text.as_bytes()) {
            return UiError::BadForm(format!("the address's {part} is not UTF-8 text"))
                .into_response();
        }
    }
    next.run(request).await
}

pub(crate) async fn read_form(body: axum::body::Body) -> Result<Fields, UiError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| UiError::BadForm("the form is larger than 128 KiB".to_owned()))?;
    Fields::parse(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forms_debug_names_its_fields_only() {
        let fields = Fields::parse(b"key=lk_live_secret&csrf=0123abcd").unwrap();
        assert_eq!(fields.get("key"), "lk_live_secret");
        let shown = format!("{fields:?}");
        assert_eq!(shown, r#"["key", "csrf"]"#);
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        for bytes in [&b"user=a&user=b"[..], b"user=a&name=k&user=a", b"x=&x="] {
            assert!(Fields::parse(bytes).is_err(), "{bytes:?}");
        }
        assert!(Fields::parse(b"user=a&name=user").is_ok());
    }

    #[test]
    fn a_form_that_is_no_utf_8_is_refused() {
        for bytes in [&b"name=%C0%AF"[..], b"name=\xff\xfe", b"%FF=x"] {
            assert!(Fields::parse(bytes).is_err(), "{bytes:?}");
        }
        let fields = Fields::parse(b"name=caf%C3%A9+%EF%BF%BD").unwrap();
        assert_eq!(fields.get("name"), "caf\u{e9} \u{FFFD}");
    }
}
