//! What an editor's form changed against what its page showed. The console sends the API
//! the change alone (what was typed in and what was taken out of a list, a field only when
//! it differs from the page), never the whole page again: a page opened before someone
//! else's change, saved for another field, leaves that change in place.
//!
//! A form without the page's hidden `shown_…` fields (one not made by the console) replaces
//! the list, as the API's `permissions` or `groups` do.

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
        shown(fields, "permissions"),
    );
    if let Some(name) = changed(fields, "name") {
        body["name"] = name.into();
    }
    body
}

/// Writes into `body` the change to the list `field` (`groups`, `permissions`): with the
/// items the page showed, `add_{field}` and `remove_{field}` for those typed in and those
/// taken out (each left out when empty); without them, `{field}` replacing the list.
pub(crate) fn list_into(
    body: &mut Value,
    field: &str,
    typed: Vec<String>,
    shown: Option<Vec<String>>,
) {
    let Some(shown) = shown else {
        body[field] = typed.into();
        return;
    };
    let (added, removed) = changes(&shown, &typed);
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

/// The items the page showed for `field`, from its hidden `shown_{field}` (space-separated);
/// `None` when the form has no such field.
fn shown(fields: &Fields, field: &str) -> Option<Vec<String>> {
    let name = format!("shown_{field}");
    fields.has(&name).then(|| {
        fields
            .get(&name)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    })
}

/// Field `field` as typed, when it is not blank and differs from what the page showed
/// (`shown_{field}`; a form without it sends any value typed).
fn changed(fields: &Fields, field: &str) -> Option<String> {
    let typed = fields.optional(field)?;
    let name = format!("shown_{field}");
    (!fields.has(&name) || fields.get(&name) != typed).then_some(typed)
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
        list_into(&mut body, "permissions", items("b a"), Some(items("a b")));
        assert_eq!(body, serde_json::json!({}));

        list_into(&mut body, "permissions", items("a c c"), Some(items("a b")));
        assert_eq!(
            body,
            serde_json::json!({"add_permissions": ["c"], "remove_permissions": ["b"]})
        );
    }

    #[test]
    fn a_form_that_showed_nothing_replaces_the_list() {
        let mut body = serde_json::json!({});
        list_into(&mut body, "groups", items("x"), None);
        assert_eq!(body, serde_json::json!({"groups": ["x"]}));
    }
}
