//! The handlers, one file per resource. Each takes a [`Caller`](crate::caller::Caller)
//! naming its required permission, parses with the extractors of [`crate::extract`], and
//! runs store calls through [`AppState::run`](crate::state::AppState::run).

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod created;
pub(crate) mod events;
pub(crate) mod groups;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod leases;
pub(crate) mod streams;
pub(crate) mod system;
pub(crate) mod usage;
pub(crate) mod users;
pub(crate) mod verify;

/// `at` in UTC, as every time is stored and answered; refused (`field` invalid) when UTC
/// puts it outside the years RFC 3339 writes: `9999-12-31T23:59:59-23:59` is in year 10000.
pub(crate) fn in_utc(
    field: &'static str,
    at: time::OffsetDateTime,
) -> Result<time::OffsetDateTime, latchkey_core::StoreError> {
    at.checked_to_offset(time::UtcOffset::UTC)
        .filter(|at| (0..=9999).contains(&at.year()))
        .ok_or_else(|| latchkey_core::StoreError::Invalid {
            field,
            reason: "is outside the years 0000 to 9999 once in UTC".into(),
        })
}
