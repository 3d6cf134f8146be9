//! The demo user and keys of a fresh store, and the welcome message.

use std::net::SocketAddr;
use std::path::Path;

use latchkey_tower::latchkey_core::{Actor, NewKey, NewUser, StoreError};
use latchkey_tower::{ApiKey, PermissionSet, Store};

/// The two demo keys, shown once.
#[derive(Debug)]
pub struct DemoKeys {
    /// Holds `orders:read` and `orders:write`.
    pub read_write: ApiKey,
    /// Scoped to `orders:read`.
    pub read_only: ApiKey,
}

/// On a store without users: a `demo` user holding `orders:read` and `orders:write`, a key
/// with all of it and a key scoped to `orders:read`.
pub fn seed_if_empty(store: &Store) -> Result<Option<DemoKeys>, StoreError> {
    if !store.users()?.is_empty() {
        return Ok(None);
    }
    let system = Actor::system();
    let permissions = |p: &[&str]| PermissionSet::parse(p.iter().copied()).expect("valid");
    let user = store.create_user(
        &system,
        NewUser {
            name: "demo".into(),
            permissions: permissions(&["orders:read", "orders:write"]),
            ..NewUser::default()
        },
    )?;
    let read_write = store.create_key(
        &system,
        NewKey {
            name: "demo read-write".into(),
            user_id: user.id,
            ..NewKey::default()
        },
    )?;
    let read_only = store.create_key(
        &system,
        NewKey {
            name: "demo read-only".into(),
            user_id: user.id,
            scopes: Some(permissions(&["orders:read"])),
            ..NewKey::default()
        },
    )?;
    Ok(Some(DemoKeys {
        read_write: read_write.secret,
        read_only: read_only.secret,
    }))
}

/// Prints where the API is, the demo keys (once) and the curl lines to try.
pub fn print_welcome(db: &Path, addr: SocketAddr, keys: Option<&DemoKeys>) {
    let url = format!("http://{addr}");
    println!("orders API on {url}, keystore {}", db.display());
    let Some(keys) = keys else {
        println!("Use a key created earlier (the demo keys were shown on first start).");
        return;
    };
    let (rw, ro) = (keys.read_write.expose(), keys.read_only.expose());
    println!(
        "
Created user `demo` (orders:read, orders:write) and two keys. They are shown only now:
  read-write: {rw}
  read-only:  {ro}

Try:
  curl -i {url}/health                                            # 200, no key needed
  curl -i {url}/orders                                            # 401 missing_key
  curl -i -H 'Authorization: Bearer {rw}' {url}/orders    # 200
  curl -i -H 'Authorization: Bearer {rw}' \\
       -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":2}}' {url}/orders    # 201
  curl -i -H 'Authorization: Bearer {ro}' \\
       -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":2}}' {url}/orders    # 403 insufficient_permission
"
    );
}
