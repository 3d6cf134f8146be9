//! Records created as the system actor: the lines nearly every core test and benchmark
//! starts with, written once. Shared with the benchmarks (`benches/support`).
#![allow(dead_code, unreachable_pub)]

use latchkey_core::{
    Actor, CreatedKey, Group, NewGroup, NewKey, NewUser, PermissionSet, Store, User,
};

/// Parses a permission list that the test knows is valid.
pub fn perms(items: &[&str]) -> PermissionSet {
    PermissionSet::parse(items).unwrap()
}

/// Creates a group with these permissions.
pub fn group(store: &Store, name: &str, permissions: &[&str]) -> Group {
    let new = NewGroup {
        name: name.into(),
        permissions: perms(permissions),
    };
    store.create_group(&Actor::system(), new).unwrap()
}

/// Creates a user with these direct permissions.
pub fn user(store: &Store, name: &str, permissions: &[&str]) -> User {
    user_with(
        store,
        NewUser {
            name: name.into(),
            permissions: perms(permissions),
            ..NewUser::default()
        },
    )
}

/// Creates a user as described.
pub fn user_with(store: &Store, new: NewUser) -> User {
    store.create_user(&Actor::system(), new).unwrap()
}

/// Creates a key named `name` for `user`, with no options.
pub fn key(store: &Store, user: &User, name: &str) -> CreatedKey {
    key_with(
        store,
        NewKey {
            name: name.into(),
            user_id: user.id,
            ..NewKey::default()
        },
    )
}

/// Creates a key as described.
pub fn key_with(store: &Store, new: NewKey) -> CreatedKey {
    store.create_key(&Actor::system(), new).unwrap()
}
