//! `GET /v1/events`: the change feed as server-sent events, for remote verifiers.
//!
//! # The stream
//!
//! Every event is one of:
//!
//! | `event:` | `id:` | `data:` |
//! |---|---|---|
//! | `ready` | — | `{"head": 41, "position": 38, "hash": "…", "lineage": "…", "sent_at_ms": 1765000000000}`: first, when the stream resumes or starts |
//! | `reset` | — | `{"head": 41, "position": 41, "hash": "…", "lineage": "…", "sent_at_ms": …}`: first, instead of `ready`, when the client's position is ahead of the store's head |
//! | `change` | the sequence number | the [`AuditEvent`] JSON: `seq`, `at`, `actor`, `action` (`key.revoke`, …), `target`, `user_id`, `prev_hash`, `hash`; for a caller without `latchkey:audit:read` `actor` is `null` (who did what is the audit trail's) and both hashes are keyed by the store (`Store::feed_hash`), so that no guess of the actor can be checked against them |
//! | `heartbeat` | — | `{"head": 42, "sent_at_ms": 1765000005000}`: every `heartbeat_ms`, once everything up to `head` was sent; `sent_at_ms` is the daemon's clock, so a client can tell a stream delayed on its way from a live one |
//!
//! The position to resume from is the `Last-Event-ID` header (what an `EventSource` sends
//! when it reconnects), else the `after` query parameter; the stream then replays every
//! change with a greater `seq` from the store, in order, and goes on with live changes,
//! never skipping or repeating one. Without either, it starts at the head: live changes
//! only. `after=0` replays the whole feed.
//!
//! `position` is where the stream resumes (the head when none was given) and `hash` the
//! hash of the change at that position (`null` at 0), keyed as the changes' are. A client that remembers the hash of
//! the last change it saw compares the two: a difference means the daemon now serves
//! another store, or a restored backup that diverged, and whatever the client derived from
//! the feed is stale. A position ahead of the head is the same situation told by the
//! daemon: the first event is then `reset`, and the stream continues from the head.
//! `lineage` names the store; a restored store has a new one, whatever its chain holds.
//!
//! A heartbeat carries the sequence number of the last change sent on this stream, and is
//! sent only after every change already published when it fell due has been sent (a
//! change is published once it is durable, and on a shared database once this daemon
//! applied it: [`Store::published_seq`]; no change goes out before): `sent_at_ms` is when
//! it fell due, so a client that receives `heartbeat {head, sent_at_ms}` knows that it
//! has seen everything the store had published by then, which is what lets a verifier
//! bound how stale its cache is. It does not wait for a quiet moment: while changes keep
//! coming (a bulk import, `revoke-keys` on a large user), one falls due every interval
//! and each follows the changes that were published when it fell due, live or in a
//! replay.
//! Its absence for a few intervals means the stream is dead. None is sent while the
//! daemon itself has not heard from a shared database within `max_staleness` (it answers
//! 503 `keystore_unavailable` then, to a request for a new stream too): it cannot vouch
//! for what it has not seen.
//!
//! On a shared database that loses changes the daemon had applied (a failover that lost
//! commits), or holds one that does not decode, every stream ends: a client resuming from
//! beyond the store's head is answered `reset`, one resuming before a change that does not
//! decode sees a gap in the sequence numbers (the change is stepped over).
//!
//! At most 1,024 streams are open at once, and 8 per key (see `streams`); past either,
//! the request is answered 429 `too_many_streams`. `heartbeat_ms` is 1000 to 60000: a
//! lower value is refused with 400.
//!
//! The stream lasts as long as the caller's key may read it: at every heartbeat, before
//! any change about the key itself, its user or one of its user's groups, and before any
//! change once the key's expiry has passed, the key must still be active, its user enabled and its
//! effective permissions must still hold `latchkey:verify`, and its allowlist must be none
//! or the one it opened under (the stream has no client address to check against a new
//! one); otherwise the stream ends (and reconnecting answers 401 or 403, or is checked
//! against the new allowlist). So a key revoked, disabled, expired or stripped
//! of the permission reads no change made after that.
//!
//! Each event is written as soon as its change commits: core broadcasts a change before
//! the write that made it returns. A subscriber that falls behind the broadcast buffer
//! replays the missed changes from the store.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, Stream};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use latchkey_core::wire::{Heartbeat, StreamStart};
use latchkey_core::{Action, AuditEvent, Standing, Store, StoreError};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::caller::{Caller, Required, perm};
use crate::error::{AppError, Problem};
use crate::extract::{Params, optional};
use crate::handlers::streams::StreamSlot;
use crate::openapi::problems::LacksVerify;
use crate::state::AppState;

/// How many changes one replay read takes from the store.
const REPLAY_PAGE: usize = 500;
/// The most heartbeats one stream holds that fell due and wait for their changes to be
/// sent (one an interval: a minute's worth at the shortest interval, far past any
/// `max_staleness` they could vouch within).
const MAX_MARKS: usize = 64;
/// The heartbeat interval when the client does not ask for one.
const DEFAULT_HEARTBEAT_MS: u64 = 5_000;
/// The bounds of `heartbeat_ms`. Each heartbeat reads the caller's key, user and groups from
/// the store: with up to 1,024 streams, a floor of one second keeps that at most about a
/// thousand reads a second, beside the reads a change to a stream's own key, user or one
/// of its user's groups costs that stream (once for all the changes before the read). A
/// lower value is refused (400), not raised in silence, since a client that expects
/// faster heartbeats would take the stream for dead.
const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 1_000..=60_000;

/// The signal that ends the streams of a store, by store path: see
/// [`close_event_streams`]. A store is open once per process (sled locks it), so its path
/// names it.
static CLOSING: LazyLock<Mutex<HashMap<PathBuf, watch::Sender<()>>>> =
    LazyLock::new(Mutex::default);

fn closing_signal(store: &Store) -> watch::Receiver<()> {
    let mut closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
    closing
        .entry(store.path().to_owned())
        .or_insert_with(|| watch::Sender::new(()))
        .subscribe()
}

/// Ends every open `GET /v1/events` stream over `store`, for a graceful shutdown.
///
/// An event stream never ends by itself, so a server that waits for open requests before
/// it exits (axum's `with_graceful_shutdown`) would wait for every connected remote
/// verifier. Call this when the shutdown begins: each stream ends after the event it is
/// sending, and its client reconnects, resuming where it stopped, once a server is back.
/// Streams opened afterwards are not affected.
///
/// # Example
///
/// ```no_run
/// # async fn run(store: latchkey_core::Store, listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// let app = latchkey_admin::router(store.clone());
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         latchkey_admin::close_event_streams(&store);
///     })
///     .await
/// # }
/// ```
pub fn close_event_streams(store: &Store) {
    let closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = closing.get(store.path()) {
        sender.send_replace(());
    }
}

/// The parameters of `GET /v1/events`. An empty value counts as absent.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsParams {
    /// Replay the changes after this sequence number first (`Last-Event-ID` wins when both
    /// are sent); absent: start at the head, live changes only.
    #[param(value_type = Option<u64>)]
    after: Option<String>,
    /// Milliseconds between heartbeats, 1000 to 60000 (default 5000).
    #[param(value_type = Option<u64>, minimum = 1000, maximum = 60000)]
    heartbeat_ms: Option<String>,
}

/// Stream keystore changes (server-sent events), resumable with `Last-Event-ID`.
///
/// Events: `ready` (or `reset`) first, then `change` (`id:` the sequence number, `data:`
/// the audit event) and `heartbeat` (`data: {"head": n}`). See the crate docs' table.
#[utoipa::path(get, path = "/v1/events", operation_id = "streamEvents", tag = "audit",
    params(
        EventsParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number"),
    ),
    responses(
        (status = 200, description = "A stream of `ready`/`reset`, `change` and `heartbeat` events", content_type = "text/event-stream", body = String),
        LacksVerify,
        (status = 400, description = "Invalid `after`, `heartbeat_ms` or `Last-Event-ID`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_streams`: 1,024 streams are open, or 8 for this key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["latchkey:verify"])))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller<perm::Verify>,
    headers: HeaderMap,
    Params(params): Params<EventsParams>,
) -> Result<Response, AppError> {
    let heartbeat = optional("heartbeat_ms", params.heartbeat_ms, |s| {
        s.parse::<u64>()
            .ok()
            .filter(|ms| HEARTBEAT_MS.contains(ms))
            .ok_or_else(|| format!("{s:?} is not a heartbeat interval: expected 1000 to 60000"))
    })?
    .unwrap_or(DEFAULT_HEARTBEAT_MS);
    let after = optional("after", params.after, parse_seq)?;
    let last_event_id = match headers.get_all("last-event-id").iter().next_back() {
        Some(value) => {
            let text = value.to_str().unwrap_or("\u{fffd}").trim().to_owned();
            optional("Last-Event-ID", Some(text), parse_seq)?
        }
        None => None,
    };

    caller.ensure_global()?;
    // A process that has stopped following its database vouches for no cache: its `ready`
    // would tell a reconnecting verifier that it is in step again. The key's verification
    // already answers 503 then; this also covers the operator router, which has no key.
    if !state.store.is_fresh() {
        return Err(StoreError::Unavailable(
            "this daemon's progress has not been recorded in the keystore's database within \
             max_staleness: its change feed vouches for nothing until it is"
                .into(),
        )
        .into());
    }
    let slot = state.streams.acquire(caller.actor.key_id())?;

    // Subscribe before reading the head: every change published after this point reaches
    // the receiver, and every one before it is in the store, so none can fall in between.
    let receiver = state.store.subscribe();
    let breaks = state.store.feed_breaks();
    // The key's user, groups and expiry, read after subscribing (a change that ends its
    // right is then either seen by this read or carried by the receiver), for the checks
    // before each change that may end it.
    let listener = match caller.actor.key_id() {
        Some(key_id) => Some(
            state
                .run(move |store| Ok(Listener::read(store, key_id)?))
                .await?,
        ),
        None => None,
    };
    // The changes published: durable, and broadcast (a change committed and not flushed
    // yet may still be lost, its number reused). On a shared database, its head, which a
    // client that followed a daemon further ahead may be at: this one replays from it.
    let head = match state.store.applied_seq() {
        Some(_) => state.run(|store| Ok(store.last_seq()?)).await?,
        None => state.store.published_seq(),
    };
    let (first, position) = match last_event_id.or(after) {
        Some(position) if position > head => ("reset", head),
        Some(position) => ("ready", position),
        None => ("ready", head),
    };
    // Who did what is the audit trail's (`latchkey:audit:read`); a verifier needs only
    // what changed to empty its cache.
    let shows_actors = caller
        .actor
        .permissions()
        .allows_str(perm::AuditRead::PERMISSION);
    let hash = state
        .run(move |store| Ok(hash_at(store, position)?))
        .await?
        .map(|hash| {
            if shows_actors {
                hash
            } else {
                state.store.feed_hash(&hash)
            }
        });
    let start = Event::default().event(first).json_data(StreamStart {
        head,
        position,
        hash,
        lineage: Some(state.store.lineage()),
        sent_at_ms: Some(unix_ms(&state.store)),
    });
    let start = start.map_err(AppError::internal)?;
    let feed = Feed {
        store: state.store.clone(),
        shows_actors,
        receiver,
        last_sent: position,
        replaying: position < head,
        heartbeat_due: false,
        marks: Marks::default(),
        heartbeat: heartbeat_interval(Duration::from_millis(heartbeat)),
        queue: VecDeque::from([start]),
        caller: listener,
        checked_at: Instant::now(),
        closing: closing_signal(&state.store),
        breaks,
        replay_limit: REPLAY_PAGE,
        _slot: slot,
    };
    let mut response = Sse::new(feed.into_stream()).into_response();
    // Reverse proxies such as nginx buffer responses unless told not to; a buffered event
    // stream delivers revocations late.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn parse_seq(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a sequence number"))
}

/// The hash of the change at `seq` (`None` at 0).
fn hash_at(store: &Store, seq: u64) -> Result<Option<String>, StoreError> {
    if seq == 0 {
        return Ok(None);
    }
    let change = store.events_since(seq - 1, 1)?.into_iter().next();
    Ok(change.filter(|c| c.seq == seq).map(|c| c.hash))
}

/// Ticks every `period`, the first tick one period from now.
fn heartbeat_interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// One client's position in the change feed.
///
/// **Invariant:** `last_sent` is the sequence number of the last change queued for the
/// client (or the position it resumed from); the next change queued is `last_sent + 1`.
struct Feed {
    store: Store,
    /// Whether changes carry their `actor`: only for a caller that may read the audit
    /// trail; `null` otherwise.
    shows_actors: bool,
    receiver: broadcast::Receiver<AuditEvent>,
    last_sent: u64,
    /// Changes are being read from the store rather than from the receiver: at the start,
    /// after the receiver lagged, or after a gap.
    replaying: bool,
    /// A heartbeat is due once the receiver has been drained, or once a mark is reached.
    heartbeat_due: bool,
    /// When each heartbeat not sent yet fell due, and the store's head then, oldest first:
    /// one a heartbeat interval, each sent, stamped then, once every change up to its head
    /// has been sent, whether or not more came since (the newest reached, when several
    /// are). One at a time, a stream that lags behind its changes by L would send one
    /// heartbeat every L or so, each already L old: trust lapsed at half `max_staleness`.
    marks: Marks,
    heartbeat: Interval,
    queue: VecDeque<Event>,
    /// The caller's key, checked at every heartbeat (and as often during a replay, which may
    /// send none until its marks are reached), and before a change that may concern it
    /// ([`Listener::may_be_ended_by`]); `None` for the operator router.
    caller: Option<Listener>,
    /// When the caller's key was last checked.
    checked_at: Instant,
    /// Changes when the server shuts down: the stream ends.
    closing: watch::Receiver<()>,
    /// Changes at a break in the store's feed (`Store::feed_breaks`): the stream ends, and
    /// the client, resuming, is told (`reset` when the store went back past it, a gap
    /// otherwise).
    breaks: watch::Receiver<u64>,
    /// How many changes the next replay read takes: one at a time after a page that did
    /// not decode, until the change that does not is stepped over.
    replay_limit: usize,
    /// This stream's place among the open ones, given back when the client goes.
    _slot: StreamSlot,
}

/// The key a stream was opened with, as of its last check.
struct Listener {
    key_id: Uuid,
    /// What the last check found; `None` when the key no longer authenticated at the
    /// stream's start (it did a moment before): its stream then ends at the first change
    /// or heartbeat.
    standing: Option<Standing>,
    /// The changes the last check saw (published before it read the store): none of them
    /// needs another.
    checked_through: u64,
}

impl Listener {
    /// Key `key_id` as the store has it now. Blocking: off the async workers.
    fn read(store: &Store, key_id: Uuid) -> Result<Listener, StoreError> {
        // Before the key: every change published by then is in what its read sees.
        let checked_through = store.published_seq();
        Ok(Listener {
            key_id,
            standing: store.authenticates_now(key_id)?,
            checked_through,
        })
    }

    /// Whether `change` may have ended this key's right to the stream, or its expiry has
    /// come (`now`): a change to the key, to its user, or to one of its user's groups,
    /// made after the last check. Creations end nothing. So a stream's store reads stay
    /// few however busy the store: a key's own changes are rare.
    fn may_be_ended_by(&self, change: &AuditEvent, now: i128) -> bool {
        use Action::*;
        let Some(standing) = &self.standing else {
            return true;
        };
        if standing.expires_at_nanos.is_some_and(|at| at <= now) {
            return true;
        }
        if change.seq <= self.checked_through {
            return false;
        }
        match change.action {
            KeyUpdate | KeyRevoke | KeyDelete | KeyRotate => change.target == self.key_id,
            UserUpdate | UserDelete | UserRevokeKeys | UserKeysRevoked => {
                change.target == standing.principal.user_id
            }
            GroupUpdate | GroupDelete => standing.groups.contains(&change.target),
            GroupCreate | UserCreate | KeyCreate => false,
            // An action of a later version: checked rather than trusted.
            _ => true,
        }
    }
}

/// The networks a key's requests may come from; none when any may.
fn allowlist(standing: &Standing) -> Vec<IpNet> {
    let meter = standing.principal.meter.as_ref();
    meter.map(|m| m.allowed_ips().to_vec()).unwrap_or_default()
}

/// A heartbeat that fell due at `sent_at_ms`, when the newest change published was `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    sent_at_ms: i64,
    head: u64,
}

/// The heartbeats of a stream that fell due and wait for their changes to be sent, oldest
/// first, at most [`MAX_MARKS`].
#[derive(Debug, Default)]
struct Marks(VecDeque<Mark>);

impl Marks {
    /// Notes a heartbeat that fell due; `false` when [`MAX_MARKS`] wait already.
    fn push(&mut self, mark: Mark) -> bool {
        let room = self.0.len() < MAX_MARKS;
        if room {
            self.0.push_back(mark);
        }
        room
    }

    /// The newest mark whose changes are all sent once `last_sent` is, the older ones
    /// with it (its heartbeat vouches for more).
    fn reached(&mut self, last_sent: u64) -> Option<Mark> {
        let mut reached = None;
        while let Some(mark) = self.0.front().filter(|m| m.head <= last_sent) {
            reached = Some(*mark);
            self.0.pop_front();
        }
        reached
    }

    /// The store holds nothing after `last_sent`: changes the marks counted on are gone
    /// (an embedded store reopened after a write that failed lost them), and everything
    /// there was is out.
    fn clamp(&mut self, last_sent: u64) {
        for mark in &mut self.0 {
            mark.head = mark.head.min(last_sent);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |mut feed| async move {
            let event = feed.next().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event to send; `None` ends the stream (the store was closed, or could not
    /// be read: the client reconnects and resumes).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if let Some(mark) = self.marks.reached(self.last_sent) {
                // Everything published when the heartbeat fell due is out.
                self.beat(mark.sent_at_ms).await?;
                continue;
            }
            if self.replaying {
                // However long the replay, the stream ends at shutdown, and for a key that
                // lost its right to it once a heartbeat's interval has passed.
                if self.closing.has_changed().unwrap_or(true)
                    || self.breaks.has_changed().unwrap_or(true)
                {
                    return None;
                }
                if self.heartbeat.tick().now_or_never().is_some() {
                    self.heartbeat_due = true;
                    self.set_mark();
                }
                if self.checked_at.elapsed() >= self.heartbeat.period()
                    && !self.caller_may_listen().await
                {
                    return None;
                }
                self.replay_page().await?;
                continue;
            }
            if self.heartbeat_due {
                // One mark an interval while the changes are drained (and one not taken,
                // this process not following its database, is tried again).
                if self.heartbeat.tick().now_or_never().is_some() {
                    self.set_mark();
                }
                // Everything published before the heartbeat fell due goes out first.
                let drained_at = unix_ms(&self.store);
                match self.receiver.try_recv() {
                    Ok(change) => self.live(change).await?,
                    Err(TryRecvError::Lagged(_)) => self.replaying = true,
                    // A change a mark counts on that the receiver has not carried (every
                    // published change was broadcast first: a safety net). The store has
                    // it.
                    Err(TryRecvError::Empty) if !self.marks.is_empty() => self.replaying = true,
                    // Everything up to `last_sent` was out when the receiver was found
                    // empty: the heartbeat vouches for no later time.
                    Err(TryRecvError::Empty) => self.beat(drained_at).await?,
                    Err(TryRecvError::Closed) => return None,
                }
                continue;
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(change) => self.live(change).await?,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "event stream lagged; replaying from the store");
                        self.replaying = true;
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    self.heartbeat_due = true;
                    self.set_mark();
                }
                _ = self.closing.changed() => return None,
                _ = self.breaks.changed() => return None,
            }
        }
    }

    /// Notes when the due heartbeat fell due and the newest change published then, read
    /// after the time (so that every change published by then is at or before it). None is
    /// taken while this process does not follow its database: a heartbeat sent later, once
    /// it does, must not vouch for a time when it did not.
    fn set_mark(&mut self) {
        if !self.store.is_fresh() {
            return;
        }
        let sent_at_ms = unix_ms(&self.store);
        // The changes published (durable, and broadcast: on a shared database, applied
        // here): what the stream can vouch for. A change committed and not flushed yet
        // may still be lost, its number reused by another.
        let head = self.store.published_seq();
        self.marks.push(Mark { sent_at_ms, head });
    }

    /// Queues a heartbeat, stamped `sent_at_ms`, once the caller's key is checked: `None`
    /// when it may no longer read the stream. Another is still due while marks wait.
    async fn beat(&mut self, sent_at_ms: i64) -> Option<()> {
        self.heartbeat_due = !self.marks.is_empty();
        if !self.caller_may_listen().await {
            return None;
        }
        // A process that has stopped following its database (it answers 503 itself)
        // vouches for nobody's cache: no heartbeat, so the client's trust in its cache
        // lapses as its own would.
        if self.store.is_fresh() {
            let beat = Heartbeat {
                head: self.last_sent,
                sent_at_ms: Some(sent_at_ms),
            };
            let event = Event::default().event("heartbeat").json_data(beat);
            self.queue.push_back(event.ok()?);
        }
        Some(())
    }

    /// A change from the receiver: queued when it is the next one, skipped when it was
    /// already sent (replayed), and a replay when changes are missing before it. `None`
    /// when the caller may no longer read it.
    async fn live(&mut self, change: AuditEvent) -> Option<()> {
        if change.seq <= self.last_sent {
            return Some(());
        }
        if change.seq == self.last_sent + 1 {
            self.send_checked(&change).await?;
        } else {
            self.replaying = true;
        }
        Some(())
    }

    /// Queues `change` once the caller is checked again, if the change may have ended its
    /// right to the stream (or its key has expired): `None` when it has, and nothing of it
    /// is sent.
    async fn send_checked(&mut self, change: &AuditEvent) -> Option<()> {
        let store = &self.store;
        if self
            .caller
            .as_ref()
            .is_some_and(|listener| listener.may_be_ended_by(change, store.clock().unix_nanos()))
            && !self.caller_may_listen().await
        {
            return None;
        }
        self.send(change);
        Some(())
    }

    /// Reads the next page of changes after `last_sent` from the store; the replay ends
    /// with an empty page. A change that does not decode (on a shared database, damaged by
    /// hand or by a fault: the store's own catch-up steps over it too) is stepped over,
    /// found by reading one change at a time: the client sees the gap and empties its
    /// cache, rather than this stream failing on it at every reconnection.
    async fn replay_page(&mut self) -> Option<()> {
        // No further than what was published: a change committed and not flushed yet may
        // still be lost, and its number reused by another (the receiver carries it once
        // it is published).
        let published = self.store.published_seq();
        let store = self.store.clone();
        let (after, limit) = (self.last_sent, self.replay_limit);
        let page = if after < published {
            tokio::task::spawn_blocking(move || store.events_since(after, limit)).await
        } else {
            Ok(Ok(Vec::new()))
        };
        let page = match page {
            Ok(Ok(mut page)) => {
                page.retain(|change| change.seq <= published);
                page
            }
            Ok(Err(StoreError::Corrupt(_))) if limit > 1 => {
                self.replay_limit = 1;
                return Some(());
            }
            Ok(Err(StoreError::Corrupt(why))) => {
                tracing::error!(seq = after + 1, error = %why, "a change does not decode; stepped over on this event stream (its client empties its cache)");
                self.last_sent = after + 1;
                self.replay_limit = REPLAY_PAGE;
                return Some(());
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not read the change feed; closing the stream");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "change feed read panicked; closing the stream");
                return None;
            }
        };
        if page.is_empty() {
            self.replaying = false;
            self.marks.clamp(self.last_sent);
        }
        for change in &page {
            if change.seq != self.last_sent + 1 {
                tracing::error!(
                    expected = self.last_sent + 1,
                    found = change.seq,
                    "the change feed has a gap; closing the stream"
                );
                return None;
            }
            self.send_checked(change).await?;
        }
        Some(())
    }

    /// Whether the caller's key still authenticates, holds `latchkey:verify` and is global,
    /// and, for a stream that shows actors, still holds `latchkey:audit:read`: a key
    /// revoked (alone, or with all its user's keys by `revoke-keys`, before the background
    /// job reaches its record), disabled, expired, stripped of a permission or whose user
    /// was placed in a tenant (a bound caller may not read the feed) ends its stream before
    /// the next change, or at the next heartbeat; reconnecting, it gets what it may read
    /// now. Checked from the records as verification reads them
    /// ([`Store::authenticates_now`]), not by verifying the key again, so that holding a
    /// stream does not count as a use of the key.
    async fn caller_may_listen(&mut self) -> bool {
        let Some(key_id) = self.caller.as_ref().map(|listener| listener.key_id) else {
            return true;
        };
        let store = self.store.clone();
        let shows_actors = self.shows_actors;
        // The allowlist the client's address was last checked against (by the layer, when
        // the stream opened): a stream carries no address to check again.
        let opened_under = self
            .caller
            .as_ref()
            .and_then(|listener| listener.standing.as_ref())
            .map(allowlist)
            .unwrap_or_default();
        let allowed = tokio::task::spawn_blocking(move || {
            let listener = Listener::read(&store, key_id)?;
            let allowed = listener.standing.as_ref().is_some_and(|standing| {
                let principal = &standing.principal;
                let now_under = allowlist(standing);
                principal.tenant_id.is_none()
                    && principal.has(perm::Verify::PERMISSION)
                    && (!shows_actors || principal.has(perm::AuditRead::PERMISSION))
                    && (now_under.is_empty() || now_under == opened_under)
            });
            Ok::<_, StoreError>((allowed, listener))
        })
        .await;
        match allowed {
            Ok(Ok((allowed, listener))) => {
                if !allowed {
                    tracing::info!(%key_id, "event stream closed: its key may no longer read it, or its allowlist changed");
                }
                self.caller = Some(listener);
                self.checked_at = Instant::now();
                allowed
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not check an event stream's key; closing it");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "event stream key check panicked; closing it");
                false
            }
        }
    }

    fn send(&mut self, change: &AuditEvent) {
        let hidden;
        let change = if self.shows_actors {
            change
        } else {
            // Without its actor or what it changed, and with hashes that cannot be
            // checked against a guessed one (`Store::feed_hash`).
            hidden = AuditEvent {
                actor: None,
                changes: None,
                prev_hash: self.store.feed_hash(&change.prev_hash),
                hash: self.store.feed_hash(&change.hash),
                ..change.clone()
            };
            &hidden
        };
        match Event::default()
            .event("change")
            .id(change.seq.to_string())
            .json_data(change)
        {
            Ok(event) => {
                self.queue.push_back(event);
                self.last_sent = change.seq;
            }
            // Unreachable: an audit event always serializes. Were it not to, the change
            // would not be marked sent and the stream would end at the next read.
            Err(e) => tracing::error!(error = %e, seq = change.seq, "could not encode a change"),
        }
    }
}

/// The store's clock in Unix milliseconds, as `sent_at_ms` carries it.
fn unix_ms(store: &Store) -> i64 {
    i64::try_from(store.clock().unix_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(sent_at_ms: i64, head: u64) -> Mark {
        Mark { sent_at_ms, head }
    }

    /// A stream behind its changes keeps one mark an interval: each is reached in turn,
    /// so heartbeats keep their interval, each as old as the lag (one mark at a time
    /// sent one every lag or so, each as old: trust lapsed at half `max_staleness`).
    #[test]
    fn marks_are_reached_in_turn_and_the_newest_reached_is_sent() {
        let mut marks = Marks::default();
        assert!(marks.push(mark(1_000, 10)));
        assert!(marks.push(mark(2_000, 20)));
        assert!(marks.push(mark(3_000, 30)));
        assert_eq!(marks.reached(9), None);
        assert_eq!(marks.reached(10), Some(mark(1_000, 10)));
        assert_eq!(marks.reached(25), Some(mark(2_000, 20)));
        assert!(!marks.is_empty());
        assert!(marks.push(mark(4_000, 31)));
        // Both reached at once: the newer vouches for more.
        assert_eq!(marks.reached(31), Some(mark(4_000, 31)));
        assert!(marks.is_empty());
    }

    #[test]
    fn marks_are_bounded_and_clamped_to_what_the_store_holds() {
        let mut marks = Marks::default();
        for i in 0..MAX_MARKS {
            assert!(marks.push(mark(i as i64, 100 + i as u64)));
        }
        assert!(!marks.push(mark(0, 0)), "bounded");
        marks.clamp(50);
        assert_eq!(
            marks.reached(50),
            Some(mark(MAX_MARKS as i64 - 1, 50)),
            "all reached, the newest sent"
        );
    }
}
