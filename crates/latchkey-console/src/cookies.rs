//! The console's cookies: read from `Cookie`, written as `Set-Cookie`.

use http::HeaderMap;
use http::header::COOKIE;

/// A cookie of the console. Over HTTPS its name carries the `__Host-` prefix, which a
/// browser accepts only from a secure origin, with `Secure`, `Path=/` and no `Domain`: a
/// cookie planted over plain HTTP (a network attacker answering `http://` for the host),
/// or by a sibling host for the parent domain, cannot stand in for it, nor sit beside it
/// on a longer path to lock the user out (see [`get`]). Over plain HTTP the plain name is
/// used, with `Path=/ui`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name {
    plain: &'static str,
    secure: &'static str,
}

impl Name {
    fn of(self, secure: bool) -> &'static str {
        if secure { self.secure } else { self.plain }
    }
}

/// The session cookie.
pub(crate) const SESSION: Name = Name {
    plain: "lk_session",
    secure: "__Host-lk_session",
};
/// The sign-in form's CSRF cookie, set by the form, checked by its POST.
pub(crate) const SIGNIN: Name = Name {
    plain: "lk_signin",
    secure: "__Host-lk_signin",
};

/// The value of cookie `name` as it is named under TLS or not (`secure`), if the request
/// has it once. A request with two values of it has none: a browser sends every cookie
/// that matches, the one with the longest path first, so a second one was set by someone
/// else (over plain HTTP, a sibling host may set one for the parent domain and a longer
/// path), and taking either would let them choose the session.
pub(crate) fn get(headers: &HeaderMap, name: Name, secure: bool) -> Option<&str> {
    let name = name.of(secure);
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v);
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, and over HTTPS (`secure`) the prefixed
/// name, `Path=/` (as the prefix demands; the API ignores cookies) and `Secure`, else
/// `Path=/ui`; `max_age` in seconds, or a browser-session cookie when `None`.
pub(crate) fn set(name: Name, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let path = if secure { "/" } else { "/ui" };
    let name = name.of(secure);
    let mut cookie = format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(crate) fn clear(name: Name, secure: bool) -> String {
    set(name, "", secure, Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_cookie_among_several() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; lk_session=abc; b=2".parse().unwrap());
        assert_eq!(get(&headers, SESSION, false), Some("abc"));
        assert_eq!(get(&headers, SIGNIN, false), None);
    }

    #[test]
    fn a_cookie_sent_twice_with_two_values_is_not_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            "__Host-lk_session=planted; __Host-lk_session=own"
                .parse()
                .unwrap(),
        );
        assert_eq!(get(&headers, SESSION, true), None);
        headers.insert(
            COOKIE,
            "lk_session=same; a=1; lk_session=same".parse().unwrap(),
        );
        assert_eq!(get(&headers, SESSION, false), Some("same"));
    }

    /// Over HTTPS only the `__Host-` name counts: a plain-named cookie (planted over HTTP)
    /// or a `__Secure-` one (which a sibling host can set) is not read.
    #[test]
    fn under_tls_only_the_prefixed_name_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "lk_session=planted".parse().unwrap());
        assert_eq!(get(&headers, SESSION, true), None);
        headers.insert(COOKIE, "__Secure-lk_session=planted".parse().unwrap());
        assert_eq!(get(&headers, SESSION, true), None);
        headers.insert(COOKIE, "__Host-lk_session=real".parse().unwrap());
        assert_eq!(get(&headers, SESSION, true), Some("real"));
    }

    #[test]
    fn flags() {
        assert_eq!(
            set(SESSION, "x", true, None),
            "__Host-lk_session=x; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
        assert_eq!(
            set(SESSION, "x", false, None),
            "lk_session=x; HttpOnly; SameSite=Strict; Path=/ui"
        );
    }
}
