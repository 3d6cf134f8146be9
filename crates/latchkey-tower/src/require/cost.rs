//! [`RouteCost`]: what one request to a route costs.

use latchkey_core::limits::MAX_COST;

/// What one request to a route costs against the key's rate limits and credits: 1 to
/// [`RouteCost::MAX`] (1,000,000, the most one `/v1/verify` may charge), so that a route
/// costs the same through an embedded store and through a remote verifier, which charges
/// it through the daemon. Set with [`RequirePermissionLayer::cost`](crate::RequirePermissionLayer::cost).
///
/// ```
/// use latchkey_tower::RouteCost;
///
/// const REPORT: RouteCost = RouteCost::new(5).unwrap();
/// assert_eq!(REPORT.get(), 5);
/// assert_eq!(RouteCost::new(0), None);
/// assert_eq!(RouteCost::new(1_000_001), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteCost(u32);

impl RouteCost {
    /// The default: the one use the authentication layer already charged.
    pub const ONE: RouteCost = RouteCost(1);

    /// The most a request may cost.
    pub const MAX: RouteCost = RouteCost(MAX_COST);

    /// `cost`, when it is 1 to [`RouteCost::MAX`].
    pub const fn new(cost: u32) -> Option<RouteCost> {
        if cost >= 1 && cost <= MAX_COST {
            Some(RouteCost(cost))
        } else {
            None
        }
    }

    /// The cost as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for RouteCost {
    fn default() -> Self {
        RouteCost::ONE
    }
}
