//! The audit log, newest first (or oldest first) one page at a time, with the chain's
//! check.

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use latchkey_admin::api::{AuditCheck, List};
use latchkey_core::AuditEvent;
use serde::Deserialize;

use crate::errors::UiError;
use crate::extract::Signed;
use crate::view::{self, Nav};

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    /// `asc` for oldest first; newest first otherwise (an `after` alone, as a link from
    /// before newest first was the default, means oldest first too).
    #[serde(default)]
    order: String,
    /// Oldest first: only events after this sequence number (the previous page's end).
    #[serde(default)]
    after: String,
    /// Newest first: only events before this sequence number (the previous page's end).
    #[serde(default)]
    before: String,
    /// `1` to check the whole chain (it reads every event, so only when asked).
    #[serde(default)]
    check: String,
}

/// How many of a record's events its page shows.
const RECENT: u64 = 100;

/// The newest [`RECENT`] events about `target` among the last 10,000 of the trail the key
/// sees (what one page of `GET /v1/audit?target=` passes over), newest first: one read of
/// the trail, whatever its length.
pub(crate) async fn recent_about(
    signed: &Signed,
    target: uuid::Uuid,
) -> Result<Vec<AuditEvent>, UiError> {
    let page: List<AuditEvent> = signed
        .get(&format!(
            "/v1/audit?order=desc&limit={RECENT}&target={target}"
        ))
        .await?;
    Ok(page.items)
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    check: Option<AuditCheck>,
    /// The chain's check was asked for and is not this key's to make (a tenant-bound key:
    /// the chain is every tenant's).
    check_refused: bool,
    events: Vec<AuditEvent>,
    oldest_first: bool,
    next: Option<String>,
}

/// `GET /ui/audit?order&after&before&check`: newest first by default, one read whatever
/// the trail's length (`order=desc`, paged by `before`); oldest first with `order=asc`
/// (paged by `after`).
pub(crate) async fn list(
    signed: Signed,
    Query(query): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let (after, before) = (query.after.trim(), query.before.trim());
    for (name, value) in [("after", after), ("before", before)] {
        if value.len() > 20 {
            return Err(UiError::BadForm(format!("{name}: a sequence number")));
        }
    }
    let oldest_first = match query.order.as_str() {
        "asc" => true,
        "desc" => false,
        "" => !after.is_empty(),
        _ => return Err(UiError::BadForm("order: asc or desc".to_owned())),
    };
    let order = if oldest_first { "asc" } else { "desc" };
    let page: List<AuditEvent> = signed
        .get(&format!(
            "/v1/audit?{}",
            view::query(&[
                ("order", order),
                ("after", after),
                ("before", before),
                ("limit", "100"),
            ])
        ))
        .await?;
    let (check, check_refused) = if query.check == "1" {
        match signed.get::<AuditCheck>("/v1/audit/verify").await {
            Ok(check) => (Some(check), false),
            Err(UiError::Api(problem)) if problem.code == "tenant_forbidden" => (None, true),
            Err(e) => return Err(e),
        }
    } else {
        (None, false)
    };
    // The next page goes on from this one's end, the other bound kept.
    let next = page.next_cursor.map(|cursor| {
        let (after, before) = if oldest_first {
            (cursor.as_str(), before)
        } else {
            (after, cursor.as_str())
        };
        view::query(&[("order", order), ("after", after), ("before", before)])
    });
    super::render(&AuditPage {
        nav: signed.nav(),
        check,
        check_refused,
        events: page.items,
        oldest_first,
        next,
    })
}
