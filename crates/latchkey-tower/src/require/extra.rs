//! [`ExtraCharger`]: what a route's extra cost is charged to when the principal carries no
//! meter of its own, because its verifier keeps the key's usage control
//! ([`Verifier::charges_extra`]: a remote verifier, admitting from leases).
//!
//! The layer puts it in the request's extensions for such a verifier only, so a store's
//! requests carry nothing more. It holds the key text as presented, which the verifier needs
//! to ask the daemon for more of the key's lease and to give a refused request's credit
//! back to it ([`Verifier::give_back_credit`]), for the request's lifetime only (as the
//! request's own header does); its `Debug` shows none of it.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Request;
use latchkey_core::VerifyError;
use latchkey_core::meter::Taken;

use crate::principal::Principal;
use crate::rejection::{Challenges, Rejection};
use crate::usage;
use crate::verifier::{Charged, Verifier};

/// The verifier of a request, and what it needs to charge the key again.
#[derive(Clone)]
pub(crate) struct ExtraCharger {
    verifier: Arc<dyn ChargeExtra>,
    presented: Arc<str>,
    client_ip: Option<IpAddr>,
    /// The authenticating layer's challenges: a key refused by the charge (revoked since
    /// the layer admitted it) is answered as that layer would, in its realm.
    challenges: Challenges,
    /// The request's credit given back already: shared by every copy of the request's
    /// extensions, as [`BaseCharge`]'s.
    given: Arc<AtomicBool>,
    /// [`Verifier::credit_mark`] when the key was presented.
    mark: u64,
}

impl ExtraCharger {
    /// For a key presented as `presented` from `client_ip`, authenticated by a layer with
    /// `challenges`; `None` for a text that is not UTF-8 (no key is).
    pub(crate) fn new<V: Verifier>(
        verifier: &Arc<V>,
        presented: &[u8],
        client_ip: Option<IpAddr>,
        challenges: &Challenges,
    ) -> Option<ExtraCharger> {
        let presented = std::str::from_utf8(presented).ok()?;
        Some(ExtraCharger {
            verifier: Arc::clone(verifier) as Arc<dyn ChargeExtra>,
            presented: Arc::from(presented),
            client_ip,
            challenges: challenges.clone(),
            given: Arc::default(),
            mark: verifier.credit_mark(),
        })
    }

    /// Charges `cost` more requests to the key.
    pub(crate) fn charge(&self, cost: u32) -> Charged {
        self.verifier.charge(&self.presented, self.client_ip, cost)
    }

    /// Gives back the credit the verifier charged the request, its route having refused
    /// it; once.
    fn give_back_credit(&self) {
        if !self.given.swap(true, Ordering::AcqRel) {
            self.verifier.give_back(&self.presented, self.mark);
        }
    }
}

/// The answer to a route's extra cost refused (`rate_limited`, `usage_exceeded`, a key
/// revoked since the layer admitted it, …), with the challenges of the layer that
/// authenticated `request`. Without an [`ExtraCharger`] the principal's own meter refused,
/// for usage or an unavailable store only, which carry no challenge; the credit the layer
/// took for the request, before its route's cost was known ([`BaseCharge`]), then goes
/// back, so that a refused request spends no credit, and so does the request's own 1 to
/// its rate limits unless one of them refused (review s57 M4: a key with fewer credits
/// than a route's cost used up its limits retrying). A limit's refusal keeps that 1: its
/// `Retry-After` counts it with the route's cost. The extra cost itself took nothing, core's
/// `Meter::charge` taking from every limit or from none. Through a remote verifier the
/// credit goes back to the key's lease, which keeps the 1.
pub(crate) fn refuse_extra<B>(error: &VerifyError, request: &Request<B>) -> Rejection {
    give_back_base(request, !matches!(error, VerifyError::RateLimited(_)));
    match request.extensions().get::<ExtraCharger>() {
        Some(charger) => usage::rejection(error, &charger.challenges),
        None => usage::rejection(error, &Challenges::default_realm()),
    }
}

/// Gives back what the authentication layer charged `request` ([`BaseCharge`], for a key
/// with credits): its credit, and with `limits` its 1 to the rate limits. For a request its
/// route refuses. Once, however many copies of the request the route refuses (review s58
/// L5: a layer that called the route again with a copy of the request, a retry, would have
/// had them given back each time). A verifier that keeps the key's usage control (an
/// [`ExtraCharger`]'s) is given the credit back, once too.
pub(crate) fn give_back_base<B>(request: &Request<B>, limits: bool) {
    let Some(base) = request.extensions().get::<BaseCharge>() else {
        if let Some(charger) = request.extensions().get::<ExtraCharger>() {
            charger.give_back_credit();
        }
        return;
    };
    if base.given.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(meter) = request
        .extensions()
        .get::<Principal>()
        .and_then(|principal| principal.meter.as_ref())
    {
        meter.return_credits(1, base.period);
        if limits {
            meter.give_back(1, base.taken);
        }
    }
}

/// What the authentication layer charged a request before its route's permission and cost
/// were known: its credit, with the refill period it came from, and its 1 to the rate
/// limits, with when they took it. What a route's refusal gives back, and only then: the
/// credit on a 403, both on an extra cost refused for want of credits. In the request's
/// extensions for a principal whose key has credits; a principal put there by other means
/// (an app's own middleware) carries none, and is given nothing back. (A key with rate
/// limits alone has nothing a route's refusal gives back to it: its stamp would cost each
/// of its requests ~340 instructions, `bench/layer.sh`'s `latchkey-limited`.)
#[derive(Debug, Clone)]
pub(crate) struct BaseCharge {
    period: i64,
    /// When its rate limits took it (read just before).
    taken: Taken,
    /// Given back already: shared by every copy of the request's extensions.
    given: Arc<AtomicBool>,
}

impl BaseCharge {
    /// For `principal`, about to be charged one request: `None` without credits.
    pub(crate) fn of(principal: &latchkey_core::Principal) -> Option<BaseCharge> {
        let meter = principal.meter.as_ref()?;
        let period = meter.credit_period()?;
        let taken = meter.taken_now();
        let given = Arc::default();
        Some(BaseCharge {
            period,
            taken,
            given,
        })
    }
}

impl fmt::Debug for ExtraCharger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtraCharger")
            .field("presented", &"<redacted>")
            .field("client_ip", &self.client_ip)
            .finish_non_exhaustive()
    }
}

/// [`Verifier::charge_extra`] without the verifier's future type, so one extension type
/// serves every verifier.
trait ChargeExtra: Send + Sync {
    fn charge(&self, presented: &str, client_ip: Option<IpAddr>, cost: u32) -> Charged;
    fn give_back(&self, presented: &str, mark: u64);
}

impl<V: Verifier> ChargeExtra for V {
    fn charge(&self, presented: &str, client_ip: Option<IpAddr>, cost: u32) -> Charged {
        self.charge_extra(presented, client_ip, cost)
    }

    fn give_back(&self, presented: &str, mark: u64) {
        self.give_back_credit(presented, mark);
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{ApiKey, Principal};

    use super::*;

    #[test]
    fn its_debug_shows_no_key_text() {
        let verifier = Arc::new(|_: &ApiKey| async { Err::<Principal, _>(VerifyError::Invalid) });
        let prefix = latchkey_core::Prefix::new("lk").unwrap();
        let key = ApiKey::generate(&prefix, latchkey_core::Env::Live);
        let text = key.expose();
        let secret = &text[key.display_prefix().len()..];
        let challenges = Challenges::default_realm();
        let charger = ExtraCharger::new(&verifier, text.as_bytes(), None, &challenges).unwrap();
        for shown in [format!("{charger:?}"), format!("{charger:#?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }
}
