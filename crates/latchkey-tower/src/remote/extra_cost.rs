//! A route's extra cost ([`RequirePermissionLayer::cost`](crate::RequirePermissionLayer::cost))
//! for a key this verifier authenticated: taken from the key's lease like its requests, from
//! every bucket (each rate limit, the credits) or from none, asking the daemon for more when
//! the lease holds too little. Refused, the request's own credit goes back to the key's lease
//! ([`Shared::give_back_credit`], once a request: see `require::extra`), as the embedded
//! layer gives it back to the key's meter: a refused request spends no credit (its rate
//! limits keep the count, on both).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::VerifyError;
use latchkey_core::meter::{beyond_the_limit, rate_limited_after};

use super::cache::Cached;
use super::client::Verdict;
use super::lease::{Lease, Need, Take};
use super::verifier::{Shared, nanos};
use crate::verifier::Charged;

impl Shared {
    /// Charges `cost` more requests to the key presented as `presented`.
    pub(super) fn charge_extra(
        self: &Arc<Self>,
        presented: &str,
        client_ip: Option<IpAddr>,
        cost: u32,
    ) -> Charged {
        let digest = self.hasher.digest(presented);
        let now = self.settings.clock.now();
        match self.cache.get(&digest, now) {
            Some(Cached::Valid(entry)) => match entry.lease {
                Some(lease) => self.charge_lease(lease, presented, client_ip, u64::from(cost)),
                // No usage control: nothing to charge.
                None => Charged::Done(Ok(())),
            },
            // Gone from the cache since the layer verified it (evicted, invalidated by a
            // change, or no cache at all): the daemon charges it, as it charged that
            // verification (and counts one more use of the key).
            _ => {
                let shared = Arc::clone(self);
                let presented = presented.to_owned();
                Charged::Waiting(self.runtime.spawn(async move {
                    shared
                        .charge_at_daemon(&presented, client_ip, u64::from(cost))
                        .await
                }))
            }
        }
    }

    /// Has the daemon charge `cost` requests' worth to the key, from its stored balance
    /// and limits (`POST /v1/verify` with that cost, which counts one more use of the key).
    pub(super) async fn charge_at_daemon(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        cost: u64,
    ) -> Result<(), VerifyError> {
        // A route's cost is a `u32` (`RouteCost`): nothing to clamp.
        let asked = u32::try_from(cost).unwrap_or(u32::MAX);
        match self.daemon.verify(presented, client_ip, Some(asked)).await {
            Ok(Verdict::Valid { .. }) => Ok(()),
            // The daemon judged the extra alone, as a request of its own: the next try
            // takes its own unit first, so it is told when both fit (see
            // `rate_limited_after`), unless no wait will do (more than the whole limit).
            Ok(Verdict::Refused {
                error: VerifyError::RateLimited(refused),
                ..
            }) => Err(
                beyond_the_limit(&refused.limit, cost, true).unwrap_or_else(|| {
                    let wait = Duration::from_secs(refused.retry_after_seconds);
                    rate_limited_after(&refused.limit, wait, 1)
                }),
            ),
            Ok(Verdict::Refused { error, .. }) => Err(error),
            Err(cause) => {
                latchkey_core::warn_limited!(error = %cause, "latchkey daemon could not charge a route's cost");
                Err(VerifyError::Unavailable(cause))
            }
        }
    }

    /// Gives the credit a request with the key presented as `presented` took back to the
    /// key's lease (opening its credits slice if it had none: `Lease::give_back_credit`),
    /// its route having refused it. Only when no invalidation came since the
    /// request found the cache at `mark` (review s59 M1: a change of the key meanwhile,
    /// its credits set, a new lease cached, and the credit would go to a lease that never
    /// paid it, or one more than the new balance); else, or when the key's lease left the
    /// cache (evicted), the credit stays spent. A credit the daemon charged at the
    /// request's verification goes to the lease too, and back to the daemon with the
    /// lease's unspent credits, which takes back no more than it recorded as leased.
    pub(super) fn give_back_credit(&self, presented: &str, mark: u64) {
        let digest = self.hasher.digest(presented);
        if self.cache.generation().changes() != mark {
            return;
        }
        if let Some(Cached::Valid(entry)) = self.cache.get(&digest, self.settings.clock.now())
            && let Some(lease) = entry.lease
        {
            lease.give_back_credit();
        }
    }

    fn charge_lease(
        self: &Arc<Self>,
        lease: Arc<Lease>,
        presented: &str,
        client_ip: Option<IpAddr>,
        cost: u64,
    ) -> Charged {
        let now = nanos(self.settings.clock.now());
        match lease.take(client_ip, now, cost) {
            Take::Taken => {
                self.top_up(lease, presented, client_ip, now);
                Charged::Done(Ok(()))
            }
            Take::Refused(error) => Charged::Done(Err(error)),
            Take::Short => {
                let shared = Arc::clone(self);
                let presented = presented.to_owned();
                Charged::Waiting(self.runtime.spawn(async move {
                    shared
                        .take_asking(&lease, &presented, client_ip, Need::extra_cost(cost))
                        .await
                }))
            }
        }
    }
}
