//! Invalidation by key, user and group events: the very next verification after the event
//! was applied sees the change.

use latchkey_tower::latchkey_core::{
    Actor, CreatedKey, GroupPatch, KeyPatch, NewGroup, NewUser, PermissionSet, UserPatch,
    VerifyError,
};

use crate::Setup;

fn perms(list: &[&str]) -> PermissionSet {
    PermissionSet::parse(list.iter().copied()).unwrap()
}

#[tokio::test]
async fn a_key_event_drops_that_key_only() {
    let s = Setup::new().await;
    let user = s.keystore.user("reporting", &["orders:read"]);
    let (a, b) = (
        s.keystore.key(user, "a", None),
        s.keystore.key(user, "b", None),
    );
    s.verify(a.secret.expose()).await.unwrap();
    s.verify(b.secret.expose()).await.unwrap();
    let cached = s.requests();

    set_key_enabled(&s, &a, false).await;
    assert_eq!(s.refusal(&a).await, VerifyError::Disabled);
    assert_eq!(s.requests(), cached + 1);
    assert!(s.verify(b.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), cached + 1, "b stayed cached");

    // Enabling takes effect at once too: the event drops the cached refusal.
    set_key_enabled(&s, &a, true).await;
    assert!(s.verify(a.secret.expose()).await.is_ok());

    s.keystore
        .store
        .revoke_key(&Actor::system(), a.key.id)
        .unwrap();
    s.caught_up().await;
    assert_eq!(s.refusal(&a).await, VerifyError::Revoked);
    assert!(s.verify(b.secret.expose()).await.is_ok());
}

/// Enables or disables a key in the store, and waits for the verifier to apply the event.
pub(crate) async fn set_key_enabled(s: &Setup, key: &CreatedKey, enabled: bool) {
    let patch = KeyPatch {
        enabled: Some(enabled),
        ..KeyPatch::default()
    };
    let store = &s.keystore.store;
    store
        .update_key(&Actor::system(), key.key.id, patch)
        .unwrap();
    s.caught_up().await;
}

/// Changes a user in the store, and waits for the verifier to apply the event.
async fn update_user(s: &Setup, id: uuid::Uuid, patch: UserPatch) {
    let store = &s.keystore.store;
    store.update_user(&Actor::system(), id, patch).unwrap();
    s.caught_up().await;
}

#[tokio::test]
async fn a_user_event_drops_every_key_of_that_user() {
    let s = Setup::new().await;
    let (alice, bob) = (
        s.keystore.user("alice", &["orders:read"]),
        s.keystore.user("bob", &["orders:read"]),
    );
    let alice_keys = [
        s.keystore.key(alice, "a1", None),
        s.keystore.key(alice, "a2", None),
    ];
    let bob_key = s.keystore.key(bob, "b1", None);
    for key in alice_keys.iter().chain([&bob_key]) {
        s.verify(key.secret.expose()).await.unwrap();
    }
    let cached = s.requests();

    let disable = UserPatch {
        enabled: Some(false),
        ..UserPatch::default()
    };
    update_user(&s, alice, disable).await;
    for key in &alice_keys {
        assert_eq!(s.refusal(key).await, VerifyError::UserDisabled);
    }
    assert_eq!(s.requests(), cached + 2);
    assert!(s.verify(bob_key.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), cached + 2, "bob's key stayed cached");

    // Permissions changed on the user reach its cached keys.
    let widen = UserPatch {
        permissions: latchkey_core::PermissionEdit::adding(perms(&["orders:write"])),
        ..UserPatch::default()
    };
    update_user(&s, bob, widen).await;
    assert!(
        s.verify(bob_key.secret.expose())
            .await
            .unwrap()
            .has("orders:write")
    );
}

#[tokio::test]
async fn a_group_event_drops_everything() {
    let s = Setup::new().await;
    let system = Actor::system();
    let group = s
        .keystore
        .store
        .create_group(
            &system,
            NewGroup {
                name: "readers".into(),
                permissions: perms(&["orders:read"]),
            },
        )
        .unwrap();
    let member = s
        .keystore
        .store
        .create_user(
            &system,
            NewUser {
                name: "member".into(),
                groups: vec![group.id],
                ..NewUser::default()
            },
        )
        .unwrap();
    let outsider = s.keystore.user("outsider", &["orders:read"]);
    let member_key = s.keystore.key(member.id, "m", None);
    let outsider_key = s.keystore.key(outsider, "o", None);
    assert!(
        s.verify(member_key.secret.expose())
            .await
            .unwrap()
            .has("orders:read")
    );
    s.verify(outsider_key.secret.expose()).await.unwrap();
    let cached = s.requests();

    let patch = GroupPatch {
        permissions: latchkey_core::PermissionEdit::removing(perms(&["orders:read"])),
        ..GroupPatch::default()
    };
    s.keystore
        .store
        .update_group(&system, group.id, patch)
        .unwrap();
    s.caught_up().await;
    assert!(
        !s.verify(member_key.secret.expose())
            .await
            .unwrap()
            .has("orders:read")
    );
    // The verifier does not know group membership: every key is asked again.
    s.verify(outsider_key.secret.expose()).await.unwrap();
    assert_eq!(s.requests(), cached + 2);
}

#[tokio::test]
async fn deleting_a_user_refuses_its_cached_keys() {
    let s = Setup::new().await;
    let user = s.keystore.user("leaving", &["orders:read"]);
    let key = s.keystore.key(user, "k", None);
    s.verify(key.secret.expose()).await.unwrap();
    s.keystore
        .store
        .delete_user(&Actor::system(), user)
        .unwrap();
    s.caught_up().await;
    assert_eq!(s.refusal(&key).await, VerifyError::Revoked);
}
