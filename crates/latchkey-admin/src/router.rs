//! Every route, in one place.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use latchkey_core::Store;

use crate::MetricsAccess;
use crate::caller::Operator;
use crate::handlers::{
    audit, backup, events, groups, import, keys, leases, system, usage, users, verify,
};
use crate::state::AppState;
use crate::{auth, metrics};

/// The `/v1` routes, before authentication is put in front of them.
fn v1() -> Router<AppState> {
    Router::new()
        .route("/groups", post(groups::create).get(groups::list))
        .route(
            "/groups/{id}",
            get(groups::show)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route("/users", post(users::create).get(users::list))
        .route(
            "/users/{id}",
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route("/users/{id}/revoke-keys", post(users::revoke_keys))
        .route("/keys", post(keys::create).get(keys::list))
        .route(
            "/keys/{id}",
            get(keys::show).patch(keys::update).delete(keys::delete),
        )
        .route("/keys/import", post(import::import))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/keys/{id}/rotate", post(keys::rotate))
        .route("/verify", post(verify::verify))
        .route("/leases", post(leases::lease))
        .route("/leases/return", post(leases::give_back))
        .route("/usage", post(usage::report))
        .route("/events", get(events::stream))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/backup", get(backup::backup))
        .method_not_allowed_fallback(system::method_not_allowed)
        // Nested under /v1, this fallback answers unknown /v1 paths only: an app that
        // merges this router keeps its own fallback for everything else.
        .fallback(system::not_found)
}

/// `/v1` behind the authentication layer, plus the public endpoints; `/metrics` where
/// `access` says, and a router with `/metrics` alone over the same state.
pub(crate) fn authenticated(store: Store, access: MetricsAccess) -> (Router, Router) {
    let state = AppState::new(store);
    let v1 = v1().layer(auth::layer(state.clone()));
    let metrics_route = match access {
        MetricsAccess::Public => Some(Router::new().route("/metrics", get(system::metrics))),
        MetricsAccess::Keyed => Some(
            Router::new()
                .route("/metrics", get(system::metrics_keyed))
                .layer(auth::layer(state.clone())),
        ),
        MetricsAccess::Separate => None,
    };
    let separate = Router::new()
        .route("/metrics", get(system::metrics))
        .method_not_allowed_fallback(system::method_not_allowed)
        .with_state(state.clone());
    (assemble(state, v1, metrics_route), separate)
}

/// `/v1` acting as the operator, plus the public endpoints.
pub(crate) fn operator(store: Store) -> Router {
    let state = AppState::new(store);
    let v1 = v1().layer(axum::Extension(Operator));
    let metrics_route = Router::new().route("/metrics", get(system::metrics));
    assemble(state, v1, Some(metrics_route))
}

fn assemble(
    state: AppState,
    v1: Router<AppState>,
    metrics_route: Option<Router<AppState>>,
) -> Router {
    let mut router = Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(system::healthz))
        .route("/openapi.json", get(system::openapi));
    if let Some(metrics_route) = metrics_route {
        router = router.merge(metrics_route);
    }
    router
        .method_not_allowed_fallback(system::method_not_allowed)
        .route_layer(from_fn_with_state(state.clone(), metrics::count_requests))
        .with_state(state)
}
