//! The routes are `example_orders::app`, the same as `examples/orders`; this checks them over
//! a verifier that is not a store.

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use latchkey_tower::latchkey_core::{Principal as CorePrincipal, VerifyError};
    use latchkey_tower::{ApiKey, Env, PermissionSet, PrincipalInfo};
    use tower::ServiceExt;

    use axum::Router;
    use example_orders::app;

    /// A verifier that accepts every key as a reader, except `test` keys: the keystore is
    /// "unavailable" for those.
    fn reader(key: &ApiKey) -> impl Future<Output = Result<CorePrincipal, VerifyError>> + use<> {
        let env = key.env();
        async move {
            if env == Env::Test {
                return Err(VerifyError::Unavailable("down".into()));
            }
            Ok(CorePrincipal::new(PrincipalInfo {
                key_id: Default::default(),
                prefix: "lk_live_000000000000".into(),
                key_name: "reader".into(),
                env: Env::Live,
                user_id: Default::default(),
                user_name: "reader".into(),
                tenant_id: None,
                organization_id: None,
                permissions: PermissionSet::parse(["orders:read"]).unwrap(),
            }))
        }
    }

    async fn call(app: &Router, method: &str, uri: &str, key: Option<&str>) -> (u16, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = Body::from(r#"{"item":"tea","quantity":2}"#);
        let response = app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes_need_their_permission_and_health_none() {
        let app = app(reader);
        let prefix = latchkey_tower::latchkey_core::Prefix::new("lk").unwrap();
        let live = ApiKey::generate(&prefix, Env::Live);
        let test = ApiKey::generate(&prefix, Env::Test);
        assert_eq!(call(&app, "GET", "/health", None).await.0, 200);
        assert_eq!(call(&app, "GET", "/orders", None).await.0, 401);
        assert_eq!(
            call(&app, "GET", "/orders", Some(live.expose())).await.0,
            200
        );
        let (status, body) = call(&app, "POST", "/orders", Some(live.expose())).await;
        assert_eq!(status, 403);
        assert!(
            body.contains(r#""code":"insufficient_permission""#),
            "{body}"
        );
        let (status, body) = call(&app, "GET", "/orders", Some(test.expose())).await;
        assert_eq!(status, 503);
        assert!(body.contains(r#""code":"keystore_unavailable""#), "{body}");
    }
}
