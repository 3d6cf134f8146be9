//! A user's rate limits as stored (`uc:<user uuid>`, beside the user record, so user
//! records written before them decode as they are), and their run-time limiters: one GCRA
//! state per limit and user, shared by every key of the user in this process (a user limit
//! of 10 a minute with two keys allows 10 in all).
//!
//! A change to them invalidates the whole verify cache, as any change to a user does, so
//! the next request of each of its keys joins the new limiters. On a database several
//! processes share, the limiters admit from slices of the user's shared state
//! (`rate_state.rs`, at `r:u:<user uuid>`), which a change to the limits removes: they start
//! afresh in every process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rate_state::StoreRates;
use super::tx::{Tx, TxResult};
use super::{Store, layout};
use crate::clock::Clock;
use crate::controls::{RateLimit, USER_LIMIT_PREFIX};
use crate::error::StoreError;
use crate::meter::{Limit, UserMeter};
use crate::model::User;
use crate::shared_limit::RateSource;

/// A user's usage control as stored (postcard); absent when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserLimitsRecord {
    pub(crate) rate_limits: Vec<RateLimit>,
}

/// Every rate-limited user's limiters, by user id.
#[derive(Default)]
pub(crate) struct UserMeters(Mutex<HashMap<Uuid, Arc<UserMeter>>>);

impl std::fmt::Debug for UserMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserMeters").finish_non_exhaustive()
    }
}

impl UserMeters {
    /// Forgets every user's limiters (the database's history went back: see `follow.rs`).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the limiters of `user`, deleted (here or by another process): nothing would
    /// ever ask for them again, and they would stay until a restart.
    pub(crate) fn forget(&self, user: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }

    /// Whether `user` has limiters here.
    #[cfg(test)]
    pub(crate) fn holds(&self, user: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&user)
    }

    /// The limiters of `user` as `limits` describe them: the ones in use when built from
    /// the same limits, else new ones. `None` (and forgotten) when it has none.
    fn meter(
        &self,
        user: Uuid,
        limits: &[RateLimit],
        clock: &Arc<dyn Clock>,
        rates: Option<Arc<dyn RateSource>>,
    ) -> Option<Arc<UserMeter>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if limits.is_empty() {
            all.remove(&user);
            return None;
        }
        if let Some(meter) = all.get(&user).filter(|m| m.rules == limits) {
            return Some(Arc::clone(meter));
        }
        let meter = Arc::new(UserMeter {
            rules: limits.to_vec(),
            limits: limits
                .iter()
                .map(|rule| {
                    let named = RateLimit {
                        name: format!("{USER_LIMIT_PREFIX}{}", rule.name),
                        ..rule.clone()
                    };
                    match &rates {
                        Some(rates) => Limit::shared(named, Arc::clone(rates)),
                        None => Limit::new(named, clock),
                    }
                })
                .collect(),
        });
        all.insert(user, Arc::clone(&meter));
        Some(meter)
    }
}

impl Store {
    /// A user as the API shows it: its record with its rate limits.
    pub(super) fn user_view(&self, mut user: User) -> Result<User, StoreError> {
        user.rate_limits = self.user_limits(user.id)?;
        Ok(user)
    }

    /// A user's rate limits, as stored.
    pub(super) fn user_limits(&self, user: Uuid) -> Result<Vec<RateLimit>, StoreError> {
        Ok(self
            .get::<UserLimitsRecord>(&layout::user_controls(user))?
            .unwrap_or_default()
            .rate_limits)
    }

    /// The limiters every key of `user` shares, for verification.
    pub(super) fn user_meter(&self, user: Uuid) -> Result<Option<Arc<UserMeter>>, StoreError> {
        let limits = self.user_limits(user)?;
        let rates = self.inner.shares_storage().then(|| {
            let path = layout::user_rates(user);
            Arc::new(StoreRates::new(Arc::downgrade(&self.inner), path, 0)) as Arc<dyn RateSource>
        });
        Ok(self
            .inner
            .user_meters
            .meter(user, &limits, &self.inner.clock, rates))
    }
}

/// A user's rate limits, read inside a transaction.
pub(super) fn user_limits_in(tx: &Tx<'_>, user: Uuid) -> TxResult<Vec<RateLimit>> {
    Ok(tx
        .get::<UserLimitsRecord>(&layout::user_controls(user))?
        .unwrap_or_default()
        .rate_limits)
}

/// Writes a user's rate limits (none: removes the record), starting them afresh: their
/// shared state, if any, goes.
pub(super) fn put_user_limits_in(tx: &Tx<'_>, user: Uuid, limits: &[RateLimit]) -> TxResult<()> {
    tx.remove(&layout::user_rates(user))?;
    let path = layout::user_controls(user);
    if limits.is_empty() {
        tx.remove(&path)
    } else {
        tx.put(
            &path,
            &UserLimitsRecord {
                rate_limits: limits.to_vec(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::PermissionSet;

    /// The user record as every build before user rate limits wrote it.
    #[derive(Serialize, Deserialize)]
    struct UserBefore {
        id: Uuid,
        name: String,
        enabled: bool,
        groups: Vec<Uuid>,
        permissions: PermissionSet,
        tenant_id: Option<String>,
        organization_id: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        created_at: time::OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        updated_at: time::OffsetDateTime,
    }

    #[test]
    fn user_records_keep_their_encoding() {
        let at = time::macros::datetime!(2026-06-01 12:00 UTC);
        let before = UserBefore {
            id: Uuid::now_v7(),
            name: "partner".into(),
            enabled: true,
            groups: vec![Uuid::now_v7()],
            permissions: PermissionSet::parse(["orders:read"]).unwrap(),
            tenant_id: Some("acme".into()),
            organization_id: None,
            created_at: at,
            updated_at: at,
        };
        let old = postcard::to_stdvec(&before).unwrap();
        let user: User = postcard::from_bytes(&old).unwrap();
        assert_eq!(user.name, "partner");
        assert_eq!(user.tenant_id.as_deref(), Some("acme"));
        assert!(user.rate_limits.is_empty());
        let limited = User {
            rate_limits: vec![RateLimit {
                name: "default".into(),
                limit: 10,
                window_seconds: 60,
            }],
            ..user
        };
        assert_eq!(postcard::to_stdvec(&limited).unwrap(), old);
        let json = serde_json::to_value(&limited).unwrap();
        assert_eq!(json["rate_limits"][0]["limit"], 10);
        let back: User = serde_json::from_value(json).unwrap();
        assert_eq!(back, limited);
    }

    /// A user with a rate limit, its key verified on `store` (so its limiters are made):
    /// the user's id.
    fn limited_user_verified(store: &Store) -> Uuid {
        use crate::{Actor, NewKey, NewUser};
        let admin = Actor::system();
        let limit = RateLimit {
            name: "default".into(),
            limit: 100,
            window_seconds: 60,
        };
        let new_user = NewUser {
            name: "limited".into(),
            rate_limits: vec![limit],
            ..NewUser::default()
        };
        let user = store.create_user(&admin, new_user).unwrap();
        let key = NewKey {
            name: "k".into(),
            user_id: user.id,
            ..NewKey::default()
        };
        let created = store.create_key(&admin, key).unwrap();
        store.verify(created.secret.expose()).unwrap();
        assert!(store.inner.user_meters.holds(user.id));
        user.id
    }

    /// A deleted user's limiters go with it (the soak hunt found them kept until a
    /// restart, 2–3 KB a user of eight limits).
    #[test]
    fn a_deleted_user_s_limiters_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", crate::StoreConfig::default()).unwrap();
        let user = limited_user_verified(&store);
        store.delete_user(&crate::Actor::system(), user).unwrap();
        assert!(!store.inner.user_meters.holds(user));
    }

    /// ... and so they do from another process's memory, which learns of the deletion on
    /// the shared database's change feed.
    #[cfg(feature = "postgres")]
    #[test]
    fn a_user_deleted_elsewhere_has_its_limiters_forgotten_here() {
        use crate::location::Location;
        let Some(database) = super::super::postgres::testing::TestDatabase::create() else {
            return;
        };
        let location = Location::Postgres(database.url.clone());
        let config = crate::StoreConfig::default().usage_flush_interval(None);
        let here = Store::create_empty_at(&location, "lk", config.clone()).unwrap();
        let elsewhere = Store::open_at(&location, config).unwrap();
        let user = limited_user_verified(&here);
        elsewhere
            .delete_user(&crate::Actor::system(), user)
            .unwrap();
        // The deletion returns once every process applied it.
        assert!(!here.inner.user_meters.holds(user));
    }
}
