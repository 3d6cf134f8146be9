//! What tracing records: the display prefix, ids and outcome, never the secret.
//!
//! Its own test binary with a global subscriber: callsite interest is process-wide, and a
//! scoped subscriber racing with other tests' threads can miss events.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use latchkey_tower::latchkey_core::Actor;
use latchkey_tower::{ApiKey, ApiKeyAuthLayer, VerifyError};
use tracing_subscriber::fmt::MakeWriter;

#[path = "it/support.rs"]
#[allow(dead_code)]
mod support;

use support::*;

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn the_span_names_the_key_and_never_holds_the_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let fx = Fixture::new();
    let (user, key) = fx.key_for("reader", &["orders:read"]);
    let app = app(fx.layer());
    // Twice: the second is recognised on the layer's fast path, and traced the same.
    for _ in 0..2 {
        get_orders(&app, &key).await.assert_ok();
    }
    send(&app, get_with("/orders", &with_wrong_secret(&key.secret)))
        .await
        .assert_invalid("invalid_key");
    fx.store.revoke_key(&Actor::system(), key.key.id).unwrap();
    get_orders(&app, &key).await.assert_invalid("key_revoked");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let prefix = format!("prefix=\"{}\"", key.secret.display_prefix());
    let accepted = logs
        .lines()
        .filter(|line| line.contains("api key accepted") && line.contains(&prefix))
        .count();
    assert_eq!(accepted, 2, "{logs}");
    assert!(
        logs.contains(&format!("prefix=\"{}\"", key.secret.display_prefix())),
        "{logs}"
    );
    assert!(logs.contains(&format!("key_id={}", key.key.id)), "{logs}");
    assert!(logs.contains(&format!("user_id={}", user.id)), "{logs}");
    assert!(logs.contains("outcome=\"invalid_key\""), "{logs}");
    assert!(logs.contains("outcome=\"key_revoked\""), "{logs}");
    assert!(
        !logs.contains(key.secret.secret()),
        "the secret was logged: {logs}"
    );

    // A keystore that cannot answer: a WARN a second at most, however many requests fail
    // (whoever sends them would set the rate of the lines), the next one counting the
    // ones held back.
    let down = support::app(ApiKeyAuthLayer::new(|_: &ApiKey| async {
        Err(VerifyError::Unavailable("disk on fire".into()))
    }));
    let (_, other) = fx.key_for("other", &["orders:read"]);
    let warned = || {
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        logs.lines()
            .filter(|line| line.contains("WARN") && line.contains("api key not verified"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    for _ in 0..200 {
        get_orders(&down, &other)
            .await
            .assert_refused(503, None, "keystore_unavailable");
    }
    let seconds = started.elapsed().as_secs() as usize;
    let lines = warned();
    assert!(
        !lines.is_empty() && lines.len() <= 1 + seconds,
        "{} lines in {seconds} s: {lines:#?}",
        lines.len()
    );
    assert!(lines[0].contains("held_back=0"), "{}", lines[0]);
    std::thread::sleep(latchkey_tower::latchkey_core::log_limit::PERIOD);
    get_orders(&down, &other)
        .await
        .assert_refused(503, None, "keystore_unavailable");
    let last = warned().pop().unwrap();
    assert!(!last.contains("held_back=0"), "{last}");
}
