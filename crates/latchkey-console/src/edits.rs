//! What an editor's form changed against what its page showed. The console sends the API
//! the change alone (what was typed in and what was taken out of a list, a field only when
//! it differs from the page), never the whole page again: a page opened before someone
//! else's change, saved for another field, leaves that change in place.
//!
//! The page keeps what it showed in hidden `shown_…` fields; a form without them (one not
//! made by the console) is refused, as one without an editable field is
//! ([`Fields::require`]): read as showing nothing, it would give back what was removed.

use std::collections::HashSet;

use serde_json::Value;

use crate::extract::Fields;

/// A PATCH body with the name and the permissions an editor (a user's or a group's)
/// changed.
pub(crate) fn name_and_permissions(fields: &Fields) -> Value {
    let mut body = serde_json::json!({});
    list_into(
        &mut body,
        "permissions",
        crate::pages::split_list(fields.get("permissions")),
        &shown(fields, "shown_permissions"),
    );
    if let Some(name) = fields.optional("name")
        && name != fields.get("shown_name")
    {
        body["name"] = name.into();
    }
    body
}

/// Writes into `body` the change to the list `field` (`groups`, `permissions`) against the
/// items the page showed: `add_{field}` and `remove_{field}` for those typed in and those
/// taken out (each left out when empty).
pub(crate) fn list_into(body: &mut Value, field: &str, typed: Vec<String>, shown: &[String]) {
    let (added, removed) = changes(shown, &typed);
    if !added.is_empty() {
        body[format!("add_{field}")] = added.into();
    }
    if !removed.is_empty() {
        body[format!("remove_{field}")] = removed.into();
    }
}

/// The items of `typed` not in `shown`, and those of `shown` not in `typed`, each once, in
/// the order given.
fn changes(shown: &[String], typed: &[String]) -> (Vec<String>, Vec<String>) {
    let shown_set: HashSet<&str> = shown.iter().map(String::as_str).collect();
    let typed_set: HashSet<&str> = typed.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let added = typed
        .iter()
        .filter(|t| !shown_set.contains(t.as_str()) && seen.insert(t.as_str()))
        .cloned()
        .collect();
    let removed = shown
        .iter()
        .filter(|s| !typed_set.contains(s.as_str()) && seen.insert(s.as_str()))
        .cloned()
        .collect();
    (added, removed)
}

/// The items of the hidden field `name` (space-separated).
fn shown(fields: &Fields, name: &str) -> Vec<String> {
    fields
        .get(name)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_list_saved_as_shown_changes_nothing_and_an_edit_sends_only_its_difference() {
        let mut body = serde_json::json!({});
        list_into(&mut body, "permissions", items("b a"), &items("a b"));
        assert_eq!(body, serde_json::json!({}));

        list_into(&mut body, "permissions", items("a c c"), &items("a b"));
        assert_eq!(
            body,
            serde_json::json!({"add_permissions": ["c"], "remove_permissions": ["b"]})
        );
    }
}
