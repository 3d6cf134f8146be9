//! Where each open connection stands against a listener's limits: its client address's
//! share of connections that have sent no request yet ([`Peers`]), and its place among
//! the open ones, in line until its first request ([`Waiting`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// How many connections each client address holds open.
#[derive(Clone, Default)]
pub(super) struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its client address, until dropped.
pub(super) struct PeerSlot {
    peers: Peers,
    address: IpAddr,
}

impl Peers {
    /// A slot for a connection from `ip`, unless its address holds `most` already.
    pub(super) fn take(&self, ip: IpAddr, most: usize) -> Option<PeerSlot> {
        let address = client_address(ip);
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            address,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The connections that have sent no request yet (a TLS handshake not done counts),
/// oldest first, each holding its place among the open ones. When the listener is full, a
/// new connection takes the oldest one's place and that one is closed: clients trickling
/// their headers from many addresses (re-check s49 N3) would have to open connections
/// faster than a real client sends its headers to keep it out.
#[derive(Clone, Default)]
pub(super) struct Waiting(Arc<Mutex<WaitingSet>>);

#[derive(Default)]
struct WaitingSet {
    next: u64,
    by_age: BTreeMap<u64, Wait>,
}

/// One waiting connection's place, and how to close it.
struct Wait {
    slot: OwnedSemaphorePermit,
    /// When it was accepted.
    since: Instant,
    /// Its count against its client address, given back with its place.
    _peer_slot: PeerSlot,
    evict: Arc<Notify>,
}

/// A connection's place among the open ones: in [`Waiting`] until its first request, its
/// own after; given back when the connection ends (dropped).
pub(super) struct Place {
    waiting: Waiting,
    id: u64,
    /// Whether a request has come: the line is looked at once.
    asked: AtomicBool,
    /// Whether it was still in line then (not closed for a newer one).
    kept: AtomicBool,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingSet> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a new connection last in line; the [`Notify`] fires if it is closed for a
    /// newer one.
    pub(super) fn enter(
        &self,
        slot: OwnedSemaphorePermit,
        peer_slot: PeerSlot,
    ) -> (Place, Arc<Notify>) {
        let evict = Arc::new(Notify::new());
        let mut set = self.lock();
        let id = set.next;
        set.next += 1;
        set.by_age.insert(
            id,
            Wait {
                slot,
                since: Instant::now(),
                _peer_slot: peer_slot,
                evict: Arc::clone(&evict),
            },
        );
        let place = Place {
            waiting: self.clone(),
            id,
            asked: AtomicBool::new(false),
            kept: AtomicBool::new(false),
            held: Mutex::new(None),
        };
        (place, evict)
    }

    /// Closes the oldest waiting connection and hands over its place, if it has waited
    /// `min_age` at least: a younger one may be a real client whose request is on its way
    /// (or whose TLS handshake is; review s50 L1), so a burst of new connections cannot
    /// close it, and the newcomer is closed instead.
    pub(super) fn oldest_out(&self, min_age: Duration) -> Option<OwnedSemaphorePermit> {
        let mut set = self.lock();
        let (_, oldest) = set.by_age.first_key_value()?;
        if oldest.since.elapsed() < min_age {
            return None;
        }
        let (_, wait) = set.by_age.pop_first()?;
        drop(set);
        // Stored if its task is not waiting yet: it ends at its next turn.
        wait.evict.notify_one();
        Some(wait.slot)
    }
}

impl Place {
    /// A request has come: at the first, the place is the connection's own from now on,
    /// and no longer counts against its address. `false` when the connection was closed
    /// for a newer one before its first request could keep its place: that request must
    /// not be served (review s50 L2: it was, by a handler its task was about to drop).
    pub(super) fn first_request(&self) -> bool {
        if self.asked.swap(true, Ordering::AcqRel) {
            return self.kept.load(Ordering::Acquire);
        }
        let wait = self.waiting.lock().by_age.remove(&self.id);
        let kept = wait.is_some();
        if let Some(wait) = wait {
            *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(wait.slot);
        }
        self.kept.store(kept, Ordering::Release);
        kept
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.waiting.lock().by_age.remove(&self.id);
    }
}

/// The address one client is counted by: an IPv4 address (also mapped in IPv6), or an
/// IPv6 address's /64, which one host may hold every address of.
fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review s50 L2: a connection closed for a newer one before its first request kept its
    /// place is told so, for that request and any after; one that kept its place is not
    /// closed for a newer one.
    #[tokio::test]
    async fn a_request_of_a_connection_closed_for_a_newer_one_is_not_served() {
        let open = Arc::new(tokio::sync::Semaphore::new(2));
        let (peers, waiting) = (Peers::default(), Waiting::default());
        let address: IpAddr = "203.0.113.7".parse().unwrap();
        let mut places = Vec::new();
        for _ in 0..2 {
            let slot = Arc::clone(&open).try_acquire_owned().unwrap();
            let peer_slot = peers.take(address, 8).unwrap();
            places.push(waiting.enter(slot, peer_slot));
        }
        let (first, first_closed) = &places[0];
        let (second, _) = &places[1];
        assert!(
            waiting.oldest_out(Duration::from_secs(3_600)).is_none(),
            "younger than the age asked"
        );
        assert!(second.first_request());
        let slot = waiting
            .oldest_out(Duration::ZERO)
            .expect("the first in line");
        first_closed.notified().await;
        assert!(!first.first_request());
        assert!(!first.first_request());
        assert!(second.first_request());
        assert!(
            waiting.oldest_out(Duration::ZERO).is_none(),
            "none left in line"
        );
        drop(slot);
        assert_eq!(open.available_permits(), 1);
    }

    #[test]
    fn a_client_is_counted_by_its_ipv4_address_or_its_ipv6_64() {
        let ip = |text: &str| client_address(text.parse().unwrap());
        assert_eq!(ip("203.0.113.7"), ip("::ffff:203.0.113.7"));
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_ne!(ip("203.0.113.7"), ip("203.0.113.8"));
    }
}
