//! Sign in with an API key; sign out.

use askama::Template;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use http::header::SET_COOKIE;
use latchkey_admin::SignIn;
use latchkey_core::VerifyError;
use latchkey_core::log_limit::KeyedLogLimit;

use crate::cookies;
use crate::csrf;
use crate::extract::{SignOut, read_form};
use crate::origin::Origin;
use crate::session::{SessionKey, random_token};
use crate::state::Console;
use crate::verify;
use crate::view::{self, Nav};

/// Why a key that authenticates does not sign in: it may read no section.
const NO_SECTION: &str = "That key may not use the console: it holds none of \
    latchkey:keys:read, latchkey:users:read, latchkey:groups:read, latchkey:audit:read.";

/// How long a sign-in form stays usable.
const SIGNIN_FORM_SECONDS: u64 = 600;

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    nav: Nav,
    csrf: String,
    error: Option<&'static str>,
    /// The longest key a browser lets into the field: an imported one's.
    max_key: usize,
}

/// Renders the form with a fresh token, bound to a cookie of its own (no session yet).
fn page(console: &Console, status: StatusCode, error: Option<&'static str>) -> Response {
    let token = random_token();
    let page = SignInPage {
        nav: Default::default(),
        csrf: token.clone(),
        error,
        max_key: latchkey_core::limits::MAX_IMPORTED_KEY_LEN,
    };
    match super::render(&page) {
        Ok(mut response) => {
            *response.status_mut() = status;
            let cookie = cookies::set(
                cookies::SIGNIN,
                &token,
                console.secure,
                Some(SIGNIN_FORM_SECONDS),
            );
            if let Ok(value) = cookie.parse() {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /ui/signin`.
pub(crate) async fn form(State(console): State<Console>) -> Response {
    page(&console, StatusCode::OK, None)
}

/// `POST /ui/signin`: the key is checked as the API checks it, its allowed IPs against the
/// browser's address; a session opens, on the first section the key may read, when it
/// may read one (403 otherwise).
pub(crate) async fn submit(State(console): State<Console>, request: Request) -> Response {
    let expected = cookies::get(request.headers(), cookies::SIGNIN, console.secure)
        .unwrap_or("")
        .to_owned();
    let origin = Origin::of(request.extensions());
    // The browser's session before this sign-in, if any: it ends when this one opens.
    let previous =
        cookies::get(request.headers(), cookies::SESSION, console.secure).map(str::to_owned);
    let fields = match read_form(request.into_body()).await {
        Ok(fields) => fields,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = csrf::check(&expected, &fields) {
        return e.into_response();
    }
    let text = fields.get("key");
    match verify::key_from(&console.store, text, origin.client_ip()).await {
        Ok(principal) => {
            // A key that may read no section has nothing to do here: no session is made
            // for it, so that keys made for apps cannot fill the session table.
            let Some(landing) = view::readable_section(&principal.permissions) else {
                // A real key (its secret matched), so its use here is told, at INFO as a
                // sign-in is, once a second at most for each key: a holder of an app's key
                // (or of a stolen one its allowlist stops) could repeat it at will.
                SignIn::NoSection.count();
                static NO_SECTION_LINES: KeyedLogLimit = KeyedLogLimit::new();
                if let Some(held_back) = NO_SECTION_LINES.admit(principal.key_id.as_u128()) {
                    tracing::info!(
                        held_back,
                    key = %principal.prefix,
                    user = %principal.user_id,
                    client = origin.client_ip().map(tracing::field::display),
                    "console sign-in refused: the key may read no section"
                    );
                }
                return page(&console, StatusCode::FORBIDDEN, Some(NO_SECTION));
            };
            if let Some(previous) = previous {
                console.sessions.close(&previous);
            }
            SignIn::Opened.count();
            static SIGN_IN_LINES: KeyedLogLimit = KeyedLogLimit::new();
            if let Some(held_back) = SIGN_IN_LINES.admit(principal.key_id.as_u128()) {
                tracing::info!(
                    held_back,
                key = %principal.prefix,
                user = %principal.user_id,
                client = origin.client_ip().map(tracing::field::display),
                "console sign-in"
                );
            }
            let id = console.sessions.open(
                SessionKey::new(text.to_owned()),
                principal.user_id,
                principal.tenant_id.clone(),
            );
            // A change that refused the key between the check above and the opening
            // reached the session-ending task before the session was there to end.
            if crate::ending::refused(&console.store, text).await {
                console.sessions.close(&id);
            }
            let mut response = Redirect::to(landing).into_response();
            let headers = response.headers_mut();
            for cookie in [
                cookies::set(cookies::SESSION, &id, console.secure, None),
                cookies::clear(cookies::SIGNIN, console.secure),
            ] {
                if let Ok(value) = cookie.parse() {
                    headers.append(SET_COOKIE, value);
                }
            }
            response
        }
        // Said only of a key whose secret matched, as the API's 403 `ip_not_allowed` is.
        Err(VerifyError::IpNotAllowed) => {
            SignIn::IpNotAllowed.count();
            // By the address: the key is not told.
            static REFUSED_ADDRESS_LINES: KeyedLogLimit = KeyedLogLimit::new();
            let address = origin.client_ip().map_or(0, |ip| match ip {
                std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                std::net::IpAddr::V6(v6) => u128::from(v6),
            });
            if let Some(held_back) = REFUSED_ADDRESS_LINES.admit(address) {
                tracing::info!(
                    held_back,
                    client = origin.client_ip().map(tracing::field::display),
                    "console sign-in refused: a key used from an address it does not allow"
                );
            }
            page(
                &console,
                StatusCode::FORBIDDEN,
                Some("That key may not be used from this address."),
            )
        }
        // Nothing is known of the key: it is not blamed.
        Err(VerifyError::Unavailable(detail)) => {
            SignIn::KeystoreUnavailable.count();
            latchkey_core::warn_limited!(%detail, "console sign-in: the keystore is unavailable");
            page(
                &console,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The keystore is unavailable just now: try again shortly."),
            )
        }
        // One answer for every other refusal: the form does not say which part was wrong.
        // Logged without the text, at DEBUG as the API's refused keys are: someone trying
        // keys here must not be able to grow the default log.
        Err(_) => {
            SignIn::Refused.count();
            tracing::debug!(
                client = origin.client_ip().map(tracing::field::display),
                "console sign-in refused"
            );
            page(
                &console,
                StatusCode::UNAUTHORIZED,
                Some("That key does not sign in: it is unknown, disabled, revoked or expired."),
            )
        }
    }
}

/// `POST /ui/signout`: the session ends on the server, the cookie is cleared (when one
/// was sent); the key is not looked at, so this works while the keystore is unavailable.
pub(crate) async fn signout(State(console): State<Console>, signout: SignOut) -> Response {
    if let Some(id) = &signout.session_id {
        console.sessions.close(id);
    }
    if signout.cookie {
        crate::errors::to_sign_in_clearing(console.secure)
    } else {
        Redirect::to("/ui/signin").into_response()
    }
}
