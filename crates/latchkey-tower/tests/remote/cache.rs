//! Hits, misses, coalescing, negative caching, expiry, usage reports.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use latchkey_tower::latchkey_core::{Actor, ApiKey, Clock, CreatedKey, Env, Prefix, VerifyError};
use latchkey_tower::{Charged, Verifier};

use latchkey_tower::remote::RemoteVerifier;

use crate::daemon::Traffic;
use crate::{MAX_STALENESS, Setup, within};

#[tokio::test]
async fn a_miss_asks_the_daemon_once_then_hits_make_no_request() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    let expected = s.keystore.store.verify(key.secret.expose()).unwrap();

    let before = s.requests();
    let principal = s.verify(key.secret.expose()).await.unwrap();
    assert_eq!(principal, expected);
    assert_eq!(s.requests(), before + 1);
    for _ in 0..10 {
        assert_eq!(s.verify(key.secret.expose()).await.unwrap(), expected);
    }
    assert_eq!(s.requests(), before + 1, "hits went to the daemon");
    assert_eq!(s.verifier.cached_keys(), 1);
}

#[tokio::test]
async fn concurrent_misses_for_one_key_make_one_request() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    let other = s.keystore.key(user, "other", None);
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    let before = s.requests();

    // Sixty-four verifications started together, before any is polled.
    let futures: Vec<_> = (0..64).map(|_| s.verifier.verify(&parsed)).collect();
    let other_future = s
        .verifier
        .verify(&ApiKey::parse(other.secret.expose()).unwrap());
    let answers = within(join_all(futures)).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().key_id == key.key.id)
    );
    assert_eq!(within(other_future).await.unwrap().key_id, other.key.id);
    assert_eq!(s.requests(), before + 2, "one request per key");
}

#[tokio::test]
async fn a_cancelled_miss_still_answers_the_others_and_fills_the_cache() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    let before = s.requests();
    let first = s.verifier.verify(&parsed);
    let second = s.verifier.verify(&parsed);
    drop(first);
    assert!(within(second).await.is_ok());
    assert!(s.verify(key.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), before + 1);
}

#[tokio::test]
async fn refusals_are_cached_briefly() {
    let s = Setup::new().await;
    let prefix = Prefix::new("lk").unwrap();
    let unknown = ApiKey::generate(&prefix, Env::Live);
    let before = s.requests();
    for _ in 0..5 {
        assert_eq!(
            s.verify(unknown.expose()).await.unwrap_err(),
            VerifyError::Invalid
        );
    }
    assert_eq!(s.requests(), before + 1);
    // Past negative_ttl (1 s), the daemon is asked again.
    s.advance(Duration::from_millis(1500));
    assert_eq!(
        s.verify(unknown.expose()).await.unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(s.requests(), before + 2);
}

/// A `negative_ttl` past the calendar's end caches a refusal for ever, and refuses: it
/// panicked at the first refusal, and every unknown key answered 503.
#[tokio::test]
async fn an_endless_negative_ttl_caches_refusals_for_ever() {
    let s = Setup::new().await;
    let verifier = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .negative_ttl(Duration::MAX)
        .clock(s.keystore.clock.clone())
        .build()
        .unwrap();
    let unknown = ApiKey::generate(&Prefix::new("lk").unwrap(), Env::Live);
    for _ in 0..2 {
        let refused = within(verifier.verify(&unknown)).await.unwrap_err();
        assert_eq!(refused, VerifyError::Invalid);
    }
}

#[tokio::test]
async fn a_cached_key_stops_at_its_expiry_without_an_event() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let expires_at = s.keystore.clock.now() + time::Duration::seconds(3);
    let key = s.keystore.key(user, "temporary", Some(expires_at));
    s.caught_up().await;
    assert!(s.verify(key.secret.expose()).await.is_ok());
    let after_miss = s.requests();
    assert!(s.verify(key.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), after_miss);

    s.advance(Duration::from_secs(3));
    assert_eq!(s.refusal(&key).await, VerifyError::Expired);
    assert_eq!(s.requests(), after_miss, "expiry is known without asking");
    // Expiry is final: told again without asking, even with the daemon away (it was
    // answered 503 then, telling the client to retry a key that never works again).
    assert_eq!(s.refusal(&key).await, VerifyError::Expired);
    assert_eq!(s.requests(), after_miss);
    // Nor does a clock set back make it valid again (it did, from the cache).
    s.keystore
        .clock
        .set(expires_at - time::Duration::seconds(2));
    assert_eq!(s.refusal(&key).await, VerifyError::Expired);
    s.keystore.clock.set(expires_at);
    let mut s = s;
    s.daemon.stop();
    s.advance(MAX_STALENESS);
    assert_eq!(s.refusal(&key).await, VerifyError::Expired);
}

/// A key of a new user `reporting`, verified four times: one miss (counted by the daemon),
/// three hits.
async fn a_key_with_three_hits(s: &Setup) -> CreatedKey {
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    for _ in 0..4 {
        s.verify(key.secret.expose()).await.unwrap();
    }
    key
}

#[tokio::test]
async fn hits_are_reported_in_batches() {
    let s = Setup::new().await;
    let key = a_key_with_three_hits(&s).await;
    s.verifier.flush_usage().await;
    let reports = s.traffic.usage.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let items = reports[0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["key_id"], key.key.id.to_string());
    assert_eq!(items[0]["count"], 3);
    let at = time::OffsetDateTime::parse(
        items[0]["last_used_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(at, s.keystore.clock.now());
    // The daemon's real `POST /v1/usage` took them: the miss it counted itself plus the
    // three hits reported.
    let record = s.keystore.store.key(key.key.id).unwrap();
    assert_eq!(record.usage_count, 4);
    assert_eq!(record.last_used_at, Some(s.keystore.clock.now()));

    // Nothing new: nothing sent.
    s.verifier.flush_usage().await;
    assert_eq!(s.traffic.usage.lock().unwrap().len(), 1);
}

/// A report whose answer was lost (the daemon recorded it) goes again under the same
/// `Idempotency-Key`, and the daemon records it once; new hits wait for the next report.
/// (Merged back into the pending figures, it was counted once per lost answer: 99 uses for
/// 50 in a hunt.)
#[tokio::test]
async fn a_usage_report_whose_answer_was_lost_is_recorded_once() {
    let s = Setup::new().await;
    let key = a_key_with_three_hits(&s).await;
    s.traffic.lose_usage_answers.store(2, Ordering::SeqCst);
    s.verifier.flush_usage().await;
    s.verify(key.secret.expose()).await.unwrap();
    s.verifier.flush_usage().await;
    s.verifier.flush_usage().await;
    let uses = s.keystore.store.key(key.key.id).unwrap().usage_count;
    assert_eq!(uses, 5, "the miss, the three hits once, and the hit after");
    let reports = s.traffic.usage.lock().unwrap().clone();
    assert_eq!(reports.len(), 4, "{reports:?}");
    assert!(reports[..3].iter().all(|r| r == &reports[0]), "{reports:?}");
}

/// Two flushes at once (the periodic one and `flush_usage`) take turns: each sets aside
/// the report whose answer it lost, and neither overwrites the other's.
#[tokio::test]
async fn flushes_at_once_record_every_use_once() {
    let s = Setup::new().await;
    let key = a_key_with_three_hits(&s).await;
    // Answered 502 without reaching the daemon, as a proxy whose upstream is away answers:
    // each report is set aside, to be sent again as it was.
    *s.traffic.usage_status.lock().unwrap() = Some(http::StatusCode::BAD_GATEWAY);
    // The first flush's report is on its way when a hit comes and the second flush starts.
    let second = async {
        s.verify(key.secret.expose()).await.unwrap();
        s.verifier.flush_usage().await;
    };
    tokio::join!(s.verifier.flush_usage(), second);
    *s.traffic.usage_status.lock().unwrap() = None;
    s.verifier.flush_usage().await;
    let uses = s.keystore.store.key(key.key.id).unwrap().usage_count;
    assert_eq!(
        uses, 5,
        "the miss, the three hits and the hit after, once each"
    );
}

/// A report the daemon answers without taking it (429 under load, 401 or 403) was not
/// recorded: its figures go again fresh, with the ones gathered since, in one report. Held
/// back as it was, to be sent again first, it would hold back every later report while it
/// kept failing.
#[tokio::test]
async fn a_usage_report_the_daemon_did_not_take_goes_again_with_later_figures() {
    let s = Setup::new().await;
    let key = a_key_with_three_hits(&s).await;
    *s.traffic.usage_status.lock().unwrap() = Some(http::StatusCode::TOO_MANY_REQUESTS);
    s.verifier.flush_usage().await;
    s.verify(key.secret.expose()).await.unwrap();
    *s.traffic.usage_status.lock().unwrap() = None;
    s.verifier.flush_usage().await;
    let uses = s.keystore.store.key(key.key.id).unwrap().usage_count;
    assert_eq!(
        uses, 5,
        "the miss, the three hits and the hit after, once each"
    );
    let reports = s.traffic.usage.lock().unwrap().clone();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[1]["items"][0]["count"], 4, "{reports:?}");
}

/// A report whose answer was lost, sent again and answered 429, may have been recorded the
/// first time: it waits, as it was and under its key, rather than going again fresh (7
/// uses for 4).
#[tokio::test]
async fn a_report_sent_again_and_not_taken_is_still_recorded_once() {
    let s = Setup::new().await;
    let key = a_key_with_three_hits(&s).await;
    s.traffic.lose_usage_answers.store(1, Ordering::SeqCst);
    s.verifier.flush_usage().await;
    *s.traffic.usage_status.lock().unwrap() = Some(http::StatusCode::TOO_MANY_REQUESTS);
    s.verifier.flush_usage().await;
    *s.traffic.usage_status.lock().unwrap() = None;
    s.verifier.flush_usage().await;
    let uses = s.keystore.store.key(key.key.id).unwrap().usage_count;
    assert_eq!(uses, 4, "the miss and the three hits, once each");
}

#[tokio::test]
async fn large_usage_reports_are_sent_in_parts_the_daemon_accepts() {
    use latchkey_tower::latchkey_core::limits::{MAX_BODY_BYTES, MAX_USAGE_ITEMS};
    use latchkey_tower::latchkey_core::{Actor, NewKey};

    let s = Setup::new().await;
    let user = s.keystore.user("many", &["orders:read"]);
    let new: Vec<NewKey> = (0..=MAX_USAGE_ITEMS)
        .map(|i| NewKey {
            name: format!("k{i}"),
            user_id: user,
            ..NewKey::default()
        })
        .collect();
    let keys = s
        .keystore
        .store
        .create_keys(&Actor::system(), &new)
        .unwrap();
    for key in &keys {
        s.verify(key.secret.expose()).await.unwrap(); // the miss
        s.verify(key.secret.expose()).await.unwrap(); // a hit, to report
    }
    s.verifier.flush_usage().await;
    let reports = s.traffic.usage.lock().unwrap().clone();
    let sizes: Vec<usize> = reports
        .iter()
        .map(|r| r["items"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [MAX_USAGE_ITEMS, 1]);
    for report in &reports {
        assert!(serde_json::to_vec(report).unwrap().len() <= MAX_BODY_BYTES);
    }
    // Both parts were accepted: nothing is left to send, and every key counts its hit.
    assert!(format!("{:?}", s.verifier).contains("usage_pending: 0"));
    for key in [&keys[0], &keys[MAX_USAGE_ITEMS]] {
        assert_eq!(s.keystore.store.key(key.key.id).unwrap().usage_count, 2);
    }
}

#[tokio::test]
async fn a_daemon_without_usage_reports_is_harmless() {
    let s = Setup::new().await;
    // A daemon that predates `POST /v1/usage` answers 404.
    s.traffic.refuse_usage.store(true, Ordering::SeqCst);
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    s.verify(key.secret.expose()).await.unwrap();
    s.verify(key.secret.expose()).await.unwrap();
    // The figures are dropped, and verification goes on.
    s.verifier.flush_usage().await;
    assert!(format!("{:?}", s.verifier).contains("usage_pending: 0"));
    assert!(s.verify(key.secret.expose()).await.is_ok());
}

/// Imports `text`, a key another system issued (not latchkey's format), for a new user
/// holding `orders:read`.
fn import_for_a_new_user(s: &Setup, text: &str) {
    use latchkey_tower::latchkey_core::{Actor, ImportKey, ImportSecret};
    let user = s.keystore.user("legacy", &["orders:read"]);
    let item = ImportKey {
        secret: ImportSecret::Full(text.to_owned()),
        prefix: None,
        name: Some("from the old system".to_owned()),
        expires_at: None,
        scopes: None,
        meta: None,
    };
    let imported = s
        .keystore
        .store
        .import_keys(&Actor::system(), user, &[item])
        .unwrap();
    assert!(imported[0].is_ok(), "{imported:?}");
}

/// A verifier of `s`'s daemon that asks it about imported keys, connected.
async fn verifier_of_imported_keys(s: &Setup) -> RemoteVerifier {
    let on = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .imported_keys(true)
        .clock(s.keystore.clock.clone())
        .build()
        .unwrap();
    within(on.wait_for(|status| status.connected)).await;
    on
}

#[tokio::test]
async fn imported_keys_are_asked_of_the_daemon_only_when_enabled() {
    let s = Setup::new().await;
    let text = "sk_legacy_0123456789abcdefXYZ";
    import_for_a_new_user(&s, text);

    // Off (the default): refused as malformed, without a request.
    let before = s.requests();
    assert!(s.verifier.verify_foreign(text).is_none());
    assert_eq!(s.requests(), before);

    // On: asked of the daemon once, then answered from the cache.
    let on = verifier_of_imported_keys(&s).await;
    let before = s.requests();
    let principal = within(on.verify_foreign(text).expect("asked"))
        .await
        .unwrap();
    assert!(principal.has("orders:read"));
    assert_eq!(s.requests(), before + 1);
    within(on.verify_foreign(text).expect("asked"))
        .await
        .unwrap();
    assert_eq!(s.requests(), before + 1, "a hit went to the daemon");
    // A wrong text of the same shape is refused like any unknown key.
    let wrong = within(
        on.verify_foreign("sk_legacy_0123456789abcdefXYy")
            .expect("asked"),
    )
    .await;
    assert_eq!(wrong.unwrap_err(), VerifyError::Invalid);
    // Text no import could be is never sent.
    assert!(on.verify_foreign("short").is_none());
}

/// The status, headers and body of `GET /orders` with `key` through `app`.
async fn answer(
    app: &axum::Router,
    key: &str,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = http::Request::get("/orders")
        .header("authorization", format!("Bearer {key}"))
        .body(crate::daemon::empty())
        .unwrap();
    let (parts, body) = app.clone().oneshot(request).await.unwrap().into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_test_only_layer_refuses_imported_keys_as_live_ones_without_a_lookup() {
    use axum::Router;
    use axum::routing::get;
    use latchkey_tower::ApiKeyAuthLayer;

    let s = Setup::new().await;
    // Imported keys are `live` keys.
    let imported = "sk_live_0123456789abcdefXYZ";
    import_for_a_new_user(&s, imported);
    let user = s.keystore.user("reporting", &["orders:read"]);
    let live = s.keystore.key(user, "dashboard", None);
    let routes = Router::new().route("/orders", get(|| async { "orders" }));
    let embedded = ApiKeyAuthLayer::new(s.keystore.store.clone());
    let remote = ApiKeyAuthLayer::new(verifier_of_imported_keys(&s).await);
    let test_only = [
        routes
            .clone()
            .layer(embedded.clone().accept_only(Env::Test)),
        routes.clone().layer(remote.clone().accept_only(Env::Test)),
    ];
    for app in &test_only {
        let before = s.requests();
        let refused = answer(app, imported).await;
        assert_eq!(refused.0, 401);
        assert_eq!(s.requests(), before, "the daemon was asked");
        // The answer of a native `live` key, byte for byte.
        assert_eq!(refused, answer(app, live.secret.expose()).await);
        let problem = serde_json::from_slice::<serde_json::Value>(&refused.2).unwrap();
        assert_eq!(problem["code"], "invalid_key");
    }
    // Both accept the imported key, as any layer accepting `live` keys does.
    let all = [routes.clone().layer(embedded), routes.layer(remote)];
    for app in &all {
        assert_eq!(answer(app, imported).await.0, 200);
    }
}

#[tokio::test]
async fn an_imported_key_longer_than_a_latchkey_key_authenticates_through_the_layer() {
    use axum::Router;
    use axum::routing::get;
    use latchkey_tower::ApiKeyAuthLayer;
    use latchkey_tower::latchkey_core::key::MAX_KEY_LEN;

    let s = Setup::new().await;
    // A 100-character secret key of another system, as Stripe's are.
    let imported = format!("sk_live_{}", "0123456789abcdefXYZ".repeat(5).split_at(92).0);
    assert!(imported.len() == 100 && imported.len() > MAX_KEY_LEN);
    import_for_a_new_user(&s, &imported);
    let routes = Router::new().route("/orders", get(|| async { "orders" }));
    let embedded = routes
        .clone()
        .layer(ApiKeyAuthLayer::new(s.keystore.store.clone()));
    let remote = routes.layer(ApiKeyAuthLayer::new(verifier_of_imported_keys(&s).await));
    for app in [&embedded, &remote] {
        assert_eq!(answer(app, &imported).await.0, 200);
        // Longer than any key, imported or not: refused unread.
        let (status, _, body) = answer(app, &"x".repeat(513)).await;
        assert_eq!(status, 401);
        let problem = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
        assert_eq!(
            problem["detail"],
            "The credential is longer than any API key."
        );
    }
}

#[tokio::test]
async fn an_answer_from_a_daemon_behind_the_event_stream_is_used_but_not_cached() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    let seen = s.caught_up().await.position.expect("a position");
    // Another daemon of the cluster, one change behind what the stream announced: it may
    // not have applied a revocation yet.
    *s.traffic.verify_seq.lock().unwrap() = Some(seen - 1);
    let before = s.requests();
    for _ in 0..3 {
        s.verify(key.secret.expose()).await.unwrap();
    }
    assert_eq!(s.requests(), before + 3, "each asked again");
    assert_eq!(s.verifier.cached_keys(), 0);
    // A daemon as far as the stream: cached as ever.
    *s.traffic.verify_seq.lock().unwrap() = Some(seen);
    for _ in 0..3 {
        s.verify(key.secret.expose()).await.unwrap();
    }
    assert_eq!(s.requests(), before + 4);
    assert_eq!(s.verifier.cached_keys(), 1);
}

/// The same for a refusal: a daemon behind the stream may not have applied the change
/// that re-enabled the key.
#[tokio::test]
async fn a_refusal_from_a_daemon_behind_the_event_stream_is_not_cached() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    crate::invalidation::set_key_enabled(&s, &key, false).await;
    let seen = s.caught_up().await.position.expect("a position");
    *s.traffic.verify_seq.lock().unwrap() = Some(seen - 1);
    let before = s.requests();
    for _ in 0..3 {
        assert_eq!(s.refusal(&key).await, VerifyError::Disabled);
    }
    assert_eq!(s.requests(), before + 3, "each asked again");
    *s.traffic.verify_seq.lock().unwrap() = Some(seen);
    for _ in 0..3 {
        assert_eq!(s.refusal(&key).await, VerifyError::Disabled);
    }
    assert_eq!(s.requests(), before + 4, "cached as ever");
}

/// An imported key's allowlist holds through a remote verifier: the daemon is told the
/// client's address, as for a native key (it was told none, and refused every client).
#[tokio::test]
async fn an_imported_key_s_allowlist_is_checked_against_the_client_s_address() {
    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use latchkey_tower::ApiKeyAuthLayer;
    use latchkey_tower::latchkey_core::{Actor, KeyPatch, KeyQuery};
    use tower::ServiceExt;

    let s = Setup::new().await;
    let imported = "sk_live_0123456789abcdefALLOW";
    import_for_a_new_user(&s, imported);
    let store = &s.keystore.store;
    let listed = store
        .list_keys(&KeyQuery {
            search: Some("from the old system".into()),
            ..KeyQuery::default()
        })
        .unwrap();
    let patch = KeyPatch {
        allowed_ips: Some(vec!["127.0.0.0/8".parse().unwrap()]),
        ..KeyPatch::default()
    };
    store
        .update_key(&Actor::system(), listed.items[0].id, patch)
        .unwrap();
    let app = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .layer(ApiKeyAuthLayer::new(verifier_of_imported_keys(&s).await));
    let from = |ip: &str| {
        let mut request = http::Request::get("/orders")
            .header("authorization", format!("Bearer {imported}"))
            .body(crate::daemon::empty())
            .unwrap();
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
        request
    };
    let allowed = app.clone().oneshot(from("127.0.0.1")).await.unwrap();
    assert_eq!(allowed.status(), 200);
    let elsewhere = app.oneshot(from("203.0.113.9")).await.unwrap();
    assert_eq!(elsewhere.status(), 403);
    let body = elsewhere.into_body().collect().await.unwrap().to_bytes();
    let problem = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    assert_eq!(problem["code"], "ip_not_allowed");
}

/// Requests that join another's miss are each checked and charged: with no trusted cache
/// to hold a lease, each asks the daemon itself. Before, they were admitted with the first
/// request's answer, uncharged and whatever their address.
#[tokio::test]
async fn requests_that_join_a_miss_are_each_charged_and_checked() {
    use latchkey_tower::latchkey_core::{Actor, KeyPatch, RateLimit};

    let s = Setup::new().await;
    let verifier = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .max_staleness(Duration::ZERO)
        .usage_interval(Duration::from_secs(3600))
        .clock(s.keystore.clock.clone())
        .build()
        .unwrap();
    let user = s.keystore.user("partner", &["orders:read"]);
    let limited = s.keystore.key(user, "limited", None);
    let fenced = s.keystore.key(user, "fenced", None);
    let patch = |id, patch| {
        s.keystore
            .store
            .update_key(&Actor::system(), id, patch)
            .unwrap()
    };
    let once_an_hour = RateLimit {
        name: "hourly".into(),
        limit: 1,
        window_seconds: 3600,
    };
    patch(
        limited.key.id,
        KeyPatch {
            rate_limits: Some(vec![once_an_hour]),
            ..KeyPatch::default()
        },
    );
    patch(
        fenced.key.id,
        KeyPatch {
            allowed_ips: Some(vec!["127.0.0.0/8".parse().unwrap()]),
            ..KeyPatch::default()
        },
    );

    // Fifty requests of a key allowed one an hour, started together: one is admitted.
    let parsed = ApiKey::parse(limited.secret.expose()).unwrap();
    let loopback = Some("127.0.0.1".parse().unwrap());
    let futures: Vec<_> = (0..50)
        .map(|_| verifier.verify_from(&parsed, loopback))
        .collect();
    let admitted = within(join_all(futures))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(admitted, 1, "admitted past a limit of one");

    // One request from an allowed address, the others from elsewhere, started together:
    // only the first is admitted.
    let parsed = ApiKey::parse(fenced.secret.expose()).unwrap();
    let mut futures = vec![verifier.verify_from(&parsed, loopback)];
    let elsewhere = Some("10.0.0.1".parse().unwrap());
    futures.extend((0..20).map(|_| verifier.verify_from(&parsed, elsewhere)));
    let answers = within(join_all(futures)).await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    for answer in &answers[1..] {
        assert!(
            matches!(answer, Err(VerifyError::IpNotAllowed)),
            "{answer:?}"
        );
    }
}

/// A key of a new user `partner` limited to `limit` requests an hour, the verifier caught
/// up with its creation.
async fn a_metered_key(s: &Setup, limit: u32) -> CreatedKey {
    let user = s.keystore.user("partner", &["orders:read"]);
    let key = s.keystore.key_with_hourly_limit(user, "metered", limit);
    s.caught_up().await;
    key
}

/// A rate limit's slice is valid from when it was asked for, not from when a slow answer
/// came: each lease answer here takes 0.9 s, and a slice of 2 granted at +0.9 s for 2 s
/// is void at +3 s (it lasted to +3.8 s, counted from the answer: admitted later than the
/// daemon meant).
#[tokio::test]
async fn a_slow_lease_answer_does_not_lengthen_its_slice() {
    let s = Setup::new().await;
    // One request a second.
    let key = a_metered_key(&s, 3600).await;
    s.verify(key.secret.expose()).await.unwrap(); // `/v1/verify` counts it
    let takes = (s.keystore.clock.clone(), Duration::from_millis(900));
    *s.traffic.lease_answer_takes.lock().unwrap() = Some(takes);
    // At +0: a slice of 1, answered at +0.9. At +0.9, used up in time (and the limit has
    // room): a slice of 2, answered at +1.8, valid until +2.9.
    s.verify(key.secret.expose()).await.unwrap();
    s.verify(key.secret.expose()).await.unwrap();
    let leases = s.traffic.leases.load(Ordering::SeqCst);
    assert_eq!(leases, 2);
    s.advance(Duration::from_millis(1_200));
    s.verify(key.secret.expose()).await.unwrap();
    assert_eq!(
        s.traffic.leases.load(Ordering::SeqCst),
        leases + 1,
        "the slice was void at +3 s: the request asked for another"
    );
}

/// A daemon that cannot take credits back is asked once per concurrent give-back, not once
/// per key (one request timeout each: a stop took 2 s + 0.25 s a key with the daemon
/// down); the leases not tried keep their credits, and give them back once it can.
#[tokio::test]
async fn a_failed_give_back_stops_the_others_and_they_keep_their_credits() {
    let s = Setup::new().await;
    let user = s.keystore.user("partner", &["orders:read"]);
    let keys: Vec<_> = (0..20)
        .map(|_| s.keystore.key_with_credits(user, 1_000))
        .collect();
    s.caught_up().await;
    for key in &keys {
        for _ in 0..3 {
            s.verify(key.secret.expose()).await.unwrap();
        }
    }
    s.traffic.refuse_returns.store(true, Ordering::SeqCst);
    within(s.verifier.flush_usage()).await;
    let tried = s.traffic.returns.load(Ordering::SeqCst);
    assert!((1..=8).contains(&tried), "{tried} give-backs tried");
    s.traffic.refuse_returns.store(false, Ordering::SeqCst);
    within(s.verifier.flush_usage()).await;
    // What the first tries held stays spent; every other key's balance is whole again.
    let whole = || {
        keys.iter()
            .filter(|k| {
                let key = s.keystore.store.key(k.key.id).unwrap();
                key.credits.map(|c| c.remaining) == Some(1_000 - 3)
            })
            .count()
    };
    within(async {
        while whole() < 20 - tried {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A metered key's uses are counted once each: asking the daemon for slices of its limits
/// is no use of the key (it counted one per lease before).
#[tokio::test]
async fn a_metered_key_s_uses_are_counted_once_each() {
    let s = Setup::new().await;
    // A small limit leases one request at a time: nearly every request asks for more.
    let key = a_metered_key(&s, 20).await;
    for _ in 0..10 {
        s.verify(key.secret.expose()).await.unwrap();
    }
    within(s.verifier.flush_usage()).await;
    let seen = s.keystore.store.key(key.key.id).unwrap();
    assert_eq!(seen.usage_count, 10);
}

/// Requests of a metered key within its limits, started together on several threads, are
/// all admitted: each grant goes to the first few, and the others ask again (they asked
/// once and were answered 503 when other requests had drained the grant). Past the limit,
/// a 429, never a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metered_key_s_requests_started_together_are_admitted_up_to_its_limit() {
    let s = Setup::new().await;
    let user = s.keystore.user("partner", &["orders:read"]);
    let verifier = s.verifier.clone();
    let together = |parsed: &ApiKey, n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(verifier.verify(parsed)))
            .collect();
        async move {
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap());
            }
            answers
        }
    };
    for round in 0..5 {
        // A small limit leases a request or two at a time.
        let key = s
            .keystore
            .key_with_hourly_limit(user, &format!("metered-{round}"), 60);
        s.caught_up().await;
        let parsed = ApiKey::parse(key.secret.expose()).unwrap();
        let answers = within(together(&parsed, 50)).await;
        let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
        assert!(refused.is_empty(), "within the limit: {refused:?}");
        let answers = within(together(&parsed, 20)).await;
        let admitted = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(admitted, 10, "{answers:?}");
        for answer in answers.iter().filter(|a| a.is_err()) {
            assert!(
                matches!(answer, Err(VerifyError::RateLimited(_))),
                "{answer:?}"
            );
        }
    }
}

/// A usage figure the daemon refuses (this machine's clock runs two minutes ahead of the
/// daemon's) is dropped, with a warning, never sent again and again: before, it was kept
/// and blocked every report after it.
#[tokio::test]
async fn a_usage_figure_the_daemon_refuses_is_dropped_not_resent_forever() {
    use latchkey_tower::latchkey_core::ManualClock;

    let s = Setup::new().await;
    let ahead = std::sync::Arc::new(ManualClock::new(
        s.keystore.clock.now() + time::Duration::minutes(2),
    ));
    let verifier = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .usage_interval(Duration::from_secs(3600))
        .clock(ahead)
        .build()
        .unwrap();
    within(verifier.wait_for(|status| status.connected)).await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let key = s.keystore.key(user, "dashboard", None);
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    for _ in 0..3 {
        verifier.verify(&parsed).await.unwrap();
    }
    let reports = || s.traffic.usage.lock().unwrap().len();
    let before = reports();
    within(verifier.flush_usage()).await;
    assert_eq!(reports(), before + 1, "the hits were reported");
    within(verifier.flush_usage()).await;
    assert_eq!(reports(), before + 1, "a refused figure was sent again");

    // Many keys' figures, all refused: three round trips, not one per key.
    for i in 0..8 {
        let key = s.keystore.key(user, &format!("k{i}"), None);
        let parsed = ApiKey::parse(key.secret.expose()).unwrap();
        for _ in 0..2 {
            verifier.verify(&parsed).await.unwrap();
        }
    }
    let before = reports();
    within(verifier.flush_usage()).await;
    assert_eq!(reports(), before + 3, "one report per refused figure");
}

/// A verifier built from `builder` (on the setup's clock) that spent 5 requests of a key
/// of 1,000 credits; the key, and its text parsed.
async fn spent_five_of_a_thousand(
    s: &Setup,
    builder: latchkey_tower::remote::RemoteVerifierBuilder,
) -> (RemoteVerifier, CreatedKey, ApiKey) {
    let verifier = builder
        .heartbeat(Duration::from_secs(1))
        .clock(s.keystore.clock.clone())
        .build()
        .unwrap();
    let user = s.keystore.user("partner", &["orders:read"]);
    let key = s.keystore.key_with_credits(user, 1_000);
    let head = s.keystore.store.last_seq().unwrap();
    within(verifier.wait_for(|st| st.connected && st.position >= Some(head))).await;
    let parsed = ApiKey::parse(key.secret.expose()).unwrap();
    for _ in 0..5 {
        verifier.verify(&parsed).await.unwrap();
    }
    (verifier, key, parsed)
}

/// The credits leased for a key whose answer leaves the cache (here, past `cache_ttl`) go
/// back to the daemon: a slow key no longer loses the rest of its slice every few minutes.
#[tokio::test]
async fn credits_leased_for_an_answer_that_leaves_the_cache_go_back() {
    let s = Setup::new().await;
    let builder = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .cache_ttl(Duration::from_secs(1))
        .usage_interval(Duration::from_secs(3600));
    let (verifier, key, parsed) = spent_five_of_a_thousand(&s, builder).await;
    s.advance(Duration::from_secs(2));
    within(verifier.wait_for(|st| st.connected)).await;
    for _ in 0..5 {
        verifier.verify(&parsed).await.unwrap();
    }
    within(verifier.flush_usage()).await;
    let seen = s.keystore.store.key(key.key.id).unwrap();
    assert_eq!(seen.credits.map(|c| c.remaining), Some(990));
}

/// The credits a lease holds unspent go back at the first usage report after which no
/// request took from it, as a daemon gives back an idle key's slice: a quiet app does not
/// keep them from the other apps. It did, until its next request of the key found the
/// answer past `cache_ttl` (minutes or hours later).
#[tokio::test]
async fn an_idle_lease_s_credits_go_back_at_the_next_report() {
    let s = Setup::new().await;
    let builder = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .usage_interval(Duration::from_millis(200));
    let (verifier, key, parsed) = spent_five_of_a_thousand(&s, builder).await;
    let remaining = || {
        let seen = s.keystore.store.key(key.key.id).unwrap();
        seen.credits.map(|c| c.remaining)
    };
    // The lease held more than the 5 spent (slices double while the key is busy).
    within(async {
        while remaining() != Some(995) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Still cached: the next request asks for credits anew, and is admitted.
    verifier.verify(&parsed).await.unwrap();
}

/// A route's cost close to the credits left (1,000 of 1,099) is charged, though the daemon
/// grants a lease a twentieth of what is left at a time: what the lease gathered goes
/// back, and the daemon charges the cost in one step. It was refused once
/// (`usage_exceeded`, with no word of a refill), after 32 grants gathered ~890. A cost above
/// what is left is then refused, and takes nothing.
#[tokio::test]
async fn a_cost_close_to_the_credits_left_is_charged_in_one_step() {
    let s = Setup::new().await;
    let key = s.partner_key_with_credits(1_100).await;
    let text = key.secret.expose();
    within(s.verify(text)).await.unwrap();
    let verifier = &s.verifier;
    let charge = |cost| async move {
        match verifier.charge_extra(text, None, cost) {
            Charged::Done(answer) => answer,
            Charged::Waiting(task) => within(task).await.unwrap(),
        }
    };
    assert_eq!(charge(1_000).await, Ok(()));
    // A second request, admitted from the lease, whose route's cost is refused: its own
    // credit goes back. (Charged with no request before it, the refusal would give back a
    // credit nothing took: since a verification's charge can come back too, re-check s50
    // R1, the daemon would take it.)
    let mark = verifier.credit_mark();
    within(s.verify(text)).await.unwrap();
    assert!(
        matches!(charge(1_000).await, Err(VerifyError::UsageExceeded { .. })),
        "99 left"
    );
    verifier.give_back_credit(text, mark);
    within(s.verifier.flush_usage()).await;
    let seen = s.keystore.store.key(key.key.id).unwrap();
    assert_eq!(seen.credits.map(|c| c.remaining), Some(99));
}

/// A route's cost above the whole of a key's rate limit never passes: refused with
/// `Retry-After` one window, as the daemon and the embedded layer answer, without asking
/// the daemon. (It was answered `Retry-After: 2`, again and again, in a hunt.)
#[tokio::test]
async fn a_cost_above_a_whole_limit_is_refused_for_one_window() {
    let s = Setup::new().await;
    let key = a_metered_key(&s, 5).await;
    let text = key.secret.expose();
    within(s.verify(text)).await.unwrap();
    let leases = s.traffic.leases.load(Ordering::SeqCst);
    // An extra 5 after the request's own 1: 6 of 5, as 11 of 5.
    for extra in [5, 10] {
        let refusal = match s.verifier.charge_extra(text, None, extra) {
            Charged::Done(answer) => answer,
            Charged::Waiting(task) => within(task).await.unwrap(),
        };
        let Err(VerifyError::RateLimited(refused)) = refusal else {
            panic!("{refusal:?}");
        };
        assert_eq!(refused.retry_after_seconds, 3600, "{refused:?}");
        assert_eq!(
            (refused.limit.name.as_str(), refused.limit.limit),
            ("hourly", 5)
        );
    }
    assert_eq!(
        s.traffic.leases.load(Ordering::SeqCst),
        leases,
        "no lease asked for"
    );
    // What the limit has left still serves the requests that fit.
    within(s.verify(text)).await.unwrap();
}

/// A request as the layer makes it of a route that costs `extra` more: verified (its own
/// unit), then charged the route's extra cost, its credit given back when that is refused.
async fn a_costly_request(s: &Setup, text: &str, extra: u32) -> Result<(), VerifyError> {
    let mark = s.verifier.credit_mark();
    within(s.verify(text)).await?;
    let charged = match s.verifier.charge_extra(text, None, extra) {
        Charged::Done(answer) => answer,
        Charged::Waiting(task) => within(task).await.unwrap(),
    };
    if charged.is_err() {
        s.verifier.give_back_credit(text, mark);
    }
    charged
}

/// A route's extra cost that the key's limit holds, refused, is told when the route's whole
/// cost fits, the request's own unit counted in, as the embedded layer answers: the
/// daemon's wait for one request, and an interval for each of the extra's. (Told the
/// daemon's wait for one, a client that honoured `Retry-After` spent what came back on the
/// request's own unit at each try, and was refused for ever, in a hunt.)
#[tokio::test]
async fn a_refused_extra_cost_is_told_when_the_whole_cost_fits() {
    let s = Setup::new().await;
    // Five an hour: one back every 720 s.
    let key = a_metered_key(&s, 5).await;
    let text = key.secret.expose();
    let request = |extra| a_costly_request(&s, text, extra);
    assert_eq!(request(3).await, Ok(()), "4 of 5");
    // Its own unit is the fifth; its extra 3 would need four back.
    let refusal = request(3).await;
    let Err(VerifyError::RateLimited(refused)) = refusal else {
        panic!("{refusal:?}");
    };
    assert_eq!(refused.retry_after_seconds, 4 * 720, "{refused:?}");
}

/// The same for a key this verifier does not hold (no cache here; or evicted since the
/// layer verified it), whose extra cost the daemon charges: it judges the extra alone, as a
/// request of its own, and the verifier adds the next try's own unit to the wait.
#[tokio::test]
async fn a_refused_extra_cost_charged_by_the_daemon_is_told_when_the_whole_cost_fits() {
    let mut s = Setup::new().await;
    s.verifier = RemoteVerifier::builder(&s.daemon.url(), &s.keystore.service_key)
        .max_entries(0)
        .clock(s.keystore.clock.clone())
        .build()
        .unwrap();
    // Six an hour: one back every 600 s.
    let key = a_metered_key(&s, 6).await;
    let text = key.secret.expose();
    let request = |extra| a_costly_request(&s, text, extra);
    let retry_after = |refusal| match refusal {
        Err(VerifyError::RateLimited(refused)) => refused.retry_after_seconds,
        other => panic!("{other:?}"),
    };
    // Above the whole limit (7 of 6): one window, as ever.
    assert_eq!(retry_after(request(6).await), 3600);
    assert_eq!(request(3).await, Ok(()), "5 of 6");
    // Its own unit is the sixth; its extra 3 would need four back.
    assert_eq!(retry_after(request(3).await), 4 * 600);
}

/// A route's cost that the key's refill never covers (a refill to 5 a day, an extra cost
/// of 9) is refused without `Retry-After`, whatever is left: waiting for the refill would
/// not help. (The lease's refusal told when the next refill comes, 12 h, in a hunt.) A
/// refusal the refill cures is told when it comes.
#[tokio::test]
async fn a_cost_the_refill_never_covers_is_refused_without_retry_after() {
    let s = Setup::new().await;
    let user = s.keystore.user("partner", &["orders:read"]);
    let key = s.keystore.key_with_daily_refill(user, 9, 5);
    s.caught_up().await;
    let text = key.secret.expose();
    let request = |extra| a_costly_request(&s, text, extra);
    let never = Err(VerifyError::UsageExceeded {
        retry_after_seconds: None,
    });
    assert_eq!(request(9).await, never, "10 of 9");
    assert_eq!(request(3).await, Ok(()), "4 of 9");
    assert_eq!(request(4).await, Ok(()), "5 of 5");
    // None left: refused at its own credit, which the refill covers.
    let refused = request(1).await;
    assert!(
        matches!(
            refused,
            Err(VerifyError::UsageExceeded {
                retry_after_seconds: Some(_)
            })
        ),
        "{refused:?}"
    );
    within(s.verifier.flush_usage()).await;
    let seen = s.keystore.store.key(key.key.id).unwrap();
    assert_eq!(seen.credits.map(|c| c.remaining), Some(0));
}

/// A verifier whose event stream is refused (a proxy that does not pass it, a service key
/// the daemon streams nothing to) still caches a key's answer, for `max_staleness` from
/// when it was fetched: a revocation is still seen within the bound, and the daemon is not
/// asked at every request (it was, and at load the verifier answered 503 past its misses'
/// bound).
#[tokio::test]
async fn without_a_stream_an_answer_is_served_for_the_staleness_bound() {
    let traffic = Traffic::default();
    traffic.refuse_events.store(true, Ordering::SeqCst);
    let s = Setup::start(traffic);
    let user = s.keystore.user("partner", &["orders:read"]);
    let key = s.keystore.key(user, "k", None);
    within(s.verify(key.secret.expose())).await.unwrap();
    within(s.verify(key.secret.expose())).await.unwrap();
    assert!(!s.verifier.is_fresh());
    assert_eq!(s.requests(), 1, "the second answer came from the cache");
    // Revoked: served until its answer is max_staleness old, then asked and refused.
    s.keystore
        .store
        .revoke_key(&Actor::system(), key.key.id)
        .unwrap();
    s.advance(MAX_STALENESS - Duration::from_secs(1));
    within(s.verify(key.secret.expose())).await.unwrap();
    s.advance(Duration::from_secs(1));
    assert_eq!(s.refusal(&key).await, VerifyError::Revoked);
    assert_eq!(s.requests(), 2);
}
