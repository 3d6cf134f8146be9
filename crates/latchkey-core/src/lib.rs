//! API keys done right: the key format, hashing, permissions, the keystore (embedded sled or
//! redb, or PostgreSQL) and verification.
//!
//! # Layout
//!
//! - [`key`]: the key format `<prefix>_<env>_<id>_<secret><checksum>`; generate, parse,
//!   checksum, [`find_keys`] for secret scanning and [`without_keys`] to keep keys out of
//!   messages.
//! - [`hash`]: keyed BLAKE3 of secrets, compared in constant time; the verify cache's tag.
//! - [`permission`]: permission strings, wildcard coverage, effective permissions.
//! - [`model`]: groups, users, keys and the inputs that change them.
//! - [`limits`]: every bound on input, in one place.
//! - [`controls`], [`meter`]: a key's usage control (meta, rate limits, credits, IP
//!   allowlist) and its enforcement, [`admit`] ordering the checks; `shared_limit`: a rate
//!   limit several processes on one database share, admitted from slices of its state;
//!   [`slice_size`]: how large a slice a process (a daemon, a remote verifier) reserves
//!   next; `local_state`: a rate limit's state in this process, which a request of cost 0 peeks.
//! - [`actor`]: who acts, and the no-escalation rule.
//! - `store`: the keystore ([`Store`]) and its storage engines (sled, redb, PostgreSQL),
//!   the only module that touches them.
//! - [`verify`]: [`Principal`], [`VerifyError`] and the verify cache.
//! - [`audit`]: the hash-chained audit trail, which is also the change feed.
//! - [`clock`]: an injectable clock.
//! - `schema` (the `openapi` feature): JSON schemas of wire values utoipa cannot derive.
//! - [`wire`]: the JSON records the daemon and its clients both speak (usage reports,
//!   the verify answer, the event stream's `ready`/`heartbeat` data).
//!
//! # Example
//!
//! ```
//! use latchkey_core::{Actor, NewKey, NewUser, PermissionSet, Store, StoreConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
//! let user = store
//!     .create_user(&Actor::system(), NewUser {
//!         name: "reporting".into(),
//!         permissions: PermissionSet::parse(["orders:read"]).unwrap(),
//!         ..NewUser::default()
//!     })
//!     .unwrap();
//! let created = store
//!     .create_key(&Actor::system(), NewKey { name: "dashboard".into(), user_id: user.id, ..NewKey::default() })
//!     .unwrap();
//! let principal = store.verify(created.secret.expose()).unwrap();
//! assert_eq!(principal.user_name, "reporting");
//! ```

pub mod actor;
pub mod audit;
mod base62;
pub mod clock;
pub mod controls;
pub mod error;
pub mod hash;
pub mod key;
pub mod limits;
mod local_state;
mod location;
pub mod log_limit;
pub mod meter;
pub mod model;
pub mod permission;
#[cfg(feature = "openapi")]
pub mod schema;
mod shared_limit;
pub mod slice_size;
mod store;
pub mod verify;
pub mod wire;

#[doc(hidden)]
pub use tracing as __tracing;

pub use actor::Actor;
pub use audit::{Action, AuditEvent, ChainBreak};
pub use clock::{Clock, ManualClock, SystemClock};
pub use controls::{Credits, CreditsPatch, LimitState, RateLimit, Refill, RefillInterval};
pub use error::{BoxError, Conflict, Entity, StoreError};
pub use hash::{HashKey, SecretHash};
pub use key::{ApiKey, Env, ParseError, Prefix, PublicId, find_keys, replace_keys, without_keys};
pub use location::{DatabaseUrl, Location, LocationError};
pub use meter::{Admission, Admitted, Meter, Reservation, admit, try_admit};
pub use model::{
    CreatedKey, Group, GroupPatch, Key, KeyPatch, KeyStatus, NewGroup, NewKey, NewUser, User,
    UserPatch,
};
pub use permission::{Permission, PermissionEdit, PermissionError, PermissionSet};
pub use store::{
    AuditRange, AuditReport, BackupHeader, CheckedBackup, Engine, ImportKey, ImportSecret,
    KeyQuery, KeySort, KeysRevocation, Page, Restored, SortField, Standing, Stats, Store,
    StoreConfig, WeakStore,
};
pub use verify::{Principal, PrincipalInfo, VerifyError};
