//! `POST /v1/leases`: slices of a key's rate limits and credits for a remote verifier, which
//! admits requests from them without asking the daemon each time (README, *Remote
//! verification*); `POST /v1/leases/return`: the credits it did not spend, given back.

use axum::Json;
use axum::extract::State;
use latchkey_core::wire::{
    BucketKind, LeaseGrant, LeaseRequest, LeaseResponse, LeaseReturn, LeaseReturned,
};
use std::sync::Arc;

use latchkey_core::meter::LimitGrant;
use latchkey_core::{Meter, VerifyError, limits};
use uuid::Uuid;

use crate::caller::{Caller, perm};
use crate::error::AppError;
use crate::extract::JsonBody;
use crate::handlers::verify::authenticate_presented;
use crate::lease_ledger::LeaseLedger;
use crate::openapi::problems::{InvalidField, KeystoreUnavailable, LacksVerify};
use crate::state::AppState;

/// Lease slices of a key's rate limits and credits.
///
/// Verifies the key as `POST /v1/verify` does (and its client's address when given), then
/// grants of each bucket asked for as much as it has now, up to `want`: what it grants is
/// consumed here, as if that many requests had passed, and is the verifier's to admit. A
/// rate limit's grant is valid for `valid_ms` only. 200 with `valid: false` and the code for
/// a key that does not authenticate; 503 `keystore_unavailable` when the keystore cannot be
/// read.
#[utoipa::path(post, path = "/v1/leases", operation_id = "leaseLimits", tag = "verify",
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "The grants", body = LeaseResponse),
        InvalidField, LacksVerify, KeystoreUnavailable,
    ),
    security(("bearer" = ["latchkey:verify"])))]
pub(crate) async fn lease(
    State(state): State<AppState>,
    caller: Caller<perm::Verify>,
    JsonBody(body): JsonBody<LeaseRequest>,
) -> Result<Json<LeaseResponse>, AppError> {
    AppError::check_len(
        "buckets",
        &body.buckets,
        limits::MAX_LEASE_BUCKETS,
        "buckets",
    )?;
    if body
        .buckets
        .iter()
        .any(|b| !(1..=limits::MAX_LEASE).contains(&b.want))
    {
        return Err(AppError::invalid(
            "want",
            format!("want is 1 to {}", limits::MAX_LEASE),
        ));
    }
    // A rate limit's name, a user's with `user:` before it; each bucket once (the credits
    // listed 32 times were 32 slices of a twentieth: 813 of 1,000 in one request).
    let longest = "user:".len() + limits::MAX_RATE_LIMIT_NAME_BYTES;
    if body
        .buckets
        .iter()
        .any(|b| b.name.as_ref().is_some_and(|n| n.len() > longest))
    {
        return Err(AppError::invalid(
            "name",
            format!("a bucket's name is a rate limit's, at most {longest} bytes"),
        ));
    }
    // The credits have no name: one given would make them another bucket to the check
    // below (re-check s49 N1: 32 copies named apart leased 813 of 1,000 again).
    if body
        .buckets
        .iter()
        .any(|b| b.kind == BucketKind::Credits && b.name.is_some())
    {
        return Err(AppError::invalid("name", "the credits bucket has no name"));
    }
    let mut seen = std::collections::HashSet::new();
    if !body.buckets.iter().all(|b| seen.insert((b.kind, &b.name))) {
        return Err(AppError::invalid("buckets", "each bucket at most once"));
    }
    let refused = |code: &str| LeaseResponse {
        valid: false,
        code: code.to_owned(),
        allowed_ips: Vec::new(),
        grants: Vec::new(),
    };
    let principal = match authenticate_presented(&state, &caller.actor, &body.key).await {
        Ok(principal) => principal,
        Err(VerifyError::Unavailable(cause)) => return Err(unavailable(&cause)),
        Err(e) => return Ok(Json(refused(e.code()))),
    };
    let Some(meter) = &principal.meter else {
        // Nothing to lease: every bucket is granted nothing, and the key needs none.
        let grants = body
            .buckets
            .iter()
            .map(|b| grant(b.kind, b.name.clone(), 0))
            .collect();
        return Ok(Json(LeaseResponse {
            valid: true,
            code: "ok".to_owned(),
            allowed_ips: Vec::new(),
            grants,
        }));
    };
    if body.client_ip.is_some()
        && let Err(e) = meter.check_ip(body.client_ip)
    {
        return Ok(Json(refused(e.code())));
    }
    // A grant may reserve from the store (credits: a durable write; a rate limit on a
    // database several daemons share: a transaction), so the grants are made on tokio's
    // blocking pool, never on an async worker.
    let leases = Arc::clone(&state.leases);
    let caller = caller.actor.key_id();
    let (leased, buckets) = (meter.clone(), body.buckets);
    let key_id = principal.key_id;
    let granted = tokio::task::spawn_blocking(move || {
        let meter = &leased;
        let mut grants = Vec::with_capacity(buckets.len());
        for bucket in &buckets {
            grants.push(match bucket.kind {
                BucketKind::RateLimit => lease_limit(meter, bucket.name.as_deref(), bucket.want)?,
                BucketKind::Credits => {
                    let mut answer = grant(BucketKind::Credits, None, 0);
                    match lease_credits(&leases, caller, key_id, meter, bucket.want) {
                        Ok(granted) => answer.granted = granted,
                        // Used up: when they are refilled, if ever.
                        Err(VerifyError::UsageExceeded {
                            retry_after_seconds,
                        }) => answer.retry_after = retry_after_seconds,
                        Err(VerifyError::Unavailable(cause)) => return Err(cause),
                        Err(_) => {}
                    }
                    answer
                }
            });
        }
        Ok(grants)
    })
    .await
    .map_err(AppError::internal)?;
    let grants = granted.map_err(|cause| unavailable(&cause))?;
    Ok(Json(LeaseResponse {
        valid: true,
        code: "ok".to_owned(),
        allowed_ips: meter.allowed_ips().to_vec(),
        grants,
    }))
}

/// Leases credits, and records them in the ledger so that the verifier may give back what
/// it does not spend: only when the refill period did not change meanwhile (else they were
/// taken across a refill, and cannot be told apart).
fn lease_credits(
    leases: &LeaseLedger,
    caller: Option<Uuid>,
    key_id: Uuid,
    meter: &Meter,
    want: u64,
) -> Result<u64, VerifyError> {
    let before = meter.credit_period();
    let granted = meter.lease_credits(want)?;
    if let Some(period) = before
        && meter.credit_period() == before
    {
        leases.granted(caller, key_id, meter, period, granted);
    }
    Ok(granted)
}

/// Takes back credits a verifier leased of a key and did not spend.
///
/// Gives back to the key `key_id` at most what this caller leased of it and did not give
/// back yet, and only while the key's credits are the ones they were leased from (its usage
/// control not changed since, in the same refill period): they reach the stored balance at
/// the daemon's next idle flush (within seconds) or at its shutdown. `returned: 0` when
/// nothing could be taken back (not leased to this caller or not through this daemon, a
/// key without credits or whose usage control changed, on any daemon, an unknown id); what
/// is not taken back stays spent. The body names the key by its id, so a
/// verifier keeps no key text for this.
#[utoipa::path(post, path = "/v1/leases/return", operation_id = "returnLeasedCredits", tag = "verify",
    request_body = LeaseReturn,
    responses(
        (status = 200, description = "How many credits went back", body = LeaseReturned),
        InvalidField, LacksVerify,
    ),
    security(("bearer" = ["latchkey:verify"])))]
pub(crate) async fn give_back(
    State(state): State<AppState>,
    caller: Caller<perm::Verify>,
    JsonBody(body): JsonBody<LeaseReturn>,
) -> Result<Json<LeaseReturned>, AppError> {
    if !(1..=limits::MAX_LEASE).contains(&body.credits) {
        return Err(AppError::invalid(
            "credits",
            format!("credits is 1 to {}", limits::MAX_LEASE),
        ));
    }
    let key_id = body.key_id;
    let meter = state
        .run(move |store| Ok(store.current_meter(key_id)?))
        .await?;
    let returned = match meter {
        Some(meter) if meter.has_credits() => {
            state
                .leases
                .give_back(caller.actor.key_id(), body.key_id, &meter, body.credits)
        }
        _ => 0,
    };
    Ok(Json(LeaseReturned { returned }))
}

fn grant(kind: BucketKind, name: Option<String>, granted: u64) -> LeaseGrant {
    LeaseGrant {
        kind,
        name,
        granted,
        valid_ms: None,
        retry_after: None,
        limit: None,
        window_seconds: None,
        left: None,
    }
}

/// A grant of a rate limit: valid for the time the limit takes to win it back (at most one
/// window), so a verifier never admits from it in a later window than it was granted for.
/// On a database several daemons share, granted from the limit's shared state, so the apps
/// behind every daemon share one limit. `Err` with the cause when that state cannot be
/// reached.
fn lease_limit(meter: &Meter, name: Option<&str>, want: u64) -> Result<LeaseGrant, String> {
    let name = name.unwrap_or_default();
    let Some(rule) = meter.rate_limits().find(|r| r.name == name).cloned() else {
        return Ok(grant(BucketKind::RateLimit, Some(name.to_owned()), 0));
    };
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    let mut answer = grant(BucketKind::RateLimit, Some(name.to_owned()), 0);
    answer.limit = Some(rule.limit);
    answer.window_seconds = Some(rule.window_seconds);
    match meter.lease_limit(name, want) {
        Some(Ok(LimitGrant { granted, left })) => {
            let window_ms = u64::from(rule.window_seconds) * 1_000;
            answer.granted = u64::from(granted);
            answer.left = (granted > 0).then_some(left);
            answer.valid_ms = Some(
                (window_ms * u64::from(granted) / u64::from(rule.limit.max(1))).clamp(1, window_ms),
            );
        }
        Some(Err(VerifyError::RateLimited(refused))) => {
            answer.retry_after = Some(refused.retry_after_seconds);
        }
        Some(Err(VerifyError::Unavailable(cause))) => return Err(cause),
        Some(Err(_)) | None => {}
    }
    Ok(answer)
}

fn unavailable(cause: &str) -> AppError {
    AppError::keystore_unavailable("a lease", cause)
}
