//! `latchkey migrate`: brings a store's schema to the version this build knows, alone.
//!
//! `serve` and the `--db` commands migrate a PostgreSQL store forward when they open it,
//! and build the indexes and counts of a store an older layout wrote; running `migrate`
//! first, once, does both and keeps that work out of several daemons' starts during an
//! upgrade. A schema newer than this build knows is refused and left as it is.

use std::process::ExitCode;

use latchkey_core::{Engine, Store};
use serde_json::json;

use crate::config::Settings;
use crate::engine::Named;
use crate::output::print_json;

/// Migrates the store named by `--db` (default `./latchkey-data`) and prints its schema
/// version: `Schema version N at LOCATION (ENGINE).`, or `{"schema_version": N, "db":
/// LOCATION, "engine": ENGINE}` with `--json` (ENGINE: `sled`, `redb` or `postgres`). Fails (exit 1, one line) on a newer schema (`schema_too_new`), a store that is
/// not initialised, or a database that cannot be reached.
pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let location = settings.store_location();
    let version = Store::migrate_at(&location)?;
    let engine = Named(location.as_dir().and_then(Engine::found_at));
    // `Location` prints a URL's password as `***`.
    if settings.json {
        print_json(&json!({
            "schema_version": version,
            "db": location.to_string(),
            "engine": engine.to_string(),
        }));
    } else {
        println!("Schema version {version} at {location} ({engine}).");
    }
    Ok(ExitCode::SUCCESS)
}
