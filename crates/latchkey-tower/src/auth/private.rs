//! `Cache-Control: private` on a success answer to a request that carried its key in the
//! URI's query (RFC 6750 §2.3): a shared cache keys what it stores by URL, and this URL is
//! a credential, so the answer is the key holder's alone.

use http::HeaderValue;
use http::header::{CACHE_CONTROL, HeaderMap};

/// Makes the answer's `Cache-Control` say `private`, keeping what it already says unless it
/// lets a shared cache keep the answer: `public` and `s-maxage` go, `private` is added. An
/// answer already `private` (unqualified) or `no-store` is left as it is.
pub(super) fn keep_private(headers: &mut HeaderMap) {
    let mut kept = Vec::new();
    for value in headers.get_all(CACHE_CONTROL) {
        // A value that is not text, or whose quoted string never ends, says nothing a
        // cache could use: it is replaced.
        let Some(directives) = value.to_str().ok().and_then(directives) else {
            continue;
        };
        for directive in directives {
            // `private="set-cookie"` keeps one field from shared caches, not the answer.
            if directive.eq_ignore_ascii_case("private")
                || directive.eq_ignore_ascii_case("no-store")
            {
                return;
            }
            let name = directive.split('=').next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case("public") && !name.eq_ignore_ascii_case("s-maxage") {
                kept.push(directive);
            }
        }
    }
    let value = if kept.is_empty() {
        HeaderValue::from_static("private")
    } else {
        kept.push("private");
        // Made of parts of header values joined by ", ": a valid value again.
        HeaderValue::from_str(&kept.join(", ")).unwrap_or(HeaderValue::from_static("private"))
    };
    headers.insert(CACHE_CONTROL, value);
}

/// A `Cache-Control` value's directives, trimmed: split at the commas outside the quoted
/// strings of their arguments (RFC 9110 §5.6.4), so that a comma or a directive's name
/// inside an argument (`no-cache="a, private"`) is taken for neither. `None` when a quoted
/// string does not end: what follows its quote is no directive to a cache that reads
/// quotes.
fn directives(value: &str) -> Option<Vec<&str>> {
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    let mut found = Vec::new();
    for (at, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                found.push(&value[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    found.push(&value[start..]);
    Some(
        found
            .into_iter()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(values: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        }
        keep_private(&mut headers);
        headers
            .get_all(CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn an_answer_without_cache_control_becomes_private() {
        assert_eq!(private(&[]), ["private"]);
    }

    #[test]
    fn what_lets_a_shared_cache_keep_the_answer_is_replaced() {
        assert_eq!(private(&["public, max-age=60"]), ["max-age=60, private"]);
        assert_eq!(private(&["Public", "s-maxage=600"]), ["private"]);
        assert_eq!(
            private(&["max-age=60, s-maxage=600, must-revalidate"]),
            ["max-age=60, must-revalidate, private"]
        );
        // A qualified `private` keeps one field from shared caches, not the answer.
        assert_eq!(
            private(&["public, private=\"set-cookie\""]),
            ["private=\"set-cookie\", private"]
        );
    }

    #[test]
    fn a_comma_or_a_name_inside_a_quoted_argument_is_part_of_it() {
        assert_eq!(
            private(&["no-cache=\"a, private, b\", max-age=5"]),
            ["no-cache=\"a, private, b\", max-age=5, private"]
        );
        // An escaped quote does not end the string.
        assert_eq!(
            private(&[r#"ext="a \", no-store, b", public"#]),
            [r#"ext="a \", no-store, b", private"#]
        );
        assert_eq!(
            directives(" a, b=\"1,2\" ,, c ").unwrap(),
            ["a", "b=\"1,2\"", "c"]
        );
        // A quoted string that never ends: the value says nothing a cache could use.
        assert_eq!(private(&["x=\"a, public"]), ["private"]);
        assert_eq!(
            private(&["x=\"a, no-store", "max-age=5"]),
            ["max-age=5, private"]
        );
    }

    #[test]
    fn an_answer_already_private_or_not_stored_is_left_alone() {
        assert_eq!(private(&["no-store"]), ["no-store"]);
        assert_eq!(private(&["max-age=5, Private"]), ["max-age=5, Private"]);
        assert_eq!(private(&["public", "no-store"]), ["public", "no-store"]);
    }
}
