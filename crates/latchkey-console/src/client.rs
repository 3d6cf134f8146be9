//! The management API, called in process with the session's key: the console's only way
//! to read or change anything, so every rule is the API's own.

use axum::Router;
use axum::body::Body;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use latchkey_admin::Problem;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::errors::UiError;
use crate::origin::Origin;
use crate::session::SessionKey;

/// Largest API answer the console reads (a page of 1,000 keys is well below it).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The admin router, driven with `oneshot`.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    router: Router,
}

impl Api {
    pub(crate) fn new(router: Router) -> Api {
        Api { router }
    }

    /// `GET path` as `key`, from the browser at `origin`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        key: &SessionKey,
        origin: &Origin,
        path: &str,
    ) -> Result<T, UiError> {
        self.call(key, origin, Method::GET, path, None).await
    }

    /// `method path` with a JSON body as `key`, from the browser at `origin`; `null` sends
    /// no body.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        key: &SessionKey,
        origin: &Origin,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, UiError> {
        let body = (!body.is_null()).then_some(body);
        self.call(key, origin, method, path, body).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        key: &SessionKey,
        origin: &Origin,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, UiError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).map_err(UiError::internal)?;
        // The browser's address, so that the layer checks the key's `allowed_ips` as it
        // would for a direct call.
        origin.apply(&mut request);
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(UiError::internal)?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| UiError::internal(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            let bytes = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(bytes).map_err(UiError::internal);
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => Err(UiError::Api(Box::new(problem))),
            Err(_) => Err(UiError::internal(format!("the API answered {status}"))),
        }
    }
}
