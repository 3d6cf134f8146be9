//! The PostgreSQL backend.

use crate::error::StoreError;
use crate::location::DatabaseUrl;
use crate::model::CreatedKey;

use super::{Store, StoreConfig};

/// The newest schema version this build knows.
pub(crate) const SCHEMA: u32 = 1;

fn not_yet(url: &DatabaseUrl) -> StoreError {
    StoreError::Unavailable(format!("the PostgreSQL backend is not ready yet ({url})").into())
}

pub(crate) fn open(url: &DatabaseUrl, _config: StoreConfig) -> Result<Store, StoreError> {
    Err(not_yet(url))
}

pub(crate) fn create_empty(
    url: &DatabaseUrl,
    _prefix: &str,
    _config: StoreConfig,
) -> Result<Store, StoreError> {
    Err(not_yet(url))
}

pub(crate) fn create_with_admin(
    url: &DatabaseUrl,
    _prefix: &str,
    _config: StoreConfig,
) -> Result<(Store, CreatedKey), StoreError> {
    Err(not_yet(url))
}

pub(crate) fn migrate(url: &DatabaseUrl) -> Result<u32, StoreError> {
    let _ = (SCHEMA, url.expose());
    Err(not_yet(url))
}
