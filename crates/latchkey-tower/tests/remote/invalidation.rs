//! Invalidation by key, user and group events: the very next verification after the event
//! was applied sees the change.

use latchkey_tower::latchkey_core::{
    Actor, GroupPatch, KeyPatch, NewGroup, NewUser, PermissionSet, UserPatch, VerifyError,
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

    let system = Actor::system();
    let disable = KeyPatch {
        enabled: Some(false),
        ..KeyPatch::default()
    };
    s.keystore
        .store
        .update_key(&system, a.key.id, disable)
        .unwrap();
    s.caught_up().await;
    assert_eq!(
        s.verify(a.secret.expose()).await.unwrap_err(),
        VerifyError::Disabled
    );
    assert_eq!(s.requests(), cached + 1);
    assert!(s.verify(b.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), cached + 1, "b stayed cached");

    // Enabling takes effect at once too: the event drops the cached refusal.
    let enable = KeyPatch {
        enabled: Some(true),
        ..KeyPatch::default()
    };
    s.keystore
        .store
        .update_key(&system, a.key.id, enable)
        .unwrap();
    s.caught_up().await;
    assert!(s.verify(a.secret.expose()).await.is_ok());

    s.keystore.store.revoke_key(&system, a.key.id).unwrap();
    s.caught_up().await;
    assert_eq!(
        s.verify(a.secret.expose()).await.unwrap_err(),
        VerifyError::Revoked
    );
    assert!(s.verify(b.secret.expose()).await.is_ok());
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

    let patch = UserPatch {
        enabled: Some(false),
        ..UserPatch::default()
    };
    s.keystore
        .store
        .update_user(&Actor::system(), alice, patch)
        .unwrap();
    s.caught_up().await;
    for key in &alice_keys {
        assert_eq!(
            s.verify(key.secret.expose()).await.unwrap_err(),
            VerifyError::UserDisabled
        );
    }
    assert_eq!(s.requests(), cached + 2);
    assert!(s.verify(bob_key.secret.expose()).await.is_ok());
    assert_eq!(s.requests(), cached + 2, "bob's key stayed cached");

    // Permissions changed on the user reach its cached keys.
    let patch = UserPatch {
        permissions: latchkey_core::PermissionEdit::adding(perms(&["orders:write"])),
        ..UserPatch::default()
    };
    s.keystore
        .store
        .update_user(&Actor::system(), bob, patch)
        .unwrap();
    s.caught_up().await;
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
    assert_eq!(
        s.verify(key.secret.expose()).await.unwrap_err(),
        VerifyError::Revoked
    );
}
