//! What every handler shares: the store and the metrics.

use std::sync::Arc;
use std::time::Instant;

use latchkey_core::{ApiKey, Principal, Store, VerifyError};
use latchkey_tower::StoreVerification;

use crate::error::AppError;
use crate::handlers::streams::StreamSlots;
use crate::metrics::Metrics;

/// The router's state. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    /// The open `/v1/events` streams, bounded.
    pub(crate) streams: Arc<StreamSlots>,
}

impl AppState {
    pub(crate) fn new(store: Store) -> AppState {
        AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            streams: Arc::default(),
        }
    }

    /// Runs a store operation on tokio's blocking pool.
    ///
    /// Core's calls are synchronous: a write commits a sled transaction and fsyncs before
    /// it returns, and a list or a stat scans a tree that may not be in memory. On the
    /// blocking pool they never stall the runtime's workers; the hop costs microseconds,
    /// which a management request does not notice. A client that disconnects does not
    /// cancel the operation: a write is either done or not, never half done.
    ///
    /// Only key verification (`POST /v1/verify`, and the authentication layer) stays on the
    /// worker: it is a cached, sub-microsecond read on the hot path
    /// ([`AppState::verification`] moves a PostgreSQL store's misses off it).
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, AppError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(AppError::internal)?
    }

    /// Verifies a well-formed key, counting the outcome and timing it for `/metrics`.
    ///
    /// Malformed keys are refused before this (by the authentication layer, or by
    /// `/v1/verify`) without a store read, and so are not counted as verifications.
    pub(crate) fn verify_key(&self, key: &ApiKey) -> Result<Principal, VerifyError> {
        let started = Instant::now();
        let result = self.store.verify_key(key);
        self.record(&result, started);
        result
    }

    /// [`AppState::verify_key`] for an async caller: inline from the verify cache, or on a
    /// store on sled; a miss of a store on PostgreSQL (a round trip to the database) runs
    /// on tokio's blocking pool, so that no worker waits for the database.
    pub(crate) fn verification(&self, key: &ApiKey) -> StoreVerification {
        if !self.store.reads_over_network() {
            return StoreVerification::ready(self.verify_key(key));
        }
        let started = Instant::now();
        match self.store.verify_key_cached(key) {
            Some(answer) => {
                self.record(&answer, started);
                StoreVerification::ready(answer)
            }
            None => {
                let (state, key) = (self.clone(), key.clone());
                StoreVerification::blocking(move || state.verify_key(&key))
            }
        }
    }

    fn record(&self, result: &Result<Principal, VerifyError>, started: Instant) {
        self.metrics.record_verification(
            match result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            },
            started.elapsed(),
        );
    }
}
