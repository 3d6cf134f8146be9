//! `RemoteVerifier` against an in-process daemon (`latchkey_admin::router`) on loopback:
//! hits and misses, coalescing, invalidation, negative caching, staleness, restart, reset.
//!
//! Every verifier here runs on a manual clock: staleness is decided by the test moving the
//! clock, never by how fast the machine is. Waits are on the verifier's status, bounded.

// The in-process daemon, its traffic counters, and a store on a manual clock.
mod daemon;
// Hits, misses, coalescing, negative caching, expiry, usage reports.
mod cache;
// Invalidation by key, user and group events.
mod invalidation;
// The daemon killed and restarted; a replaced store; a refused service key; the layer's 503.
mod failures;
// Concurrent misses bounded against a daemon that never answers.
mod bounds;
// A redirect elsewhere is not followed; an answer past its bound is not read.
mod answers;
// What a route's refusal gives back: a 403 spends no leased credit.
mod refusals;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http_body_util::BodyExt;
use latchkey_tower::Verifier;
use latchkey_tower::latchkey_core::{ApiKey, CreatedKey, ManualClock, Principal, VerifyError};
use latchkey_tower::remote::{RemoteStatus, RemoteVerifier};
use time::OffsetDateTime;
use tower::ServiceExt;

use daemon::{Daemon, Keystore, Traffic};

/// The longest any wait in these tests may take before it fails: a bound, not a
/// measurement.
const PATIENCE: Duration = Duration::from_secs(10);

/// The staleness bound of the verifiers under test.
const MAX_STALENESS: Duration = Duration::from_secs(5);

/// A keystore, a daemon over it, and a verifier of that daemon.
struct Setup {
    keystore: Keystore,
    traffic: Arc<Traffic>,
    daemon: Daemon,
    verifier: RemoteVerifier,
}

impl Setup {
    /// Everything started, and the verifier's event stream caught up.
    async fn new() -> Setup {
        let setup = Setup::start(Traffic::default());
        setup.caught_up().await;
        setup
    }

    /// Everything started, the daemon's traffic as `traffic` says.
    fn start(traffic: Traffic) -> Setup {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let keystore = Keystore::new(clock);
        let traffic = Arc::new(traffic);
        let daemon = Daemon::start(&keystore.store, &traffic, loopback(0));
        let verifier = verifier(&daemon.url(), &keystore);
        Setup {
            keystore,
            traffic,
            daemon,
            verifier,
        }
    }

    /// Waits until the verifier's stream is up and has applied every change of the store.
    async fn caught_up(&self) -> RemoteStatus {
        let head = self.keystore.store.last_seq().unwrap();
        within(
            self.verifier
                .wait_for(|s| s.connected && s.position >= Some(head)),
        )
        .await
    }

    /// A new key with `credits` of a new user `partner` (who may read orders), once the
    /// verifier's stream has applied it.
    async fn partner_key_with_credits(&self, credits: u64) -> CreatedKey {
        let user = self.keystore.user("partner", &["orders:read"]);
        let key = self.keystore.key_with_credits(user, credits);
        self.caught_up().await;
        key
    }

    async fn verify(&self, key: &str) -> Result<Principal, VerifyError> {
        self.verifier.verify(&ApiKey::parse(key).unwrap()).await
    }

    /// Verifies a key that must be refused; answers why.
    async fn refusal(&self, key: &CreatedKey) -> VerifyError {
        self.verify(key.secret.expose()).await.unwrap_err()
    }

    fn requests(&self) -> usize {
        self.traffic.verify_requests()
    }

    fn advance(&self, by: Duration) {
        self.keystore
            .clock
            .advance(time::Duration::try_from(by).unwrap());
    }
}

/// A verifier with the shortest heartbeats and short reconnections, on the keystore's clock.
fn verifier(url: &str, keystore: &Keystore) -> RemoteVerifier {
    RemoteVerifier::builder(url, &keystore.service_key)
        .max_staleness(MAX_STALENESS)
        .heartbeat(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .negative_ttl(Duration::from_secs(1))
        // Usage is sent when a test asks for it.
        .usage_interval(Duration::from_secs(3600))
        .clock(keystore.clock.clone())
        .build()
        .unwrap()
}

/// The status and the problem `code` (if any) of `GET path` on `app` with `key`.
pub(crate) async fn get_answer(app: &Router, path: &str, key: &str) -> (u16, Option<String>) {
    let request = http::Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(daemon::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned));
    (status, code)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("waited longer than the test's patience")
}
