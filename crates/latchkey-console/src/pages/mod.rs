//! One file per page.

pub(crate) mod audit;
pub(crate) mod groups;
pub(crate) mod key;
pub(crate) mod key_new;
pub(crate) mod keys;
pub(crate) mod signin;
pub(crate) mod user;
pub(crate) mod users;

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use http::Method;
use latchkey_admin::api::List;
use latchkey_core::limits::MAX_CURSOR_BYTES;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::errors::UiError;
use crate::extract::{Posted, Signed};
use crate::view;

/// Users or groups per page.
const PAGE: &str = "100";

/// A list page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    cursor: String,
}

/// One page of `/v1/{resource}` and the query string of the next one.
pub(crate) async fn page<T: DeserializeOwned>(
    signed: &Signed,
    resource: &str,
    page: &Page,
) -> Result<(Vec<T>, Option<String>), UiError> {
    let cursor = page.cursor.trim();
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(UiError::BadForm("the cursor is too long".to_owned()));
    }
    let query = view::query(&[("cursor", cursor), ("limit", PAGE)]);
    let list: List<T> = signed.get(&format!("/v1/{resource}?{query}")).await?;
    let next = list.next_cursor.map(|c| view::query(&[("cursor", &c)]));
    Ok((list.items, next))
}

/// `PATCH path` with the form's `enabled` (`true` or `false`): enables or disables a key
/// or a user.
pub(crate) async fn set_enabled(posted: &Posted, path: &str) -> Result<(), UiError> {
    let enabled: bool = posted
        .fields
        .get("enabled")
        .parse()
        .map_err(|_| UiError::BadForm("enabled: true or false".to_owned()))?;
    let _: serde_json::Value = posted
        .signed
        .send(
            Method::PATCH,
            path,
            serde_json::json!({ "enabled": enabled }),
        )
        .await?;
    Ok(())
}

/// Renders a page, 200.
pub(crate) fn render(page: &impl Template) -> Result<Response, UiError> {
    Ok(Html(page.render().map_err(UiError::internal)?).into_response())
}

/// `method path` of the management API without a body, its answer unread; then the
/// browser goes to `to`.
pub(crate) async fn act(
    posted: &Posted,
    method: Method,
    path: &str,
    to: &str,
) -> Result<Response, UiError> {
    let _: serde_json::Value = posted
        .signed
        .send(method, path, serde_json::Value::Null)
        .await?;
    Ok(axum::response::Redirect::to(to).into_response())
}

/// Items one a line, as an editor's textarea shows a list ([`split_list`] reads it back).
pub(crate) fn lines<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

/// Permissions as an editor shows them (one a line), and as its page keeps what it showed
/// (space-separated, in a hidden field: `edits`).
pub(crate) fn permission_texts(permissions: &latchkey_core::PermissionSet) -> (String, String) {
    let items: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
    (items.join("\n"), items.join(" "))
}

/// Splits a list typed as text (commas, spaces or lines) into its items.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
