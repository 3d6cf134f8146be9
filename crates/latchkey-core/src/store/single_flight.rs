//! One run of an expensive read at a time, its result shared with whoever waited for it.
//!
//! The audit chain's check reads every event (seconds at a million): a caller who may ask
//! for it could start as many at once as it sends requests. Here a caller waits for the run
//! in progress, and then takes the result of the next run if that run began after the
//! caller arrived (so every answer comes from a check begun after it was asked for), or
//! runs it itself. A burst of callers costs at most two runs, and none once it is over.

use std::sync::Mutex;
use std::time::Instant;

/// The last run's start and result, behind the lock runs take.
#[derive(Debug)]
pub(crate) struct SingleFlight<T> {
    last: Mutex<Option<(Instant, T)>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            last: Mutex::new(None),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// The result of a run of `run` begun at or after `arrived` (when the caller asked):
    /// a run that began meanwhile, or a new one. A failed run is shared with no one.
    pub(crate) fn run<E>(
        &self,
        arrived: Instant,
        run: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((started, result)) = &*last
            && *started >= arrived
        {
            return Ok(result.clone());
        }
        let started = Instant::now();
        let result = run()?;
        *last = Some((started, result.clone()));
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn callers_who_arrive_during_a_run_share_the_next_one() {
        let flight = SingleFlight::<usize>::default();
        let runs = AtomicUsize::new(0);
        let arrived = AtomicUsize::new(0);
        let running = AtomicUsize::new(0);
        let run = || -> Result<usize, ()> {
            running.fetch_add(1, Ordering::SeqCst);
            // The first run lasts until the seven others have arrived.
            while runs.load(Ordering::SeqCst) == 0 && arrived.load(Ordering::SeqCst) < 7 {
                std::thread::yield_now();
            }
            Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let results: Vec<usize> = std::thread::scope(|s| {
            let first = s.spawn(|| flight.run(Instant::now(), run).unwrap());
            while running.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            let others: Vec<_> = (0..7)
                .map(|_| {
                    s.spawn(|| {
                        let at = Instant::now();
                        arrived.fetch_add(1, Ordering::SeqCst);
                        flight.run(at, run).unwrap()
                    })
                })
                .collect();
            let mut results = vec![first.join().unwrap()];
            results.extend(others.into_iter().map(|t| t.join().unwrap()));
            results
        });
        assert_eq!(runs.into_inner(), 2, "{results:?}");
        assert_eq!(results, [1, 2, 2, 2, 2, 2, 2, 2]);
        // A caller who arrives after every run has its own.
        let runs = AtomicUsize::new(10);
        let again = flight.run(Instant::now(), || {
            Ok::<_, ()>(runs.fetch_add(1, Ordering::SeqCst))
        });
        assert_eq!(again, Ok(10));
    }
}
