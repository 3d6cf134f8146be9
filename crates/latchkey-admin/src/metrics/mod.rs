//! Prometheus metrics: the series of the management API, encoded by the `prometheus` crate
//! in the text format (0.0.4) that the README documents.
//!
//! Responses are counted by the outcome code the response carries in its extensions
//! ([`ProblemCode`], put there by this crate's errors and by the authentication layer's
//! rejections); bodies are never read.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use latchkey_core::Stats;
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::error::ProblemCode;

pub(crate) mod live;
use crate::state::AppState;

/// The content type of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the verification latency buckets, in seconds. A warm verification takes
/// about a microsecond; a cold one reads sled, tens of microseconds to milliseconds.
const BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1, 1.0,
];

/// The outcome codes of a verification, in a fixed order: each has its counter handle, so
/// the hot path counts with one atomic, no label lookup.
const OUTCOMES: [&str; 8] = [
    "ok",
    "invalid_key",
    "key_disabled",
    "key_revoked",
    "key_expired",
    "user_disabled",
    "keystore_unavailable",
    "other",
];

/// How a sign-in at the web console ended, counted in
/// `latchkey_console_sign_ins_total{outcome}` (see [`SignIn::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignIn {
    /// A session opened (`opened`).
    Opened,
    /// A real key that may read no section of the console (`no_section`).
    NoSection,
    /// A real key used from an address it does not allow (`ip_not_allowed`).
    IpNotAllowed,
    /// A key that does not sign in: unknown, wrong, disabled, revoked, expired (`refused`).
    Refused,
    /// The keystore could not answer (`keystore_unavailable`).
    KeystoreUnavailable,
}

impl SignIn {
    const ALL: [SignIn; 5] = [
        SignIn::Opened,
        SignIn::NoSection,
        SignIn::IpNotAllowed,
        SignIn::Refused,
        SignIn::KeystoreUnavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            SignIn::Opened => "opened",
            SignIn::NoSection => "no_section",
            SignIn::IpNotAllowed => "ip_not_allowed",
            SignIn::Refused => "refused",
            SignIn::KeystoreUnavailable => "keystore_unavailable",
        }
    }

    /// Counts one sign-in of this outcome. The count is the process's, shown by every
    /// `/metrics` it serves: the console signs in to one process and keeps its sessions
    /// there, so a process is what an operator watches for keys being tried.
    pub fn count(self) {
        SIGN_INS.with_label_values(&[self.label()]).inc();
    }
}

/// `latchkey_console_sign_ins_total`, every outcome's series present from the start (a
/// series that appears only at its first increment hides the first attempts from `rate`).
static SIGN_INS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let family = IntCounterVec::new(
        Opts::new(
            "latchkey_console_sign_ins_total",
            "Web console sign-ins by outcome: opened, no_section, ip_not_allowed, refused, keystore_unavailable.",
        ),
        &["outcome"],
    )
    .expect("a valid metric");
    for outcome in SignIn::ALL {
        family.with_label_values(&[outcome.label()]);
    }
    family
});

/// The process's metrics. One per router.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Responses by outcome code: `ok`, a problem code, or `http_<status>`.
    requests: IntCounterVec,
    verification_family: IntCounterVec,
    /// The handles of `verification_family`, in [`OUTCOMES`] order.
    verifications: [IntCounter; OUTCOMES.len()],
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "latchkey_http_requests_total",
                "Management API responses by outcome code: ok, a problem code, or http_<status>.",
            ),
            &["code"],
        )
        .expect("a valid metric");
        let verification_family = IntCounterVec::new(
            Opts::new(
                "latchkey_verifications_total",
                "Key verifications (authentication and POST /v1/verify) by outcome code.",
            ),
            &["code"],
        )
        .expect("a valid metric");
        let verifications = OUTCOMES.map(|code| verification_family.with_label_values(&[code]));
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "latchkey_verification_duration_seconds",
                "Time to verify a presented key, in seconds.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        Metrics {
            requests,
            verification_family,
            verifications,
            latency,
        }
    }
}

impl Metrics {
    /// Counts one verification and its latency.
    pub(crate) fn record_verification(&self, code: &str, took: Duration) {
        let index = OUTCOMES
            .iter()
            .position(|o| *o == code)
            .unwrap_or(OUTCOMES.len() - 1);
        self.verifications[index].inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts one response by its outcome code.
    pub(crate) fn record_request(&self, code: &str) {
        self.requests.with_label_values(&[code]).inc();
    }

    /// The text exposition of every series, with the store's counts.
    /// The exposition: the process's counters, and the store's counts when they could be
    /// read (`stats`), with `latchkey_keystore_up` saying which. A store out of reach
    /// leaves its counts out rather than the whole scrape: the counters that tell of the
    /// outage are served during it.
    pub(crate) fn render(&self, stats: Option<&Stats>) -> String {
        let up = IntGauge::new(
            "latchkey_keystore_up",
            "1 when this scrape read the store's counts, 0 when the store could not be read.",
        )
        .expect("a valid metric");
        up.set(i64::from(stats.is_some()));
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(SIGN_INS.clone()),
            Box::new(self.verification_family.clone()),
            Box::new(self.latency.clone()),
            Box::new(up),
        ];
        collectors.extend(live::collectors());
        if let Some(stats) = stats {
            collectors.extend(store_gauges(stats));
        }
        let registry = Registry::new();
        for collector in collectors {
            registry.register(collector).expect("distinct metric names");
        }
        let mut out = String::with_capacity(4096);
        TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The store's counts, read per scrape: gauges made for this one, beside the process's
/// counters, in a registry of its own.
fn store_gauges(stats: &Stats) -> [Box<dyn Collector>; 3] {
    let keys = IntGaugeVec::new(
        Opts::new("latchkey_keys", "Keys in the store by status."),
        &["status"],
    )
    .expect("a valid metric");
    for (status, n) in &stats.keys {
        keys.with_label_values(&[*status]).set(gauge_value(*n));
    }
    let users = IntGauge::new("latchkey_users", "Users in the store.").expect("a valid metric");
    users.set(gauge_value(stats.users));
    let groups = IntGauge::new("latchkey_groups", "Groups in the store.").expect("a valid metric");
    groups.set(gauge_value(stats.groups));
    [Box::new(keys), Box::new(users), Box::new(groups)]
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Middleware counting every routed response by outcome code: `ok` below 400; else the
/// [`ProblemCode`] in the response's extensions; else `http_<status>`.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 {
        state.metrics.record_request("ok");
    } else if let Some(ProblemCode(code)) = response.extensions().get::<ProblemCode>() {
        state.metrics.record_request(code);
    } else {
        state
            .metrics
            .record_request(&format!("http_{}", status.as_u16()));
    }
    response
}
