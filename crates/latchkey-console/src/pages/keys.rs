//! The keys: a searchable, filterable, sortable list one page at a time; the page that
//! shows a new key's secret, once (the create form is `key_new`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use latchkey_admin::api::List;
use latchkey_core::limits::MAX_CURSOR_BYTES;
use latchkey_core::{Key, User};
use serde::Deserialize;
use uuid::Uuid;

use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::view::{self, Nav};

/// Keys per page.
const PAGE: u32 = 50;
/// Longest search text or filter the page passes on (the API bounds them too).
const MAX_PARAM: usize = 512;

/// `GET /ui/`: the first section the key may read.
pub(crate) async fn home(signed: Signed) -> Redirect {
    Redirect::to(view::first_section(&signed.principal.permissions))
}

/// The list's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    cursor: String,
}

/// A row of the list.
pub(crate) struct Row {
    pub(crate) key: Key,
    pub(crate) user: String,
    pub(crate) last_used: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    q: String,
    user: String,
    status: String,
    env: String,
    sort: String,
    rows: Vec<Row>,
    next: Option<String>,
    first: Option<String>,
}

/// `GET /ui/keys?q&user&status&env&sort&cursor`.
pub(crate) async fn list(
    signed: Signed,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let param = |name: &str| {
        let mut given = query.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let value = given.next().map_or("", |v| v.trim());
        // As the API refuses a parameter given twice: which one was meant is not for the
        // console to guess.
        if given.next().is_some() {
            return Err(UiError::BadForm(format!("{name} is given twice")));
        }
        // A cursor is as long as the API makes it (sealed and padded).
        let max = if name == "cursor" {
            MAX_CURSOR_BYTES
        } else {
            MAX_PARAM
        };
        if value.len() > max {
            return Err(UiError::BadForm(format!(
                "{name} is longer than {max} bytes"
            )));
        }
        Ok(value.to_owned())
    };
    let query = ListQuery {
        q: param("q")?,
        user: param("user")?,
        status: param("status")?,
        env: param("env")?,
        sort: param("sort")?,
        cursor: param("cursor")?,
    };
    // A key pasted into the search box or the user filter (the page's script sends its
    // display prefix; a browser without it does not): the same search by its display
    // prefix, at an address without the secret.
    let q = prefixes_for_keys(&query.q);
    let user = prefixes_for_keys(&query.user);
    let limit = PAGE.to_string();
    let page_filters = [
        ("q", q.as_deref().unwrap_or(&query.q)),
        ("user", user.as_deref().unwrap_or(&query.user)),
        ("status", query.status.as_str()),
        ("env", query.env.as_str()),
        ("sort", query.sort.as_str()),
    ];
    if q.is_some() || user.is_some() {
        let to = format!("/ui/keys?{}", view::query(&page_filters));
        return Ok(Redirect::to(&to).into_response());
    }
    // The same filters for the API, which names the user `user_id`.
    let api_query: Vec<(&str, &str)> = page_filters
        .iter()
        .map(|&(name, value)| (if name == "user" { "user_id" } else { name }, value))
        .chain([("cursor", query.cursor.as_str()), ("limit", &limit)])
        .collect();
    let page: List<Key> = signed
        .get(&format!("/v1/keys?{}", view::query(&api_query)))
        .await?;
    let names = user_names(&signed, page.items.iter().map(|k| k.user_id)).await;
    let next = page.next_cursor.map(|cursor| {
        let mut pairs = page_filters.to_vec();
        pairs.push(("cursor", &cursor));
        view::query(&pairs)
    });
    let first = (!query.cursor.is_empty()).then(|| view::query(&page_filters));
    let rows = page
        .items
        .into_iter()
        .map(|key| Row {
            user: names
                .get(&key.user_id)
                .cloned()
                .unwrap_or_else(|| key.user_id.to_string()),
            last_used: view::when(&key.last_used_at),
            key,
        })
        .collect();
    super::render(&KeysPage {
        nav: signed.nav(),
        q: query.q,
        user: query.user,
        status: query.status,
        env: query.env,
        sort: query.sort,
        rows,
        next,
        first,
    })
}

/// The names of `users`, as far as the key may read them (ids otherwise): one API call
/// (`/v1/users?ids=`) for a page's users, at most a page of keys' worth.
pub(crate) async fn user_names(
    signed: &Signed,
    users: impl Iterator<Item = Uuid>,
) -> HashMap<Uuid, String> {
    if !signed.can("latchkey:users:read") {
        return HashMap::new();
    }
    let mut ids: Vec<Uuid> = users.collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return HashMap::new();
    }
    let ids = ids
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match signed
        .get::<List<User>>(&format!("/v1/users?ids={ids}"))
        .await
    {
        Ok(list) => list.items.into_iter().map(|u| (u.id, u.name)).collect(),
        Err(_) => HashMap::new(),
    }
}

/// The page that shows a secret, in the answer to the POST that made it, and nowhere else.
#[derive(Template)]
#[template(path = "secret.html")]
pub(crate) struct SecretPage {
    pub(crate) nav: Nav,
    pub(crate) heading: &'static str,
    pub(crate) key: Key,
    pub(crate) secret: String,
}

impl SecretPage {
    /// The page, 201.
    pub(crate) fn respond(self) -> Result<Response, UiError> {
        let mut response = super::render(&self)?;
        *response.status_mut() = StatusCode::CREATED;
        Ok(response)
    }
}

/// Claims the form's one-time token: a reloaded POST is refused, nothing done twice.
pub(crate) fn claim_once(posted: &Posted) -> Result<(), UiError> {
    if posted
        .signed
        .console
        .sessions
        .use_form(&posted.signed.session_id, posted.fields.get("once"))
    {
        Ok(())
    } else {
        Err(UiError::Resubmitted)
    }
}

/// `text` with each key's full text in it (a key pasted, maybe among other words) put as
/// its display prefix; `None` when it holds none. A text that is a whole key mistyped
/// reads as its display prefix too, as the API reads it.
fn prefixes_for_keys(text: &str) -> Option<String> {
    match latchkey_core::ApiKey::display_prefix_of(text) {
        Some(prefix) => Some(prefix.to_owned()),
        None => latchkey_core::replace_keys(text, latchkey_core::ApiKey::display_prefix),
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{ApiKey, Env, Prefix};

    use super::*;

    #[test]
    fn keys_among_other_words_read_as_their_prefixes() {
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        let prefix = key.display_prefix();
        let secret = key.expose();
        assert_eq!(prefixes_for_keys(secret).as_deref(), Some(prefix));
        assert_eq!(
            prefixes_for_keys(&format!("foo {secret}, DEPLOY_{secret}")),
            Some(format!("foo {prefix}, DEPLOY_{prefix}"))
        );
        assert_eq!(prefixes_for_keys("nightly export"), None);
    }
}
