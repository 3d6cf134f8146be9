//! `/v1/audit`: who did what to which record, and when; and a check of the hash chain.

use axum::Json;
use axum::extract::State;
use latchkey_core::limits::MAX_LIST_LIMIT;
use latchkey_core::{AuditEvent, AuditRange};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::{AuditBreak, AuditCheck, List};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::{NoParams, Params, optional};
use crate::openapi::problems::InvalidParameter;
use crate::state::AppState;

/// Default page size of the audit trail.
const DEFAULT_LIMIT: usize = 100;

/// The parameters of `GET /v1/audit`. An empty value counts as absent.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only events after this sequence number (oldest first: the previous page's
    /// `next_cursor`); 0 or absent for the first.
    #[param(value_type = Option<crate::openapi::rules::Sequence>)]
    after: Option<String>,
    /// Only events before this sequence number (newest first: the previous page's
    /// `next_cursor`); absent for the newest.
    #[param(value_type = Option<crate::openapi::rules::SequenceBefore>)]
    before: Option<String>,
    /// `asc` (default): oldest first; `desc`: newest first, so that the latest events take
    /// one read at any length of the trail.
    #[param(value_type = Option<String>, pattern = r"^(asc|desc)?$")]
    order: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<crate::openapi::rules::PageSize>)]
    limit: Option<String>,
    /// Only the events about this record (a key's, user's or group's id; a group's, for a
    /// caller bound to no tenant). No index holds the events by record: a page passes over
    /// at most 10,000 events and may hold fewer than `limit` (none, even) with a
    /// `next_cursor` to go on.
    #[param(value_type = Option<crate::openapi::rules::RecordId>)]
    target: Option<String>,
}

/// A sequence number parameter.
fn seq(name: &'static str, value: Option<String>) -> Result<Option<u64>, AppError> {
    optional(name, value, |s| {
        s.parse::<u64>()
            .map_err(|_| format!("{s:?} is not a sequence number"))
    })
}

/// List audit events, oldest first (or newest first), one page at a time; all of them, or
/// those about one record (`target`).
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAuditEvents", tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "One page of events; pass `next_cursor` as `after` (with `order=desc`, as `before`) for the next", body = List<AuditEvent>),
        InvalidParameter,
    ),
    security(("bearer" = ["latchkey:audit:read"])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller<perm::AuditRead>,
    Params(params): Params<AuditParams>,
) -> Result<Json<List<AuditEvent>>, AppError> {
    let range = AuditRange {
        after: seq("after", params.after)?.unwrap_or(0),
        before: seq("before", params.before)?,
        newest_first: optional("order", params.order, |s| match s {
            "asc" => Ok(false),
            "desc" => Ok(true),
            _ => Err(format!("{s:?} is not an order: expected asc or desc")),
        })?
        .unwrap_or(false),
    };
    let limit = optional("limit", params.limit, |s| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| format!("{s:?} is not a page size: expected 1 to {MAX_LIST_LIMIT}"))
    })?
    .unwrap_or(DEFAULT_LIMIT);
    let target = optional("target", params.target, |s| {
        Uuid::try_parse(s)
            .ok()
            .filter(|_| s.len() == 36)
            .ok_or_else(|| format!("{s:?} is not a record id (a hyphenated UUID)"))
    })?;
    let (items, next) = state
        .run(move |store| {
            Ok(match target {
                Some(target) => store.audit_about_as(&caller.actor, target, range, limit)?,
                None => store.audit_in_as(&caller.actor, range, limit)?,
            })
        })
        .await?;
    Ok(Json(List {
        items,
        next_cursor: next.map(|seq| seq.to_string()),
    }))
}

/// Check the audit chain: every event's hash, every link, no gap, no truncated tail. The
/// chain is every tenant's at once: a tenant-bound caller is refused (403
/// `tenant_forbidden`).
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verifyAuditChain", tag = "audit",
    responses(
        (status = 200, description = "Whether the chain holds, and where it breaks", body = AuditCheck),
        (status = 403, description = "Lacks latchkey:audit:read, or is tenant-bound (`tenant_forbidden`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:audit:read"])))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    caller: Caller<perm::AuditRead>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<AuditCheck>, AppError> {
    caller.ensure_global()?;
    let report = state.run(|store| Ok(store.verify_audit()?)).await?;
    Ok(Json(AuditCheck {
        valid: report.broken.is_none(),
        events: report.events,
        broken: report.broken.map(|b| AuditBreak {
            seq: b.seq,
            reason: b.reason,
        }),
    }))
}
