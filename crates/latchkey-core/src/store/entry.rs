//! Opening and creating a store at a [`Location`]: a directory or a PostgreSQL database.

use std::path::Path;

use super::backup::ChainCheck;
#[cfg(feature = "postgres")]
use super::postgres;
use super::{Restored, Store, StoreConfig};
use crate::error::StoreError;
use crate::location::Location;
use crate::model::CreatedKey;

impl Store {
    /// Opens an initialised store at `location` ([`Store::open`] for a directory).
    ///
    /// A PostgreSQL database's schema is migrated forward first; a schema newer than this
    /// build knows is refused with [`StoreError::SchemaTooNew`].
    pub fn open_at(location: &Location, config: StoreConfig) -> Result<Store, StoreError> {
        match location {
            Location::Dir(path) => Store::open_dir(path, config),
            Location::Postgres(url) => postgres::open(url, config),
        }
    }

    /// [`Store::create_empty`] at a location.
    pub fn create_empty_at(
        location: &Location,
        prefix: &str,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        match location {
            Location::Dir(path) => Store::prepare(path, prefix, config)?.complete_empty(),
            Location::Postgres(url) => postgres::create_empty(url, prefix, config),
        }
    }

    /// [`Store::create_with_admin`] at a location.
    pub fn create_with_admin_at(
        location: &Location,
        prefix: &str,
        config: StoreConfig,
    ) -> Result<(Store, CreatedKey), StoreError> {
        match location {
            Location::Dir(path) => Store::prepare(path, prefix, config)?.complete_with_admin(),
            Location::Postgres(url) => postgres::create_with_admin(url, prefix, config),
        }
    }

    /// Migrates the schema at `location` forward to the newest this build knows, and
    /// returns that version, as `latchkey migrate --db URL` does. A directory store has
    /// nothing to migrate: its version is returned. Refuses a newer schema with
    /// [`StoreError::SchemaTooNew`], changing nothing.
    pub fn migrate_at(location: &Location) -> Result<u32, StoreError> {
        match location {
            Location::Dir(path) => dir_schema_version(path),
            Location::Postgres(url) => postgres::migrate(url),
        }
    }

    /// [`Store::restore`] at a location: an empty or new directory, or an empty database.
    pub fn restore_at(
        location: &Location,
        backup: impl std::io::Read,
        config: StoreConfig,
    ) -> Result<(Store, Restored), StoreError> {
        Store::restore_checking(location, backup, config, ChainCheck::Verify)
    }

    /// [`Store::restore_at`] of a backup whose audit chain does not verify, as it is (the
    /// checksum still must match): to recover the keys of a store whose trail was edited
    /// or damaged. [`Store::verify_audit`] then names where the chain breaks.
    pub fn restore_keeping_broken_chain_at(
        location: &Location,
        backup: impl std::io::Read,
        config: StoreConfig,
    ) -> Result<(Store, Restored), StoreError> {
        Store::restore_checking(location, backup, config, ChainCheck::Keep)
    }

    fn restore_checking(
        location: &Location,
        backup: impl std::io::Read,
        config: StoreConfig,
        check: ChainCheck,
    ) -> Result<(Store, Restored), StoreError> {
        match location {
            Location::Dir(path) => Store::restore_dir(path, backup, config, check),
            Location::Postgres(url) => postgres::restore(url, backup, config, check),
        }
    }
}

/// What a `Store` function given a path opens or creates: a `postgres://` URL names a
/// database, as `--db` does (never a directory named `postgres:`, whose error would print
/// the password); anything else, a non-UTF-8 path included, is a directory.
pub(super) fn location_of(path: &Path) -> Location {
    match path.to_str() {
        Some(text) => Location::parse(text),
        None => Location::Dir(path.to_owned()),
    }
}

/// A directory store's schema version, as written at creation (`m:version`), in either
/// engine's files; refused when newer than this build knows. Directory stores have had one
/// schema so far: there is nothing to migrate. The store passes the checks of every open
/// first: a store `serve` would refuse (damaged, rolled back, missing files) is refused
/// here too, and the engine never re-creates its missing files.
fn dir_schema_version(path: &Path) -> Result<u32, StoreError> {
    super::open_checked(path, 1 << 20).map(|(_, schema, _)| schema)
}

/// Without the `postgres` feature, every PostgreSQL location is refused.
#[cfg(not(feature = "postgres"))]
mod postgres {
    use super::super::{Store, StoreConfig};
    use crate::error::StoreError;
    use crate::location::DatabaseUrl;
    use crate::model::CreatedKey;

    fn refused(url: &DatabaseUrl) -> StoreError {
        StoreError::invalid(
            "db",
            format!("{url}: this build of latchkey-core has no `postgres` feature"),
        )
    }

    pub(super) fn open(url: &DatabaseUrl, _: StoreConfig) -> Result<Store, StoreError> {
        Err(refused(url))
    }

    pub(super) fn create_empty(
        url: &DatabaseUrl,
        _: &str,
        _: StoreConfig,
    ) -> Result<Store, StoreError> {
        Err(refused(url))
    }

    pub(super) fn create_with_admin(
        url: &DatabaseUrl,
        _: &str,
        _: StoreConfig,
    ) -> Result<(Store, CreatedKey), StoreError> {
        Err(refused(url))
    }

    pub(super) fn migrate(url: &DatabaseUrl) -> Result<u32, StoreError> {
        Err(refused(url))
    }

    pub(super) fn restore(
        url: &DatabaseUrl,
        _: impl std::io::Read,
        _: StoreConfig,
        _: super::super::backup::ChainCheck,
    ) -> Result<(Store, super::super::Restored), StoreError> {
        Err(refused(url))
    }
}
