//! An in-process daemon: `latchkey_admin::router(store)` on a loopback port, on a runtime of
//! its own so that stopping it closes every connection at once, as a crash would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt;
use latchkey_tower::latchkey_core::{
    Actor, CreatedKey, ManualClock, NewKey, NewUser, PermissionSet, Store, StoreConfig,
};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// What the test observes of the daemon's traffic.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// `POST /v1/verify` requests.
    pub(crate) verify: AtomicUsize,
    /// Bodies of `POST /v1/usage`, as sent: the admin router then handles them.
    pub(crate) usage: Mutex<Vec<Value>>,
    /// Answer `POST /v1/usage` 404 without passing it on, as a daemon that predates the
    /// route would.
    pub(crate) refuse_usage: std::sync::atomic::AtomicBool,
    /// `POST /v1/leases` requests.
    pub(crate) leases: AtomicUsize,
    /// `POST /v1/leases/return` requests.
    pub(crate) returns: AtomicUsize,
    /// Answer `POST /v1/leases/return` 503 without passing it on, as a daemon whose
    /// database is away would.
    pub(crate) refuse_returns: std::sync::atomic::AtomicBool,
    /// Each `POST /v1/leases` answer takes this long on the daemon's clock: it moves on
    /// once the grant is made, before the answer goes.
    pub(crate) lease_answer_takes: Mutex<Option<(Arc<ManualClock>, Duration)>>,
    /// How many `POST /v1/usage` answers to lose after the daemon handled the report: each
    /// is answered 502, as a proxy whose upstream connection dropped would.
    pub(crate) lose_usage_answers: AtomicUsize,
    /// Answer `POST /v1/usage` with this status without passing it on (nothing recorded),
    /// as a daemon that sheds load, or a proxy in front of it, would.
    pub(crate) usage_status: Mutex<Option<StatusCode>>,
    /// Answer `GET /v1/events` 503, as a proxy that does not pass event streams would.
    pub(crate) refuse_events: std::sync::atomic::AtomicBool,
    /// Each `GET /v1/events` takes this long to open on the verifier's clock (moved on
    /// before the daemon writes `ready`), as a stream held up on its way would.
    pub(crate) events_open_takes: Mutex<Option<(Arc<ManualClock>, Duration)>>,
    /// Put this `seq` in `POST /v1/verify`'s answers, as a daemon of a cluster that has
    /// applied the changes up to it would.
    pub(crate) verify_seq: Mutex<Option<u64>>,
    /// Announce a `head` this much beyond the store's in each `GET /v1/events`'s `ready`,
    /// as a daemon whose store's head went back after announcing it would.
    pub(crate) ready_head_ahead: std::sync::atomic::AtomicU64,
}

/// `bytes` of an event stream with the `head` of a `ready` event in it moved `ahead`.
fn announce_ahead(bytes: &[u8], ahead: u64) -> axum::body::Bytes {
    let text = String::from_utf8_lossy(bytes);
    let Some(ready) = text.find("event: ready") else {
        return axum::body::Bytes::copy_from_slice(bytes);
    };
    let at = text[ready..]
        .find("\"head\":")
        .expect("a ready event's head")
        + ready
        + 7;
    let digits = text[at..].find(|c: char| !c.is_ascii_digit()).unwrap() + at;
    let head: u64 = text[at..digits].parse().unwrap();
    format!("{}{}{}", &text[..at], head + ahead, &text[digits..]).into()
}

impl Traffic {
    pub(crate) fn verify_requests(&self) -> usize {
        self.verify.load(Ordering::SeqCst)
    }
}

async fn observe(State(traffic): State<Arc<Traffic>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/v1/verify" {
        traffic.verify.fetch_add(1, Ordering::SeqCst);
        let seq = *traffic.verify_seq.lock().unwrap();
        if let Some(seq) = seq {
            let (mut parts, body) = next.run(request).await.into_parts();
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = body.collect().await.unwrap().to_bytes();
            let mut answer: Value = serde_json::from_slice(&body).unwrap();
            answer["seq"] = seq.into();
            return Response::from_parts(parts, Body::from(answer.to_string()));
        }
    }
    if path == "/v1/leases/return" {
        traffic.returns.fetch_add(1, Ordering::SeqCst);
        if traffic.refuse_returns.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    if path == "/v1/leases" {
        traffic.leases.fetch_add(1, Ordering::SeqCst);
        let answer = next.run(request).await;
        let takes = traffic.lease_answer_takes.lock().unwrap().clone();
        if let Some((clock, takes)) = takes {
            clock.advance(time::Duration::try_from(takes).unwrap());
        }
        return answer;
    }
    if path == "/v1/events" && traffic.refuse_events.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if path == "/v1/events" {
        let takes = traffic.events_open_takes.lock().unwrap().clone();
        if let Some((clock, takes)) = takes {
            clock.advance(time::Duration::try_from(takes).unwrap());
        }
        let ahead = traffic.ready_head_ahead.load(Ordering::SeqCst);
        if ahead > 0 {
            let (parts, body) = next.run(request).await.into_parts();
            let stream = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                chunk.map(|bytes| announce_ahead(&bytes, ahead))
            });
            return Response::from_parts(parts, Body::from_stream(stream));
        }
    }
    if path == "/v1/usage" {
        if traffic.refuse_usage.load(Ordering::SeqCst) {
            return StatusCode::NOT_FOUND.into_response();
        }
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        traffic
            .usage
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        if let Some(status) = *traffic.usage_status.lock().unwrap() {
            return status.into_response();
        }
        let answer = next.run(Request::from_parts(parts, Body::from(body))).await;
        let lose =
            traffic
                .lose_usage_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lose.is_ok() {
            return StatusCode::BAD_GATEWAY.into_response();
        }
        return answer;
    }
    next.run(request).await
}

/// A daemon serving a store on a loopback port until stopped or dropped.
pub(crate) struct Daemon {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Serves `store` on `addr` (port 0 for any). The port is bound before this returns:
    /// no wait for readiness.
    pub(crate) fn start(store: &Store, traffic: &Arc<Traffic>, addr: SocketAddr) -> Daemon {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = latchkey_admin::router(store.clone())
            .layer(middleware::from_fn_with_state(Arc::clone(traffic), observe));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    served = axum::serve(listener, app) => served.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: open event streams are
            // cut, as when a daemon is killed.
            runtime.shutdown_timeout(Duration::from_secs(5));
        });
        Daemon {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes every connection; returns when the port is closed.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A store on a manual clock, with a service key holding `latchkey:verify`.
pub(crate) struct Keystore {
    pub(crate) store: Store,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) service_key: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Keystore {
    pub(crate) fn new(clock: Arc<ManualClock>) -> Keystore {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::default()
            .clock(clock.clone())
            .usage_flush_interval(None);
        let (store, _admin) = Store::create_with_admin(dir.path(), "lk", config).unwrap();
        let keystore = Keystore {
            store,
            clock,
            service_key: String::new(),
            _dir: dir,
        };
        let service = keystore.user("orders-service", &["latchkey:verify"]);
        let service_key = keystore.key(service, "service", None);
        Keystore {
            service_key: service_key.secret.expose().to_owned(),
            ..keystore
        }
    }

    /// A copy of the store as it is now, opened on its own: what restoring a backup gives.
    pub(crate) fn backup(&self) -> Keystore {
        self.store.flush().unwrap();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(self.store.path(), dir.path());
        let config = StoreConfig::default()
            .clock(self.clock.clone())
            .usage_flush_interval(None);
        Keystore {
            store: Store::open(dir.path(), config).unwrap(),
            clock: self.clock.clone(),
            service_key: self.service_key.clone(),
            _dir: dir,
        }
    }

    /// The store backed up and restored as `latchkey restore` does: the same records and
    /// chain, a new lineage.
    pub(crate) fn restored(&self) -> Keystore {
        let mut file = Vec::new();
        self.store.backup(&mut file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::default()
            .clock(self.clock.clone())
            .usage_flush_interval(None);
        let (store, _) = Store::restore(dir.path(), file.as_slice(), config).unwrap();
        Keystore {
            store,
            clock: self.clock.clone(),
            service_key: self.service_key.clone(),
            _dir: dir,
        }
    }

    pub(crate) fn user(&self, name: &str, permissions: &[&str]) -> uuid::Uuid {
        self.store
            .create_user(
                &Actor::system(),
                NewUser {
                    name: name.into(),
                    permissions: PermissionSet::parse(permissions.iter().copied()).unwrap(),
                    ..NewUser::default()
                },
            )
            .unwrap()
            .id
    }

    pub(crate) fn key(
        &self,
        user_id: uuid::Uuid,
        name: &str,
        expires_at: Option<OffsetDateTime>,
    ) -> CreatedKey {
        self.store
            .create_key(
                &Actor::system(),
                NewKey {
                    name: name.into(),
                    user_id,
                    expires_at,
                    ..NewKey::default()
                },
            )
            .unwrap()
    }
}

impl Keystore {
    /// A new key of `user_id` holding `credits`, for the tests of leases.
    pub(crate) fn key_with_credits(&self, user_id: uuid::Uuid, credits: u64) -> CreatedKey {
        self.metered_key(
            user_id,
            "metered",
            latchkey_tower::latchkey_core::KeyPatch {
                credits: Some(latchkey_tower::latchkey_core::CreditsPatch::Set {
                    remaining: credits,
                    refill: None,
                }),
                ..Default::default()
            },
        )
    }

    /// A new key of `user_id` with `credits`, refilled to `refill` every day.
    pub(crate) fn key_with_daily_refill(
        &self,
        user_id: uuid::Uuid,
        credits: u64,
        refill: u64,
    ) -> CreatedKey {
        use latchkey_tower::latchkey_core::{CreditsPatch, KeyPatch, Refill, RefillInterval};
        let refill = Refill {
            amount: refill,
            interval: RefillInterval::Day,
            day_of_month: None,
        };
        let credits = CreditsPatch::Set {
            remaining: credits,
            refill: Some(Some(refill)),
        };
        self.metered_key(
            user_id,
            "refilled",
            KeyPatch {
                credits: Some(credits),
                ..Default::default()
            },
        )
    }

    /// A new key named `name` of `user_id` allowed `limit` requests an hour, for the tests
    /// of leases.
    pub(crate) fn key_with_hourly_limit(
        &self,
        user_id: uuid::Uuid,
        name: &str,
        limit: u32,
    ) -> CreatedKey {
        self.metered_key(
            user_id,
            name,
            latchkey_tower::latchkey_core::KeyPatch {
                rate_limits: Some(vec![latchkey_tower::latchkey_core::RateLimit {
                    name: "hourly".into(),
                    limit,
                    window_seconds: 3600,
                }]),
                ..Default::default()
            },
        )
    }

    fn metered_key(
        &self,
        user_id: uuid::Uuid,
        name: &str,
        controls: latchkey_tower::latchkey_core::KeyPatch,
    ) -> CreatedKey {
        let key = self.key(user_id, name, None);
        self.store
            .update_key(&Actor::system(), key.key.id, controls)
            .unwrap();
        key
    }
}

/// An empty request body, for the layer tests.
pub(crate) fn empty() -> Body {
    Body::empty()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
