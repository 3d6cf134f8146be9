//! What pages share: the navigation, and how values are shown.

use latchkey_core::{Action, PermissionSet};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::csrf;
use crate::extract::Signed;

/// The header of every signed-in page: who is signed in, and which sections and actions
/// the key's permissions allow.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nav {
    /// Whether a session is signed in (the sign-in and error pages have none).
    pub(crate) signed_in: bool,
    pub(crate) user_name: String,
    pub(crate) prefix: String,
    pub(crate) csrf: csrf::Token,
    /// The key's effective permissions (none on the sign-in and error pages).
    permissions: PermissionSet,
    /// Whether the key's user is bound to a tenant: it reads groups and assigns them, but
    /// never writes one.
    tenant_bound: bool,
}

impl Nav {
    pub(crate) fn new(signed: &Signed) -> Nav {
        Nav {
            signed_in: true,
            user_name: signed.principal.user_name.clone(),
            prefix: signed.principal.prefix.clone(),
            csrf: csrf::Token(signed.csrf.clone()),
            permissions: signed.principal.permissions.clone(),
            tenant_bound: signed.principal.tenant_id.is_some(),
        }
    }

    /// Whether the key holds `permission`: which sections and actions are shown.
    pub(crate) fn can(&self, permission: &str) -> bool {
        self.permissions.allows_str(permission)
    }

    /// Whether the key may create and change groups: it holds `latchkey:groups:write` and
    /// its user is in no tenant (groups are global).
    pub(crate) fn can_write_groups(&self) -> bool {
        !self.tenant_bound && self.can("latchkey:groups:write")
    }

    /// Whether the key may check the audit chain: its user is in no tenant (the chain is
    /// every tenant's).
    pub(crate) fn can_check_the_chain(&self) -> bool {
        !self.tenant_bound
    }
}

/// The console's sections, in the navigation's order, with the permission that reads each.
const SECTIONS: [(&str, &str); 4] = [
    ("latchkey:keys:read", "/ui/keys"),
    ("latchkey:users:read", "/ui/users"),
    ("latchkey:groups:read", "/ui/groups"),
    ("latchkey:audit:read", "/ui/audit"),
];

/// The first section a key may read: where it lands after sign-in; `None` when it may
/// read none, and then it does not sign in.
pub(crate) fn readable_section(permissions: &PermissionSet) -> Option<&'static str> {
    SECTIONS
        .iter()
        .find(|(permission, _)| permissions.allows_str(permission))
        .map(|(_, path)| *path)
}

/// Where `/ui/` sends a session: [`readable_section`], or the keys when the key may read
/// none since it signed in (their page then says why).
pub(crate) fn first_section(permissions: &PermissionSet) -> &'static str {
    readable_section(permissions).unwrap_or(SECTIONS[0].1)
}

/// A time as `2026-12-01 13:30:05Z`, or `never`.
pub(crate) fn when(at: &Option<OffsetDateTime>) -> String {
    match *at {
        Some(at) => at
            .replace_nanosecond(0)
            .unwrap_or(at)
            .format(&Rfc3339)
            .map(|s| s.replacen('T', " ", 1))
            .unwrap_or_else(|_| at.to_string()),
        None => "never".to_owned(),
    }
}

/// A query string from pairs, blank values left out, each value encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(name, value);
    }
    out.finish()
}

/// A path segment, percent-encoded (names and prefixes are safe already; this is belt and
/// braces for ids typed into a URL).
pub(crate) fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A time as RFC 3339, as the API reads it.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A key's scopes as text: `unrestricted`, `none`, or the list.
pub(crate) fn scopes(scopes: &Option<PermissionSet>) -> String {
    match scopes {
        None => "unrestricted (the user's permissions)".to_owned(),
        Some(set) if set.is_empty() => "none".to_owned(),
        Some(set) => set.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" "),
    }
}

/// A permission set as text, space-separated.
pub(crate) fn permissions(set: &PermissionSet) -> String {
    set.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ")
}

/// A time that is always there, as [`when`] shows it.
pub(crate) fn at(at: &OffsetDateTime) -> String {
    when(&Some(*at))
}

/// An audit event's action by its wire name (`key.create`, …).
pub(crate) fn action(action: &Action) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Who made an audit event: the acting key's id, or `operator`.
pub(crate) fn actor(actor: &Option<Uuid>) -> String {
    actor.map_or_else(|| "operator".to_owned(), |a| a.to_string())
}

/// `selected` when an option's `value` is the `current` one.
pub(crate) fn selected(current: &str, value: &str) -> &'static str {
    if current == value { "selected" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_the_csrf_token() {
        let nav = Nav {
            signed_in: true,
            user_name: "ops".into(),
            csrf: csrf::Token("the-session-token".into()),
            ..Nav::default()
        };
        let shown = format!("{nav:?}");
        assert!(shown.contains("ops"), "{shown}");
        assert!(!shown.contains("the-session-token"), "{shown}");
    }
}
