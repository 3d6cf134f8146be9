//! Usage control through a real axum app: rate limits, credits, IP allowlists, meta, and
//! the order of the checks.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing;
use axum::{Json, Router};
use latchkey_tower::latchkey_core::{
    Actor, Credits, CreditsPatch, KeyPatch, NewKey, NewUser, RateLimit, Refill, RefillInterval,
    UserPatch,
};
use latchkey_tower::{ForwardedHeader, IpNet, Permission, Principal, RequirePermission};
use serde_json::{Value, json};
use time::Duration;

use crate::support::*;

fn limit(name: &str, limit: u32, window_seconds: u32) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_seconds,
    }
}

/// Creates the user `partner` holding `permissions`; answers a new live key of it, for a
/// test to add its usage control to.
fn partner_key(fx: &Fixture, permissions: &[&str]) -> NewKey {
    new_key(&fx.user("partner", permissions), latchkey_tower::Env::Live)
}

/// Credits without a refill.
fn credits(remaining: u64) -> Option<Credits> {
    Some(Credits {
        remaining,
        refill: None,
    })
}

/// The cost of the tests' expensive route.
const FIVE: latchkey_tower::RouteCost = latchkey_tower::RouteCost::new(5).unwrap();

fn from(ip: &str, mut request: axum::extract::Request) -> axum::extract::Request {
    let addr = SocketAddr::new(ip.parse().unwrap(), 40000);
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

/// `GET /whoami` with `text` from the peer `ip`, carrying `headers`.
fn whoami_from(ip: &str, text: &str, headers: &[(&str, &str)]) -> axum::extract::Request {
    let mut request = from(ip, get_with("/whoami", text));
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().append(name, value.parse().unwrap());
    }
    request
}

#[track_caller]
fn assert_rate_limited(reply: &Reply, name: &str, limit: u32, window: u32) -> u64 {
    reply.assert_refused(429, None, "rate_limited");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=u64::from(window)).contains(&retry), "retry {retry}");
    assert_eq!(
        reply.headers["ratelimit-policy"],
        format!("\"{name}\";q={limit};w={window}")
    );
    assert_eq!(
        reply.headers["ratelimit"],
        format!("\"{name}\";r=0;t={retry}")
    );
    retry
}

#[tokio::test]
async fn a_rate_limit_refuses_with_headers_until_the_window_rolls_over() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        rate_limits: vec![limit("default", 3, 60)],
        ..partner_key(&fx, &["orders:read"])
    });
    let app = app(fx.layer());
    let text = key.secret.expose();
    for _ in 0..3 {
        send(&app, get_with("/whoami", text)).await.assert_ok();
    }
    let retry = assert_rate_limited(
        &send(&app, get_with("/whoami", text)).await,
        "default",
        3,
        60,
    );
    assert!(retry > 1);
    // A refused request counts nothing: still refused a second later.
    fx.clock.advance(Duration::seconds(1));
    assert_rate_limited(
        &send(&app, get_with("/whoami", text)).await,
        "default",
        3,
        60,
    );
    // A whole window later, the whole limit is back.
    fx.clock.advance(Duration::seconds(60));
    for _ in 0..3 {
        send(&app, get_with("/whoami", text)).await.assert_ok();
    }
    assert_rate_limited(
        &send(&app, get_with("/whoami", text)).await,
        "default",
        3,
        60,
    );
}

#[tokio::test]
async fn every_named_limit_applies_and_a_patch_changes_them() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        rate_limits: vec![limit("burst", 2, 1), limit("hourly", 3, 3600)],
        ..partner_key(&fx, &[])
    });
    let app = app(fx.layer());
    let text = key.secret.expose();
    assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    send(&app, get_with("/whoami", text)).await.assert_ok();
    assert_rate_limited(&send(&app, get_with("/whoami", text)).await, "burst", 2, 1);
    fx.clock.advance(Duration::seconds(2));
    send(&app, get_with("/whoami", text)).await.assert_ok();
    assert_rate_limited(
        &send(&app, get_with("/whoami", text)).await,
        "hourly",
        3,
        3600,
    );
    // Lifting the limits takes effect on the next request.
    let patch = KeyPatch {
        rate_limits: Some(Vec::new()),
        ..KeyPatch::default()
    };
    let updated = fx
        .store
        .update_key(&Actor::system(), key.key.id, patch)
        .unwrap();
    assert!(updated.rate_limits.is_empty());
    send(&app, get_with("/whoami", text)).await.assert_ok();
}

#[tokio::test]
async fn credits_run_out_refill_on_the_clock_and_a_patch_adds() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        credits: Some(Credits {
            remaining: 2,
            refill: Some(Refill {
                amount: 3,
                interval: RefillInterval::Day,
                day_of_month: None,
            }),
        }),
        ..partner_key(&fx, &["orders:read"])
    });
    let app = app(fx.layer());
    let text = key.secret.expose();
    assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    send(&app, get_with("/whoami", text)).await.assert_ok();
    send(&app, get_with("/whoami", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
    assert_eq!(
        fx.store.key(key.key.id).unwrap().credits.unwrap().remaining,
        0
    );
    // PATCH {"credits": {"add": 1}}.
    assert_eq!(add_credits(&fx, &key, 1).credits.unwrap().remaining, 1);
    assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    send(&app, get_with("/whoami", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
    // The next day at 00:00 UTC, the refill sets them to its amount.
    fx.clock.advance(Duration::days(1));
    for _ in 0..3 {
        send(&app, get_with("/whoami", text)).await.assert_ok();
    }
    send(&app, get_with("/whoami", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
    // PATCH {"credits": {"remaining": 5}} sets.
    let set = KeyPatch {
        credits: Some(CreditsPatch::Set {
            remaining: 5,
            refill: None,
        }),
        ..KeyPatch::default()
    };
    let updated = fx
        .store
        .update_key(&Actor::system(), key.key.id, set)
        .unwrap();
    assert_eq!(updated.credits.unwrap().remaining, 5);
    assert!(
        updated.credits.unwrap().refill.is_some(),
        "the refill is kept"
    );
}

/// A key of `partner` (holding `permission`) limited to `per_minute` (`default`), with
/// `remaining` credits.
fn limited_with_credits(
    fx: &Fixture,
    per_minute: u32,
    remaining: u64,
    permission: &str,
) -> latchkey_tower::latchkey_core::CreatedKey {
    fx.key_with(NewKey {
        rate_limits: vec![limit("default", per_minute, 60)],
        credits: credits(remaining),
        ..partner_key(fx, &[permission])
    })
}

/// `PATCH {"credits": {"add": n}}` to `key`: the key as it is then.
fn add_credits(
    fx: &Fixture,
    key: &latchkey_tower::latchkey_core::CreatedKey,
    n: u64,
) -> latchkey_tower::latchkey_core::Key {
    let add = KeyPatch {
        credits: Some(CreditsPatch::Add(n)),
        ..KeyPatch::default()
    };
    fx.store
        .update_key(&Actor::system(), key.key.id, add)
        .unwrap()
}

/// `GET /report`: needs `orders:read` and costs five requests.
fn report() -> routing::MethodRouter {
    routing::get(|| async { "report" })
        .route_layer(RequirePermission::layer(Permission::from_static("orders:read")).cost(FIVE))
}

/// A key of `partner` (holding `orders:read`) with `remaining` credits and no refill.
fn reader_with_credits(fx: &Fixture, remaining: u64) -> latchkey_tower::latchkey_core::CreatedKey {
    fx.key_with(NewKey {
        credits: credits(remaining),
        ..partner_key(fx, &["orders:read"])
    })
}

#[tokio::test]
async fn a_route_sets_its_own_cost() {
    let fx = Fixture::new();
    let key = reader_with_credits(&fx, 6);
    let app = Router::new()
        .route("/report", report())
        .route("/whoami", routing::get(|| async { "me" }))
        .layer(fx.layer());
    let text = key.secret.expose();
    let ok = send(&app, get_with("/report", text)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        fx.store.key(key.key.id).unwrap().credits.unwrap().remaining,
        1
    );
    send(&app, get_with("/report", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
    // The refused request spent nothing: the credit the layer took before the route's
    // cost was known is given back, and pays for a request that costs one.
    assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    send(&app, get_with("/whoami", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
}

/// A costly route refused for want of credits counts against no rate limit, its
/// request's own 1 included (review s57 M4: a key with fewer credits than the route's cost
/// used up its limit retrying, and was still refused once credits were added).
#[tokio::test]
async fn a_costly_route_refused_for_credits_uses_up_no_limit() {
    let fx = Fixture::new();
    let key = limited_with_credits(&fx, 10, 2, "orders:read");
    let app = Router::new().route("/report", report()).layer(fx.layer());
    let text = key.secret.expose();
    for _ in 0..12 {
        send(&app, get_with("/report", text))
            .await
            .assert_refused(429, None, "usage_exceeded");
    }
    add_credits(&fx, &key, 100);
    // Five a minute pass the limit of 10 at a cost of 5: two.
    for _ in 0..2 {
        assert_eq!(send(&app, get_with("/report", text)).await.status, 200);
    }
    let refused = send(&app, get_with("/report", text)).await;
    assert_rate_limited(&refused, "default", 10, 60);
}

/// A route refused for want of permission spends no credit: the one the layer took for
/// the request goes back (usage hunt s56 M2: five 403s spent a key's five credits, and the
/// next request it may make was refused `usage_exceeded`). Its unit stays with the rate
/// limit, which bounds a flood of 403s as it does any authenticated traffic (review s58
/// L6), once only however often the route is called with the request (L5).
#[tokio::test]
async fn a_route_refused_for_permission_spends_no_credit() {
    let fx = Fixture::new();
    let key = limited_with_credits(&fx, 10, 2, "orders:write");
    // The route called three times with one request, as a retry layer would.
    let thrice = tower::service_fn(move |request: axum::extract::Request| {
        let route = report().with_state::<()>(());
        async move {
            let (parts, _) = request.into_parts();
            let mut last = None;
            for _ in 0..3 {
                let again = http::Request::from_parts(parts.clone(), axum::body::Body::empty());
                last = Some(tower::ServiceExt::oneshot(route.clone(), again).await?);
            }
            Ok::<_, std::convert::Infallible>(last.unwrap())
        }
    });
    let app = Router::new()
        .route("/report", report())
        .route_service("/thrice", thrice)
        .route("/whoami", routing::get(|| async { "me" }))
        .layer(fx.layer());
    let text = key.secret.expose();
    for path in ["/report", "/report", "/report", "/report", "/thrice"] {
        send(&app, get_with(path, text))
            .await
            .assert_forbidden("orders:read");
    }
    for _ in 0..2 {
        assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    }
    send(&app, get_with("/whoami", text))
        .await
        .assert_refused(429, None, "usage_exceeded");
    // Ten a minute: five 403s and two requests served took seven (a credit refusal gave
    // its unit back), so three more pass.
    add_credits(&fx, &key, 10);
    for _ in 0..3 {
        assert_eq!(send(&app, get_with("/whoami", text)).await.status, 200);
    }
    assert_rate_limited(
        &send(&app, get_with("/whoami", text)).await,
        "default",
        10,
        60,
    );
    assert_eq!(
        fx.store.key(key.key.id).unwrap().credits.unwrap().remaining,
        10 - 3
    );
}

/// A route whose cost a key's limit can hold, refused, says when its whole cost fits, the
/// request's own unit counted in: a client that waits each `Retry-After` is admitted at
/// the first try after the limit won the cost back. (Told when the extra alone fits, each
/// try spent the unit that had come back on the request's own, and was refused for ever.)
#[tokio::test]
async fn a_client_that_honours_retry_after_on_a_costly_route_is_admitted() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        rate_limits: vec![limit("default", 5, 10)],
        ..partner_key(&fx, &["orders:read"])
    });
    let app = Router::new().route("/report", report()).layer(fx.layer());
    let text = key.secret.expose();
    assert_eq!(send(&app, get_with("/report", text)).await.status, 200);
    let mut told = Vec::new();
    for _ in 0..3 {
        let reply = send(&app, get_with("/report", text)).await;
        if reply.status == 200 {
            // Refused at its own unit (one back in 2 s), then at the extra 4: when those
            // and the next try's own fit, 10 s. Admitted then, not before.
            assert_eq!(told, [2, 10]);
            return;
        }
        let retry = assert_rate_limited(&reply, "default", 5, 10);
        told.push(retry);
        fx.clock.advance(Duration::seconds(retry as i64));
    }
    panic!("still refused after three tries, told {told:?}");
}

/// A route's extra cost refused gives back only a credit the authentication layer took: a
/// principal put in the request by other means (here a middleware of the app's own, which
/// charges nothing) gets no credit it never paid for.
#[tokio::test]
async fn a_refused_extra_cost_gives_back_only_a_credit_the_layer_took() {
    let fx = Fixture::new();
    let key = reader_with_credits(&fx, 2);
    let (store, text) = (fx.store.clone(), key.secret.expose().to_owned());
    let app = Router::new()
        .route("/report", report())
        .layer(axum::middleware::from_fn(
            move |mut request: axum::extract::Request, next: axum::middleware::Next| {
                let principal = store.verify(&text).unwrap();
                request.extensions_mut().insert(Principal::from(principal));
                next.run(request)
            },
        ));
    for _ in 0..2 {
        send(&app, get("/report"))
            .await
            .assert_refused(429, None, "usage_exceeded");
    }
    assert_eq!(
        fx.store.key(key.key.id).unwrap().credits.unwrap().remaining,
        2
    );
}

#[tokio::test]
async fn an_allowlist_checks_the_peer_and_forwarded_addresses_only_from_trusted_proxies() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        allowed_ips: vec![
            "10.1.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        ..partner_key(&fx, &[])
    });
    let text = key.secret.expose();
    let plain = app(fx.layer());
    send(&plain, from("10.1.2.3", get_with("/whoami", text)))
        .await
        .assert_ok();
    send(&plain, from("2001:db8::7", get_with("/whoami", text)))
        .await
        .assert_ok();
    send(&plain, from("192.0.2.1", get_with("/whoami", text)))
        .await
        .assert_refused(403, None, "ip_not_allowed");
    // No peer address known: refused.
    send(&plain, get_with("/whoami", text))
        .await
        .assert_refused(403, None, "ip_not_allowed");
    // A spoofed X-Forwarded-For from an untrusted peer is ignored.
    let spoofed = whoami_from("192.0.2.1", text, &[("x-forwarded-for", "10.1.2.3")]);
    send(&plain, spoofed)
        .await
        .assert_refused(403, None, "ip_not_allowed");
    // The same from a trusted proxy is honoured.
    let proxy: IpNet = "192.0.2.0/24".parse().unwrap();
    let behind = app(fx.layer().trust_proxies([proxy]));
    let forwarded = whoami_from("192.0.2.1", text, &[("x-forwarded-for", "10.1.2.3")]);
    send(&behind, forwarded).await.assert_ok();
    let outside = whoami_from("192.0.2.1", text, &[("forwarded", "for=198.51.100.4")]);
    send(&behind, outside)
        .await
        .assert_refused(403, None, "ip_not_allowed");
}

#[tokio::test]
async fn ranges_written_as_ipv4_mapped_ipv6_match_ipv4_clients() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        allowed_ips: vec!["::ffff:10.1.0.0/112".parse().unwrap()],
        ..partner_key(&fx, &[])
    });
    let text = key.secret.expose();
    send(
        &app(fx.layer()),
        from("10.1.2.3", get_with("/whoami", text)),
    )
    .await
    .assert_ok();
    let proxy: IpNet = "::ffff:192.0.2.0/120".parse().unwrap();
    let behind = app(fx.layer().trust_proxies([proxy]));
    let forwarded = whoami_from("192.0.2.1", text, &[("x-forwarded-for", "10.1.2.3")]);
    send(&behind, forwarded).await.assert_ok();
    let outside = whoami_from("192.0.2.1", text, &[("x-forwarded-for", "10.2.0.1")]);
    send(&behind, outside)
        .await
        .assert_refused(403, None, "ip_not_allowed");
}

/// Usage hunt F4: an IPv6 range wider than the IPv4-mapped block (`::/0`, "anyone") holds
/// the IPv4 addresses it maps, in an allowlist and among the trusted proxies.
#[tokio::test]
async fn an_ipv6_range_wider_than_the_mapped_block_holds_ipv4_clients() {
    let fx = Fixture::new();
    let anyone = fx.key_with(NewKey {
        allowed_ips: vec!["::/0".parse().unwrap()],
        ..partner_key(&fx, &[])
    });
    let text = anyone.secret.expose();
    for client in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::7"] {
        send(&app(fx.layer()), from(client, get_with("/whoami", text)))
            .await
            .assert_ok();
    }
    let inside = fx.key_with(NewKey {
        name: "inside".into(),
        user_id: anyone.key.user_id,
        allowed_ips: vec!["10.1.0.0/16".parse().unwrap()],
        ..NewKey::default()
    });
    let inside = inside.secret.expose();
    let every_proxy = app(fx.layer().trust_proxies(["::/0".parse::<IpNet>().unwrap()]));
    let forwarded = whoami_from("192.0.2.1", inside, &[("x-forwarded-for", "10.1.2.3")]);
    send(&every_proxy, forwarded).await.assert_ok();
}

/// A request from the trusted proxy 192.0.2.1 whose client claims 203.0.113.5 in
/// `Forwarded`, while the proxy wrote 198.51.100.66 in `X-Forwarded-For`.
fn through_proxy_with_both_headers(text: &str) -> axum::extract::Request {
    whoami_from(
        "192.0.2.1",
        text,
        &[
            ("forwarded", "for=203.0.113.5"),
            ("x-forwarded-for", "198.51.100.66"),
        ],
    )
}

#[tokio::test]
async fn a_trusted_proxy_s_client_is_read_from_the_configured_header_only() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        allowed_ips: vec!["203.0.113.0/24".parse().unwrap()],
        ..partner_key(&fx, &[])
    });
    let text = key.secret.expose();
    let proxy: IpNet = "192.0.2.0/24".parse().unwrap();
    // By default the layer reads X-Forwarded-For, which the proxy wrote: a `Forwarded`
    // the client sent through it names no one.
    let by_default = app(fx.layer().trust_proxies([proxy]));
    send(&by_default, through_proxy_with_both_headers(text))
        .await
        .assert_refused(403, None, "ip_not_allowed");
    // Configured for `Forwarded`, the layer reads that one and ignores X-Forwarded-For.
    let forwarded = app(fx
        .layer()
        .trust_proxies([proxy])
        .forwarded_header(ForwardedHeader::Forwarded));
    send(&forwarded, through_proxy_with_both_headers(text))
        .await
        .assert_ok();
    let only_x_forwarded_for =
        whoami_from("192.0.2.1", text, &[("x-forwarded-for", "203.0.113.5")]);
    send(&forwarded, only_x_forwarded_for)
        .await
        .assert_refused(403, None, "ip_not_allowed");
    // A proxy that adds only `Forwarded: proto=https` leaves X-Forwarded-For in charge.
    let proto_only = whoami_from(
        "192.0.2.1",
        text,
        &[
            ("forwarded", "proto=https"),
            ("x-forwarded-for", "203.0.113.5"),
        ],
    );
    send(&by_default, proto_only).await.assert_ok();
}

#[tokio::test]
async fn meta_reaches_the_handler() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        meta: Some(json!({"plan": "pro", "seats": 5})),
        ..partner_key(&fx, &[])
    });
    let app = Router::new()
        .route(
            "/plan",
            routing::get(|principal: Principal| async move {
                Json(principal.meta.clone().unwrap_or(Value::Null))
            }),
        )
        .layer(fx.layer());
    let reply = send(&app, get_with("/plan", key.secret.expose())).await;
    assert_eq!(reply.assert_ok(), json!({"plan": "pro", "seats": 5}));
    // Cleared by PATCH null.
    let patch = KeyPatch {
        meta: Some(None),
        ..KeyPatch::default()
    };
    fx.store
        .update_key(&Actor::system(), key.key.id, patch)
        .unwrap();
    let reply = send(&app, get_with("/plan", key.secret.expose())).await;
    assert_eq!(reply.assert_ok(), Value::Null);
}

#[tokio::test]
async fn a_disabled_key_over_its_limit_answers_key_disabled() {
    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        rate_limits: vec![limit("default", 1, 60)],
        credits: credits(1),
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
        ..partner_key(&fx, &[])
    });
    let app = app(fx.layer());
    let text = key.secret.expose();
    send(&app, from("10.0.0.1", get_with("/whoami", text)))
        .await
        .assert_ok();
    assert_rate_limited(
        &send(&app, from("10.0.0.1", get_with("/whoami", text))).await,
        "default",
        1,
        60,
    );
    // The IP comes before the rate limits.
    send(&app, from("192.0.2.1", get_with("/whoami", text)))
        .await
        .assert_refused(403, None, "ip_not_allowed");
    let disable = KeyPatch {
        enabled: Some(false),
        ..KeyPatch::default()
    };
    fx.store
        .update_key(&Actor::system(), key.key.id, disable)
        .unwrap();
    send(&app, from("10.0.0.1", get_with("/whoami", text)))
        .await
        .assert_invalid("key_disabled");
    send(&app, from("192.0.2.1", get_with("/whoami", text)))
        .await
        .assert_invalid("key_disabled");
}

#[tokio::test]
async fn bad_usage_control_is_refused_and_changes_nothing() {
    let fx = Fixture::new();
    let user = fx.user("partner", &[]);
    let admin = Actor::system();
    let key = fx.key(&user);
    let before = fx.store.key(key.key.id).unwrap();
    let big = json!({ "a": "x".repeat(5000) });
    let nine: Vec<_> = (0..9).map(|i| limit(&format!("l{i}"), 1, 1)).collect();
    let patches = [
        KeyPatch {
            meta: Some(Some(big.clone())),
            ..KeyPatch::default()
        },
        KeyPatch {
            meta: Some(Some(json!([1, 2]))),
            ..KeyPatch::default()
        },
        KeyPatch {
            rate_limits: Some(nine.clone()),
            ..KeyPatch::default()
        },
        KeyPatch {
            credits: Some(CreditsPatch::Add(1)),
            ..KeyPatch::default()
        },
        KeyPatch {
            name: Some("renamed".into()),
            rate_limits: Some(vec![limit("a", 0, 1)]),
            ..KeyPatch::default()
        },
    ];
    for patch in patches {
        let err = fx.store.update_key(&admin, key.key.id, patch).unwrap_err();
        assert!(
            matches!(
                err,
                latchkey_tower::latchkey_core::StoreError::Invalid { .. }
            ),
            "{err:?}"
        );
    }
    assert_eq!(fx.store.key(key.key.id).unwrap(), before);
    let count = |fx: &Fixture| {
        fx.store
            .list_keys(&Default::default())
            .map(|p| p.items.len())
            .unwrap()
    };
    let keys = count(&fx);
    let bad = NewKey {
        rate_limits: nine,
        ..new_key(&user, latchkey_tower::Env::Live)
    };
    assert!(fx.store.create_key(&admin, bad).is_err());
    let bad = NewKey {
        meta: Some(big),
        ..new_key(&user, latchkey_tower::Env::Live)
    };
    assert!(fx.store.create_key(&admin, bad).is_err());
    assert_eq!(count(&fx), keys);
}

/// A user holding `orders:read` with `rate_limits`, and two keys of it.
fn limited_user(
    fx: &Fixture,
    rate_limits: Vec<RateLimit>,
) -> (
    latchkey_tower::latchkey_core::User,
    latchkey_tower::latchkey_core::CreatedKey,
    latchkey_tower::latchkey_core::CreatedKey,
) {
    let user = fx.user_with(NewUser {
        name: "partner".into(),
        permissions: perms(&["orders:read"]),
        rate_limits,
        ..NewUser::default()
    });
    assert_eq!(fx.store.user("partner").unwrap().rate_limits.len(), 1);
    (user.clone(), fx.key(&user), fx.key(&user))
}

/// `GET /whoami` with `key`.
async fn whoami(app: &axum::Router, key: &latchkey_tower::latchkey_core::CreatedKey) -> Reply {
    send(app, get_with("/whoami", key.secret.expose())).await
}

#[tokio::test]
async fn a_user_limit_is_shared_by_all_its_keys() {
    let fx = Fixture::new();
    let (_, a, b) = limited_user(&fx, vec![limit("default", 3, 60)]);
    let app = app(fx.layer());
    whoami(&app, &a).await.assert_ok();
    whoami(&app, &a).await.assert_ok();
    whoami(&app, &b).await.assert_ok();
    // Three in all: both keys are refused, by the user's limit.
    for key in [&b, &a] {
        let reply = whoami(&app, key).await;
        assert_rate_limited(&reply, "user:default", 3, 60);
    }
    fx.clock.advance(Duration::seconds(61));
    whoami(&app, &b).await.assert_ok();
}

#[tokio::test]
async fn a_key_limit_and_its_user_limit_both_apply_the_tighter_refuses() {
    let fx = Fixture::new();
    let (user, a, _) = limited_user(&fx, vec![limit("default", 5, 60)]);
    let tight = fx.key_with(NewKey {
        rate_limits: vec![limit("default", 2, 60)],
        ..new_key(&user, latchkey_tower::Env::Live)
    });
    let app = app(fx.layer());
    whoami(&app, &tight).await.assert_ok();
    whoami(&app, &tight).await.assert_ok();
    // The key's own limit is the tighter: it refuses, and the user's counts nothing more.
    assert_rate_limited(&whoami(&app, &tight).await, "default", 2, 60);
    for _ in 0..3 {
        whoami(&app, &a).await.assert_ok();
    }
    // Five in all for the user: its limit refuses the key that has none of its own.
    assert_rate_limited(&whoami(&app, &a).await, "user:default", 5, 60);
}

#[tokio::test]
async fn a_user_patch_changes_the_limit_of_all_its_keys_at_once() {
    let fx = Fixture::new();
    let (user, a, b) = limited_user(&fx, vec![limit("default", 2, 60)]);
    let app = app(fx.layer());
    whoami(&app, &a).await.assert_ok();
    whoami(&app, &b).await.assert_ok();
    assert_rate_limited(&whoami(&app, &a).await, "user:default", 2, 60);
    // PATCH {"rate_limits": null}: both keys pass again on their next request.
    let clear = UserPatch {
        rate_limits: Some(Vec::new()),
        ..UserPatch::default()
    };
    let updated = fx
        .store
        .update_user(&Actor::system(), user.id, clear)
        .unwrap();
    assert!(updated.rate_limits.is_empty());
    assert!(fx.store.user("partner").unwrap().rate_limits.is_empty());
    for key in [&a, &b, &a] {
        whoami(&app, key).await.assert_ok();
    }
    // A new, tighter limit reaches them too.
    let set = UserPatch {
        rate_limits: Some(vec![limit("hourly", 1, 3600)]),
        ..UserPatch::default()
    };
    fx.store
        .update_user(&Actor::system(), user.id, set)
        .unwrap();
    whoami(&app, &b).await.assert_ok();
    assert_rate_limited(&whoami(&app, &a).await, "user:hourly", 1, 3600);
}

#[test]
fn bad_user_limits_are_refused_and_change_nothing() {
    let fx = Fixture::new();
    let (user, _, _) = limited_user(&fx, vec![limit("default", 2, 60)]);
    let nine: Vec<_> = (0..9).map(|i| limit(&format!("l{i}"), 1, 1)).collect();
    for bad in [nine, vec![limit("a b", 1, 1)], vec![limit("x", 0, 60)]] {
        let patch = UserPatch {
            rate_limits: Some(bad.clone()),
            ..UserPatch::default()
        };
        let err = fx
            .store
            .update_user(&Actor::system(), user.id, patch)
            .unwrap_err();
        assert!(err.to_string().contains("rate_limits"), "{err}");
        let new = NewUser {
            name: "other".into(),
            rate_limits: bad,
            ..NewUser::default()
        };
        assert!(fx.store.create_user(&Actor::system(), new).is_err());
    }
    assert_eq!(
        fx.store.user("partner").unwrap().rate_limits,
        vec![limit("default", 2, 60)]
    );
    assert!(fx.store.user("other").is_err());
}

/// The durable write of a credit reservation runs on tokio's blocking pool: the request that
/// finds its key's slice empty gets a future that waits for it (`reserving`), while one
/// answered from the slice calls the inner service at once (`calling`). Both are admitted,
/// and the balance counts both. The same for a route's extra cost (`RequirePermission`).
#[tokio::test]
async fn a_credit_reservation_runs_off_the_async_worker() {
    use tower::{Layer, Service, ServiceExt};

    let fx = Fixture::new();
    let key = fx.key_with(NewKey {
        credits: credits(100),
        ..partner_key(&fx, &["orders:read"])
    });
    let inner = tower::service_fn(|_: axum::extract::Request| async {
        Ok::<_, std::convert::Infallible>(axum::response::Response::new(axum::body::Body::empty()))
    });
    let remaining = || fx.store.key(key.key.id).unwrap().credits.unwrap().remaining;
    let mut service = fx.layer().layer(inner);
    // Slices of 1, then 2: the first two requests reserve, the third spends the slice.
    for expected in ["reserving", "reserving", "calling"] {
        let ready = service.ready().await.unwrap();
        let future = ready.call(get_with("/whoami", key.secret.expose()));
        let state = format!("{future:?}");
        assert!(state.contains(expected), "{state}, expected {expected}");
        assert_eq!(future.await.unwrap().status(), 200);
    }
    assert_eq!(remaining(), 97);

    // A route that costs 4 more: slices of 4 then 8 (reserved by the route's check), the
    // third request spends what is left of the second.
    let mut route = RequirePermission::layer(Permission::from_static("orders:read"))
        .cost(FIVE)
        .layer(inner);
    for expected in ["reserving", "reserving", "calling"] {
        let principal = fx.store.verify(key.secret.expose()).unwrap();
        let mut request = get_with("/report", key.secret.expose());
        request.extensions_mut().insert(Principal::from(principal));
        let ready = route.ready().await.unwrap();
        let future = ready.call(request);
        let state = format!("{future:?}");
        assert!(state.contains(expected), "{state}, expected {expected}");
        assert_eq!(future.await.unwrap().status(), 200);
    }
    assert_eq!(remaining(), 85);
}
