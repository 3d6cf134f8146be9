//! What the process holds open right now, and what its listeners turned away: the series an
//! operator needs to see a flood or a leak, which the logs only tell at DEBUG (a flood of
//! connections is no news to log line by line).
//!
//! Process-wide, as `latchkey_console_sign_ins_total`: the daemon's listeners and the
//! console update them where the thing opens and closes, and every `/metrics` the process
//! serves shows them. The two gauges of open things are set to their one holder's count
//! (the daemon's API router's streams, its console's sessions): a process that builds
//! several routers or consoles shows the last one's to change.
//!
//! - `latchkey_connections{listener}`: connections open on a listener (`api`, `metrics`);
//! - `latchkey_connections_shed_total{listener,reason}`: connections closed as they came or
//!   before their first request for want of room: `full` (the listener's 4,096 are taken
//!   and none is evictable), `per_address` (one address's 512 waiting for their first
//!   request), `evicted` (an older one waiting for its first request, closed for a newer);
//! - `latchkey_tls_handshake_failures_total{listener}`: handshakes TLS refused (an alert, a
//!   protocol error) or that timed out; not those closed or reset by the client midway (a
//!   load balancer's TCP probe);
//! - `latchkey_event_streams`: open `GET /v1/events` streams;
//! - `latchkey_console_sessions`: console sessions held (expired ones until swept, at most a
//!   minute).

use std::sync::LazyLock;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// The listeners the daemon names, every series present from the start.
const LISTENERS: [&str; 2] = ["api", "metrics"];

static CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    per_listener(
        IntGaugeVec::new(
            Opts::new(
                "latchkey_connections",
                "Connections open on a listener (api, metrics).",
            ),
            &["listener"],
        ),
        &[],
    )
});

static SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_listener(
        IntCounterVec::new(
            Opts::new(
                "latchkey_connections_shed_total",
                "Connections closed for want of room: full (every place taken, none evictable), per_address (one address's places for connections without a request taken), evicted (closed before its first request for a newer one).",
            ),
            &["listener", "reason"],
        ),
        &Shed::ALL.map(Shed::label),
    )
});

static HANDSHAKES_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_listener(
        IntCounterVec::new(
            Opts::new(
                "latchkey_tls_handshake_failures_total",
                "TLS handshakes on a listener that TLS refused or that did not finish within the header timeout (not those the client closed midway).",
            ),
            &["listener"],
        ),
        &[],
    )
});

/// `family` with a series for every listener (and every one of `reasons`, when given)
/// present from the start: a series that appears only at its first change hides it from
/// `rate`.
fn per_listener<T: MetricVecBuilder>(
    family: prometheus::Result<MetricVec<T>>,
    reasons: &[&str],
) -> MetricVec<T> {
    let family = family.expect("a valid metric");
    for listener in LISTENERS {
        if reasons.is_empty() {
            family.with_label_values(&[listener]);
        }
        for reason in reasons {
            family.with_label_values(&[listener, reason]);
        }
    }
    family
}

static EVENT_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new("latchkey_event_streams", "Open GET /v1/events streams.").expect("a valid metric")
});

static CONSOLE_SESSIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new(
        "latchkey_console_sessions",
        "Web console sessions held (expired ones until swept, within a minute).",
    )
    .expect("a valid metric")
});

/// Every live series, for a scrape.
pub(super) fn collectors() -> [Box<dyn Collector>; 5] {
    [
        Box::new(CONNECTIONS.clone()),
        Box::new(SHED.clone()),
        Box::new(HANDSHAKES_FAILED.clone()),
        Box::new(EVENT_STREAMS.clone()),
        Box::new(CONSOLE_SESSIONS.clone()),
    ]
}

/// Sets `latchkey_event_streams`, as the streams' slots change.
pub(crate) fn set_event_streams(open: usize) {
    EVENT_STREAMS.set(super::gauge_value(open as u64));
}

/// Sets `latchkey_console_sessions`: the console calls it with its count whenever the count
/// may have changed. Not for other callers.
#[doc(hidden)]
pub fn set_console_sessions(open: usize) {
    CONSOLE_SESSIONS.set(super::gauge_value(open as u64));
}

/// Why a listener closed a connection for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shed {
    /// Every place taken, none evictable: closed as it came (`full`).
    Full,
    /// Its address holds its share of connections without a request (`per_address`).
    PerAddress,
    /// Closed before its first request, its place given to a newer one (`evicted`).
    Evicted,
}

impl Shed {
    const ALL: [Shed; 3] = [Shed::Full, Shed::PerAddress, Shed::Evicted];

    fn label(self) -> &'static str {
        match self {
            Shed::Full => "full",
            Shed::PerAddress => "per_address",
            Shed::Evicted => "evicted",
        }
    }
}

/// One listener's series, looked up once when it starts.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    open: IntGauge,
    shed: [IntCounter; 3],
    handshakes_failed: IntCounter,
}

impl ListenerMetrics {
    /// The series of the listener named `listener` (`api` or `metrics`).
    pub fn of(listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: CONNECTIONS.with_label_values(&[listener]),
            shed: Shed::ALL.map(|shed| SHED.with_label_values(&[listener, shed.label()])),
            handshakes_failed: HANDSHAKES_FAILED.with_label_values(&[listener]),
        }
    }

    /// Counts a connection open until the returned guard is dropped.
    pub fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// Counts a connection closed for want of room.
    pub fn shed(&self, why: Shed) {
        let index = Shed::ALL.iter().position(|s| *s == why).unwrap_or(0);
        self.shed[index].inc();
    }

    /// Counts a TLS handshake that failed or timed out.
    pub fn handshake_failed(&self) {
        self.handshakes_failed.inc();
    }
}

/// A connection counted in `latchkey_connections` until dropped.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_counted_while_its_guard_lives() {
        // A listener name of this test's own: the series are process-wide.
        let listener = ListenerMetrics::of("test-guard");
        let first = listener.opened();
        let second = listener.opened();
        assert_eq!(listener.open.get(), 2);
        drop(first);
        assert_eq!(listener.open.get(), 1);
        drop(second);
        assert_eq!(listener.open.get(), 0);
        listener.shed(Shed::PerAddress);
        listener.shed(Shed::PerAddress);
        listener.shed(Shed::Evicted);
        assert_eq!(listener.shed.each_ref().map(IntCounter::get), [0, 2, 1]);
    }
}
