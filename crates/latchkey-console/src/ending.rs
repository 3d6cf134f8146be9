//! Sessions ended when a change refuses their key, not at their next page: a key (or its
//! user) disabled and enabled again before the session's next request would otherwise find
//! the session open again, where disabling is how an operator cuts off a stolen one.
//!
//! The store's change feed (this process's writes and, on a shared database, every other
//! daemon's) names the user each key or user change concerns; that user's sessions have
//! their keys checked at once, and those refused (disabled, revoked, expired, gone) end. A
//! feed that lagged or broke checks every session. The task holds neither the store nor
//! the sessions open: it ends with the store. Once a minute it sweeps the sessions that
//! expired, so that their keys leave memory without waiting for the next sign-in.
//!
//! A key disabled and enabled again faster than the change reaches the task (on one
//! machine, well under a millisecond; through a shared PostgreSQL, the time it takes
//! another daemon's change to be followed) may keep its sessions. A sign-in checks its key
//! again once its session is open, so one that raced a change is not left behind.

use std::sync::Weak;
use std::time::{Duration, Instant};

use latchkey_core::{Action, AuditEvent, Store, VerifyError};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::session::Sessions;
use crate::verify;

/// How often the task sweeps the expired sessions (at its next event, or after this long
/// without one).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Starts the task that ends `sessions` whose keys a change refuses, on the current tokio
/// runtime, which must have timers, as `axum::serve`'s has (outside a runtime, none:
/// sessions then end at their next request only).
pub(crate) fn watch(store: &Store, sessions: Weak<Sessions>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut events = store.subscribe();
    let mut breaks = store.feed_breaks();
    let store = store.downgrade();
    runtime.spawn(async move {
        let mut swept = Instant::now();
        loop {
            let received = tokio::time::timeout(SWEEP_EVERY, events.recv()).await;
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            if swept.elapsed() >= SWEEP_EVERY {
                sessions.sweep();
                swept = Instant::now();
            }
            // A break in the feed (a shared database that lost or replaced changes) may
            // hide a change no event will carry: every session is checked.
            let broke = breaks.has_changed().unwrap_or(false);
            if broke {
                breaks.borrow_and_update();
            }
            let user = match received {
                Ok(Err(RecvError::Closed)) => return,
                _ if broke => None,
                Ok(Ok(event)) => match concerned(&event) {
                    Some(user) => Some(user),
                    None => continue,
                },
                Ok(Err(RecvError::Lagged(_))) => None,
                Err(_quiet) => continue,
            };
            let Some(store) = store.upgrade() else {
                return;
            };
            end_refused(&store, &sessions, user).await;
        }
    });
}

/// The user whose keys a change may have stopped: key and user changes name it; group
/// changes only narrow what keys hold, which each page reads afresh.
fn concerned(event: &AuditEvent) -> Option<Uuid> {
    match event.action {
        Action::KeyUpdate
        | Action::KeyRevoke
        | Action::KeyRotate
        | Action::KeyDelete
        | Action::UserUpdate
        | Action::UserDelete
        | Action::UserRevokeKeys => event.user_id,
        _ => None,
    }
}

/// Ends the sessions of `user` (every session for `None`) whose key no longer
/// authenticates; one the store cannot say about just now stays, as at a request.
async fn end_refused(store: &Store, sessions: &Sessions, user: Option<Uuid>) {
    for (id, key) in sessions.keys_of(user) {
        if refused(store, key.expose()).await {
            sessions.close(&id);
        }
    }
}

/// Whether `key` no longer authenticates (disabled, revoked, expired, gone); `false` when
/// the store cannot say just now.
pub(crate) async fn refused(store: &Store, key: &str) -> bool {
    !matches!(
        verify::key(store, key).await,
        Ok(_) | Err(VerifyError::Unavailable(_))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use latchkey_core::{Actor, KeyPatch, NewKey, NewUser, PermissionSet, StoreConfig};

    use super::*;
    use crate::session::SessionKey;

    #[tokio::test]
    async fn disabling_a_key_ends_its_sessions_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
        let system = Actor::system();
        let user = |name: &str| {
            store
                .create_user(
                    &system,
                    NewUser {
                        name: name.into(),
                        permissions: PermissionSet::parse(["latchkey:keys:read"]).unwrap(),
                        ..NewUser::default()
                    },
                )
                .unwrap()
        };
        let key = |user: Uuid| {
            store
                .create_key(
                    &system,
                    NewKey {
                        name: "k".into(),
                        user_id: user,
                        ..NewKey::default()
                    },
                )
                .unwrap()
        };
        let (ops, other) = (user("ops"), user("other"));
        let (disabled, kept) = (key(ops.id), key(other.id));
        let sessions = Arc::new(Sessions::default());
        watch(&store, Arc::downgrade(&sessions));
        let open = |created: &latchkey_core::CreatedKey, user: Uuid| {
            let text = created.secret.expose().to_owned();
            sessions.open(SessionKey::new(text), user, None)
        };
        let (ended, stays) = (open(&disabled, ops.id), open(&kept, other.id));

        let disable = |enabled| KeyPatch {
            enabled: Some(enabled),
            ..KeyPatch::default()
        };
        store
            .update_key(&system, disabled.key.id, disable(false))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sessions.get(&ended).is_some() {
            assert!(Instant::now() < deadline, "the session did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Enabled again, the key does not bring it back; the other user's session stays.
        store
            .update_key(&system, disabled.key.id, disable(true))
            .unwrap();
        assert!(sessions.get(&ended).is_none());
        assert!(sessions.get(&stays).is_some());
    }
}
