//! What every handler shares: the store and the metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use latchkey_core::{ApiKey, Principal, Store, VerifyError};
use latchkey_tower::{StoreVerification, Verifier};

use crate::error::AppError;
use crate::handlers::streams::StreamSlots;
use crate::idempotency::SeenReports;
use crate::lease_ledger::LeaseLedger;
use crate::metrics::Metrics;

/// The router's state. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    /// The open `/v1/events` streams, bounded.
    pub(crate) streams: Arc<StreamSlots>,
    /// The credits leased to remote verifiers that they may give back.
    pub(crate) leases: Arc<LeaseLedger>,
    /// The `Idempotency-Key`s of the usage reports recorded lately.
    pub(crate) reports: Arc<SeenReports>,
    /// Held by the one `GET /v1/backup` being taken and sent: each is a copy of the whole
    /// store on the temporary directory's disk, taken while writers wait.
    pub(crate) backup: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    pub(crate) fn new(store: Store) -> AppState {
        AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            streams: Arc::default(),
            leases: Arc::default(),
            reports: Arc::default(),
            backup: Arc::default(),
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

    /// Verifies a well-formed key as latchkey-tower's [`Store`] verifier does (inline, or
    /// a PostgreSQL store's miss on tokio's blocking pool, so that no worker waits for the
    /// database), counting the outcome and timing it for `/metrics`.
    ///
    /// Malformed keys are refused before this (by the authentication layer, or by
    /// `/v1/verify`) without a store read, and so are not counted as verifications.
    pub(crate) fn verification(&self, key: &ApiKey) -> Metered<StoreVerification> {
        let started = Instant::now();
        self.metered(Verifier::verify(&self.store, key), started)
    }

    /// [`AppState::verification`] of a text that is not a latchkey key: `None` when the
    /// store holds no imported key it could be ([`StoreVerification::foreign`]).
    pub(crate) fn foreign_verification(&self, text: &str) -> Option<Metered<StoreVerification>> {
        let started = Instant::now();
        StoreVerification::foreign(&self.store, text).map(|v| self.metered(v, started))
    }

    fn metered<F>(&self, verification: F, started: Instant) -> Metered<F> {
        Metered {
            verification,
            started,
            metrics: self.metrics.clone(),
        }
    }
}

/// A verification that counts its outcome and its time in the [`Metrics`] when it answers.
#[derive(Debug)]
pub(crate) struct Metered<F> {
    verification: F,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl<F> Future for Metered<F>
where
    F: Future<Output = Result<Principal, VerifyError>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = ready!(Pin::new(&mut this.verification).poll(cx));
        let code = match &answer {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        this.metrics
            .record_verification(code, this.started.elapsed());
        Poll::Ready(answer)
    }
}
