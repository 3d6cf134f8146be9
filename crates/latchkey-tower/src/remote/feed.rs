//! The event stream: follows the daemon's change feed, invalidates the cache, keeps the
//! trust window open, and reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Event;
use futures_util::StreamExt;
use latchkey_core::wire::{Heartbeat, StreamStart};
use serde::Deserialize;
use uuid::Uuid;

use super::cache::{Effect, Scope};
use super::sse;
use super::verifier::{Shared, nanos};

/// The fields of a `change` the cache needs; the rest of the audit event is ignored, so a
/// daemon that adds fields or actions does not break the stream.
#[derive(Deserialize)]
struct Change {
    seq: u64,
    action: String,
    #[serde(default)]
    target: Option<Uuid>,
    #[serde(default)]
    user_id: Option<Uuid>,
    #[serde(default)]
    hash: Option<String>,
}

/// What the verifier knows of the feed, across connections.
#[derive(Debug, Default)]
struct Cursor {
    /// The last change applied; `None` before the first connection.
    position: Option<u64>,
    /// That change's hash, when known: a daemon whose change at `position` has another
    /// hash serves another store (or a restored backup that diverged).
    hash: Option<String>,
    /// The store's lineage as the last `ready` told it: another one is a restored (or
    /// another) store, even when its chain matches.
    lineage: Option<Uuid>,
}

/// One connection's progress.
#[derive(Debug, Default)]
struct Session {
    /// The head announced by `ready`: the stream is caught up once it is applied.
    target: Option<u64>,
    synced: bool,
    /// This verifier's clock when it asked for the stream (Unix nanoseconds).
    opened: i64,
    /// The least this verifier's clock can be ahead of the daemon's (nanoseconds): the
    /// daemon wrote `ready` after the request left, at `sent_at_ms`, so its clock then read
    /// at most what this one read at `opened`. `None` from a daemon that sends no time.
    offset: Option<i64>,
    /// When `ready` was written, at the earliest, on this verifier's clock: the stream
    /// holds every change up to its head as of then.
    ready_sent: Option<i64>,
    /// The stream ended because the daemon's words arrive `max_staleness` late: a slow
    /// path, which the next stream is likely to meet again.
    late: bool,
    /// When the stream caught up, on this verifier's clock.
    synced_at: Option<i64>,
    /// The last stream ended late too: its reconnections are said at DEBUG.
    quiet: bool,
}

impl Session {
    /// When, at the earliest and on this verifier's clock, the daemon wrote an event
    /// stamped `sent_at_ms`: `None` when the daemon sends no time.
    fn sent_at(&self, sent_at_ms: Option<i64>) -> Option<i64> {
        let offset = self.offset?;
        Some(sent_at_ms?.saturating_mul(1_000_000).saturating_add(offset))
    }
}

/// Follows the feed forever: the task is aborted when the verifier is dropped.
pub(super) async fn run(shared: Arc<Shared>) {
    let settings = &shared.settings;
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    let mut cursor = Cursor::default();
    let mut ends = Ends::default();
    loop {
        let mut session = Session {
            quiet: ends.said.as_deref() == Some(LATE),
            ..Session::default()
        };
        let ended = follow(&shared, &mut cursor, &mut session).await;
        shared.set_connected(false);
        let url = shared.daemon.url();
        match ends.after(&session, nanos(shared.settings.clock.now()), &ended) {
            End::Lost => {
                backoff.reset();
                tracing::warn!(reason = %ended, %url, "latchkey event stream lost; reconnecting");
            }
            End::Unavailable => {
                tracing::warn!(reason = %ended, %url, "latchkey event stream unavailable: cached answers are served only for max_staleness after the daemon last answered; retrying");
            }
            End::StillUnavailable => {
                tracing::debug!(reason = %ended, %url, "latchkey event stream still unavailable");
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// How a stream that ended is taken: whether the backoff starts over, and how loud the log
/// is.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A stream that worked was lost: reconnect at once, said as a WARN.
    Lost,
    /// No stream, for a reason not said yet: a WARN (a stream refused for good, say 429
    /// `too_many_streams` for a ninth app sharing one service key, leaves every request
    /// asking the daemon), and the backoff grows.
    Unavailable,
    /// No stream, for the reason said last time: DEBUG, and the backoff grows.
    StillUnavailable,
}

/// The ends of streams so far.
#[derive(Debug, Default)]
struct Ends {
    /// Why the last stream that did not work ended, as compared: `None` after one that
    /// worked.
    said: Option<String>,
}

/// How a late stream's end is compared: its lag differs each time.
const LATE: &str = "late";

/// How long a stream must have been caught up for a late end to count as a stream lost
/// after it worked (a stall, once), rather than a delay that lasts.
const WORKED_FOR: Duration = Duration::from_secs(30);

impl Ends {
    /// Takes the end of `session`, `now` (this verifier's clock, Unix nanoseconds).
    fn after(&mut self, session: &Session, now: i64, ended: &str) -> End {
        // A stream whose words came `max_staleness` late soon after it opened vouched for
        // little: it did not work, though it caught up. A delay that lasts (a congested
        // link, a buffering proxy) would otherwise reconnect at once, forever, with a WARN
        // each time.
        let worked_for = |at: i64| now.saturating_sub(at) >= WORKED_FOR.as_nanos() as i64;
        let worked = !session.late || session.synced_at.is_some_and(worked_for);
        if session.synced && worked {
            self.said = None;
            return End::Lost;
        }
        let reason = if session.late { LATE } else { ended };
        if self.said.as_deref() == Some(reason) {
            End::StillUnavailable
        } else {
            self.said = Some(reason.to_owned());
            End::Unavailable
        }
    }
}

/// One connection, until it fails; returns why it ended.
async fn follow(shared: &Shared, cursor: &mut Cursor, session: &mut Session) -> String {
    let heartbeat = shared.settings.effective_heartbeat();
    session.opened = nanos(shared.settings.clock.now());
    let response = match shared.daemon.events(cursor.position, heartbeat).await {
        Ok(response) => response,
        Err(e) => return e,
    };
    let idle = shared.settings.idle_timeout();
    let mut events = std::pin::pin!(sse::events(response));
    loop {
        let event = match tokio::time::timeout(idle, events.next()).await {
            Err(_) => return format!("no heartbeat for {idle:?}"),
            Ok(None) => return "the daemon closed the stream".to_owned(),
            Ok(Some(Err(e))) => return e,
            Ok(Some(Ok(event))) => event,
        };
        if let Err(e) = apply(shared, cursor, session, &event) {
            return e;
        }
    }
}

/// Applies one event of the feed.
fn apply(
    shared: &Shared,
    cursor: &mut Cursor,
    session: &mut Session,
    event: &Event,
) -> Result<(), String> {
    match event.event.as_str() {
        kind @ ("ready" | "reset") => {
            let start: StreamStart = parse(kind, &event.data)?;
            session.offset = start.sent_at_ms.map(|ms| {
                session
                    .opened
                    .saturating_sub(ms.saturating_add(1).saturating_mul(1_000_000))
            });
            session.ready_sent = session.sent_at(start.sent_at_ms);
            // The stream took `max_staleness` to open: it could vouch for nothing. Ended
            // before it moves the position or drops the cache.
            if let Some(lag) = session.ready_sent.and_then(|sent| shared.lag_since(sent))
                && lag >= shared.settings.max_staleness
            {
                session.late = true;
                return Err(format!("the stream took {lag:?} to open"));
            }
            // The position first, the cache after: a verification that reads the cache's
            // generation and then the position never pairs the new generation with the
            // old position (and caches an answer from a daemon behind the feed).
            shared.set_position(Some(start.position));
            if kind == "reset" {
                shared.drop_all("the daemon's feed is behind this verifier (reset)");
            } else if cursor.position.is_none() {
                // First connection: answers fetched before it were not covered by events.
                shared.drop_all("first connection");
            } else if cursor.position == Some(start.position)
                && cursor.hash.is_some()
                && cursor.hash != start.hash
            {
                shared.drop_all("the daemon serves another store, or a diverged backup");
            } else if cursor.lineage.is_some() && cursor.lineage != start.lineage {
                shared.drop_all("the daemon serves a restored or another store (new lineage)");
            } else if cursor.position != Some(start.position) {
                // Resumed elsewhere than asked (a proxy that dropped `Last-Event-ID`): the
                // changes in between will never come.
                shared.drop_all("the daemon resumed the feed elsewhere than asked");
            }
            cursor.lineage = start.lineage;
            cursor.position = Some(start.position);
            cursor.hash = start.hash;
            session.target = Some(start.head);
            if start.position >= start.head {
                synced(shared, session, cursor, session.ready_sent);
            }
        }
        "change" => {
            let change: Change = match parse("change", &event.data) {
                Ok(change) => change,
                Err(e) => {
                    // Something changed and we cannot tell what.
                    shared.drop_all("an unreadable change");
                    return Err(e);
                }
            };
            let gap = match cursor.position {
                Some(position) if change.seq <= position => return Ok(()),
                Some(position) => change.seq != position + 1,
                None => false,
            };
            // The position first (see `ready`).
            cursor.position = Some(change.seq);
            cursor.hash = change.hash;
            shared.set_position(cursor.position);
            if gap {
                shared.drop_all("a gap in the change feed");
            }
            let scope = Scope::of(&change.action, change.target, change.user_id);
            shared.cache.invalidate(scope, Effect::of(&change.action));
            if scope != Scope::Created {
                // The keys whose answers it dropped miss next, all at once.
                shared.mark_answering();
            }
            if !session.synced && session.target.is_some_and(|t| change.seq >= t) {
                synced(shared, session, cursor, session.ready_sent);
            }
            // A change tells nothing of when it was sent: on a stream that says when it
            // writes, only the heartbeats vouch for the cache.
            if session.synced && session.offset.is_none() {
                shared.mark_alive();
            }
        }
        "heartbeat" => {
            let beat: Heartbeat = parse("heartbeat", &event.data)?;
            if cursor.position.is_some_and(|p| p != beat.head) {
                // The daemon sent changes this verifier did not see, or its feed went
                // back: either way the cache cannot be trusted.
                cursor.position = Some(beat.head);
                cursor.hash = None;
                shared.set_position(cursor.position);
                shared.drop_all("a heartbeat disagrees with the changes received");
            }
            if !session.synced {
                // Before the `ready`'s head (a daemon on a shared database that had not
                // applied all of it when the stream opened), the replay is not over: the
                // heartbeat vouches for nothing yet. A head never reached in
                // `max_staleness` (a store whose head went back after a failed write, a
                // failover that lost commits this daemon had not applied) ends the stream:
                // the next one announces the head the daemon has.
                if let Some(target) = session.target.filter(|&target| beat.head < target) {
                    let open_for =
                        nanos(shared.settings.clock.now()).saturating_sub(session.opened);
                    let bound = i64::try_from(shared.settings.max_staleness.as_nanos());
                    if bound.is_ok_and(|bound| open_for >= bound) {
                        return Err(format!(
                            "the daemon's feed did not reach the head it announced ({target}) in {:?}",
                            shared.settings.max_staleness
                        ));
                    }
                    return Ok(());
                }
                synced(shared, session, cursor, session.sent_at(beat.sent_at_ms));
            }
            match session.sent_at(beat.sent_at_ms) {
                None => {
                    shared.mark_alive();
                    shared.set_connected(true);
                }
                Some(sent) => {
                    // The cache is as fresh as the daemon's word when it was written, not
                    // when it arrived: a stream held up on its way (a buffering proxy, a
                    // congested link) vouches for nothing newer.
                    let lag = shared.mark_alive_at(sent);
                    match lag {
                        // After a stream that ended late, this one counts as connected
                        // only from its first heartbeat that arrives in time (see
                        // `synced`).
                        Some(lag) if lag < shared.settings.max_staleness => {
                            if shared.set_connected(true) {
                                let url = shared.daemon.url();
                                tracing::info!(position = ?cursor.position, %url, "latchkey event stream connected: its heartbeats arrive in time again");
                            }
                        }
                        Some(lag) => {
                            session.late = true;
                            return Err(format!(
                                "the stream's heartbeats arrive {lag:?} after they were sent"
                            ));
                        }
                        // Written after it arrived: a clock stepped (this one back, or the
                        // daemon's forward) since the stream opened, and the lag cannot be
                        // told until the next one measures the clocks afresh.
                        None => {
                            return Err(
                                "a heartbeat arrived before it was written: a clock stepped"
                                    .to_owned(),
                            );
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The stream caught up, as of `sent` (this verifier's clock; `None` from a daemon that
/// stamps no event: as of now).
fn synced(shared: &Shared, session: &mut Session, cursor: &Cursor, sent: Option<i64>) {
    session.synced = true;
    session.synced_at = Some(nanos(shared.settings.clock.now()));
    match sent {
        Some(sent) => {
            shared.mark_alive_at(sent);
        }
        None => shared.mark_alive(),
    }
    // After a stream that ended late, a delay that lasts would flip `connected` (and count
    // a sync) at every reconnection: the first heartbeat that arrives in time says it.
    if !session.quiet || sent.is_none() {
        shared.set_connected(true);
    }
    let url = shared.daemon.url();
    if session.quiet {
        tracing::debug!(position = ?cursor.position, %url, "latchkey event stream connected");
    } else {
        tracing::info!(position = ?cursor.position, %url, "latchkey event stream connected");
    }
}

fn parse<'a, T: Deserialize<'a>>(kind: &str, data: &'a str) -> Result<T, String> {
    serde_json::from_str(data).map_err(|e| format!("an unreadable `{kind}` event: {e}"))
}

/// Exponential backoff with jitter: each delay is drawn between half and all of the
/// current step, so that many verifiers do not reconnect in lockstep after a restart.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    random: fastrand::Rng,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            step: min,
            random: fastrand::Rng::new(),
        }
    }

    fn reset(&mut self) {
        self.step = self.min;
    }

    fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = self.step.saturating_mul(2).min(self.max);
        let factor = 0.5 + self.random.f64() / 2.0;
        // Past what a `Duration` holds (a huge backoff asked for), the step itself.
        Duration::try_from_secs_f64(step.as_secs_f64() * factor).unwrap_or(step)
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{Clock, Env, ManualClock, Prefix};
    use serde_json::json;

    use super::*;
    use crate::remote::config::VerifierSettings;

    /// A verifier's state on a clock the test moves (`max_staleness` 5 s), no task
    /// running: the feed is driven by hand with [`apply`].
    fn verifier() -> (Shared, Arc<ManualClock>, Cursor, Session) {
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        clock.advance(time::Duration::days(20_000));
        let settings = VerifierSettings {
            clock: clock.clone(),
            ..VerifierSettings::default()
        };
        let key = latchkey_core::ApiKey::generate(&Prefix::new("lk").unwrap(), Env::Live);
        let shared = Shared::new("http://127.0.0.1:9", &key, settings).unwrap();
        let session = Session {
            opened: nanos(clock.now()),
            ..Session::default()
        };
        (shared, clock, Cursor::default(), session)
    }

    fn event(kind: &str, data: serde_json::Value) -> Event {
        Event {
            event: kind.to_owned(),
            data: data.to_string(),
            id: String::new(),
            retry: None,
        }
    }

    fn change(seq: u64) -> Event {
        event("change", json!({"seq": seq, "action": "key.updated"}))
    }

    /// Review s46b L7: a daemon on a shared database announces a head it has not applied
    /// yet; its heartbeats before that head vouch for nothing (a verifier trusting its
    /// cache then would miss the changes in between), the changes up to it do.
    #[tokio::test]
    async fn a_heartbeat_short_of_the_announced_head_vouches_for_nothing() {
        let (shared, _clock, mut cursor, mut session) = verifier();
        let mut apply = |e: &Event| apply(&shared, &mut cursor, &mut session, e);
        apply(&event("ready", json!({"head": 5, "position": 3}))).unwrap();
        apply(&event("heartbeat", json!({"head": 3}))).unwrap();
        assert!(!shared.status().connected);
        assert!(!shared.trusted(shared.settings.clock.now()));
        apply(&change(4)).unwrap();
        apply(&event("heartbeat", json!({"head": 4}))).unwrap();
        assert!(!shared.status().connected, "still short of 5");
        apply(&change(5)).unwrap();
        let status = shared.status();
        assert!(status.connected && status.position == Some(5), "{status:?}");
        assert!(shared.trusted(shared.settings.clock.now()));
    }

    /// Review s55 M2: a change that drops cached answers lets the misses that follow wait
    /// their turn (1 s), however long ago the daemon last found a key valid: a warm
    /// verifier's traffic is all hits. A new record's change drops nothing and does not.
    #[tokio::test]
    async fn a_change_that_drops_answers_lets_the_misses_after_it_wait_longer() {
        let (shared, _clock, mut cursor, mut session) = verifier();
        let mut apply = |e: &Event| apply(&shared, &mut cursor, &mut session, e);
        apply(&event("ready", json!({"head": 3, "position": 3}))).unwrap();
        let short = shared.queue_wait();
        let created = json!({"seq": 4, "action": "key.create", "target": Uuid::nil()});
        apply(&event("change", created)).unwrap();
        assert_eq!(shared.queue_wait(), short);
        let edited = json!({"seq": 5, "action": "group.update", "target": Uuid::nil()});
        apply(&event("change", edited)).unwrap();
        assert!(shared.queue_wait() > short, "{:?}", shared.queue_wait());
    }

    /// Review s46b L7: a head never reached in `max_staleness` (a store whose head went
    /// back after a failed write) ends the stream, for the next to announce the real head.
    #[tokio::test]
    async fn a_head_never_reached_in_max_staleness_ends_the_stream() {
        let (shared, clock, mut cursor, mut session) = verifier();
        let mut apply = |e: &Event| apply(&shared, &mut cursor, &mut session, e);
        apply(&event("ready", json!({"head": 5, "position": 3}))).unwrap();
        clock.advance(time::Duration::seconds(4));
        apply(&event("heartbeat", json!({"head": 3}))).unwrap();
        clock.advance(time::Duration::seconds(1));
        let ended = apply(&event("heartbeat", json!({"head": 3}))).unwrap_err();
        assert!(
            ended.contains("did not reach the head it announced (5)"),
            "{ended}"
        );
        assert!(!shared.status().connected);
    }

    /// A heartbeat whose head is not the last change received drops the cache: changes
    /// were sent that this verifier did not see.
    #[tokio::test]
    async fn a_heartbeat_that_disagrees_with_the_changes_received_drops_the_cache() {
        let (shared, _clock, mut cursor, mut session) = verifier();
        let mut apply = |e: &Event| apply(&shared, &mut cursor, &mut session, e);
        apply(&event("ready", json!({"head": 3, "position": 3}))).unwrap();
        let drops = shared.status().cache_drops;
        apply(&event("heartbeat", json!({"head": 3}))).unwrap();
        assert_eq!(shared.status().cache_drops, drops);
        apply(&event("heartbeat", json!({"head": 6}))).unwrap();
        let status = shared.status();
        assert_eq!(status.cache_drops, drops + 1);
        assert_eq!(status.position, Some(6));
    }

    #[test]
    fn a_late_stream_is_said_once_and_backs_off_unless_it_worked_for_a_while() {
        let now = 1_000 * 1_000_000_000;
        let worked = Session {
            synced: true,
            synced_at: Some(now - 1_000_000_000),
            ..Session::default()
        };
        // Caught up, then late within seconds: a delay that lasts.
        let late = Session {
            late: true,
            ..worked
        };
        let refused = Session::default();
        // Vouched on time for a day, then one stall: lost after it worked, said again.
        let stalled = Session {
            synced_at: Some(now - 86_400 * 1_000_000_000),
            ..late
        };
        let ends_in_order = [
            (&worked, "the daemon closed the stream", End::Lost),
            (&late, "arrive 5.2s after", End::Unavailable),
            (&late, "arrive 5.9s after", End::StillUnavailable),
            (&late, "took 6s to open", End::StillUnavailable),
            (&refused, "429", End::Unavailable),
            (&refused, "429", End::StillUnavailable),
            (&late, "arrive 5.2s after", End::Unavailable),
            (&stalled, "arrive 6s after", End::Lost),
            (&stalled, "arrive 6s after", End::Lost),
            (&worked, "connection reset", End::Lost),
            (&refused, "429", End::Unavailable),
        ];
        let mut ends = Ends::default();
        for (i, (session, reason, expected)) in ends_in_order.into_iter().enumerate() {
            assert_eq!(
                ends.after(session, now, reason),
                expected,
                "end {i}: {reason}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = step.saturating_mul(2).min(max);
        }
        backoff.reset();
        assert!(backoff.next() <= min);
        // The longest delays double without overflowing.
        let mut endless = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            assert!(endless.next() >= Duration::MAX / 2);
        }
    }
}
