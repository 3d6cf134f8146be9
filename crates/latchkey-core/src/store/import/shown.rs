//! What an imported key shows: its display prefix, and the text stored beside it (its
//! name, its `meta`), stored and shown in plain, none of which may show its secret.
//!
//! A full key's secret part is its text but for the words that name its kind (`sk_live_`,
//! `sk-proj-`, `github_pat_`: see [`secret_part`]); a text beside it that holds [`RUN`] of
//! its characters in a row, in any case, is taken to show it. That catches a key pasted in
//! the wrong column, cut short or changed in case; it is no guard against an importer set
//! on copying it out piece by piece, who holds the key anyway. A SHA-256 item's text is not
//! known: a text beside it that holds a stretch whose SHA-256 is the item's, from a word's
//! end or punctuation mark to another (see [`may_be_keys`]), is refused.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::{ImportKey, ImportSecret, Refused};
use crate::limits::{MAX_IMPORTED_KEY_LEN, MIN_IMPORTED_KEY_LEN};

/// How many characters of a full key's text a display prefix must leave unshown.
pub(super) const MIN_HIDDEN: usize = 16;

/// How many characters in a row of a key's secret part a text beside it may not hold.
const RUN: usize = 8;

/// The display prefix of a full key: the words that name its kind (the head
/// [`secret_part`] leaves out, `sk_live` of `sk_live_…`, `github_pat` of `github_pat_…`)
/// when there are some and they do not read as one of this store's own prefixes, otherwise
/// `imported`. What it shows, the checks of a name or `meta` take as no secret either.
pub(super) fn derived_prefix(text: &str, store_prefix: &str) -> String {
    let head = &text[..text.len() - secret_part(text).len()];
    Some(head.trim_end_matches(['_', '-']))
        .filter(|kind| !kind.is_empty() && check_not_native(kind, store_prefix).is_ok())
        .unwrap_or("imported")
        .to_owned()
}

/// The part of a full key's text nothing shown may hold: all of it but the words that
/// name its kind (`sk-proj-` of OpenAI's, `github_pat_` of GitHub's, `sk_live_` of
/// Stripe's): at most [`MAX_KIND_WORDS`] words at its start, of 1 to [`MAX_KIND_WORD`]
/// lower-case letters and digits each with a letter past `f` (a word of hex digits is a
/// UUID's or a token's, review s55 M1), each followed by `_` or `-`, [`MAX_HEAD`]
/// characters at most with at least [`MIN_HIDDEN`] after them. A random token whose first
/// characters read so keeps them out of the check, and shows them in its derived prefix:
/// never [`RUN`] of them in a row (re-check s55 M2: a 12-letter word of a random part was
/// taken for a kind); the rest of it is still checked.
fn secret_part(text: &str) -> &str {
    let mut head = 0;
    for _ in 0..MAX_KIND_WORDS {
        let Some(end) = text[head..].find(['_', '-']).map(|at| head + at) else {
            break;
        };
        let word = &text[head..end];
        let reads_as_kind = (1..=MAX_KIND_WORD).contains(&word.len())
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && word.bytes().any(|b| (b'g'..=b'z').contains(&b));
        if !reads_as_kind || end + 1 > MAX_HEAD || text.len() - (end + 1) < MIN_HIDDEN {
            break;
        }
        head = end + 1;
    }
    &text[head..]
}

/// The most words a kind has: `sk-ant-api03-` of Anthropic's.
const MAX_KIND_WORDS: usize = 3;

/// The longest word of a kind (`github`): shorter than [`RUN`].
const MAX_KIND_WORD: usize = 6;

/// The longest head [`secret_part`] leaves out.
const MAX_HEAD: usize = 16;

/// A display prefix given with an import: what lists show for the key.
pub(super) fn check_prefix(prefix: &str) -> Result<(), Refused> {
    let ok = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Refused {
            field: "prefix",
            reason: "must be 1 to 64 characters of [A-Za-z0-9_.-]",
        })
    }
}

/// Refuses a display prefix in this store's own keys' form (`lk_live_…`, `lk_test_…`), in
/// any case (`LK_Live_…` reads the same to a person): an imported key shown, logged and
/// handed to apps under it would pass for a native one (and `latchkey keys list --prefix
/// <prefix>` finds the native one).
pub(super) fn check_not_native(prefix: &str, store_prefix: &str) -> Result<(), Refused> {
    let prefix = prefix.to_ascii_lowercase();
    let native = ["live", "test"].iter().any(|env| {
        prefix
            .strip_prefix(store_prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.strip_prefix(env))
            .is_some_and(|rest| rest.starts_with('_'))
    });
    if native {
        return Err(Refused {
            field: "prefix",
            reason: "is in the form of this store's own keys' prefixes: an imported key must not pass for one",
        });
    }
    Ok(())
}

/// Refuses a display prefix given with a full key that would show the key: it may be the
/// start of the text with at least [`MIN_HIDDEN`] characters after it, or hold none of its
/// secret part (no [`RUN`] of its characters in a row, in any case).
pub(super) fn check_hides(prefix: &str, text: &str) -> Result<(), Refused> {
    let leads = text
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() >= MIN_HIDDEN);
    if !leads && Secret::of(&ImportSecret::Full(text.to_owned())).shown_in(prefix) {
        return Err(Refused {
            field: "prefix",
            reason: "would show the key: it may be the start of its text with at least 16 characters after it, or hold none of it",
        });
    }
    Ok(())
}

/// Refuses an item whose name or `meta` (or, beside a SHA-256, whose prefix) shows its
/// key: each is stored and shown in plain, and handed to apps.
pub(super) fn check_beside(item: &ImportKey) -> Result<(), Refused> {
    let secret = Secret::of(&item.secret);
    let refused = |field| Refused {
        field,
        reason: "holds the key's text, or much of it, which is a secret: it is never stored",
    };
    if item
        .name
        .as_deref()
        .is_some_and(|name| secret.shown_in(name))
    {
        return Err(refused("name"));
    }
    if let Some(meta) = &item.meta
        && texts_of(meta).any(|text| secret.shown_in(text))
    {
        return Err(refused("meta"));
    }
    // A full key's prefix is checked by `check_hides`.
    if let (Secret::Digest(_), Some(prefix)) = (&secret, &item.prefix)
        && secret.shown_in(prefix)
    {
        return Err(refused("prefix"));
    }
    Ok(())
}

/// What a text beside an imported key must not show.
enum Secret<'a> {
    /// The runs of [`RUN`] characters of a full key's secret part, in lower case.
    Runs(HashSet<[u8; RUN]>),
    /// The SHA-256 of a key's text.
    Digest(&'a [u8; 32]),
}

impl<'a> Secret<'a> {
    /// What `secret` must not show, made once for every text checked beside it.
    fn of(secret: &'a ImportSecret) -> Secret<'a> {
        match secret {
            ImportSecret::Full(text) => Secret::Runs(
                secret_part(text)
                    .as_bytes()
                    .windows(RUN)
                    .map(lower)
                    .collect(),
            ),
            ImportSecret::Sha256(digest) => Secret::Digest(digest),
        }
    }

    /// Whether `shown` holds the secret: a run of its characters, or a word whose SHA-256
    /// is the digest.
    fn shown_in(&self, shown: &str) -> bool {
        match self {
            Secret::Runs(runs) => shown
                .as_bytes()
                .windows(RUN)
                .any(|run| runs.contains(&lower(run))),
            Secret::Digest(digest) => {
                may_be_keys(shown).any(|word| Sha256::digest(word).as_slice() == digest.as_slice())
            }
        }
    }
}

/// The stretches of `shown` that may be a whole key, for a SHA-256 item: within each of
/// its words (a key holds no white space), every stretch from one cut to another, a cut
/// being a word's end or either side of a punctuation mark. Whatever joins a key to the
/// text around it (`x.<key>.y`, `key=<key>`, `(<key>)`, `prod-<key>`) and whatever
/// punctuation the key holds itself (a base64 key's `==`, a JWT's dots: re-check s55 M1,
/// L2, s55b M1), one of them is the key. Each spans at most [`MAX_CUTS_SPANNED`] cuts, is
/// as long as a key may be, and is three quarters letters and digits at least, as every
/// key's text is: which bounds the hashing a text costs (a body is at most 64 KiB). The
/// whole text and each whole word are tried too, whatever they hold (re-check s55d L1: a
/// name that was exactly a key of 17 dash groups passed).
fn may_be_keys(shown: &str) -> impl Iterator<Item = &[u8]> {
    let whole = std::iter::once(shown).chain(shown.split(char::is_whitespace));
    let whole = whole
        .map(str::as_bytes)
        .filter(|text| text.len() <= MAX_IMPORTED_KEY_LEN);
    whole.chain(shown.split(char::is_whitespace).flat_map(|word| {
        let word = word.as_bytes();
        let mark = |at: usize| word.get(at).is_some_and(|b| !b.is_ascii_alphanumeric());
        let cuts: Vec<usize> = (0..=word.len())
            .filter(|&at| at == 0 || at == word.len() || mark(at - 1) || mark(at))
            .collect();
        // How many letters and digits come before each position: a stretch of marks with a
        // few between (`a.b.c.d…`, hashed at every cut) is no key.
        let letters: Vec<usize> = std::iter::once(0)
            .chain(word.iter().scan(0, |n, b| {
                *n += usize::from(b.is_ascii_alphanumeric());
                Some(*n)
            }))
            .collect();
        let mut stretches = Vec::new();
        for (i, &from) in cuts.iter().enumerate() {
            for &to in cuts[i + 1..].iter().take(MAX_CUTS_SPANNED) {
                let long = (MIN_IMPORTED_KEY_LEN..=MAX_IMPORTED_KEY_LEN).contains(&(to - from));
                if long && (letters[to] - letters[from]) * 4 >= (to - from) * 3 {
                    stretches.push(&word[from..to]);
                }
            }
        }
        stretches
    }))
}

/// The most cuts a stretch of [`may_be_keys`] spans: a key with 15 punctuation marks of its
/// own is still found.
const MAX_CUTS_SPANNED: usize = 32;

/// A run of bytes in ASCII lower case.
fn lower(run: &[u8]) -> [u8; RUN] {
    let mut lowered = [0; RUN];
    for (to, from) in lowered.iter_mut().zip(run) {
        *to = from.to_ascii_lowercase();
    }
    lowered
}

/// Every string in a JSON value: its members' names and its string values.
fn texts_of(value: &serde_json::Value) -> Box<dyn Iterator<Item = &str> + '_> {
    use serde_json::Value;
    match value {
        Value::String(text) => Box::new(std::iter::once(text.as_str())),
        Value::Array(items) => Box::new(items.iter().flat_map(texts_of)),
        Value::Object(members) => Box::new(
            members
                .iter()
                .flat_map(|(name, value)| std::iter::once(name.as_str()).chain(texts_of(value))),
        ),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn native_forms_and_derived_prefixes() {
        assert!(check_not_native("lk_live_AbCdEf123456", "lk").is_err());
        assert!(check_not_native("lk_test_x", "lk").is_err());
        assert!(check_not_native("LK_live_AbCdEf123456", "lk").is_err());
        assert!(check_not_native("lk_TEST_x", "lk").is_err());
        assert!(check_not_native("lk_live", "lk").is_ok());
        assert!(check_not_native("sk_live_AbCdEf123456", "lk").is_ok());
        assert!(check_not_native("lk_livelihood_1", "lk").is_ok());
        let random = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        for (text, derived) in [
            ("sk_live_51HxYzAbCdEfGhIjKlMn".to_owned(), "sk_live"),
            ("ghp_0123456789abcdefABCDEF".to_owned(), "ghp"),
            ("abcdefghijklmnop".to_owned(), "imported"),
            // A base64url token's `_` is no kind: the text before it is secret.
            ("AbCdEfGhIjKlMnOp_Qr".to_owned(), "imported"),
            ("abcdefgh_ijklmnop".to_owned(), "imported"),
            ("abcdefghijklmnopq_0123456789abcdef".to_owned(), "imported"),
            // A kind in this store's own form would pass for a native key (import hunt L1).
            ("lk_live_qwerty_0123456789abcdefXYZ".to_owned(), "imported"),
            ("lk_test_qwerty_0123456789abcdefXYZ".to_owned(), "imported"),
            ("lk_live_0123456789abcdefXYZ".to_owned(), "lk_live"),
            // The words the name and `meta` checks take as no secret (review s55 L2).
            ("sk-proj-Ab3dEf6hIj9kLm2nOp5q".to_owned(), "sk-proj"),
            (
                "github_pat_11ABCDEFG0abcdefghij_xyz".to_owned(),
                "github_pat",
            ),
            (
                "a1b2c3d4e5f6g7h8_0123456789abcdefghij".to_owned(),
                "imported",
            ),
            (
                "3f2a9c1e-4b7d-4e8a-9f1c-2d3e4f5a6b7c".to_owned(),
                "imported",
            ),
            // A random part's first word is no kind (re-check s55 M2).
            (format!("sk-proj-wqxwxyzywx_{random}"), "sk-proj"),
            (format!("github_pat_hkgjwxyzhkgj_{random}"), "github_pat"),
            (format!("mmurxyzw-tjisxyzw-{random}"), "imported"),
            (format!("ab-cd-ef-gh-{random}"), "imported"),
        ] {
            assert_eq!(derived_prefix(&text, "lk"), derived, "{text}");
        }
    }

    /// A given prefix is the start of the text with 16 characters after it, or holds none
    /// of it: the key but its first character, an infix, or the key in another case were
    /// taken (import hunt H1).
    #[test]
    fn a_prefix_shows_nothing_of_the_key_past_its_start() {
        let text = "Xq7vR2mK9pL4sT8wY3nB6cF1hJ5gD0zA";
        for shows in [
            text,
            &text[1..],
            &text[5..20],
            &text[..20],
            "XQ7VR2MK9PL4ST8WY3NB6CF1HJ5GD0ZA",
            "my-R2mK9pL4s-key",
        ] {
            assert!(check_hides(shows, text).is_err(), "{shows}");
        }
        for hides in [&text[..16], &text[..3], "partner-acme", "legacy.billing"] {
            assert!(check_hides(hides, text).is_ok(), "{hides}");
        }
        // A kind is no secret: named again, it shows nothing.
        let kinded = "sk_live_AAAAbbbbCCCCdddd1111XYZ";
        assert!(check_hides("stripe_sk_live_old", kinded).is_ok());
        assert!(check_hides("sk_live_AAAAbbbbCCCCdd", kinded).is_err());
        // Nor are kinds in other forms (OpenAI's display form, its first and last
        // characters, was refused as holding `sk-proj-`).
        let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zGH";
        assert!(check_hides("sk-proj-...GH", openai).is_ok());
        assert!(check_hides("sk-proj-Ab3dEf6h", openai).is_ok());
        assert!(check_hides("proj-Ab3dEf6hIj9k", openai).is_err());
    }

    /// The words that name a key's kind are no secret; what follows them is.
    #[test]
    fn the_secret_part_is_past_the_words_of_the_kind() {
        for (text, secret) in [
            ("sk_live_51HxYzAbCdEfGhIjKlMn", "51HxYzAbCdEfGhIjKlMn"),
            ("sk-proj-Ab3dEf6hIj9kLm2nOp5q", "Ab3dEf6hIj9kLm2nOp5q"),
            ("sk-ant-api03-Ab3dEf6hIj9kLm2nOp5q", "Ab3dEf6hIj9kLm2nOp5q"),
            (
                "github_pat_11ABCDEFG0abcdefghij_xyz",
                "11ABCDEFG0abcdefghij_xyz",
            ),
            ("ghp_0123456789abcdefABCDEF", "0123456789abcdefABCDEF"),
            (
                "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMI",
                "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMI",
            ),
            ("key_v2_0123456789abcdef", "0123456789abcdef"),
            // Never fewer than 16 characters kept.
            ("key_v2_0123456789abcde", "v2_0123456789abcde"),
            // Words of hex digits are a UUID's, or a token's (review s55 M1).
            (
                "3f2a9c1e-4b7d-4e8a-9f1c-2d3e4f5a6b7c",
                "3f2a9c1e-4b7d-4e8a-9f1c-2d3e4f5a6b7c",
            ),
            ("abc_def_0123456789abcdef", "abc_def_0123456789abcdef"),
        ] {
            assert_eq!(secret_part(text), secret, "{text}");
        }
    }

    /// What a text dense with punctuation marks costs the SHA-256 check is bounded (re-check
    /// s55c I1): marks with a letter or two between are no key, and a stretch spans 32 cuts
    /// at most, so a body's 64 KiB never cost more than 32 MiB of hashing (25 MB here).
    #[test]
    fn a_text_dense_with_marks_costs_a_bounded_hashing() {
        let hashed = |text: &str| may_be_keys(text).map(<[u8]>::len).sum::<usize>();
        assert_eq!(hashed(&"a.".repeat(32 * 1024)), 0);
        assert_eq!(hashed(&"ab-cd=".repeat(10 * 1024)), 0);
        let dense = "abc.".repeat(16 * 1024);
        assert!(hashed(&dense) <= 512 * dense.len(), "{}", hashed(&dense));
    }

    /// A name, `meta` (names and values, at any depth) or a SHA-256 item's prefix holding
    /// the key is refused; texts that do not are taken (import hunt M1).
    #[test]
    fn a_text_beside_the_key_never_holds_it() {
        let text = "sk_live_AAAAbbbbCCCCdddd1111XYZ";
        let item = |secret: ImportSecret, prefix: Option<&str>, name: &str, meta| ImportKey {
            secret,
            prefix: prefix.map(str::to_owned),
            name: Some(name.to_owned()),
            expires_at: None,
            scopes: None,
            meta: Some(meta),
        };
        let full = || ImportSecret::Full(text.to_owned());
        let field = |item: ImportKey| check_beside(&item).err().map(|r| r.field);
        assert_eq!(
            field(item(full(), None, "billing sk_live", json!({}))),
            None
        );
        let anthropic = ImportSecret::Full("sk-ant-api03-Ab3dEf6hIj9kLm2nOp5q".to_owned());
        assert_eq!(
            field(item(anthropic, None, "sk-ant-api03 prod", json!({}))),
            None
        );
        assert_eq!(field(item(full(), None, text, json!({}))), Some("name"));
        assert_eq!(
            field(item(full(), None, "old aaaabbbbcccc", json!({}))),
            Some("name")
        );
        assert_eq!(
            field(item(full(), None, "k", json!({"a": [{"b": text}]}))),
            Some("meta")
        );
        assert_eq!(
            field(item(full(), None, "k", json!({text: 1}))),
            Some("meta")
        );
        let digest = ImportSecret::Sha256(Sha256::digest(text.as_bytes()).into());
        let sha = || digest.clone();
        assert_eq!(field(item(sha(), Some("sk_live"), "k", json!({}))), None);
        assert_eq!(
            field(item(sha(), Some(text), "k", json!({}))),
            Some("prefix")
        );
        let named = format!("key={text}");
        assert_eq!(
            field(item(sha(), Some("sk"), &named, json!({}))),
            Some("name")
        );
        let meta = json!({"note": format!("was {text} at Stripe")});
        assert_eq!(field(item(sha(), Some("sk"), "k", meta)), Some("meta"));
        let meta = json!({"note": format!("rotated from {text}.")});
        assert_eq!(field(item(sha(), Some("sk"), "k", meta)), Some("meta"));
        // Punctuation around it, or a `.` joining it to another word (review s55 L3).
        let dotted = format!("stripe.{text}");
        assert_eq!(
            field(item(sha(), Some(&dotted), "k", json!({}))),
            Some("prefix")
        );
        for name in [
            format!("#{text}"),
            format!("**{text}**"),
            format!("{text}.old"),
        ] {
            assert_eq!(field(item(sha(), None, &name, json!({}))), Some("name"));
        }
        assert_eq!(field(item(sha(), None, "stripe.billing", json!({}))), None);
        // Between two dots (re-check s55 L2).
        assert_eq!(
            field(item(sha(), None, &format!("x.{text}.y"), json!({}))),
            Some("name")
        );
        // A base64 key's own `=` kept, whatever is around it (re-check s55 M1).
        // Whatever joins it to the text around it (s55b M1).
        for key in [
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSMeKK",
            "k3y'with(marks)=of:its/own",
            text,
        ] {
            let digest = ImportSecret::Sha256(Sha256::digest(key.as_bytes()).into());
            for shown in [
                "a KEY",
                "KEY,",
                "'KEY'",
                "(KEY)",
                "note: KEY",
                "x.KEY.y",
                "x.y.KEY.z.w",
                "\"x.KEY\"",
                "key=KEY",
                "key:KEY",
                "x,KEY,y",
                "?k=KEY&b=1",
                "a/KEY",
                "KEY's",
                "prod-KEY",
                "KEY_old",
                "x@KEY",
                "a+KEY",
                "a\\KEY",
                "**KEY**",
                "#KEY",
            ] {
                let name = shown.replace("KEY", key);
                let named = item(digest.clone(), None, &name, json!({}));
                assert_eq!(field(named), Some("name"), "{name}");
                let meta = json!({"notes": [{"was": &name}]});
                assert_eq!(field(item(digest.clone(), None, "k", meta)), Some("meta"));
            }
        }
        // More marks of its own than a stretch spans, or fewer letters than most keys: as
        // a whole text or word (re-check s55d L1).
        for key in [
            "a1-b2-c3-d4-e5-f6-g7-h8-i9-j0-k1-l2-m3-n4-o5-p6-q7-r8",
            "a.b.c.d.e.f.g.h.i.j",
        ] {
            let digest = ImportSecret::Sha256(Sha256::digest(key.as_bytes()).into());
            for name in [key.to_owned(), format!("was {key} once")] {
                let named = item(digest.clone(), None, &name, json!({}));
                assert_eq!(field(named), Some("name"), "{name}");
            }
        }
    }
}
