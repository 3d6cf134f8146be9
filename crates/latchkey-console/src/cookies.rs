//! The console's cookies: read from `Cookie`, written as `Set-Cookie`.

use http::HeaderMap;
use http::header::COOKIE;

/// The session cookie.
pub(crate) const SESSION: &str = "lk_session";
/// The sign-in form's CSRF cookie, set by the form, checked by its POST.
pub(crate) const SIGNIN: &str = "lk_signin";

/// The value of cookie `name`, if the request has it.
pub(crate) fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/ui, Secure when `secure`;
/// `max_age` in seconds, or a browser-session cookie when `None`.
pub(crate) fn set(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut cookie = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/ui");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(crate) fn clear(name: &str, secure: bool) -> String {
    set(name, "", secure, Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_cookie_among_several() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; lk_session=abc; b=2".parse().unwrap());
        assert_eq!(get(&headers, SESSION), Some("abc"));
        assert_eq!(get(&headers, "c"), None);
    }

    #[test]
    fn flags() {
        assert_eq!(
            set(SESSION, "x", true, None),
            "lk_session=x; HttpOnly; SameSite=Strict; Path=/ui; Secure"
        );
        assert!(!set(SESSION, "x", false, None).contains("Secure"));
    }
}
