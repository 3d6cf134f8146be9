//! Usage of cache hits: counted in memory, sent to the daemon in batches.
//!
//! A miss is counted by the daemon itself (its `/v1/verify` records the use); a hit never
//! reaches it, so the verifier counts hits per key and sends the figures every
//! `usage_interval` with `POST /v1/usage`. A hit costs one short critical section, no I/O.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use latchkey_core::limits::MAX_USAGE_ITEMS;
use time::OffsetDateTime;
use uuid::Uuid;

use latchkey_core::wire::UsageItem;

use super::client::{Daemon, UsageOutcome};

/// The refused figures after which a flush gives up on the rest: one refused figure is one
/// round trip, and a clock far off has every figure refused.
const MAX_REFUSED_FIGURES: usize = 3;

/// Flushes in a row that could not deliver, after which it is said at WARN (once, until
/// one delivers): a single failure (a restart of the daemon) is no news.
const FAILURES_SAID: u32 = 3;

/// Figures not yet sent, per key: how many hits, and the latest.
#[derive(Debug, Default)]
pub(super) struct UsageBuffer {
    pending: Mutex<HashMap<Uuid, (u64, OffsetDateTime)>>,
    /// A report sent whose answer never came (a timeout, a connection cut): it may have
    /// been recorded. Sent again first, as it was and under its `Idempotency-Key`, so the
    /// daemon records it once; merged back into `pending`, it was counted twice.
    unanswered: Mutex<Option<(Uuid, Vec<UsageItem>)>>,
    /// One flush at a time (the periodic one, and `flush_usage`'s): two would each set
    /// aside a report whose answer never came, in the one place for it.
    flushing: tokio::sync::Mutex<()>,
    /// The daemon answered 404 or 405 once: said once in the log, not every interval.
    unsupported_logged: AtomicBool,
    /// Flushes in a row that could not deliver their figures.
    failures: AtomicU32,
}

/// More keys than this waiting (the daemon unreachable for long): the oldest figures are
/// dropped rather than growing without bound.
const MAX_PENDING_KEYS: usize = 100_000;

impl UsageBuffer {
    pub(super) fn record(&self, key_id: Uuid, at: OffsetDateTime) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(key_id).or_insert((0, at));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = entry.1.max(at);
    }

    fn take(&self) -> Vec<UsageItem> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        pending
            .into_iter()
            .map(|(key_id, (count, last_used_at))| UsageItem {
                key_id,
                count,
                last_used_at,
            })
            .collect()
    }

    fn restore(&self, items: Vec<UsageItem>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for item in items {
            if pending.len() >= MAX_PENDING_KEYS && !pending.contains_key(&item.key_id) {
                continue;
            }
            let entry = pending.entry(item.key_id).or_insert((0, item.last_used_at));
            entry.0 = entry.0.saturating_add(item.count);
            entry.1 = entry.1.max(item.last_used_at);
        }
    }

    /// Sends what is pending, dropping the figures the daemon refuses, and everything left
    /// at the [`MAX_REFUSED_FIGURES`]th. Figures that could not be delivered are kept for the next
    /// attempt; a daemon without `/v1/usage` gets none (its `last_used_at` then reflects
    /// misses only).
    pub(super) async fn flush(&self, daemon: &Daemon) {
        let _one = self.flushing.lock().await;
        let unanswered = self
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((id, items)) = unanswered {
            match daemon.report_usage(id, &items).await {
                // A 4xx refuses this send only, before its key is looked up: it tells
                // nothing of the first send, which may have been recorded. The report waits,
                // as it was, for an answer that says.
                UsageOutcome::Unanswered(why) | UsageOutcome::NotTaken(why) => {
                    *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, items));
                    return self.failed(&why);
                }
                UsageOutcome::Accepted => self.delivered(),
                UsageOutcome::Unsupported => {}
                // Refused: as the same figures sent fresh would be.
                UsageOutcome::Refused { .. } => self.restore(items),
            }
        }
        let mut items = self.take();
        let mut refused = 0;
        // The daemon takes at most `MAX_USAGE_ITEMS` per report (and 64 KiB of body).
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(MAX_USAGE_ITEMS));
            let id = Uuid::now_v7();
            match daemon.report_usage(id, &items).await {
                UsageOutcome::Accepted => {
                    self.delivered();
                    items = rest;
                }
                UsageOutcome::Unsupported => {
                    if !self.unsupported_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the daemon has no POST /v1/usage: usage of cached verifications is not reported"
                        );
                    }
                    return;
                }
                UsageOutcome::Unanswered(why) => {
                    *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, items));
                    self.restore(rest);
                    return self.failed(&why);
                }
                // Not recorded (a first send): the figures go again, fresh, with the later
                // ones (a report set aside as it was would hold back every later one while
                // it kept failing).
                UsageOutcome::NotTaken(why) => {
                    self.restore(items);
                    self.restore(rest);
                    return self.failed(&why);
                }
                // Sent again, the same figure would be refused again, and everything
                // behind it with it: it is dropped, the rest goes on.
                UsageOutcome::Refused { item: Some(i) } if i < items.len() => {
                    let figure = items.remove(i);
                    refused += 1;
                    if refused == MAX_REFUSED_FIGURES {
                        // A clock far off has every figure refused, one round trip each:
                        // the rest goes too, said once.
                        let dropped = items.len() + rest.len() + 1;
                        tracing::warn!(
                            figures = dropped,
                            "the daemon refused {MAX_REFUSED_FIGURES} usage figures in one report (is this machine's clock off?): this report's figures are dropped"
                        );
                        return;
                    }
                    tracing::warn!(key_id = %figure.key_id, count = figure.count, last_used_at = %figure.last_used_at, "the daemon refused a usage figure (is this machine's clock off?): it is dropped");
                    items.extend(rest);
                }
                UsageOutcome::Refused { .. } => {
                    tracing::warn!(
                        figures = items.len(),
                        "the daemon refused a usage report: its figures are dropped"
                    );
                    items = rest;
                }
            }
        }
    }

    /// A flush that could not deliver: said at WARN at the [`FAILURES_SAID`]th in a row.
    fn failed(&self, why: &str) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures == FAILURES_SAID {
            tracing::warn!(
                reason = why,
                "usage figures could not be reported to the daemon {FAILURES_SAID} times in a row: they are kept (for up to {MAX_PENDING_KEYS} keys) and sent once it takes them"
            );
        } else {
            tracing::debug!(reason = why, failures, "POST /v1/usage failed");
        }
    }

    /// A report delivered: said at INFO after failures that were said.
    fn delivered(&self) {
        if self.failures.swap(0, Ordering::Relaxed) >= FAILURES_SAID {
            tracing::info!("usage figures are reported to the daemon again");
        }
    }

    /// How many keys have figures waiting.
    pub(super) fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn hits_add_up_per_key_and_keep_the_latest_time() {
        let buffer = UsageBuffer::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        buffer.record(a, datetime!(2026-01-01 00:00:02 UTC));
        buffer.record(a, datetime!(2026-01-01 00:00:01 UTC));
        buffer.record(b, datetime!(2026-01-01 00:00:03 UTC));
        let mut items = buffer.take();
        items.sort_by_key(|i| i.key_id);
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].count, items[0].last_used_at),
            (2, datetime!(2026-01-01 00:00:02 UTC))
        );
        assert_eq!(items[1].count, 1);
        assert_eq!(buffer.len(), 0);
        buffer.record(a, datetime!(2026-01-01 00:00:05 UTC));
        buffer.restore(items);
        let mut items = buffer.take();
        items.sort_by_key(|i| i.key_id);
        assert_eq!(
            (items[0].count, items[0].last_used_at),
            (3, datetime!(2026-01-01 00:00:05 UTC))
        );
    }
}
