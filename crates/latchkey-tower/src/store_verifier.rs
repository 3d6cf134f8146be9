//! The [`Verifier`] of an embedded [`Store`], and [`StoreVerification`], its future.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use latchkey_core::{ApiKey, Principal, Store, VerifyError};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinError;

use crate::verifier::Verifier;

/// A [`Store`]'s verification in progress: ready at once, unless the answer needs a read of
/// storage across a network.
///
/// A store on sled answers every key inline: its reads come from memory or sled's page
/// cache, and a hop to another thread would cost more than the verification. A store on
/// PostgreSQL ([`Store::reads_over_network`]) answers inline from its verify cache; a key
/// the cache does not hold needs a round trip to the database, which runs on tokio's
/// blocking pool ([`StoreVerification::blocking`]) so that it never holds up the async
/// worker, and the other requests on it, for that long. At most 32 such reads run at once
/// in a process; the others wait their turn without a thread.
#[derive(Debug)]
pub struct StoreVerification(State);

enum State {
    /// Taken by the poll that completes.
    Ready(Option<Result<Principal, VerifyError>>),
    /// Waiting for a turn, then on the blocking pool.
    Blocking(Pin<Box<dyn Future<Output = Result<Principal, VerifyError>> + Send>>),
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Ready(_) => f.write_str("Ready"),
            State::Blocking(_) => f.write_str("Blocking"),
        }
    }
}

/// The most verifications that may block (a database read) at once, across every store of
/// the process: a flood of unknown keys, each a cache miss, must not take every connection
/// of the store's pool and every thread of tokio's blocking pool (512), which real keys'
/// reads and the app's own blocking work need. The others wait, without a thread, for a
/// turn: as long as the reads ahead of them take (each bounded by the store's operation
/// timeout), so an app should bound its requests' time (tower's `TimeoutLayer`) as it
/// would for any database-backed work.
pub(crate) const MAX_BLOCKING_READS: usize = 32;

/// The most verifications that may wait for a turn at once; one more is answered 503
/// (`keystore_unavailable`) at once. The queue stays as long as a few dozen rounds of
/// reads, so a flood is shed instead of piling up requests (and their memory) without
/// end. Counted, not timed: a timer would need the app's runtime to have one.
pub(crate) const MAX_WAITING_READS: usize = 1_024;

static BLOCKING_READS: Semaphore = Semaphore::const_new(MAX_BLOCKING_READS);
static WAITING_READS: AtomicUsize = AtomicUsize::new(0);

/// One place in the queue for a turn, given back when the turn comes or the wait is
/// dropped.
struct Waiting;

impl Waiting {
    fn join() -> Option<Waiting> {
        WAITING_READS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING_READS).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING_READS.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StoreVerification {
    /// A verification that has answered already: of a store on sled, or from the verify
    /// cache of a store on PostgreSQL ([`Store::verify_key_cached`]).
    pub fn ready(answer: Result<Principal, VerifyError>) -> StoreVerification {
        StoreVerification(State::Ready(Some(answer)))
    }

    /// Runs `verify`, which may block, on the blocking pool of the current tokio runtime
    /// once one of its 32 turns is free (when 1,024 verifications wait for one already, it
    /// answers [`VerifyError::Unavailable`] at once); outside any tokio runtime, on this
    /// thread at once.
    ///
    /// A panic of `verify` resumes in the task that polls this, as it would inline.
    pub fn blocking(
        verify: impl FnOnce() -> Result<Principal, VerifyError> + Send + 'static,
    ) -> StoreVerification {
        match Handle::try_current() {
            Ok(runtime) => StoreVerification(State::Blocking(Box::pin(async move {
                let turn = match BLOCKING_READS.try_acquire() {
                    Ok(turn) => turn,
                    Err(_) => {
                        let Some(waiting) = Waiting::join() else {
                            return Err(VerifyError::Unavailable(format!(
                                "{MAX_WAITING_READS} verifications wait for the keystore already"
                            )));
                        };
                        let Ok(turn) = BLOCKING_READS.acquire().await else {
                            unreachable!("the semaphore is never closed")
                        };
                        drop(waiting);
                        turn
                    }
                };
                // The turn ends with the read, even if this future is dropped first.
                let joined = runtime
                    .spawn_blocking(move || {
                        let _turn = turn;
                        verify()
                    })
                    .await;
                answer_of(joined, "the verification")
            }))),
            Err(_) => StoreVerification::ready(verify()),
        }
    }

    /// How `store` verifies a text that is not a latchkey key (an imported key): `None`
    /// when it holds no key such a text could be, else its answer: inline, or on the
    /// blocking pool when the look-up crosses a network, as [`Store`]'s
    /// [`Verifier::verify`] decides for a key (this is its [`Verifier::verify_foreign`]).
    pub fn foreign(store: &Store, text: &str) -> Option<StoreVerification> {
        if !store.reads_over_network() {
            return store.verify_imported(text).map(StoreVerification::ready);
        }
        if !store.may_be_imported(text) {
            return None;
        }
        let (store, text) = (store.clone(), text.to_owned());
        Some(StoreVerification::blocking(move || {
            store
                .verify_imported(&text)
                .unwrap_or(Err(VerifyError::Invalid))
        }))
    }
}

impl Future for StoreVerification {
    type Output = Result<Principal, VerifyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(answer) => Poll::Ready(
                answer
                    .take()
                    .expect("StoreVerification polled after it answered"),
            ),
            State::Blocking(task) => task.as_mut().poll(cx),
        }
    }
}

/// What a task on the blocking pool answered: a panic resumes in the caller, as it would
/// inline; a runtime shutting down (the only thing that cancels a blocking task) makes the
/// keystore unavailable for this request.
pub(crate) fn answer_of<T>(
    joined: Result<Result<T, VerifyError>, JoinError>,
    what: &str,
) -> Result<T, VerifyError> {
    match joined {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(VerifyError::Unavailable(format!(
            "{what} did not complete: {e}"
        ))),
    }
}

impl Verifier for Store {
    type Future = StoreVerification;

    fn verify(&self, key: &ApiKey) -> Self::Future {
        if !self.reads_over_network() {
            return StoreVerification::ready(self.verify_key(key));
        }
        match self.verify_key_cached(key) {
            Some(answer) => StoreVerification::ready(answer),
            None => {
                let (store, key) = (self.clone(), key.clone());
                StoreVerification::blocking(move || store.verify_key(&key))
            }
        }
    }

    fn verify_known(&self, presented: &[u8]) -> Option<Principal> {
        Store::verify_known(self, presented)
    }

    fn verifies_foreign(&self) -> bool {
        self.holds_imported_keys()
    }

    fn verify_foreign(&self, text: &str) -> Option<Self::Future> {
        StoreVerification::foreign(self, text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The tests share the process's turns and queue: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// However many verifications need a read at once, at most `MAX_BLOCKING_READS` hold a
    /// thread of the blocking pool; every one answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_reads_wait_their_turn() {
        let _serial = SERIAL.lock().await;
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let verifications: Vec<_> = (0..4 * MAX_BLOCKING_READS)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                StoreVerification::blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Err(VerifyError::Invalid)
                })
            })
            .collect();
        let handles: Vec<_> = verifications.into_iter().map(tokio::spawn).collect();
        for handle in handles {
            assert_eq!(handle.await.unwrap(), Err(VerifyError::Invalid));
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=MAX_BLOCKING_READS).contains(&most), "{most} at once");
    }

    /// With every turn taken and the queue full, one more verification is answered 503 at
    /// once; once the reads end, every waiting one answers, and the queue is empty again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_the_next_verification() {
        let _serial = SERIAL.lock().await;
        let (release, released) = tokio::sync::watch::channel(false);
        let reading = Arc::new(AtomicUsize::new(0));
        let read = |released: tokio::sync::watch::Receiver<bool>, reading: Arc<AtomicUsize>| {
            StoreVerification::blocking(move || {
                reading.fetch_add(1, Ordering::SeqCst);
                let mut released = released;
                while !*released.borrow_and_update() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(VerifyError::Invalid)
            })
        };
        let mut handles: Vec<_> = (0..MAX_BLOCKING_READS)
            .map(|_| tokio::spawn(read(released.clone(), reading.clone())))
            .collect();
        while reading.load(Ordering::SeqCst) < MAX_BLOCKING_READS {
            tokio::task::yield_now().await;
        }
        handles.extend(
            (0..MAX_WAITING_READS).map(|_| tokio::spawn(read(released.clone(), reading.clone()))),
        );
        while WAITING_READS.load(Ordering::SeqCst) < MAX_WAITING_READS {
            tokio::task::yield_now().await;
        }
        let shed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read(released.clone(), reading.clone()),
        )
        .await;
        // The reads end before any assertion, so that a failure fails, not hangs.
        release.send(true).unwrap();
        let shed = shed.expect("answered at once, not queued");
        assert!(matches!(shed, Err(VerifyError::Unavailable(_))), "{shed:?}");
        for handle in handles {
            assert_eq!(handle.await.unwrap(), Err(VerifyError::Invalid));
        }
        assert_eq!(WAITING_READS.load(Ordering::SeqCst), 0);
    }
}
