//! The demo user and keys of a fresh store, and the welcome message.

use std::net::SocketAddr;

use latchkey_tower::latchkey_core::{Actor, Location, NewKey, NewUser, StoreError};
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
    let key = |name: &str, scopes: Option<PermissionSet>| {
        let new = NewKey {
            name: name.into(),
            user_id: user.id,
            scopes,
            ..NewKey::default()
        };
        store.create_key(&system, new).map(|created| created.secret)
    };
    Ok(Some(DemoKeys {
        read_write: key("demo read-write", None)?,
        read_only: key("demo read-only", Some(permissions(&["orders:read"])))?,
    }))
}

/// Prints [`welcome`].
pub fn print_welcome(db: &Location, addr: SocketAddr, keys: Option<&DemoKeys>) {
    print!("{}", welcome(db, addr, keys));
}

/// Where the API is, the demo keys (each exactly once, as shell assignments) and the curl
/// lines to try, which refer to the keys by those variables rather than repeat them.
pub fn welcome(db: &Location, addr: SocketAddr, keys: Option<&DemoKeys>) -> String {
    let url = format!("http://{addr}");
    // `Location` shows a database URL's password as `***`.
    let mut text = format!("orders API on {url}, keystore {db}\n");
    let Some(keys) = keys else {
        text.push_str("Use a key created earlier (the demo keys were shown on first start).\n");
        return text;
    };
    let (rw, ro) = (keys.read_write.expose(), keys.read_only.expose());
    text.push_str(&format!(
        "
Created user `demo` (orders:read, orders:write) and two keys. They are shown only now;
paste these two lines into your shell:
  RW={rw}
  RO={ro}

Try:
  curl -i {url}/health                                            # 200, no key needed
  curl -i {url}/orders                                            # 401 missing_key
  curl -i -H \"Authorization: Bearer $RW\" {url}/orders    # 200
  curl -i -H \"Authorization: Bearer $RW\" \\
       -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":2}}' {url}/orders    # 201
  curl -i -H \"Authorization: Bearer $RO\" \\
       -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":2}}' {url}/orders    # 403 insufficient_permission
"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_tower::latchkey_core::{Env, Prefix};

    #[test]
    fn the_welcome_shows_each_demo_key_exactly_once() {
        let keys = DemoKeys {
            read_write: ApiKey::generate(&Prefix::default(), Env::Live),
            read_only: ApiKey::generate(&Prefix::default(), Env::Live),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 3000));
        let text = welcome(&Location::parse("orders-data"), addr, Some(&keys));
        for key in [&keys.read_write, &keys.read_only] {
            assert_eq!(text.matches(key.secret()).count(), 1, "{text}");
        }
        let later = welcome(&Location::parse("orders-data"), addr, None);
        assert!(!later.contains("lk_live_"), "{later}");
    }
}
