//! What a route's refusal gives back through a remote verifier: a key's request refused
//! for want of a permission spends no credit, as through the embedded layer.

use axum::Router;
use axum::extract::Request;
use axum::routing::{MethodRouter, get};
use latchkey_tower::latchkey_core::VerifyError;
use latchkey_tower::{ApiKeyAuthLayer, Permission, RequirePermission, RouteCost, Verifier};
use tower::ServiceExt;

use crate::{Setup, get_answer, within};

/// A route that needs `permission`.
fn needing(permission: &'static str) -> MethodRouter {
    get(|| async { "done" }).route_layer(RequirePermission::layer(Permission::from_static(
        permission,
    )))
}

/// A key with 3 credits, refused five times for want of `orders:write` (once of them by
/// a route called three times with one request, as a retry layer would), and twice by a
/// route costing 5, still makes its 3 requests: each refused request's credit went back to
/// the key's lease, once. Before, the lease kept a 403's, and the fourth 403 was a 429
/// `usage_exceeded`.
#[tokio::test]
async fn a_route_refused_for_permission_spends_no_leased_credit() {
    let s = Setup::new().await;
    let thrice = tower::service_fn(move |request: Request| {
        let route = needing("orders:write").with_state::<()>(());
        async move {
            let (parts, _) = request.into_parts();
            let mut last = None;
            for _ in 0..3 {
                let again = http::Request::from_parts(parts.clone(), axum::body::Body::empty());
                last = Some(route.clone().oneshot(again).await?);
            }
            Ok::<_, std::convert::Infallible>(last.unwrap())
        }
    });
    let app = Router::new()
        .route("/report", needing("orders:write"))
        .route_service("/thrice", thrice)
        .route("/orders", needing("orders:read"))
        .route(
            "/report/full",
            get(|| async { "full" }).route_layer(
                RequirePermission::layer(Permission::from_static("orders:read"))
                    .cost(RouteCost::new(5).unwrap()),
            ),
        )
        .layer(ApiKeyAuthLayer::new(s.verifier.clone()));
    let key = s.partner_key_with_credits(3).await;
    let text = key.secret.expose();
    let forbidden = (403, Some("insufficient_permission".to_owned()));
    for path in ["/report", "/report", "/report", "/report", "/thrice"] {
        assert_eq!(get_answer(&app, path, text).await, forbidden, "{path}");
    }
    let too_costly = (429, Some("usage_exceeded".to_owned()));
    for _ in 0..2 {
        assert_eq!(get_answer(&app, "/report/full", text).await, too_costly);
    }
    // What the lease holds goes back to the daemon, which takes it all (the first
    // request's credit, charged by its verification, too): the stored balance is whole.
    within(s.verifier.flush_usage()).await;
    let stored = s.keystore.store.key(key.key.id).unwrap().credits;
    assert_eq!(stored.map(|c| c.remaining), Some(3));
    for _ in 0..3 {
        assert_eq!(get_answer(&app, "/orders", text).await, (200, None));
    }
    assert_eq!(
        get_answer(&app, "/orders", text).await,
        (429, Some("usage_exceeded".to_owned()))
    );
}

/// A credit is given back only while nothing changed since the request's key was
/// presented (review s59 M1): a change of the key meanwhile (its credits set, a lease of
/// the new balance cached) would have the credit go to a lease that never paid it, one
/// more than the new balance. Then it stays spent.
#[tokio::test]
async fn no_credit_goes_back_across_a_change_of_the_key() {
    let s = Setup::new().await;
    let key = s.partner_key_with_credits(3).await;
    let text = key.secret.expose();
    let verifier = &s.verifier;
    // A request presented, verified (a credit taken), then refused by its route.
    let mark = verifier.credit_mark();
    within(s.verify(text)).await.unwrap();
    // Meanwhile its credits are set to 1, and a request of the new balance takes it.
    let set = latchkey_tower::latchkey_core::KeyPatch {
        credits: Some(latchkey_tower::latchkey_core::CreditsPatch::Set {
            remaining: 1,
            refill: None,
        }),
        ..Default::default()
    };
    let system = latchkey_tower::latchkey_core::Actor::system();
    s.keystore
        .store
        .update_key(&system, key.key.id, set)
        .unwrap();
    s.caught_up().await;
    within(s.verify(text)).await.unwrap();
    verifier.give_back_credit(text, mark);
    let refused = within(s.verify(text)).await;
    assert!(
        matches!(refused, Err(VerifyError::UsageExceeded { .. })),
        "{refused:?}"
    );
}
