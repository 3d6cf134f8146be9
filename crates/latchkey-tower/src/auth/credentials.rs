//! Finding the one credential a request presents, without allocating.

use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Uri};
use latchkey_core::key::MAX_KEY_LEN;
use latchkey_core::limits::MAX_IMPORTED_KEY_LEN;

use super::config::Config;
use crate::rejection::Reason;

/// Where the key was found, so `hide_credentials` removes exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Authorization,
    Header,
    Query,
}

/// The presented key's bytes and where they came from, or why there is none to verify.
///
/// The bytes are no longer than `longest` (see `longest()`) and ASCII, as every key is:
/// a verifier only ever sees ASCII text (`Verifier::verify_known` takes the bytes as
/// they are). Each place is checked on the way, so a value that is not is refused as such
/// before another place is read.
pub(super) fn find<'r, B>(
    request: &'r Request<B>,
    config: &Config,
    longest: usize,
) -> Result<(Source, &'r [u8]), Reason> {
    let headers = request.headers();
    let mut found = None;
    let mut other_scheme = false;
    if let Some(value) = single(headers, &AUTHORIZATION)? {
        match bearer_token(value) {
            Some(token) => found = Some((Source::Authorization, text(token, longest)?)),
            None => other_scheme = true,
        }
    }
    if let Some(name) = &config.header
        && let Some(value) = single(headers, name)?
    {
        let token = text(value.trim_ascii(), longest)?;
        set_once(&mut found, Source::Header, token)?;
    }
    if let (Some(param), Some(query)) = (&config.query_param, request.uri().query()) {
        for value in query_values(query, param) {
            if found.is_some_and(|(source, _)| source == Source::Query) {
                return Err(Reason::Repeated);
            }
            set_once(&mut found, Source::Query, text(value.as_bytes(), longest)?)?;
        }
    }
    match found {
        Some(found) => Ok(found),
        None if other_scheme => Err(Reason::OtherScheme),
        None => Err(Reason::Missing),
    }
}

/// Removes the credential from `source`, so the inner service never sees it.
pub(super) fn hide<B>(request: &mut Request<B>, source: Source, config: &Config) {
    match source {
        Source::Authorization => {
            request.headers_mut().remove(AUTHORIZATION);
        }
        Source::Header => {
            if let Some(name) = &config.header {
                request.headers_mut().remove(name);
            }
        }
        Source::Query => {
            let Some(param) = &config.query_param else {
                return;
            };
            if let Some(uri) = without_query_param(request.uri(), param) {
                *request.uri_mut() = uri;
            }
            // axum's router keeps the URI as it came in `OriginalUri`, inserted before any
            // route layer runs: the key is hidden there too.
            #[cfg(feature = "axum")]
            if let Some(axum::extract::OriginalUri(original)) = request.extensions_mut().get_mut()
                && let Some(uri) = without_query_param(original, param)
            {
                *original = uri;
            }
        }
    }
}

/// The value of a header sent at most once.
fn single<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Result<Option<&'h [u8]>, Reason> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes())),
        (Some(_), Some(_)) => Err(Reason::Repeated),
    }
}

/// The token of a `Bearer` credential (`"Bearer" 1*SP token`, scheme case-insensitive), or
/// `None` for another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    // The usual spelling first: one comparison instead of a byte loop.
    if scheme != b"Bearer" && !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    match rest.first() {
        // `Bearer` alone (hyper trims the value): a bearer credential with an empty token.
        None => Some(rest),
        Some(b' ') => Some(rest.trim_ascii()),
        // `Bearerish …`: another scheme.
        Some(_) => None,
    }
}

/// The longest credential the layer reads: a latchkey key, or an imported key when the
/// verifier takes them ([`Verifier::verifies_foreign`](crate::Verifier::verifies_foreign)).
/// Anything longer is refused before any pass over it.
pub(super) fn longest(verifies_foreign: bool) -> usize {
    if verifies_foreign {
        MAX_KEY_LEN.max(MAX_IMPORTED_KEY_LEN)
    } else {
        MAX_KEY_LEN
    }
}

/// The token, checked for length before anything reads it all, then for ASCII: no key of
/// any format (a latchkey key, an imported one) holds anything else. A header's obs-text
/// that is not UTF-8 is refused as such; other UTF-8 as a malformed key.
fn text(token: &[u8], longest: usize) -> Result<&[u8], Reason> {
    if token.len() > longest {
        return Err(Reason::TooLong);
    }
    if !token.is_ascii() {
        return Err(match std::str::from_utf8(token) {
            Ok(_) => Reason::Malformed,
            Err(_) => Reason::NotUtf8,
        });
    }
    Ok(token)
}

fn set_once<'r>(
    found: &mut Option<(Source, &'r [u8])>,
    source: Source,
    token: &'r [u8],
) -> Result<(), Reason> {
    if found.is_some() {
        return Err(Reason::SeveralPlaces);
    }
    *found = Some((source, token));
    Ok(())
}

/// The values of `param` in a query string (`a=1&b=2`), undecoded.
fn query_values<'q, 'p>(
    query: &'q str,
    param: &'p str,
) -> impl Iterator<Item = &'q str> + use<'q, 'p> {
    query.split('&').filter_map(move |pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == param).then_some(value)
    })
}

/// `uri` without `param` in its query; `None` when nothing changes.
fn without_query_param(uri: &Uri, param: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name) != param)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value: &[u8], expected: Option<&[u8]>) {
        assert_eq!(
            bearer_token(value),
            expected,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }

    #[test]
    fn bearer_scheme() {
        check(b"Bearer abc", Some(b"abc"));
        check(b"bearer abc", Some(b"abc"));
        check(b"BEARER   abc", Some(b"abc"));
        check(b"Bearer", Some(b""));
        check(b"Bearerabc", None);
        check(b"Basic abc", None);
        check(b"Bear", None);
        check(b"", None);
    }

    #[test]
    fn query_param_removed_alone() {
        let uri: Uri = "/orders?api_key=k&page=2&x".parse().unwrap();
        assert_eq!(
            without_query_param(&uri, "api_key").unwrap(),
            "/orders?page=2&x"
        );
        let uri: Uri = "http://h/orders?api_key=k".parse().unwrap();
        assert_eq!(
            without_query_param(&uri, "api_key").unwrap(),
            "http://h/orders"
        );
    }
}
