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
