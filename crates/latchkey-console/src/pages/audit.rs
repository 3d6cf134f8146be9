//! The audit log, oldest first one page at a time, with the chain's check.

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
    #[serde(default)]
    after: String,
    /// `1` to check the whole chain (it reads every event, so only when asked).
    #[serde(default)]
    check: String,
}

/// How far back a key's page looks for its events.
const RECENT: u64 = 1_000;

/// The events about `target` among the last [`RECENT`] of the trail the key sees, newest
/// first: one read of the trail newest first, whatever its length.
pub(crate) async fn recent_about(
    signed: &Signed,
    target: uuid::Uuid,
) -> Result<Vec<AuditEvent>, UiError> {
    let page: List<AuditEvent> = signed
        .get(&format!("/v1/audit?order=desc&limit={RECENT}"))
        .await?;
    Ok(page
        .items
        .into_iter()
        .filter(|e| e.target == target)
        .collect())
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
    next: Option<String>,
}

/// `GET /ui/audit?after`.
pub(crate) async fn list(
    signed: Signed,
    Query(query): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let after = query.after.trim();
    if after.len() > 20 {
        return Err(UiError::BadForm("after: a sequence number".to_owned()));
    }
    let page: List<AuditEvent> = signed
        .get(&format!(
            "/v1/audit?{}",
            view::query(&[("after", after), ("limit", "100")])
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
    super::render(&AuditPage {
        nav: signed.nav(),
        check,
        check_refused,
        events: page.items,
        next: page.next_cursor.map(|c| view::query(&[("after", &c)])),
    })
}
