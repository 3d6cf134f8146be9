//! What a route's refusal gives back through a remote verifier: a key's request refused
//! for want of a permission spends no credit, as through the embedded layer.

use axum::Router;
use axum::extract::Request;
use axum::routing::{MethodRouter, get};
use latchkey_tower::{ApiKeyAuthLayer, Permission, RequirePermission};
use tower::ServiceExt;

use crate::{Setup, get_answer};

/// A route that needs `permission`.
fn needing(permission: &'static str) -> MethodRouter {
    get(|| async { "done" }).route_layer(RequirePermission::layer(Permission::from_static(
        permission,
    )))
}

/// A key with 3 credits, refused five times for want of `orders:write` (once of them by
/// a route called three times with one request, as a retry layer would), still makes its
/// 3 requests: each 403's credit went back to the key's lease, once. Before, the lease
/// kept them, and the fourth 403 was a 429 `usage_exceeded`.
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
        .layer(ApiKeyAuthLayer::new(s.verifier.clone()));
    let user = s.keystore.user("partner", &["orders:read"]);
    let key = s.keystore.key_with_credits(user, 3);
    s.caught_up().await;
    let text = key.secret.expose();
    let forbidden = (403, Some("insufficient_permission".to_owned()));
    for path in ["/report", "/report", "/report", "/report", "/thrice"] {
        assert_eq!(get_answer(&app, path, text).await, forbidden, "{path}");
    }
    for _ in 0..3 {
        assert_eq!(get_answer(&app, "/orders", text).await, (200, None));
    }
    assert_eq!(
        get_answer(&app, "/orders", text).await,
        (429, Some("usage_exceeded".to_owned()))
    );
}
