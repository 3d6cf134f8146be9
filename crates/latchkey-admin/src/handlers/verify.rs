//! `POST /v1/verify`: key verification for services that do not hold the store.

use axum::Json;
use axum::extract::State;
use latchkey_core::{Actor, Admission, Admitted, ApiKey, VerifyError, limits, meter};

use crate::api::{VerifyRequest, VerifyResponse};
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::extract::JsonBody;
use crate::openapi::problems::{KeystoreUnavailable, LacksVerify};
use crate::state::AppState;

/// A presented key's verification for `caller`. A malformed key is refused without a
/// store read, as the authentication layer does, unless the store holds imported keys,
/// which have other formats. A key of a user the caller does not see (another tenant's)
/// is `invalid_key`, as an unknown one, whatever its status, and its use is not counted:
/// a tenant-bound caller's key is authenticated uncounted first, and counted once seen.
pub(crate) async fn verify_presented(
    state: &AppState,
    caller: &Actor,
    presented: &str,
) -> Result<latchkey_core::Principal, VerifyError> {
    if caller.tenant_id().is_some() {
        authenticate_presented(state, caller, presented).await?;
    }
    let principal = match ApiKey::parse(presented) {
        Ok(key) => state.verification(&key).await,
        Err(e) => match state.foreign_verification(presented) {
            Some(verification) => verification.await,
            None => Err(VerifyError::Malformed(e)),
        },
    }?;
    if caller.sees_principal(&principal) {
        Ok(principal)
    } else {
        Err(VerifyError::Invalid)
    }
}

/// [`verify_presented`] for a request about a key rather than one made with it (a remote
/// verifier's lease of its limits): authenticated alike, on the blocking pool, and never
/// counted as a use of the key (the remote verifier counts and reports its requests).
pub(crate) async fn authenticate_presented(
    state: &AppState,
    caller: &Actor,
    presented: &str,
) -> Result<latchkey_core::Principal, VerifyError> {
    let store = state.store.clone();
    let caller = caller.clone();
    let presented = presented.to_owned();
    tokio::task::spawn_blocking(move || match store.authenticate(&presented) {
        Ok(principal) if caller.sees_principal(&principal) => Ok(principal),
        Ok(_) => Err(VerifyError::Invalid),
        Err(
            VerifyError::Disabled
            | VerifyError::Revoked
            | VerifyError::Expired
            | VerifyError::UserDisabled,
        ) if !sees_key(&store, &caller, &presented) => Err(VerifyError::Invalid),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| VerifyError::Unavailable(e.to_string()))?
}

/// Whether a refused key (its secret matched) belongs to a user `caller` sees. A global
/// caller sees every key; a tenant-bound one, its tenant's latchkey keys (an imported key
/// has no display prefix to find it by, and is then answered as an unknown key).
fn sees_key(store: &latchkey_core::Store, caller: &Actor, presented: &str) -> bool {
    caller.tenant_id().is_none()
        || ApiKey::parse(presented)
            .is_ok_and(|key| store.key_id_as(caller, key.display_prefix()).is_ok())
}

/// Verify a key and, optionally, that it holds permissions.
///
/// Always 200 with `valid` and a `code` (`ok` when valid) for a key that does not
/// authenticate: that is an answer, not an error. The specific codes (`key_revoked`, …)
/// are given only once the secret has matched, so an unknown id and a wrong secret are the
/// same `invalid_key`. When the keystore cannot be read the answer is 503
/// `keystore_unavailable`, so that a remote verifier answers 503, never 401.
#[utoipa::path(post, path = "/v1/verify", operation_id = "verifyKey", tag = "verify",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict", body = VerifyResponse),
        LacksVerify, KeystoreUnavailable,
        (status = 400, description = "Invalid field (e.g. a malformed permission)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:verify"])))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    caller: Caller<perm::Verify>,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyResponse>, AppError> {
    if let Some(permissions) = &body.permissions {
        limits::check_permissions("permissions", &permissions.iter().cloned().collect())?;
    }
    let cost = match body.cost.map(u32::try_from) {
        None => 1,
        Some(Ok(cost)) if cost <= limits::MAX_COST => cost,
        Some(_) => {
            return Err(AppError::invalid(
                "cost",
                format!("cost is at most {}", limits::MAX_COST),
            ));
        }
    };
    // Read before verifying: the verification reflects at least every change up to it.
    let seq = state.store.applied_seq();
    let verified = verify_presented(&state, &caller.actor, &body.key).await;
    let answer = match verified {
        Ok(principal) => {
            // IP → permissions → rate limits → credits: core's one order.
            let permissions = body.permissions.as_deref().unwrap_or_default();
            let admission = Admission {
                client_ip: body.client_ip,
                permissions,
                cost,
            };
            let mut limits = Vec::new();
            let period = principal.meter.as_ref().and_then(|m| m.credit_period());
            let admitted =
                match meter::try_admit_reporting(&principal, &admission, Some(&mut limits)) {
                    Admitted::Done(answer) => answer,
                    // The key's credit slice is short: its reservation is a durable write,
                    // which must not hold up an async worker.
                    Admitted::Reserve(reservation) => {
                        let mut reporting = std::mem::take(&mut limits);
                        let finished = tokio::task::spawn_blocking(move || {
                            let answer = reservation.finish_reporting(Some(&mut reporting));
                            (answer, reporting)
                        })
                        .await;
                        match finished {
                            Ok((answer, reported)) => {
                                limits = reported;
                                answer
                            }
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            Err(e) => Err(VerifyError::Unavailable(format!(
                                "the credit reservation did not complete: {e}"
                            ))),
                        }
                    }
                };
            if admitted.is_ok() {
                record_credits_taken(&state, &caller.actor, &principal, period, cost);
            }
            let (code, retry_after) = match &admitted {
                Ok(()) => ("ok", None),
                // The key authenticated, but its limits' shared state or its credits could
                // not be read or reserved: not an answer about the key.
                Err(VerifyError::Unavailable(cause)) => return Err(unavailable(cause)),
                Err(VerifyError::RateLimited(limited)) => {
                    // The limit that refused, as it stands (the meter reports it last).
                    limits.retain(|state| state.name == limited.limit.name);
                    ("rate_limited", Some(limited.retry_after_seconds))
                }
                Err(VerifyError::UsageExceeded {
                    retry_after_seconds,
                }) => ("usage_exceeded", *retry_after_seconds),
                Err(e) => (e.code(), None),
            };
            // A key that expires does so without a change event; a remote verifier caches
            // the answer only until then. From the verify cache: a warm verification reads
            // nothing from the storage; a read that fails is no answer ("never expires"
            // would be cached on that word).
            let expires_at = expiry(&state, &principal)
                .await
                .map_err(|cause| unavailable(&cause))?;
            VerifyResponse {
                valid: admitted.is_ok(),
                code: code.to_owned(),
                limits: principal.meter.is_some().then_some(limits),
                retry_after,
                expires_at,
                principal: Some((*principal).clone()),
                seq,
            }
        }
        Err(VerifyError::Unavailable(cause)) => return Err(unavailable(&cause)),
        Err(err) => VerifyResponse {
            valid: false,
            code: err.code().to_owned(),
            principal: None,
            expires_at: None,
            limits: None,
            retry_after: None,
            seq,
        },
    };
    Ok(Json(answer))
}

/// Records the credits a verification took as leased to its caller, as `POST /v1/leases`
/// records a grant: a remote verifier admits the request that missed its cache on this
/// answer, and when the request's route then refuses its extra cost, gives the request's
/// credit back to its lease, whose unspent credits go back through `POST
/// /v1/leases/return`. Without this record that return was refused, and the credit lost
/// (re-check s50 R1). Taking `cost` and giving it back is what `"cost": 0` does: nothing
/// the caller could not ask for. Only while the key's credits are the ones `period` (read
/// before the admission) names.
fn record_credits_taken(
    state: &AppState,
    caller: &Actor,
    principal: &latchkey_core::Principal,
    period: Option<i64>,
    cost: u32,
) {
    if let Some(meter) = &principal.meter
        && let Some(period) = period
        && cost > 0
        && meter.credit_period() == Some(period)
    {
        let taken = u64::from(cost);
        state
            .leases
            .granted(caller.key_id(), principal.key_id, meter, period, taken);
    }
}

/// When the verified key expires: `Store::expiry`, on the blocking pool where a read
/// that misses the verify cache crosses a network (PostgreSQL), never on an async worker.
async fn expiry(
    state: &AppState,
    principal: &latchkey_core::Principal,
) -> Result<Option<time::OffsetDateTime>, String> {
    if !state.store.reads_over_network() {
        return state.store.expiry(principal).map_err(|e| e.to_string());
    }
    let (store, principal) = (state.store.clone(), principal.clone());
    match tokio::task::spawn_blocking(move || store.expiry(&principal)).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the expiry read did not complete: {e}")),
    }
}

fn unavailable(cause: &str) -> AppError {
    AppError::keystore_unavailable("/v1/verify", cause)
}
