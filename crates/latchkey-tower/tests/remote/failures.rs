//! The daemon killed and restarted; a replaced store; a refused service key; what the layer
//! answers meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use latchkey_tower::latchkey_core::{
    Actor, Clock, CreatedKey, Env, ManualClock, Prefix, VerifyError,
};
use latchkey_tower::remote::{RemoteStatus, RemoteVerifier};
use latchkey_tower::{ApiKey, ApiKeyAuthLayer, Permission, Realm, RequirePermission, Verifier};
use time::OffsetDateTime;

use crate::daemon::{Daemon, Keystore, Traffic};
use crate::{MAX_STALENESS, Setup, get_answer, loopback, verifier, within};

/// The app of the examples: `GET /orders` needs `orders:read`.
fn app(verifier: RemoteVerifier) -> Router {
    Router::new()
        .route("/orders", get(|| async { "orders" }))
        .route_layer(RequirePermission::layer(Permission::from_static(
            "orders:read",
        )))
        .layer(ApiKeyAuthLayer::new(verifier).realm(Realm::from_static("orders")))
}

#[tokio::test]
async fn cached_keys_are_served_until_the_bound_then_503_and_recover_after_restart() {
    let mut s = Setup::new().await;
    let app = app(s.verifier.clone());
    let user = s.keystore.user("reporting", &["orders:read"]);
    let (cached, revoked_meanwhile, uncached) = (
        s.keystore.key(user, "cached", None),
        s.keystore.key(user, "revoked meanwhile", None),
        s.keystore.key(user, "uncached", None),
    );
    assert_eq!(
        get_answer(&app, "/orders", cached.secret.expose()).await.0,
        200
    );
    assert_eq!(
        get_answer(&app, "/orders", revoked_meanwhile.secret.expose())
            .await
            .0,
        200
    );
    let syncs = s.caught_up().await.syncs;

    let port = s.daemon.addr.port();
    s.daemon.stop();
    // Within the bound: cached answers are served; a key never seen cannot be.
    assert_eq!(
        get_answer(&app, "/orders", cached.secret.expose()).await.0,
        200
    );
    let (status, code) = get_answer(&app, "/orders", uncached.secret.expose()).await;
    assert_eq!(
        (status, code.as_deref()),
        (503, Some("keystore_unavailable"))
    );

    // A revocation the verifier cannot hear of (the store changes while no daemon serves it).
    s.keystore
        .store
        .revoke_key(&Actor::system(), revoked_meanwhile.key.id)
        .unwrap();

    // Past the bound: nothing cached is trusted, and the daemon cannot answer: 503.
    s.advance(MAX_STALENESS);
    assert!(!s.verifier.is_fresh());
    for key in [&cached, &revoked_meanwhile, &uncached] {
        let (status, code) = get_answer(&app, "/orders", key.secret.expose()).await;
        assert_eq!(
            (status, code.as_deref()),
            (503, Some("keystore_unavailable"))
        );
    }
    let status = s.verifier.status();
    assert!(!status.connected || status.syncs == syncs);

    // The daemon comes back on the same port: the verifier reconnects by itself, resumes
    // after its last change, and the replayed revocation applies.
    let requests = s.requests();
    s.daemon = Daemon::start(&s.keystore.store, &s.traffic, loopback(port));
    let status = within(s.verifier.wait_for(|st| st.connected && st.syncs > syncs)).await;
    assert_eq!(status.position, Some(s.keystore.store.last_seq().unwrap()));
    assert_eq!(status.cache_drops, 1, "resuming keeps the cache");
    assert!(s.verifier.is_fresh());
    assert_eq!(
        get_answer(&app, "/orders", cached.secret.expose()).await.0,
        200
    );
    assert_eq!(
        s.requests(),
        requests,
        "the cached key was served from the cache"
    );
    let (status, code) = get_answer(&app, "/orders", revoked_meanwhile.secret.expose()).await;
    assert_eq!((status, code.as_deref()), (401, Some("key_revoked")));
    assert_eq!(
        get_answer(&app, "/orders", uncached.secret.expose())
            .await
            .0,
        200
    );
}

/// A clock stepped forward then back (an NTP correction) shuts the trust window only until
/// the next heartbeat, not until the clock reaches the step again (hours of 503s).
#[tokio::test]
async fn a_clock_stepped_forward_and_back_trusts_the_cache_again_at_the_next_heartbeat() {
    let s = Setup::new().await;
    let fresh_again = || async {
        within(async {
            while !s.verifier.is_fresh() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    };
    let before = s.keystore.clock.now();
    s.advance(Duration::from_secs(3600));
    fresh_again().await;
    s.keystore.clock.set(before);
    assert!(!s.verifier.is_fresh(), "a clock gone back extends nothing");
    fresh_again().await;
}

/// A stream whose heartbeats arrive late (a proxy that buffers it, a congested link)
/// vouches for nothing newer than when they were written: once they arrive `max_staleness`
/// late, the verifier takes the stream for dead and opens another. (A heartbeat vouched
/// as it arrived: a revocation held up on the way was admitted for as long as the delay,
/// with no bound.) Here the verifier's own clock runs ahead of the daemon's, which is how
/// a delay looks to it.
#[tokio::test]
async fn heartbeats_that_arrive_max_staleness_late_end_the_stream() {
    let (_keystore, _daemon, own, verifier) = a_verifier_with_a_clock_of_its_own(&Arc::default());
    within(verifier.wait_for(|s| s.connected)).await;
    assert!(verifier.is_fresh());
    own.advance(time::Duration::try_from(MAX_STALENESS).unwrap());
    within(verifier.wait_for(|s| !s.connected)).await;
    // The next stream measures the clocks afresh, and vouches again.
    within(verifier.wait_for(|s| s.connected)).await;
    within(async {
        while !verifier.is_fresh() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A delay that lasts ends stream after stream. After the first, a stream counts as
/// connected only from its first heartbeat that arrives in time: `connected` does not flip
/// (nor `syncs` grow) at every reconnection, which a readiness check would see; it comes
/// back once the delay is gone.
#[tokio::test]
async fn a_delay_that_lasts_does_not_flip_connected_at_every_reconnection() {
    let (_keystore, _daemon, own, verifier) = a_verifier_with_a_clock_of_its_own(&Arc::default());
    within(verifier.wait_for(|s| s.connected)).await;
    // Every heartbeat (one a second) arrives at least `max_staleness` late: the clock moves
    // on at least once between two. (Faster, a heartbeat handled late on a loaded machine
    // would find 30 s gone since its stream caught up: a stream that worked, then lost.)
    let delay = tokio::spawn({
        let own = own.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(900)).await;
                own.advance(time::Duration::try_from(MAX_STALENESS).unwrap());
            }
        }
    });
    let ended = within(verifier.wait_for(|s| !s.connected)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = verifier.status();
    delay.abort();
    assert!(!status.connected);
    assert_eq!(status.syncs, ended.syncs, "connected again under the delay");
    within(verifier.wait_for(|s| s.connected)).await;
    assert_eq!(verifier.status().syncs, ended.syncs + 1);
}

/// A stream that takes `max_staleness` to open (its `ready` held up on the way) vouches for
/// nothing: it ends before it counts as connected or renews the trust; once streams open
/// in time again, the verifier connects.
#[tokio::test]
async fn a_stream_that_takes_max_staleness_to_open_vouches_for_nothing() {
    let traffic = Arc::new(Traffic::default());
    // The clock is the verifier's own, put in by the helper.
    let any = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    *traffic.events_open_takes.lock().unwrap() = Some((any, MAX_STALENESS));
    let (_keystore, _daemon, _own, verifier) = a_verifier_with_a_clock_of_its_own(&traffic);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = verifier.status();
    assert!(!status.connected, "{status:?}");
    assert_eq!(status.syncs, 0, "{status:?}");
    assert!(!verifier.is_fresh());
    *traffic.events_open_takes.lock().unwrap() = None;
    within(verifier.wait_for(|s| s.connected)).await;
    assert!(verifier.is_fresh());
}

/// A stream whose `ready` announced a head the daemon never reaches (a store whose head
/// went back after a failed write, a failover that lost commits) ends once it has been
/// open `max_staleness`, and the next one, announcing the head the daemon has, connects.
/// It stayed open and never connected for as long as its heartbeats kept coming.
#[tokio::test]
async fn a_head_announced_and_never_reached_ends_the_stream() {
    let traffic = Arc::new(Traffic::default());
    traffic.ready_head_ahead.store(5, Ordering::SeqCst);
    let (_keystore, _daemon, own, verifier) = a_verifier_with_a_clock_of_its_own(&traffic);
    // Heartbeats come, below the head announced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = verifier.status();
    assert!(!status.connected && status.syncs == 0, "{status:?}");
    traffic.ready_head_ahead.store(0, Ordering::SeqCst);
    own.advance(time::Duration::try_from(MAX_STALENESS).unwrap());
    within(verifier.wait_for(|s| s.connected)).await;
}

/// A daemon, and a verifier of it with a clock of its own (which the test moves ahead of
/// the daemon's: how a delay on the way looks to it), heartbeats every second. A delay of
/// `traffic.events_open_takes` is put on that clock.
fn a_verifier_with_a_clock_of_its_own(
    traffic: &Arc<Traffic>,
) -> (Keystore, Daemon, Arc<ManualClock>, RemoteVerifier) {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let keystore = Keystore::new(clock.clone());
    let daemon = Daemon::start(&keystore.store, traffic, loopback(0));
    let own = Arc::new(ManualClock::new(clock.now()));
    let mut takes = traffic.events_open_takes.lock().unwrap();
    if let Some((clock, _)) = &mut *takes {
        *clock = own.clone();
    }
    drop(takes);
    let verifier = RemoteVerifier::builder(&daemon.url(), &keystore.service_key)
        .max_staleness(MAX_STALENESS)
        .heartbeat(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .usage_interval(Duration::from_secs(3600))
        .clock(own.clone())
        .build()
        .unwrap();
    (keystore, daemon, own, verifier)
}

/// A key of a new user `reporting` (`orders:read`), verified once so that the verifier
/// holds it; returns it and the verifier's status after.
async fn a_cached_key(s: &Setup) -> (CreatedKey, RemoteStatus) {
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "k", None);
    s.caught_up().await;
    s.verify(key.secret.expose()).await.unwrap();
    (key, s.caught_up().await)
}

#[tokio::test]
async fn a_restored_backup_behind_the_verifier_resets_the_cache() {
    let mut s = Setup::new().await;
    let backup = s.keystore.backup();
    let (key, before) = a_cached_key(&s).await;
    assert_eq!(s.verifier.cached_keys(), 1);

    // The backup, older than what the verifier has seen, behind the same address: the
    // daemon answers `reset`.
    assert!(backup.store.last_seq().unwrap() < before.position.unwrap());
    let _restored = serve_instead(&mut s, &backup, &before).await;
    // The key does not exist in the backup.
    assert_eq!(s.refusal(&key).await, VerifyError::Invalid);
}

#[tokio::test]
async fn a_diverged_backup_ahead_of_the_verifier_drops_the_cache() {
    let mut s = Setup::new().await;
    let backup = s.keystore.backup();
    let (key, before) = a_cached_key(&s).await;

    // The backup took other changes since, more of them: no `reset`, but the change at
    // the verifier's position is another one.
    for i in 0..5 {
        backup.user(&format!("other{i}"), &[]);
    }
    assert!(backup.store.last_seq().unwrap() > before.position.unwrap());
    let _restored = serve_instead(&mut s, &backup, &before).await;
    assert_eq!(s.refusal(&key).await, VerifyError::Invalid);
}

#[tokio::test]
async fn a_restored_store_at_the_verifiers_position_drops_the_cache() {
    let mut s = Setup::new().await;
    let (key, before) = a_cached_key(&s).await;

    // Same records, same chain, same position: only the lineage tells it is a restore.
    let restored = s.keystore.restored();
    assert_eq!(Some(restored.store.last_seq().unwrap()), before.position);
    let port = s.daemon.addr.port();
    s.daemon.stop();
    let _restored = Daemon::start(
        &restored.store,
        &Arc::new(Traffic::default()),
        loopback(port),
    );
    let status = within(
        s.verifier
            .wait_for(|st| st.connected && st.syncs > before.syncs),
    )
    .await;
    assert_eq!(status.cache_drops, before.cache_drops + 1);
    assert_eq!(s.verifier.cached_keys(), 0);
    // The key is in the backup: it verifies again, from the restored store.
    s.verify(key.secret.expose()).await.unwrap();
}

#[tokio::test]
async fn a_service_key_without_latchkey_verify_gives_503_never_401() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let keystore = Keystore::new(clock);
    let traffic = Arc::new(Traffic::default());
    let daemon = Daemon::start(&keystore.store, &traffic, loopback(0));
    let weak = keystore.user("weak", &["orders:read"]);
    let weak_key = keystore.key(weak, "weak", None);
    let misconfigured = Keystore {
        service_key: weak_key.secret.expose().to_owned(),
        ..keystore
    };
    let verifier = verifier(&daemon.url(), &misconfigured);
    let app = app(verifier.clone());
    let (status, code) = get_answer(&app, "/orders", weak_key.secret.expose()).await;
    assert_eq!(
        (status, code.as_deref()),
        (503, Some("keystore_unavailable"))
    );
    assert!(!verifier.status().connected);
}

#[tokio::test]
async fn nothing_listening_gives_503_at_once() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind(loopback(0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let keystore = Keystore::new(clock);
    let verifier = verifier(&format!("http://{}", loopback(port)), &keystore);
    let key = ApiKey::generate(&Prefix::new("lk").unwrap(), Env::Live);
    let answer = within(verifier.verify(&key)).await;
    assert!(
        matches!(answer, Err(VerifyError::Unavailable(_))),
        "{answer:?}"
    );
    let (status, code) = get_answer(&app(verifier), "/orders", key.expose()).await;
    assert_eq!(
        (status, code.as_deref()),
        (503, Some("keystore_unavailable"))
    );
}

#[tokio::test]
async fn a_zero_usage_interval_is_refused_at_build() {
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    let built = RemoteVerifier::builder("http://127.0.0.1:9", key.expose())
        .usage_interval(std::time::Duration::ZERO)
        .build();
    let err = built.expect_err("a zero interval must be refused");
    assert!(err.to_string().contains("usage_interval"), "{err}");
}

/// Stops the daemon and serves `backup` on its port instead; waits until the verifier
/// synced with it, and checks that it dropped its cache once and follows the backup.
async fn serve_instead(s: &mut Setup, backup: &Keystore, before: &RemoteStatus) -> Daemon {
    let port = s.daemon.addr.port();
    s.daemon.stop();
    let restored = Daemon::start(&backup.store, &Arc::new(Traffic::default()), loopback(port));
    let status = within(
        s.verifier
            .wait_for(|st| st.connected && st.syncs > before.syncs),
    )
    .await;
    assert_eq!(status.cache_drops, before.cache_drops + 1);
    assert_eq!(status.position, Some(backup.store.last_seq().unwrap()));
    assert_eq!(s.verifier.cached_keys(), 0);
    restored
}
