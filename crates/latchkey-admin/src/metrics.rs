//! Prometheus metrics: counters and a histogram on atomics, and a hand-written text
//! encoder.
//!
//! Hand-written rather than the `prometheus-client` crate: five series with fixed label
//! sets need a few atomics and forty lines of formatting, where a registry would add a
//! dependency tree and a global-ish object for nothing. The text format is specified at
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::CONTENT_TYPE;
use latchkey_core::Stats;
use serde::Deserialize;

use crate::error::ProblemCode;
use crate::state::AppState;

/// Upper bounds of the verification latency buckets, in seconds. A warm verification takes
/// about a microsecond; a cold one reads sled, tens of microseconds to milliseconds.
const BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1, 1.0,
];

/// The outcome codes of a verification, in a fixed order: the hot path counts with an
/// atomic per code, no lock.
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

/// The process's metrics. One per router.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses by outcome code. A lock rather than atomics: the set of codes is open
    /// (every problem code, plus `http_<status>` for responses made elsewhere), and an
    /// uncontended lock costs tens of nanoseconds.
    requests: Mutex<BTreeMap<Cow<'static, str>, u64>>,
    verifications: [AtomicU64; OUTCOMES.len()],
    /// Cumulative counts per bucket (the last one is `+Inf`).
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
}

impl Metrics {
    /// Counts one verification and its latency.
    pub(crate) fn record_verification(&self, code: &str, took: Duration) {
        let index = OUTCOMES
            .iter()
            .position(|o| *o == code)
            .unwrap_or(OUTCOMES.len() - 1);
        self.verifications[index].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_buckets[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one response by its outcome code.
    pub(crate) fn record_request(&self, code: Cow<'static, str>) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry(code).or_default() += 1;
    }

    /// The text exposition of every series, with the store's counts.
    pub(crate) fn render(&self, stats: &Stats) -> String {
        let mut out = String::with_capacity(4096);
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        header(
            &mut out,
            "latchkey_http_requests_total",
            "counter",
            "Management API responses by outcome code: ok, a problem code, or http_<status>.",
        );
        for (code, n) in &requests {
            let _ = writeln!(out, "latchkey_http_requests_total{{code=\"{code}\"}} {n}");
        }
        header(
            &mut out,
            "latchkey_verifications_total",
            "counter",
            "Key verifications (authentication and POST /v1/verify) by outcome code.",
        );
        for (code, n) in OUTCOMES.iter().zip(&self.verifications) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(out, "latchkey_verifications_total{{code=\"{code}\"}} {n}");
        }
        let name = "latchkey_verification_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time to verify a presented key, in seconds.",
        );
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound:e}\"}} {n}");
        }
        let total = self.latency_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
        header(
            &mut out,
            "latchkey_keys",
            "gauge",
            "Keys in the store by status.",
        );
        for (status, n) in &stats.keys {
            let _ = writeln!(out, "latchkey_keys{{status=\"{status}\"}} {n}");
        }
        header(&mut out, "latchkey_users", "gauge", "Users in the store.");
        let _ = writeln!(out, "latchkey_users {}", stats.users);
        header(&mut out, "latchkey_groups", "gauge", "Groups in the store.");
        let _ = writeln!(out, "latchkey_groups {}", stats.groups);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Middleware counting every routed response by outcome code: `ok` below 400; else the
/// problem code the response carries in its extensions (this crate's errors), or in its
/// problem+json body (the authentication layer's rejections: small, static bodies); else
/// `http_<status>`.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let (code, response) = if status.as_u16() < 400 {
        (Cow::Borrowed("ok"), response)
    } else if let Some(ProblemCode(code)) = response.extensions().get::<ProblemCode>() {
        (Cow::Borrowed(*code), response)
    } else {
        let (code, response) = code_in_body(response).await;
        let code = code.map_or_else(
            || Cow::Owned(format!("http_{}", status.as_u16())),
            Cow::Owned,
        );
        (code, response)
    };
    state.metrics.record_request(code);
    response
}

/// The `code` of a small problem+json body, and the response rebuilt around the body.
async fn code_in_body(response: Response) -> (Option<String>, Response) {
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_PROBLEM_BYTES);
    if !(is_problem && small) {
        return (None, response);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_PROBLEM_BYTES as usize).await {
        Ok(bytes) => {
            #[derive(Deserialize)]
            struct Coded {
                code: String,
            }
            let code = serde_json::from_slice::<Coded>(&bytes).ok().map(|c| c.code);
            (code, Response::from_parts(parts, Body::from(bytes)))
        }
        // The exact size was checked: unreachable but for a body that lied about it.
        Err(_) => (None, Response::from_parts(parts, Body::empty())),
    }
}

/// The largest body [`code_in_body`] reads.
const MAX_PROBLEM_BYTES: u64 = 4096;
