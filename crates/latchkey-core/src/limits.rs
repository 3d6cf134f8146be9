//! Every bound on input, in one place: the store enforces them on each write, the
//! management API on bodies and query parameters, and its OpenAPI document states them.
//!
//! | What                                   | Bound          | Refused with |
//! |----------------------------------------|----------------|--------------|
//! | permissions in one set                 | 256            | 400, the set's field |
//! | bytes in one permission                | 128            | 400, the set's field |
//! | groups of one user                     | 64             | 400, the groups' field |
//! | user and group names                   | 1–64 bytes of `[A-Za-z0-9_.@-]` | 400 `name` |
//! | key names                              | 1–128 bytes    | 400 `name` |
//! | descriptions                           | 0–1,024 bytes  | 400 `description` |
//! | `tenant_id`, `organization_id`         | 1–128 bytes    | 400, the field |
//! | list `limit`                           | 1–1,000        | 400 `limit` |
//! | key search `q`, list `cursor`          | 256, 2,048 bytes | 400 `q`, `cursor` |
//! | JSON request bodies                    | 64 KiB         | 413 |
//! | items in one `POST /v1/usage`          | 500            | 400 `items` |
//! | items in one `POST /v1/keys/import`    | 1,000          | 400 `items` |
//! | an imported key's full text            | 16–512 visible ASCII characters | 400 `key` |
//!
//! Free text (key names, descriptions, tenants, organizations) refuses the characters that
//! can make a name display as another ([`is_forbidden_char`]); tenants and organizations,
//! compared byte for byte, also every format character and white space at either end.

use crate::error::StoreError;
use crate::permission::{PermissionEdit, PermissionSet};

/// Most permissions in one set (a group's, a user's direct ones, a key's scopes, or one
/// `add_…`/`remove_…` list of a change).
pub const MAX_PERMISSIONS: usize = 256;
/// Longest permission, in bytes.
pub const MAX_PERMISSION_BYTES: usize = 128;
/// Most groups one user may be in (and most group references in one request field).
pub const MAX_GROUPS_PER_USER: usize = 64;
/// Longest user or group name, in bytes (they are ASCII).
pub const MAX_PRINCIPAL_NAME_BYTES: usize = 64;
/// Longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest key description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Longest `tenant_id` or `organization_id`, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;
/// Largest page a list answers.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most user ids one `GET /v1/users?ids=` names.
pub const MAX_USERS_BY_ID: usize = 100;
/// Longest key search text (`q`), in bytes.
pub const MAX_SEARCH_BYTES: usize = 256;
/// Longest list cursor, in bytes (a cursor this store made is far shorter).
pub const MAX_CURSOR_BYTES: usize = 2048;
/// Largest JSON request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most items in one usage report; a remote verifier sends larger reports in parts.
pub const MAX_USAGE_ITEMS: usize = 500;
/// Most keys in one import request (`POST /v1/keys/import`); the CLI sends larger files in
/// parts.
pub const MAX_IMPORT_ITEMS: usize = 1000;
/// Shortest full text of an imported key (a key issued elsewhere), in bytes.
pub const MIN_IMPORTED_KEY_LEN: usize = 16;
/// Longest full text of an imported key, in bytes: the import refuses a longer one, and a
/// verifier that takes imported keys reads a presented text up to this long (a latchkey
/// key is at most [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN)).
pub const MAX_IMPORTED_KEY_LEN: usize = 512;
/// How far ahead of the store's clock a reported `last_used_at` may be (clock skew between
/// hosts), in seconds; it is then taken as now. Further ahead is refused.
pub const MAX_USAGE_CLOCK_SKEW_SECONDS: i64 = 60;
/// The longest rotation grace period, in seconds: a year of 365 days (`1y` as people type
/// it is 365.25 days, 6 hours more).
pub const MAX_GRACE_SECONDS: u64 = 365 * 24 * 60 * 60;
/// A key's `meta`: bytes of JSON.
pub const MAX_META_BYTES: usize = 4 * 1024;
/// How deep a key's `meta` may nest: the object itself is level 1. Clients' JSON parsers
/// stop at about 128 levels, so a deeper `meta` would make every list holding the key
/// unreadable to them.
pub const MAX_META_DEPTH: usize = 16;
/// Named rate limits on one key or one user.
pub const MAX_RATE_LIMITS: usize = 8;
/// A rate limit's name, in bytes.
pub const MAX_RATE_LIMIT_NAME_BYTES: usize = 32;
/// Requests per window of one rate limit.
pub const MAX_RATE_LIMIT: u32 = 1_000_000_000;
/// A rate limit's window: 31 days.
pub const MAX_RATE_LIMIT_WINDOW_SECONDS: u32 = 31 * 86_400;
/// Credits remaining or refilled.
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;
/// CIDRs in one key's `allowed_ips`.
pub const MAX_ALLOWED_IPS: usize = 64;
/// The cost of one request for a route.
pub const MAX_COST: u32 = 1_000_000;

/// The most a remote verifier's lease may ask of one bucket at once (`POST /v1/leases`).
pub const MAX_LEASE: u64 = 100_000;

/// The most buckets one lease request names.
pub const MAX_LEASE_BUCKETS: usize = 32;

/// [`check_permissions`] over an edit's sets, each error naming its member of the API's
/// bodies: `permissions`, `add_permissions` or `remove_permissions`.
pub fn check_permission_edit(edit: &PermissionEdit) -> Result<(), StoreError> {
    if let Some(replace) = &edit.replace {
        check_permissions("permissions", replace)?;
    }
    check_permissions("add_permissions", &edit.add)?;
    check_permissions("remove_permissions", &edit.remove)
}

/// Fails with `Invalid { field }` when `set` holds more than [`MAX_PERMISSIONS`]
/// permissions or one longer than [`MAX_PERMISSION_BYTES`].
pub fn check_permissions(field: &'static str, set: &PermissionSet) -> Result<(), StoreError> {
    if set.len() > MAX_PERMISSIONS {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    match set.iter().find(|p| p.as_str().len() > MAX_PERMISSION_BYTES) {
        Some(p) => Err(StoreError::invalid(
            field,
            format!(
                "a permission is at most {MAX_PERMISSION_BYTES} bytes; one has {}",
                p.as_str().len()
            ),
        )),
        None => Ok(()),
    }
}

/// Fails with `Invalid { field }` when a list of `count` group references is longer than
/// [`MAX_GROUPS_PER_USER`].
pub fn check_groups(field: &'static str, count: usize) -> Result<(), StoreError> {
    if count > MAX_GROUPS_PER_USER {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_GROUPS_PER_USER} groups"),
        ));
    }
    Ok(())
}

/// Whether a character may not appear in free text (key names, descriptions): a control
/// character (`Cc`), a bidirectional formatting character (which can make one name display
/// as another), or a line or paragraph separator (`Zl`, `Zp`). Other format characters
/// (zero-width joiners, which Persian and Indic spelling and emoji need) are allowed there;
/// tenant and organization ids refuse them too ([`is_forbidden_in_id`]).
///
/// ```
/// use latchkey_core::limits::is_forbidden_char;
/// assert!(is_forbidden_char('\u{202E}') && is_forbidden_char('\u{2028}'));
/// assert!(!is_forbidden_char('é') && !is_forbidden_char('\u{200D}'));
/// ```
pub fn is_forbidden_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    ) || matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Whether a character may not appear in a tenant or organization id, which are compared
/// byte for byte as boundaries: those of free text, and every format character (`Cf`:
/// zero-width spaces and joiners, the byte order mark, soft hyphens, tags), which make one
/// id display as another, or as nothing.
///
/// ```
/// use latchkey_core::limits::is_forbidden_in_id;
/// assert!(is_forbidden_in_id('\u{200B}') && is_forbidden_in_id('\u{FEFF}'));
/// assert!(!is_forbidden_in_id('é'));
/// ```
pub fn is_forbidden_in_id(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    is_forbidden_char(c) || c.general_category() == GeneralCategory::Format
}

/// Checks a tenant or organization id: free text ([`check_text`]) without format
/// characters ([`is_forbidden_in_id`]) nor white space at either end, so that `acme` and
/// `acme ` (or `acme` and a zero-width space) are never two tenants that look alike.
pub(crate) fn check_tenant(field: &'static str, text: &str) -> Result<(), StoreError> {
    check_text(field, text, 1, MAX_TENANT_BYTES)?;
    if text.chars().any(is_forbidden_in_id) {
        return Err(StoreError::invalid(
            field,
            "formatting characters (zero-width spaces and joiners, byte order marks, soft \
             hyphens) are not allowed in an id",
        ));
    }
    if text.trim() != text {
        return Err(StoreError::invalid(
            field,
            "white space at either end is not allowed",
        ));
    }
    Ok(())
}

/// Checks free text: `min` to `max` bytes, no [forbidden character](is_forbidden_char).
pub(crate) fn check_text(
    field: &'static str,
    text: &str,
    min: usize,
    max: usize,
) -> Result<(), StoreError> {
    if text.len() < min || text.len() > max {
        return Err(StoreError::invalid(field, format!("{min} to {max} bytes")));
    }
    if text.chars().any(is_forbidden_char) {
        return Err(StoreError::invalid(
            field,
            "control, bidirectional formatting and line separator characters are not allowed",
        ));
    }
    check_no_key(field, text)
}

/// Refuses a text that holds a latchkey key's full text (pasted by mistake where a name
/// goes): a secret is never stored in plain, nor shown in every list that holds the text.
pub(crate) fn check_no_key(field: &'static str, text: &str) -> Result<(), StoreError> {
    if crate::key::find_keys(text).next().is_some() {
        return Err(StoreError::invalid(
            field,
            "it holds a key's full text, which is a secret: it is never stored",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_text_holds_a_key() {
        let key = crate::ApiKey::generate(&crate::Prefix::default(), crate::Env::Live);
        let text = format!("deploy {}", key.expose());
        let error = check_text("name", &text, 1, 200).unwrap_err();
        assert!(!error.to_string().contains(key.expose()), "{error}");
        assert!(check_text("name", "lk_live_ but no key", 1, 200).is_ok());
    }

    #[track_caller]
    fn check(text: &str, ok: bool) {
        assert_eq!(check_text("name", text, 1, 8).is_ok(), ok, "{text:?}");
    }

    #[test]
    fn text_table() {
        check("a", true);
        check("12345678", true);
        check("123456789", false);
        check("", false);
        check("ünï", true);
        check("ééééé", false); // 10 bytes
        for bad in [
            "a\u{202E}b",
            "a\u{2066}",
            "\u{200F}",
            "\u{061C}",
            "a\nb",
            "\u{7}",
            "\u{2069}",
        ] {
            check(bad, false);
        }
    }

    #[test]
    fn permission_sets() {
        let long = format!("a{}", "b".repeat(MAX_PERMISSION_BYTES - 1));
        assert!(check_permissions("p", &PermissionSet::parse([&long]).unwrap()).is_ok());
        let longer = format!("{long}c");
        assert!(check_permissions("p", &PermissionSet::parse([&longer]).unwrap()).is_err());
        let many = |n: usize| PermissionSet::parse((0..n).map(|i| format!("p{i}"))).unwrap();
        assert!(check_permissions("p", &many(MAX_PERMISSIONS)).is_ok());
        let err = check_permissions("p", &many(MAX_PERMISSIONS + 1)).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { field: "p", .. }));
    }
}
