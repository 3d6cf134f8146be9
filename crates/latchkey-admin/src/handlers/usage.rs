//! `POST /v1/usage`: usage figures counted by remote verifiers from their caches.

use axum::extract::State;
use http::{HeaderMap, StatusCode};
use latchkey_core::StoreError;
use latchkey_core::limits::MAX_USAGE_ITEMS;

use crate::api::UsageReport;
use crate::caller::{Caller, perm};
use crate::error::AppError;
use crate::extract::JsonBody;
use crate::idempotency::{self, Claim, fingerprint};
use crate::openapi::problems::{IdempotencyKeyReused, InvalidField, LacksVerify, ReportInProgress};
use crate::state::AppState;

/// Add usage figures counted elsewhere.
///
/// A remote verifier answers most requests from its cache, so the daemon never sees them;
/// it reports them here in batches, and `last_used_at` and `usage_count` stay right.
/// Figures for unknown or deleted keys are dropped, and so are, for a tenant-bound caller,
/// those of keys outside its tenant. Each `count` is at least 1 (sums
/// saturate); a `last_used_at` may be at most a minute ahead of the daemon's clock (then
/// taken as now) and not before the key's creation; one bad item refuses the whole report,
/// recording nothing. At most 500 items per report. 204 on success.
///
/// A report sent again under the `Idempotency-Key` it was first sent with (its answer was
/// lost) is answered 204 and recorded once, if this daemon recorded it among its latest
/// 16,384 keyed reports; a remote verifier sends each report under a key of its own. A key
/// that comes with another report than the one first sent under it is refused, 422
/// `idempotency_key_reused`, and nothing recorded.
#[utoipa::path(post, path = "/v1/usage", operation_id = "reportUsage", tag = "verify",
    request_body = UsageReport,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$",
        description = "The report's own key: sent again under it, the report is recorded once")),
    responses(
        (status = 204, description = "Recorded"),
        InvalidField, LacksVerify, ReportInProgress, IdempotencyKeyReused,
    ),
    security(("bearer" = ["latchkey:verify"])))]
pub(crate) async fn report(
    State(state): State<AppState>,
    caller: Caller<perm::Verify>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<UsageReport>,
) -> Result<StatusCode, AppError> {
    AppError::check_len("items", &body.items, MAX_USAGE_ITEMS, "items per report")?;
    if let Some(i) = body.items.iter().position(|item| item.count == 0) {
        return Err(AppError::invalid(
            format!("items[{i}].count"),
            "must be at least 1",
        ));
    }
    let claimed = match idempotency_key(&headers)? {
        None => None,
        Some(key) => match state
            .reports
            .claim(caller.actor.key_id(), &key, fingerprint(&body))
        {
            Claim::New(claimed) => Some(claimed),
            Claim::Recorded => return Ok(StatusCode::NO_CONTENT),
            // Taken as the first would drop this report's figures without a word.
            Claim::OtherReport => {
                return Err(AppError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key came with another report: a key is for one report, \
                     sent again as it was; nothing was recorded",
                ));
            }
            // Its outcome is not known yet: the reporter sends it again later.
            Claim::Recording => {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "report_in_progress",
                    "a report under this Idempotency-Key is being recorded: send it again later",
                ));
            }
        },
    };
    state
        .run(move |store| {
            // The tenant filter first: a key the caller may not see is checked and dropped
            // as an unknown one, so the answer never tells whether it exists.
            let mut seen = Vec::with_capacity(body.items.len());
            for item in &body.items {
                let visible = match caller.actor.tenant_id() {
                    None => true,
                    Some(_) => match store.key_as(&caller.actor, item.key_id) {
                        Ok(_) => true,
                        Err(StoreError::NotFound { .. }) => false,
                        Err(e) => return Err(e.into()),
                    },
                };
                seen.push(visible);
            }
            for (i, (item, visible)) in body.items.iter().zip(&seen).enumerate() {
                let key_id = visible.then_some(item.key_id);
                store
                    .check_usage(key_id, item.last_used_at)
                    .map_err(|e| match e {
                        StoreError::Invalid { field, reason } => {
                            AppError::invalid(format!("items[{i}].{field}"), reason)
                        }
                        e => AppError::from(e),
                    })?;
            }
            for (item, _) in body.items.iter().zip(&seen).filter(|(_, v)| **v) {
                store.record_usage(item.key_id, item.count, item.last_used_at);
            }
            // Here, in the closure, which runs to its end even if the caller hangs up: a
            // key given up (refused, failed) leaves with `claimed` dropped unrecorded.
            if let Some(claimed) = claimed {
                claimed.recorded();
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The request's `Idempotency-Key`, if it has one; refused (400) unless it is 1 to 255
/// visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if idempotency::is_valid(key) => Ok(Some(key.to_owned())),
        _ => Err(AppError::invalid(
            "Idempotency-Key",
            "1 to 255 visible ASCII characters",
        )),
    }
}
