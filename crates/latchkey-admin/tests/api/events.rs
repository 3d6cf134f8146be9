//! `GET /v1/events`: the change feed as server-sent events.

use std::time::Duration;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use latchkey_core::{Actor, NewGroup, NewKey, PermissionSet};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::Harness;

/// How long a test waits for the next event before it fails: a bound on a wait, not a
/// measurement (heartbeats in these tests come every second).
const PATIENCE: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// An open event stream, read event by event.
struct Stream {
    body: Body,
    buffer: String,
}

impl Stream {
    async fn open(h: &Harness, uri: &str, headers: &[(&str, &str)]) -> Stream {
        let mut request = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {}", h.admin));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = h
            .app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Stream {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    async fn open_as(h: &Harness, key: &str, uri: &str) -> Stream {
        let request = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        let response = h.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        Stream {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// Reads until the stream ends, within `PATIENCE` in all (heartbeats do not extend
    /// it); only changes and heartbeats may come before that.
    async fn ends(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("the stream did not end");
            match frame {
                None => return,
                Some(frame) => {
                    let bytes = frame.unwrap().into_data().unwrap();
                    let text = std::str::from_utf8(&bytes).unwrap();
                    assert!(
                        text.contains("event: change") || text.contains("event: heartbeat"),
                        "{text}"
                    );
                }
            }
        }
    }

    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = value.to_owned(),
                        "id" => id = Some(value.to_owned()),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                return Sse {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("no event in time")
                .expect("the stream ended")
                .unwrap();
            let bytes = frame.into_data().unwrap();
            self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }

    /// The next `change`, skipping heartbeats.
    async fn change(&mut self) -> Sse {
        loop {
            let event = self.next().await;
            if event.event != "heartbeat" {
                assert_eq!(event.event, "change", "{event:?}");
                assert_eq!(event.id.as_deref(), Some(&*event.data["seq"].to_string()));
                return event;
            }
        }
    }
}

fn group(h: &Harness, name: &str) {
    h.store
        .create_group(
            &Actor::system(),
            NewGroup {
                name: name.into(),
                permissions: PermissionSet::parse(["orders:read"]).unwrap(),
            },
        )
        .unwrap();
}

/// `data` without its `sent_at_ms`, which must be the store's clock in Unix milliseconds,
/// read at most a minute before now.
#[track_caller]
fn stamped(h: &Harness, data: &serde_json::Value) -> serde_json::Value {
    let mut data = data.clone();
    let sent = data.as_object_mut().unwrap().remove("sent_at_ms");
    let sent = sent.and_then(|s| s.as_i64()).expect("a sent_at_ms");
    let now = i64::try_from(h.store.clock().unix_nanos() / 1_000_000).unwrap();
    assert!(
        (now - 60_000..=now).contains(&sent),
        "sent_at_ms {sent}, now {now}"
    );
    data
}

#[tokio::test]
async fn without_a_position_the_stream_starts_at_the_head_and_goes_live() {
    let h = Harness::new();
    let head = h.store.last_seq().unwrap();
    let head_hash = h.store.events_since(head - 1, 1).unwrap()[0].hash.clone();
    let mut stream = Stream::open(&h, "/v1/events", &[]).await;
    let ready = stream.next().await;
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.id, None);
    assert_eq!(
        stamped(&h, &ready.data),
        json!({"head": head, "position": head, "hash": head_hash, "lineage": h.store.lineage()})
    );

    group(&h, "support");
    let change = stream.change().await;
    assert_eq!(change.data["seq"], head + 1);
    assert_eq!(change.data["action"], "group.create");
    // The whole audit event, as /v1/audit answers it.
    let stored = serde_json::to_value(&h.store.events_since(head, 1).unwrap()[0]).unwrap();
    assert_eq!(change.data, stored);
}

#[tokio::test]
async fn after_replays_from_the_store_then_continues_live_without_gaps_or_repeats() {
    let h = Harness::new();
    let head = h.store.last_seq().unwrap();
    assert!(head >= 3, "init records the admin group, user and key");
    let mut stream = Stream::open(&h, "/v1/events?after=1&heartbeat_ms=1000", &[]).await;
    let ready = stream.next().await;
    assert_eq!(ready.event, "ready");
    let first = h.store.events_since(0, 1).unwrap()[0].hash.clone();
    assert_eq!(
        stamped(&h, &ready.data),
        json!({"head": head, "position": 1, "hash": first, "lineage": h.store.lineage()})
    );
    for seq in 2..=head {
        assert_eq!(stream.change().await.data["seq"], seq);
    }
    group(&h, "a");
    group(&h, "b");
    assert_eq!(stream.change().await.data["seq"], head + 1);
    assert_eq!(stream.change().await.data["seq"], head + 2);
    // The heartbeat follows every change committed before it, and names the last one.
    let heartbeat = stream.next().await;
    assert_eq!(heartbeat.event, "heartbeat");
    assert_eq!(stamped(&h, &heartbeat.data), json!({"head": head + 2}));
    assert_eq!(heartbeat.id, None);
}

/// A heartbeat vouches for what was committed when it fell due, so it does not wait for a
/// quiet moment: while changes keep coming (here one is committed before each event the
/// client reads, so that one is always waiting), heartbeats keep coming, live and while a
/// replay chases the head. Without them every verifier's trust would lapse exactly while
/// the daemon is busiest (a bulk import, `revoke-keys` on a large user).
#[tokio::test]
async fn heartbeats_keep_coming_while_changes_keep_coming() {
    for uri in [
        "/v1/events?heartbeat_ms=1000",
        "/v1/events?after=0&heartbeat_ms=1000",
    ] {
        let h = Harness::new();
        let mut stream = Stream::open(&h, uri, &[]).await;
        assert_eq!(stream.next().await.event, "ready");
        let opened = i64::try_from(h.store.clock().unix_nanos() / 1_000_000).unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last_change = 0;
        for i in 0.. {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no heartbeat in {PATIENCE:?} while changes kept coming ({uri})"
            );
            group(&h, &format!("busy-{i}"));
            let event = stream.next().await;
            if event.event == "change" {
                last_change = event.data["seq"].as_u64().unwrap();
                continue;
            }
            assert_eq!(event.event, "heartbeat", "{uri}");
            // It names the last change sent, and vouches for a time after the stream
            // opened, when more had been committed than it names.
            assert_eq!(event.data["head"], last_change, "{uri}");
            let sent = event.data["sent_at_ms"].as_i64().unwrap();
            assert!(
                sent >= opened,
                "{uri}: sent_at_ms {sent} before the opening {opened}"
            );
            assert!(h.store.last_seq().unwrap() > last_change, "{uri}");
            break;
        }
    }
}

/// A change that does not decode (its record damaged) is stepped over by a replay: the
/// client sees the gap in the sequence numbers, and the stream goes on, rather than ending
/// on it at every reconnection.
#[tokio::test]
async fn a_replay_steps_over_a_change_that_does_not_decode() {
    let h = Harness::edited(
        |store| {
            for name in ["a", "b"] {
                let new = NewGroup {
                    name: name.into(),
                    ..NewGroup::default()
                };
                store.create_group(&Actor::system(), new).unwrap();
            }
        },
        |dir| {
            let raw = crate::tamper::Raw::open(dir);
            let second = [b"a:".as_slice(), &2u64.to_be_bytes()].concat();
            raw.apply(vec![(second, Some(b"garbage".to_vec()))]);
        },
    );
    let head = h.store.last_seq().unwrap();
    let mut stream = Stream::open(&h, "/v1/events?after=0&heartbeat_ms=1000", &[]).await;
    assert_eq!(stream.next().await.event, "ready");
    assert_eq!(stream.change().await.data["seq"], 1);
    for seq in 3..=head {
        assert_eq!(stream.change().await.data["seq"], seq);
    }
    group(&h, "c");
    assert_eq!(stream.change().await.data["seq"], head + 1);
}

#[tokio::test]
async fn last_event_id_wins_over_after() {
    let h = Harness::new();
    let head = h.store.last_seq().unwrap();
    let mut stream = Stream::open(
        &h,
        "/v1/events?after=0",
        &[("last-event-id", &(head - 1).to_string())],
    )
    .await;
    let ready = stream.next().await;
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.data["position"], head - 1);
    assert_eq!(stream.change().await.data["seq"], head);
    group(&h, "next");
    assert_eq!(stream.change().await.data["seq"], head + 1);
}

#[tokio::test]
async fn a_position_past_the_head_is_a_reset_then_live_from_the_head() {
    let h = Harness::new();
    let head = h.store.last_seq().unwrap();
    let mut stream = Stream::open(&h, "/v1/events", &[("last-event-id", "999")]).await;
    let reset = stream.next().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.data["head"], head);
    assert_eq!(reset.data["position"], head);
    assert!(reset.data["hash"].is_string());
    group(&h, "after-reset");
    assert_eq!(stream.change().await.data["seq"], head + 1);
}

#[tokio::test]
async fn a_lagging_subscriber_replays_what_it_missed_from_the_store() {
    let h = Harness::new();
    let head = h.store.last_seq().unwrap();
    let mut stream = Stream::open(&h, "/v1/events", &[]).await;
    assert_eq!(stream.next().await.event, "ready");
    // One transaction of 1500 keys broadcasts 1500 changes at once, more than the
    // broadcast buffer holds, while this client reads nothing.
    let user = h.store.user("admin").unwrap();
    let new: Vec<NewKey> = (0..1500)
        .map(|i| NewKey {
            name: format!("bulk {i}"),
            user_id: user.id,
            ..NewKey::default()
        })
        .collect();
    h.store.create_keys(&Actor::system(), &new).unwrap();
    for seq in head + 1..=head + 1500 {
        let change = stream.change().await;
        assert_eq!(change.data["seq"], seq);
        assert_eq!(change.data["action"], "key.create");
    }
    group(&h, "after-lag");
    assert_eq!(stream.change().await.data["seq"], head + 1501);
}

#[tokio::test]
async fn the_stream_needs_latchkey_verify_and_valid_parameters() {
    let h = Harness::new();
    h.send("GET", "/v1/events", None, None)
        .await
        .problem(401, "missing_key");
    let (_, reader) = h.user_with_key("reader", &["latchkey:keys:read"]).await;
    let r = h.send("GET", "/v1/events", Some(&reader), None).await;
    r.problem(403, "insufficient_permission");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="latchkey:verify""#)
    );

    for (uri, field) in [
        ("/v1/events?after=-1", "after"),
        ("/v1/events?after=x", "after"),
        ("/v1/events?heartbeat_ms=5", "heartbeat_ms"),
        ("/v1/events?heartbeat_ms=999", "heartbeat_ms"),
        ("/v1/events?heartbeat_ms=600000", "heartbeat_ms"),
        ("/v1/events?since=3", "since"),
    ] {
        let body = h.get(uri).await.problem(400, "invalid_field");
        assert_eq!(body["field"], field, "{uri}");
    }
    let request = Request::builder()
        .uri("/v1/events")
        .header("authorization", format!("Bearer {}", h.admin))
        .header("last-event-id", "seven")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["field"], "Last-Event-ID");
}

#[tokio::test]
async fn a_stream_ends_when_its_key_may_no_longer_read_it() {
    let h = Harness::new();
    for (name, change) in [
        ("revoked", "revoke"),
        ("stripped", "strip"),
        ("placed", "tenant"),
    ] {
        let (user, key) = h.user_with_key(name, &["latchkey:verify"]).await;
        let mut stream = Stream::open_as(&h, &key, "/v1/events?heartbeat_ms=1000").await;
        assert_eq!(stream.next().await.event, "ready");
        assert_eq!(stream.next().await.event, "heartbeat");
        let key_id = h.store.key_id(key.rsplit_once('_').unwrap().0).unwrap();
        match change {
            "revoke" => {
                h.store.revoke_key(&Actor::system(), key_id).unwrap();
            }
            _ => {
                let patch = if change == "strip" {
                    latchkey_core::UserPatch {
                        permissions: latchkey_core::PermissionEdit::removing(
                            PermissionSet::parse(["latchkey:verify"]).unwrap(),
                        ),
                        ..Default::default()
                    }
                } else {
                    latchkey_core::UserPatch {
                        tenant_id: Some(Some("acme".into())),
                        ..Default::default()
                    }
                };
                let id = user["id"].as_str().unwrap().parse().unwrap();
                h.store.update_user(&Actor::system(), id, patch).unwrap();
            }
        }
        // The change itself may still be sent; then the stream ends, at the next heartbeat.
        stream.ends().await;
    }
}

/// A key that may no longer read the feed reads nothing more: not the change that ended
/// its right, nor any after it, however long its heartbeat (trust hunt s56 M1: a revoked
/// key's stream, at `heartbeat_ms=60000`, carried every change for up to a minute). So
/// for a key revoked, rotated without grace, disabled, stripped of the permission through
/// its group, whose user was disabled, deleted or moved into a tenant, past its expiry, or
/// given an allowlist (the stream has no address to check it against: review s56 M3).
/// A change to a group its user is not in goes out as ever.
#[tokio::test]
async fn a_key_that_may_no_longer_read_the_feed_reads_no_change_after() {
    let clock = std::sync::Arc::new(latchkey_core::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let h = Harness::configured(|c| c.clock(clock.clone()));
    let feeders = h.group("feeders", &["latchkey:verify"]).await;
    // Takes `latchkey:verify` from `feeders`, or gives it back.
    let feeders_verify = |edit: fn(PermissionSet) -> latchkey_core::PermissionEdit| {
        let patch = latchkey_core::GroupPatch {
            permissions: edit(PermissionSet::parse(["latchkey:verify"]).unwrap()),
            ..Default::default()
        };
        let group = feeders["id"].as_str().unwrap().parse().unwrap();
        drop(
            h.store
                .update_group(&Actor::system(), group, patch)
                .unwrap(),
        );
    };
    let bystanders = h.group("bystanders", &[]).await;
    let bystanders = format!("/v1/groups/{}", bystanders["id"].as_str().unwrap());
    let ends = [
        "revoke",
        "rotate",
        "disable",
        "group",
        "user",
        "delete",
        "move",
        "expire",
        "allowlist",
    ];
    for (n, end) in ends.into_iter().enumerate() {
        let name = format!("follower-{end}");
        let user = h.user(&name, &[]).await;
        let user_id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
        let patch = latchkey_core::UserPatch {
            add_groups: vec![feeders["id"].as_str().unwrap().parse().unwrap()],
            ..Default::default()
        };
        h.store
            .update_user(&Actor::system(), user_id, patch)
            .unwrap();
        let expires = latchkey_core::Clock::now(&*clock) + time::Duration::hours(1);
        let body = json!({"name": "k", "user_id": name, "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap()});
        let key = h.post("/v1/keys", body).await.ok(201);
        let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
        let key_id: uuid::Uuid = id.parse().unwrap();
        let mut stream = Stream::open_as(&h, secret, "/v1/events?heartbeat_ms=60000").await;
        assert_eq!(stream.next().await.event, "ready");
        let permissions = json!({"permissions": [format!("orders:p{n}")]});
        h.patch(&bystanders, permissions).await.ok(200);
        assert_eq!(stream.change().await.data["action"], "group.update");
        let admin = Actor::system();
        match end {
            "revoke" => drop(h.store.revoke_key(&admin, key_id).unwrap()),
            "rotate" => drop(h.rotate(id, 0).await),
            "disable" => {
                let patch = latchkey_core::KeyPatch {
                    enabled: Some(false),
                    ..Default::default()
                };
                drop(h.store.update_key(&admin, key_id, patch).unwrap());
            }
            "group" => feeders_verify(latchkey_core::PermissionEdit::removing),
            "user" => {
                let patch = latchkey_core::UserPatch {
                    enabled: Some(false),
                    ..Default::default()
                };
                drop(h.store.update_user(&admin, user_id, patch).unwrap());
            }
            "delete" => h.store.delete_user(&admin, user_id).unwrap(),
            "move" => {
                let patch = latchkey_core::UserPatch {
                    tenant_id: Some(Some("acme".into())),
                    ..Default::default()
                };
                drop(h.store.update_user(&admin, user_id, patch).unwrap());
            }
            "allowlist" => {
                let patch = latchkey_core::KeyPatch {
                    allowed_ips: Some(vec!["10.0.0.0/8".parse().unwrap()]),
                    ..Default::default()
                };
                drop(h.store.update_key(&admin, key_id, patch).unwrap());
            }
            "expire" => clock.advance(time::Duration::hours(2)),
            _ => unreachable!("{end}"),
        }
        // A change about someone else, after.
        let other = NewGroup {
            name: format!("after-{n}"),
            permissions: PermissionSet::default(),
        };
        h.store.create_group(&admin, other).unwrap();
        let mut sent = String::new();
        loop {
            let frame = tokio::time::timeout(PATIENCE, stream.body.frame())
                .await
                .unwrap_or_else(|_| panic!("{end}: the stream did not end; it sent {sent}"));
            match frame {
                Some(frame) => {
                    let bytes = frame.unwrap().into_data().unwrap();
                    sent.push_str(std::str::from_utf8(&bytes).unwrap());
                }
                None => break,
            }
        }
        assert!(!sent.contains("event: change"), "{end}: {sent}");
        if end == "group" {
            // Given back for the next cases.
            feeders_verify(latchkey_core::PermissionEdit::adding);
        }
    }
}

/// A stream that shows who did what ends once its key may no longer read the audit trail;
/// reconnecting, it gets the changes without their actors.
#[tokio::test]
async fn a_stream_that_shows_actors_ends_when_its_key_may_no_longer_read_the_trail() {
    let h = Harness::new();
    let both = ["latchkey:verify", "latchkey:audit:read"];
    let (user, key) = h.user_with_key("auditor", &both).await;
    let mut stream = Stream::open_as(&h, &key, "/v1/events?heartbeat_ms=1000").await;
    assert_eq!(stream.next().await.event, "ready");
    assert_eq!(stream.next().await.event, "heartbeat");
    let patch = latchkey_core::UserPatch {
        permissions: latchkey_core::PermissionEdit::removing(
            PermissionSet::parse(["latchkey:audit:read"]).unwrap(),
        ),
        ..Default::default()
    };
    let id = user["id"].as_str().unwrap().parse().unwrap();
    h.store.update_user(&Actor::system(), id, patch).unwrap();
    stream.ends().await;
    let mut again = Stream::open_as(&h, &key, "/v1/events").await;
    assert_eq!(again.next().await.event, "ready");
    let body = json!({"name": "support", "permissions": ["orders:read"]});
    h.send("POST", "/v1/groups", Some(&h.admin), Some(body))
        .await
        .ok(201);
    assert!(again.change().await.data["actor"].is_null());
}

#[tokio::test]
async fn a_stream_ends_when_its_users_keys_are_revoked_in_bulk() {
    // One key a chunk and no background thread: the job never reaches the key's record,
    // only the user's revocation mark says the key is revoked.
    let h = Harness::configured(|c| c.job_chunk_keys(1).background_jobs(false));
    let (user, key) = h.user_with_key("follower", &["latchkey:verify"]).await;
    h.post("/v1/keys", json!({"name": "second", "user_id": "follower"}))
        .await
        .ok(201);
    let mut stream = Stream::open_as(&h, &key, "/v1/events?heartbeat_ms=1000").await;
    assert_eq!(stream.next().await.event, "ready");
    assert_eq!(stream.next().await.event, "heartbeat");
    let id = user["id"].as_str().unwrap().parse().unwrap();
    h.store.revoke_user_keys(&Actor::system(), id).unwrap();
    assert_eq!(h.store.pending_jobs().unwrap(), 1, "the job waits");
    let key_id = h.store.key_id(key.rsplit_once('_').unwrap().0).unwrap();
    assert_eq!(h.store.key(key_id).unwrap().revoked_at, None);
    stream.ends().await;
}

#[tokio::test]
async fn a_long_replay_ends_for_a_key_revoked_meanwhile() {
    let h = Harness::new();
    let (_, key) = h.user_with_key("follower", &["latchkey:verify"]).await;
    let user = h.store.user("admin").unwrap();
    for chunk in 0..5 {
        let new: Vec<NewKey> = (0..1000)
            .map(|i| NewKey {
                name: format!("bulk {chunk} {i}"),
                user_id: user.id,
                ..NewKey::default()
            })
            .collect();
        h.store.create_keys(&Actor::system(), &new).unwrap();
    }
    let head = h.store.last_seq().unwrap();
    let mut stream = Stream::open_as(&h, &key, "/v1/events?after=0&heartbeat_ms=1000").await;
    assert_eq!(stream.next().await.event, "ready");
    stream.change().await;
    let key_id = h.store.key_id(key.rsplit_once('_').unwrap().0).unwrap();
    h.store.revoke_key(&Actor::system(), key_id).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // What was read from the store already may still go out; then the stream ends, long
    // before the replay reaches the head.
    let mut sent = 1;
    loop {
        let frame = tokio::time::timeout(PATIENCE, stream.body.frame())
            .await
            .expect("the stream did not end");
        match frame {
            None => break,
            Some(frame) => {
                let bytes = frame.unwrap().into_data().unwrap();
                sent += std::str::from_utf8(&bytes)
                    .unwrap()
                    .matches("event: change")
                    .count();
            }
        }
    }
    assert!(
        sent < 1_000,
        "{sent} of {head} changes sent after the key was revoked"
    );
}

#[tokio::test]
async fn closing_the_streams_of_a_store_ends_them_and_only_them() {
    let (h, other) = (Harness::new(), Harness::new());
    let mut stream = Stream::open(&h, "/v1/events?heartbeat_ms=1000", &[]).await;
    let mut unrelated = Stream::open(&other, "/v1/events?heartbeat_ms=1000", &[]).await;
    assert_eq!(stream.next().await.event, "ready");
    assert_eq!(unrelated.next().await.event, "ready");
    latchkey_admin::close_event_streams(&h.store);
    stream.ends().await;
    // The other store's stream goes on, and so do streams opened afterwards.
    assert_eq!(unrelated.next().await.event, "heartbeat");
    let mut later = Stream::open(&h, "/v1/events?heartbeat_ms=1000", &[]).await;
    assert_eq!(later.next().await.event, "ready");
    assert_eq!(later.next().await.event, "heartbeat");
}

/// Sends `GET /v1/events` to `app`, with `key` as the bearer when given; the response's
/// body (the open stream) is held as long as the response is.
async fn open_stream(app: &axum::Router, key: Option<&str>) -> http::Response<Body> {
    let mut request = Request::builder().uri("/v1/events");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap()
}

/// Asserts a 429 `too_many_streams`.
async fn assert_too_many(response: http::Response<Body>) {
    assert_eq!(response.status(), 429);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "too_many_streams", "{body}");
}

#[tokio::test]
async fn a_key_holds_at_most_eight_streams() {
    let h = Harness::new();
    let (_, key) = h.user_with_key("verifier", &["latchkey:verify"]).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        let response = open_stream(&h.app, Some(&key)).await;
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    assert_too_many(open_stream(&h.app, Some(&key)).await).await;
    // Another key is not affected.
    assert_eq!(open_stream(&h.app, Some(&h.admin)).await.status(), 200);
    // A stream that ends gives its place back.
    open.pop();
    let ninth = open_stream(&h.app, Some(&key)).await;
    assert_eq!(ninth.status(), 200);
    assert_too_many(open_stream(&h.app, Some(&key)).await).await;
}

#[tokio::test]
async fn at_most_1024_streams_are_open_in_all() {
    let h = Harness::new();
    // The operator's router: no key, so only the total bound applies.
    let app = latchkey_admin::operator_router(h.store.clone());
    let mut open = Vec::new();
    for _ in 0..1024 {
        let response = open_stream(&app, None).await;
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    assert_too_many(open_stream(&app, None).await).await;
    open.pop();
    let last = open_stream(&app, None).await;
    assert_eq!(last.status(), 200);
    assert_too_many(open_stream(&app, None).await).await;
}

/// Who did what is the audit trail's: a key that may verify but not read the audit trail
/// gets each change with its `actor` null (all it needs to empty its cache is what
/// changed), and hashes keyed by the store, which no guess of the actor can be checked
/// against, and no `changes`; one that may read the trail gets the change whole.
#[tokio::test]
async fn changes_name_their_actor_only_to_a_key_that_may_read_the_audit_trail() {
    let h = Harness::new();
    let (_, verifier) = h.user_with_key("verifier", &["latchkey:verify"]).await;
    let both = ["latchkey:verify", "latchkey:audit:read"];
    let (_, auditor) = h.user_with_key("auditor", &both).await;
    let mut partial = Stream::open_as(&h, &verifier, "/v1/events").await;
    let mut whole = Stream::open_as(&h, &auditor, "/v1/events").await;
    assert_eq!(partial.next().await.event, "ready");
    assert_eq!(whole.next().await.event, "ready");
    let body = json!({"name": "support", "permissions": ["orders:read"]});
    h.send("POST", "/v1/groups", Some(&h.admin), Some(body))
        .await
        .ok(201);
    let (hidden, shown) = (partial.change().await, whole.change().await);
    assert_eq!(hidden.data["action"], "group.create");
    assert!(hidden.data["actor"].is_null(), "{:?}", hidden.data);
    assert!(shown.data["actor"].is_string(), "{:?}", shown.data);
    let audit = h.get("/v1/audit?order=desc&limit=1").await.ok(200);
    assert_eq!(shown.data["hash"], audit["items"][0]["hash"]);
    assert_eq!(shown.data["prev_hash"], audit["items"][0]["prev_hash"]);
    for member in ["hash", "prev_hash"] {
        let keyed = hidden.data[member].as_str().unwrap();
        assert_eq!(keyed.len(), 64, "{:?}", hidden.data);
        assert_ne!(hidden.data[member], shown.data[member]);
    }
    // What a change did is the audit trail's too.
    let renamed = h
        .patch("/v1/groups/support", json!({"name": "helpdesk"}))
        .await;
    assert_eq!(renamed.status, 200);
    let (renamed_hidden, renamed_shown) = (partial.change().await, whole.change().await);
    assert_eq!(renamed_hidden.data["action"], "group.update");
    assert_eq!(
        renamed_hidden.data.get("changes"),
        None,
        "{:?}",
        renamed_hidden.data
    );
    let name = json!({"from": "support", "to": "helpdesk"});
    assert_eq!(renamed_shown.data["changes"]["name"], name);
    // Keyed alike on every change and at a resumption, so that a follower still links them
    // and compares the hash where it resumes with the one it saw.
    let deleted = h.delete("/v1/groups/helpdesk").await;
    assert_eq!(deleted.status, 204);
    let next = partial.change().await;
    assert_eq!(next.data["prev_hash"], renamed_hidden.data["hash"]);
    let seq = hidden.data["seq"].as_u64().unwrap();
    for (key, change) in [(&verifier, &hidden), (&auditor, &shown)] {
        let mut resumed = Stream::open_as(&h, key, &format!("/v1/events?after={seq}")).await;
        let ready = resumed.next().await;
        assert_eq!(ready.event, "ready");
        assert_eq!(ready.data["hash"], change.data["hash"]);
    }
}
