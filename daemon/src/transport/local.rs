//! The in-process transport: `--db PATH|URL` opens the store and runs the admin router here.

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use latchkey_core::{Location, Store, StoreConfig};
use tower::ServiceExt;

use super::{ApiRequest, ApiResponse, Transport};

/// Sends requests through [`latchkey_admin::operator_router`] over a store opened in this
/// process. Every request acts as the operator: whoever can open the store's files already
/// holds every key.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    router: Router,
    store: Store,
}

impl LocalTransport {
    /// Opens the store at `location`. Fails with one line naming it when there is no store,
    /// or when a daemon holds a directory store (daemons and commands share a database).
    pub fn open(location: &Location) -> anyhow::Result<LocalTransport> {
        // The CLI lives for one command: persist usage figures only at close.
        let config = StoreConfig::default().usage_flush_interval(None);
        let store = Store::open_at(location, config)?;
        Ok(LocalTransport {
            router: latchkey_admin::operator_router(store.clone()),
            store,
        })
    }

    /// Closes the store before the command exits (blocking, 5 s at most: see
    /// `server::close_store`).
    pub fn close(self) {
        let LocalTransport { router, store } = self;
        drop(router);
        crate::server::close_before_exit(store);
    }
}

impl Transport for LocalTransport {
    async fn send(&self, request: ApiRequest) -> anyhow::Result<ApiResponse> {
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(&request.path);
        let body = match &request.body {
            Some(json) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(json)?)
            }
            None => Body::empty(),
        };
        let request = builder.body(body).context("building the request")?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .context("the management router failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the management router's answer")?
            .to_bytes();
        Ok(ApiResponse { status, body })
    }
}
