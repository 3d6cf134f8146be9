//! Unauthenticated endpoints: health, metrics, the OpenAPI document; and the fallbacks.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

use crate::api::Health;
use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::state::AppState;

/// Liveness and readiness: 200 when the store answers a read within 3 s, 503 otherwise.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "system",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The keystore cannot be read", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    let checked = state.run(|store| store.check_health().map_err(unavailable));
    match tokio::time::timeout(HEALTH_WITHIN, checked).await {
        Ok(checked) => checked?,
        Err(_) => {
            latchkey_core::warn_limited!(
                "health check: the keystore did not answer within {HEALTH_WITHIN:?}"
            );
            return Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "keystore_unavailable",
                "the keystore did not answer in time",
            ));
        }
    }
    Ok(Json(Health {
        status: "ok".to_owned(),
    }))
}

/// How long `/healthz` waits for the store's read: a probe's own timeout is a few seconds,
/// and a read held behind a lock (up to the database's `lock_timeout`, 15 s) would leave it
/// to guess. Past it, 503; the read itself goes on on its blocking thread.
const HEALTH_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// How long `/metrics` waits for the store's counts: below Prometheus' default scrape
/// timeout (10 s), so that a scrape says `latchkey_keystore_up 0` rather than time out.
const COUNTS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

fn unavailable(err: latchkey_core::StoreError) -> AppError {
    latchkey_core::warn_limited!(error = %err, "health check failed");
    // Said as a write is (what to do, no `Retry-After`): retrying will not end it.
    if err.is_displaced() {
        return err.into();
    }
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "keystore_unavailable",
        "the keystore cannot be read",
    )
}

/// Prometheus metrics, text format 0.0.4.
///
/// `latchkey_http_requests_total{code}`, `latchkey_verifications_total{code}`,
/// `latchkey_verification_duration_seconds` (histogram), `latchkey_keystore_up`, and, when
/// the store could be read, `latchkey_keys{status}`, `latchkey_users`, `latchkey_groups`;
/// what the process holds open and what its listeners shed: `latchkey_connections{listener}`,
/// `latchkey_connections_shed_total{listener,reason}`,
/// `latchkey_tls_handshake_failures_total{listener}`, `latchkey_event_streams`,
/// `latchkey_console_sessions`.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No key or a key that does not authenticate (only when served behind a key: `latchkey serve --metrics-auth`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks `latchkey:metrics` (`insufficient_permission`), or is bound to a tenant (`tenant_forbidden`: the figures cover every tenant); only with `--metrics-auth`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The key could not be checked for a failure of this process's (`internal`: see the server log; only with `--metrics-auth`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key could not be checked: the keystore is unavailable (`keystore_unavailable`; only with `--metrics-auth`: without, a store out of reach leaves its counts out, and `latchkey_keystore_up` reads 0)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // A store out of reach (said in the log by the error's conversion) leaves its counts
    // out, not the process's counters, which tell of the outage.
    let counts = state.run(|store| {
        store.check_health()?;
        Ok(store.stats()?)
    });
    let stats = tokio::time::timeout(COUNTS_WITHIN, counts)
        .await
        .ok()
        .and_then(Result::ok);
    let body = state.metrics.render(stats.as_ref());
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        body,
    )
}

/// `/metrics` behind the authentication layer: the caller needs `latchkey:metrics`, and
/// must be bound to no tenant (the figures cover every tenant).
pub(crate) async fn metrics_keyed(
    caller: Caller<perm::Metrics>,
    state: State<AppState>,
) -> Result<impl IntoResponse, AppError> {
    caller.ensure_global()?;
    Ok(metrics(state).await)
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "system",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        crate::openapi::document_json(),
    )
}

/// Unknown paths under `/v1`.
pub(crate) async fn not_found() -> AppError {
    AppError::no_such_endpoint()
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not serve that method",
    )
}
