//! The commit feed of a shared database: a `LISTEN` connection that wakes the store's
//! catch-up (`follow.rs`) at every commit of any process, and a timer that wakes it every
//! second anyway. While the database is away, each logs the outage once
//! ([`Outage`]), and the listener tries again after a pause that doubles up to 8 s.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use tokio_postgres::AsyncMessage;

use super::client::{CHANNEL, Pg};
use crate::store::outage::Outage;
use crate::store::skew::SkewWatch;
use crate::store::{Inner, Store};

/// How often the catch-up runs without a notification.
const POLL: Duration = Duration::from_secs(1);

/// Starts following the database for `store`: the listener on the store's runtime, the
/// catch-up on a thread of its own. Both end when the store is dropped.
pub(super) fn start(pg: &Arc<Pg>, store: &Store) {
    let (wake, woken) = mpsc::channel::<()>();
    let inner = Arc::downgrade(&store.inner);
    let spawned = std::thread::Builder::new()
        .name("latchkey-follow".into())
        .spawn(move || follow(inner, woken));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the change follower");
        return;
    }
    let (config, tls) = (pg.config.clone(), pg.tls.clone());
    pg.handle().spawn(async move {
        let mut outage = Outage::new("listening for the database's change notifications");
        let mut pause = POLL;
        loop {
            let lost = match listen(&config, tls.clone(), &wake, &mut outage).await {
                Ended::StoreGone => return,
                Ended::Lost(e) => e,
            };
            if !outage.is_failing() {
                pause = POLL;
            }
            let cause = lost.map_or_else(
                || "the connection closed".to_owned(),
                |e| super::causes::WithCauses(e).to_string(),
            );
            outage.failed(&cause);
            if wake.send(()).is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    });
}

/// The longest pause between two tries to listen again while the database is away: the
/// follower polls every second meanwhile, so changes still arrive within about a second.
const MAX_PAUSE: Duration = Duration::from_secs(8);

/// Why listening ended.
enum Ended {
    /// The store was dropped.
    StoreGone,
    /// The connection failed or closed.
    Lost(Option<tokio_postgres::Error>),
}

/// Listens until the connection fails or the store is gone.
async fn listen(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    wake: &mpsc::Sender<()>,
    outage: &mut Outage,
) -> Ended {
    let (client, mut connection) = match config.connect(tls).await {
        Ok(connected) => connected,
        Err(e) => return Ended::Lost(Some(e)),
    };
    let (messages, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if messages.send(None).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = messages.send(Some(e));
                    return;
                }
                None => return,
            }
        }
    });
    let ended = match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        Err(e) => Ended::Lost(Some(e)),
        // Whatever committed while not listening is read now.
        Ok(()) if wake.send(()).is_err() => Ended::StoreGone,
        Ok(()) => {
            outage.succeeded();
            loop {
                match received.recv().await {
                    Some(None) => {
                        if wake.send(()).is_err() {
                            break Ended::StoreGone;
                        }
                    }
                    Some(Some(e)) => break Ended::Lost(Some(e)),
                    None => break Ended::Lost(None),
                }
            }
        }
    };
    driver.abort();
    ended
}

/// The catch-up thread: on every wake and every second, reads the changes and records how
/// far this process applied them; while the database is away, once a second only (the
/// listener's tries to reconnect wake it too).
fn follow(inner: Weak<Inner>, woken: mpsc::Receiver<()>) {
    let mut outage = Outage::new("reading the cluster's changes");
    // Apart: a database may refuse only this process's progress row (read-only, a lock, a
    // privilege) while its changes read well.
    let mut recording = Outage::new("recording this process's progress among the followers");
    let mut skew = SkewWatch::default();
    let mut tried = Instant::now();
    loop {
        match woken.recv_timeout(POLL) {
            Err(RecvTimeoutError::Disconnected) => return,
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
        }
        // One catch-up serves every notification that arrived meanwhile.
        while woken.try_recv().is_ok() {}
        if outage.is_failing() && tried.elapsed() < POLL {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner };
        tried = Instant::now();
        match store.read_changes_now() {
            Ok(()) => {
                outage.succeeded();
                skew.check(&store);
            }
            Err(e) => {
                outage.failed(&e);
                continue;
            }
        }
        match store.acknowledge_applied() {
            Ok(()) => recording.succeeded(),
            Err(e) => recording.failed(&e),
        }
    }
}
