//! Creating a store: `latchkey init`, and `latchkey serve` on a path that holds none.

use std::path::Path;

use latchkey_core::{CreatedKey, Store, StoreConfig, StoreError};
use serde_json::Value;

use crate::commands::print_secret_block;
use crate::output::print_json;

/// Opens the store at `path`, or initialises one there as `latchkey init` does when the path
/// holds none. The admin key comes back only when it was just created.
pub fn open_or_init(
    path: &Path,
    prefix: &str,
    config: StoreConfig,
) -> Result<(Store, Option<CreatedKey>), StoreError> {
    match Store::open(path, config.clone()) {
        Ok(store) => Ok((store, None)),
        Err(StoreError::NotInitialized { .. }) => {
            let (store, admin) = Store::init(path, prefix, config)?;
            Ok((store, Some(admin)))
        }
        Err(e) => Err(e),
    }
}

/// The created key as the API answers it: the record plus `secret`.
pub fn created_json(created: &CreatedKey) -> Value {
    let mut record = serde_json::to_value(&created.key).expect("keys serialize");
    record["secret"] = Value::String(created.secret.expose().to_owned());
    record
}

/// Prints a store's new admin key, once: the key block, or its JSON with `--json`.
pub fn print_admin_key(path: &Path, created: &CreatedKey, json: bool) {
    let record = created_json(created);
    if json {
        print_json(&record);
    } else {
        println!("Initialised a latchkey store at {}.", path.display());
        print_secret_block(&record, &format!("admin ({})", created.key.user_id));
    }
}

/// `latchkey init`: creates the store with its admin group, user and key.
pub fn run(path: &Path, prefix: &str, json: bool) -> anyhow::Result<()> {
    let (store, admin) = Store::init(path, prefix, StoreConfig::default())?;
    print_admin_key(path, &admin, json);
    store.flush()?;
    Ok(())
}
