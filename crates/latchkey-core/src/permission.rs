//! Permissions, wildcard coverage and the effective set of a request.
//!
//! A permission is `segment(:segment)*`, each segment one or more of `[a-z0-9_.-]`. A granted
//! permission whose last segment is `*` covers every permission *under* it:
//!
//! | granted      | covers                                                    | does not cover |
//! |--------------|-----------------------------------------------------------|----------------|
//! | `*`          | everything                                                |                |
//! | `orders:*`   | `orders:read`, `orders:items:write`, `orders:items:*`, `orders:*` | `orders`, `ordersx:read` |
//! | `orders`     | `orders`                                                  | `orders:read`  |
//!
//! So `orders:*` is everything below `orders`, not `orders` itself: a grant of `orders:*`
//! does not satisfy a route that requires the bare `orders`.
//!
//! The **effective permissions** of a key are `(user's direct ∪ its groups') ∩ scopes`, where
//! no scopes (`None`) means unrestricted and empty scopes mean nothing. Because patterns are
//! prefix trees, two patterns either nest or are disjoint, so the intersection keeps, for
//! each pair, the narrower one: `orders:*` ∩ `orders:read` = `orders:read`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid permission {0:?}: expected segment(:segment)* of [a-z0-9_.-], optionally ending in :*"
)]
pub struct PermissionError(pub String);

/// One validated permission, such as `orders:read` or `orders:*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission(Box<str>);

impl Permission {
    /// Parses and validates a permission.
    ///
    /// ```
    /// use latchkey_core::Permission;
    /// assert!(Permission::parse("orders:items:write").is_ok());
    /// assert!(Permission::parse("orders:*").is_ok());
    /// assert!(Permission::parse("orders:*:read").is_err());
    /// assert!(Permission::parse("Orders").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Permission, PermissionError> {
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
        };
        let ok = text == "*"
            || match text.strip_suffix(":*") {
                Some(base) => base.split(':').all(valid_segment),
                None => text.split(':').all(valid_segment),
            };
        if ok && text.len() <= 256 {
            Ok(Permission(text.into()))
        } else {
            Err(PermissionError(text.to_owned()))
        }
    }

    /// A permission from a literal, checked like [`http::HeaderValue::from_static`].
    ///
    /// ```
    /// use latchkey_core::Permission;
    /// assert_eq!(Permission::from_static("orders:read").as_str(), "orders:read");
    /// ```
    ///
    /// # Panics
    ///
    /// When `text` is not a valid permission: a mistake in the program's text, not in its
    /// input. Use [`Permission::parse`] for a permission read at run time.
    ///
    /// [`http::HeaderValue::from_static`]: https://docs.rs/http/1/http/header/struct.HeaderValue.html#method.from_static
    pub fn from_static(text: &'static str) -> Permission {
        Permission::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The permission's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this permission ends in `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Whether holding `self` grants `other` (which may itself be a wildcard).
    ///
    /// ```
    /// use latchkey_core::Permission;
    /// let p = |s| Permission::parse(s).unwrap();
    /// assert!(p("orders:*").covers(&p("orders:items:write")));
    /// assert!(!p("orders:*").covers(&p("orders")));
    /// assert!(p("*").covers(&p("orders:*")));
    /// ```
    pub fn covers(&self, other: &Permission) -> bool {
        if &*self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix('*') {
            // `base` keeps its trailing ':', so `orders:` matches `orders:read`, not `ordersx`.
            Some(base) => other.0.starts_with(base),
            None => self.0 == other.0,
        }
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Permission {
    type Err = PermissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::parse(s)
    }
}

impl TryFrom<String> for Permission {
    type Error = PermissionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Permission::parse(&value)
    }
}

impl From<Permission> for String {
    fn from(value: Permission) -> Self {
        value.0.into()
    }
}

/// A set of permissions, kept sorted and free of duplicates.
///
/// Grants are kept as given (a set holding `orders:*` and `orders:read` keeps both), so
/// that what an administrator wrote is what they read back; coverage checks look at all.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = Vec<String>))]
#[serde(from = "Vec<Permission>", into = "Vec<Permission>")]
pub struct PermissionSet(Vec<Permission>);

impl PermissionSet {
    /// The empty set: grants nothing.
    pub fn new() -> PermissionSet {
        PermissionSet(Vec::new())
    }

    /// Parses a list of permission strings.
    ///
    /// ```
    /// use latchkey_core::PermissionSet;
    /// let set = PermissionSet::parse(["orders:read", "orders:*"]).unwrap();
    /// assert!(set.allows_str("orders:items:write"));
    /// assert!(PermissionSet::parse(["bad perm"]).is_err());
    /// ```
    pub fn parse<I, S>(items: I) -> Result<PermissionSet, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        items
            .into_iter()
            .map(|s| Permission::parse(s.as_ref()))
            .collect()
    }

    /// The permissions, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, Permission> {
        self.0.iter()
    }

    /// How many grants the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set grants nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some grant in the set covers `permission`.
    pub fn allows(&self, permission: &Permission) -> bool {
        self.0.iter().any(|granted| granted.covers(permission))
    }

    /// Like [`PermissionSet::allows`] for a string; an invalid string is never allowed.
    pub fn allows_str(&self, permission: &str) -> bool {
        Permission::parse(permission).is_ok_and(|p| self.allows(&p))
    }

    /// Whether every permission of `other` is covered by this set: holding `self`, one may
    /// grant `other` without escalating.
    pub fn covers_all(&self, other: &PermissionSet) -> bool {
        other.0.iter().all(|p| self.allows(p))
    }

    /// The first permission of `other` this set does not cover.
    pub fn first_uncovered<'a>(&self, other: &'a PermissionSet) -> Option<&'a Permission> {
        other.0.iter().find(|p| !self.allows(p))
    }

    /// Adds every permission of `other`.
    pub fn extend(&mut self, other: &PermissionSet) {
        self.0.extend(other.0.iter().cloned());
        self.normalize();
    }

    /// Removes every permission equal to one in `other` (exact text, not coverage).
    pub fn remove_all(&mut self, other: &PermissionSet) {
        self.0.retain(|p| !other.0.contains(p));
    }

    /// The intersection, respecting wildcards on both sides.
    ///
    /// ```
    /// use latchkey_core::PermissionSet;
    /// let granted = PermissionSet::parse(["orders:*", "users:read"]).unwrap();
    /// let scopes = PermissionSet::parse(["orders:read", "billing:*"]).unwrap();
    /// assert_eq!(granted.intersect(&scopes), PermissionSet::parse(["orders:read"]).unwrap());
    /// ```
    pub fn intersect(&self, other: &PermissionSet) -> PermissionSet {
        let mut out = Vec::new();
        for a in &self.0 {
            for b in &other.0 {
                if a.covers(b) {
                    out.push(b.clone());
                } else if b.covers(a) {
                    out.push(a.clone());
                }
            }
        }
        let mut set = PermissionSet(out);
        set.normalize();
        set.minimize();
        set
    }

    /// The effective permissions of a key: `(direct ∪ groups) ∩ scopes`.
    ///
    /// `scopes: None` leaves the user's permissions unrestricted; `Some(empty)` grants
    /// nothing.
    pub fn effective<'a>(
        direct: &PermissionSet,
        groups: impl IntoIterator<Item = &'a PermissionSet>,
        scopes: Option<&PermissionSet>,
    ) -> PermissionSet {
        let mut granted = direct.clone();
        for group in groups {
            granted.0.extend(group.0.iter().cloned());
        }
        granted.normalize();
        match scopes {
            None => {
                granted.minimize();
                granted
            }
            Some(scopes) => granted.intersect(scopes),
        }
    }

    fn normalize(&mut self) {
        self.0.sort();
        self.0.dedup();
    }

    /// Drops grants covered by another grant of the set.
    ///
    /// Small sets (the usual few grants) compare every pair. Larger ones use that only `*`
    /// and the wildcards of a grant's own ancestors (`orders:*` and `orders:items:*` for
    /// `orders:items:write`) can cover it: each grant looks up at most one per segment in
    /// the sorted set, O(n · segments · log n) instead of O(n²), which is what bounds a
    /// user of 64 groups of 256 permissions (a cold verification, and a write under the
    /// write lock).
    fn minimize(&mut self) {
        const PAIRWISE_UP_TO: usize = 32;
        let all = &self.0;
        let keep: Vec<bool> = if all.len() <= PAIRWISE_UP_TO {
            all.iter()
                .map(|p| !all.iter().any(|q| q != p && q.covers(p)))
                .collect()
        } else {
            let holds_wildcard = |prefix: &str| {
                all.binary_search_by(|q| cmp_with_wildcard(q.as_str(), prefix))
                    .is_ok()
            };
            all.iter()
                .map(|p| !covered_by_another(p.as_str(), holds_wildcard))
                .collect()
        };
        let mut kept = keep.into_iter();
        self.0.retain(|_| kept.next().unwrap_or(true));
    }
}

/// Orders `text` against `<prefix>*` as strings order, without building the latter.
fn cmp_with_wildcard(text: &str, prefix: &str) -> std::cmp::Ordering {
    let (text, prefix) = (text.as_bytes(), prefix.as_bytes());
    match text.get(..prefix.len()) {
        Some(head) => head
            .cmp(prefix)
            .then_with(|| text[prefix.len()..].cmp(b"*")),
        None => text
            .cmp(&prefix[..text.len()])
            .then(std::cmp::Ordering::Less),
    }
}

/// Whether a grant is covered by another grant of its set: `*`, or the wildcard of one of
/// its ancestors (`holds_wildcard(prefix)` says whether the set holds `<prefix>*`).
fn covered_by_another(text: &str, holds_wildcard: impl Fn(&str) -> bool) -> bool {
    if text == "*" {
        return false;
    }
    let base = text.strip_suffix(":*").unwrap_or(text);
    holds_wildcard("")
        || base
            .match_indices(':')
            .any(|(i, _)| holds_wildcard(&text[..=i]))
}

/// A change to a permission set, as the management API's updates carry it: `replace` (when
/// given), then `add`, then `remove` (exact text, not coverage).
///
/// # Example
///
/// ```
/// use latchkey_core::{PermissionEdit, PermissionSet};
/// let set = |items: &[&str]| PermissionSet::parse(items).unwrap();
/// let mut granted = set(&["orders:read", "users:read"]);
/// let edit = PermissionEdit {
///     add: set(&["orders:write"]),
///     remove: set(&["users:read"]),
///     replace: None,
/// };
/// edit.apply(&mut granted);
/// assert_eq!(granted, set(&["orders:read", "orders:write"]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionEdit {
    /// Replaces the set.
    pub replace: Option<PermissionSet>,
    /// Added after any replacement.
    pub add: PermissionSet,
    /// Removed after any replacement (exact text).
    pub remove: PermissionSet,
}

impl PermissionEdit {
    /// An edit that only adds `set`.
    pub fn adding(set: PermissionSet) -> PermissionEdit {
        PermissionEdit {
            add: set,
            ..PermissionEdit::default()
        }
    }

    /// An edit that only removes `set`.
    pub fn removing(set: PermissionSet) -> PermissionEdit {
        PermissionEdit {
            remove: set,
            ..PermissionEdit::default()
        }
    }

    /// Whether the edit may take a permission away: a replacement or a removal.
    pub fn narrows(&self) -> bool {
        self.replace.is_some() || !self.remove.is_empty()
    }

    /// Applies the edit to `set`.
    pub fn apply(&self, set: &mut PermissionSet) {
        if let Some(replace) = &self.replace {
            set.clone_from(replace);
        }
        set.extend(&self.add);
        set.remove_all(&self.remove);
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl From<Vec<Permission>> for PermissionSet {
    fn from(value: Vec<Permission>) -> Self {
        let mut set = PermissionSet(value);
        set.normalize();
        set
    }
}

impl From<PermissionSet> for Vec<Permission> {
    fn from(value: PermissionSet) -> Self {
        value.0
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        PermissionSet::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a PermissionSet {
    type Item = &'a Permission;
    type IntoIter = std::slice::Iter<'a, Permission>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PermissionSet {
        PermissionSet::parse(items).unwrap()
    }

    #[track_caller]
    fn check_parse(input: &str, ok: bool) {
        assert_eq!(Permission::parse(input).is_ok(), ok, "parse {input:?}");
    }

    #[test]
    fn parse_table() {
        for ok in [
            "*",
            "orders",
            "orders:read",
            "orders:*",
            "a.b-c_d:e1:*",
            "latchkey:keys:write",
        ] {
            check_parse(ok, true);
        }
        for bad in [
            "",
            ":",
            "orders:",
            ":orders",
            "orders::read",
            "Orders",
            "orders:*:read",
            "*:read",
            "orders*",
            "or ders",
            "orders:read*",
            "ä",
        ] {
            check_parse(bad, false);
        }
        check_parse(&"a".repeat(257), false);
    }

    #[track_caller]
    fn check_covers(granted: &str, wanted: &str, expected: bool) {
        let (g, w) = (
            Permission::parse(granted).unwrap(),
            Permission::parse(wanted).unwrap(),
        );
        assert_eq!(g.covers(&w), expected, "{granted} covers {wanted}");
    }

    #[test]
    fn coverage_table() {
        check_covers("*", "orders", true);
        check_covers("*", "*", true);
        check_covers("*", "orders:*", true);
        check_covers("orders:*", "orders:read", true);
        check_covers("orders:*", "orders:items:write", true);
        check_covers("orders:*", "orders:*", true);
        check_covers("orders:*", "orders:items:*", true);
        check_covers("orders:*", "orders", false);
        check_covers("orders:*", "ordersx:read", false);
        check_covers("orders:*", "*", false);
        check_covers("orders", "orders", true);
        check_covers("orders", "orders:read", false);
        check_covers("orders", "orders:*", false);
        check_covers("orders:read", "orders:*", false);
        check_covers("orders:items:*", "orders:read", false);
    }

    #[track_caller]
    fn check_effective(
        direct: &[&str],
        groups: &[&[&str]],
        scopes: Option<&[&str]>,
        expected: &[&str],
    ) {
        let groups: Vec<PermissionSet> = groups.iter().map(|g| set(g)).collect();
        let scopes = scopes.map(set);
        let got = PermissionSet::effective(&set(direct), &groups, scopes.as_ref());
        assert_eq!(
            got,
            set(expected),
            "direct {direct:?} groups {groups:?} scopes {scopes:?}"
        );
    }

    #[test]
    fn effective_table() {
        // No scopes: the user's union, minimized.
        check_effective(
            &["orders:read"],
            &[&["orders:write"]],
            None,
            &["orders:read", "orders:write"],
        );
        check_effective(&["orders:read"], &[&["orders:*"]], None, &["orders:*"]);
        // Empty scopes: nothing at all.
        check_effective(&["*"], &[], Some(&[]), &[]);
        // Wildcards on either side: the narrower wins.
        check_effective(&["orders:*"], &[], Some(&["orders:read"]), &["orders:read"]);
        check_effective(&["orders:read"], &[], Some(&["orders:*"]), &["orders:read"]);
        check_effective(
            &["*"],
            &[],
            Some(&["orders:read", "users:*"]),
            &["orders:read", "users:*"],
        );
        // A scope the user does not hold grants nothing.
        check_effective(&["orders:read"], &[], Some(&["orders:write"]), &[]);
        // `orders` and `orders:*` are disjoint.
        check_effective(&["orders"], &[], Some(&["orders:*"]), &[]);
        check_effective(&["orders:*"], &[], Some(&["orders"]), &[]);
        // Groups count like direct grants.
        check_effective(
            &[],
            &[&["billing:*"], &["orders:read"]],
            Some(&["billing:invoices:read", "orders:*"]),
            &["billing:invoices:read", "orders:read"],
        );
        // No grants at all.
        check_effective(&[], &[], None, &[]);
    }

    #[test]
    fn minimize_keeps_what_no_other_grant_covers() {
        let texts = [
            "*",
            "orders",
            "orders:*",
            "orders:read",
            "orders:items:*",
            "orders:items:write",
            "ordersx:read",
            "billing:invoices:*",
            "billing:invoices:read",
            "billing",
            "a.b:c-d",
        ];
        // Every subset of a few, against the pairwise definition.
        for mask in 0u32..(1 << texts.len()) {
            let picked: Vec<&str> = (0..texts.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| texts[i])
                .collect();
            let mut got = set(&picked);
            got.minimize();
            // The same grants among many unrelated ones take the large-set path.
            let mut padded: Vec<String> = picked.iter().map(|p| p.to_string()).collect();
            padded.extend((0..40).map(|i| format!("zz{i}:x")));
            let mut large = PermissionSet::parse(&padded).unwrap();
            large.minimize();
            let large: Vec<&Permission> = large
                .iter()
                .filter(|p| !p.as_str().starts_with("zz"))
                .collect();
            assert_eq!(
                large,
                got.iter().collect::<Vec<_>>(),
                "{picked:?} among many"
            );
            let all = set(&picked);
            let expected: Vec<&Permission> = all
                .iter()
                .filter(|p| !all.iter().any(|q| q != *p && q.covers(p)))
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{picked:?}");
        }
    }

    #[test]
    fn comparing_with_a_wildcard_orders_as_the_built_string() {
        let texts = [
            "", "*", "a", "a:", "a:*", "a:b", "a:*x", "a.b", "b", "a:a:*", "A",
        ];
        for text in texts {
            for prefix in ["", "a:", "a:a:", "b:", "a"] {
                let built = format!("{prefix}*");
                assert_eq!(
                    cmp_with_wildcard(text, prefix),
                    text.cmp(built.as_str()),
                    "{text:?} vs {built:?}"
                );
            }
        }
    }

    #[test]
    fn covers_all_and_first_uncovered() {
        let caller = set(&["orders:*", "users:read"]);
        assert!(caller.covers_all(&set(&["orders:read", "orders:items:*"])));
        assert!(!caller.covers_all(&set(&["orders:read", "*"])));
        assert_eq!(
            caller
                .first_uncovered(&set(&["users:write", "orders:read"]))
                .map(Permission::as_str),
            Some("users:write")
        );
        assert!(caller.covers_all(&PermissionSet::new()));
    }

    #[test]
    fn serde_validates() {
        let s: PermissionSet = serde_json::from_str(r#"["b:read","a:*","b:read"]"#).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"["a:*","b:read"]"#);
        assert!(serde_json::from_str::<PermissionSet>(r#"["Bad"]"#).is_err());
    }
}
