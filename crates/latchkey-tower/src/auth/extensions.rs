//! Putting the [`Principal`](crate::Principal) into a request's extensions with one table
//! allocation instead of two.
//!
//! `http::Extensions` is a hash map made on the first insert with room for three entries.
//! Around an axum router the principal is that first entry, and axum adds three more
//! (`OriginalUri`, `MatchedPath`, the path parameters): the fourth grows the table, a second
//! allocation, a rehash of three entries and a free, ~250 instructions a request. A request
//! that has no extensions yet gets instead a clone of an empty map already sized for seven,
//! and the principal is inserted into that. Nothing else changes: the principal is
//! inserted the same way, and a request that already has extensions keeps them.

use http::{Extensions, Request};

use crate::require::extra::BaseCharge;

/// An empty extension map with room for seven entries; cloned into requests that have none.
#[derive(Debug, Clone)]
pub(super) struct Presized(Extensions);

/// Only to size the map: inserted and removed again.
#[derive(Clone)]
struct Slot<const N: usize>;

impl Default for Presized {
    fn default() -> Self {
        let mut extensions = Extensions::new();
        // Four entries grow the table to eight buckets (seven entries); removing them leaves
        // it empty at that size, and a clone keeps the size.
        extensions.insert(Slot::<0>);
        extensions.insert(Slot::<1>);
        extensions.insert(Slot::<2>);
        extensions.insert(Slot::<3>);
        extensions.remove::<Slot<0>>();
        extensions.remove::<Slot<1>>();
        extensions.remove::<Slot<2>>();
        extensions.remove::<Slot<3>>();
        Presized(extensions)
    }
}

impl Presized {
    /// Inserts `principal` into the request's extensions, and the credit the layer charged
    /// it, if any.
    pub(super) fn insert<B>(
        &self,
        request: &mut Request<B>,
        principal: crate::Principal,
        base: Option<BaseCharge>,
    ) {
        let extensions = request.extensions_mut();
        if extensions.is_empty() {
            *extensions = self.0.clone();
        }
        extensions.insert(principal);
        if let Some(base) = base {
            extensions.insert(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{Env, PermissionSet, Principal, PrincipalInfo};
    use uuid::Uuid;

    use super::*;

    fn principal() -> crate::Principal {
        crate::Principal(Principal::new(PrincipalInfo {
            key_id: Uuid::from_u128(1),
            prefix: "lk_live_000000000000".into(),
            key_name: "k".into(),
            env: Env::Live,
            user_id: Uuid::from_u128(2),
            user_name: "u".into(),
            tenant_id: None,
            organization_id: None,
            permissions: PermissionSet::default(),
            meta: None,
            meter: None,
        }))
    }

    #[test]
    fn inserts_beside_what_is_there() {
        let presized = Presized::default();
        assert!(presized.0.is_empty());

        let mut empty = Request::new(());
        presized.insert(&mut empty, principal(), None);
        assert_eq!(empty.extensions().len(), 1);
        assert!(empty.extensions().get::<crate::Principal>().is_some());

        let mut other = Request::new(());
        other.extensions_mut().insert(7u32);
        presized.insert(&mut other, principal(), None);
        assert_eq!(other.extensions().len(), 2);
        assert_eq!(other.extensions().get::<u32>(), Some(&7));
        assert!(other.extensions().get::<crate::Principal>().is_some());
        // The template stays empty.
        assert!(presized.0.is_empty());
    }
}
