//! The store's error type.

use std::fmt;
use std::path::PathBuf;

/// A boxed error, the source of a storage failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kinds of record the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    /// A group.
    Group,
    /// A user.
    User,
    /// A key.
    Key,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Group => "group",
            Entity::User => "user",
            Entity::Key => "key",
        })
    }
}

/// A lifecycle rule that a request broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// Names of users and groups are unique.
    #[error("a {entity} named {name:?} already exists")]
    NameTaken {
        /// Which kind of record.
        entity: Entity,
        /// The name asked for.
        name: String,
    },
    /// A key's text is imported once: one text, one key. Its code is `name_taken`, as a
    /// taken name's. The message names no prefix: the key holding the text may be another
    /// tenant's, and the one this import gave it names nothing stored (review s55 L1).
    #[error("this text is already imported: one text, one key")]
    AlreadyImported {
        /// The display prefix this import gave the text (not the imported key's).
        prefix: String,
    },
    /// A key can be deleted only after it is revoked.
    #[error("the key is not revoked: revoke it before deleting it")]
    KeyNotRevoked,
    /// Revocation is irreversible: a revoked key cannot be enabled or rotated.
    #[error("the key is revoked, and revocation is irreversible")]
    KeyRevoked,
    /// A key rotates once: the key it was rotated to is the one to rotate next (or, that
    /// one revoked, a new key is the way on).
    #[error(
        "the key was rotated already: rotate the key it was rotated to (create a new key if \
         that one is revoked)"
    )]
    KeyRotated,
    /// An expired key does not rotate: its successor would be a key with no expiry, access
    /// that was switched off switched on again. Create a new key instead.
    #[error("the key has expired: an expired key does not rotate; create a new key instead")]
    KeyExpired,
    /// Credits given to (or set on) a key that is revoked or has expired could never be
    /// spent: refused, so that a purchase is not stranded on a key no one can use.
    #[error(
        "the key {}: credits given to it could never be spent; give them to a key in use",
        if *.expired { "has expired" } else { "is revoked" }
    )]
    CreditsOfAnEndedKey {
        /// Whether it expired (`key_expired`), rather than was revoked (`key_revoked`).
        expired: bool,
    },
    /// Credits given to (or set on) a key rotated already: its credits went to the key it
    /// was rotated to, and it expires at the end of its grace, with whatever it was given.
    /// Its code is `key_rotated`.
    #[error(
        "the key was rotated: its credits went to the key it was rotated to, and it ends with \
         its grace period; give them to that key"
    )]
    CreditsOfARotatedKey,
    /// The change would leave no enabled, unrevoked, unexpired key that holds `*`, and so
    /// no one able to manage the store through the API.
    #[error("this change would leave no active key holding `*`: create another admin key first")]
    LastAdminKey,
}

impl Conflict {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Conflict::NameTaken { .. } | Conflict::AlreadyImported { .. } => "name_taken",
            Conflict::KeyNotRevoked => "key_not_revoked",
            Conflict::KeyRevoked | Conflict::CreditsOfAnEndedKey { expired: false } => {
                "key_revoked"
            }
            Conflict::CreditsOfAnEndedKey { expired: true } => "key_expired",
            Conflict::KeyRotated | Conflict::CreditsOfARotatedKey => "key_rotated",
            Conflict::KeyExpired => "key_expired",
            Conflict::LastAdminKey => "last_admin_key",
        }
    }
}

/// Why a store operation failed. Nothing was changed when an operation fails, except that a
/// write to PostgreSQL whose `COMMIT` timed out or lost its connection
/// ([`StoreError::Unavailable`]) may have committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No record with that id or name.
    #[error("{entity} {id:?} not found")]
    NotFound {
        /// Which kind of record.
        entity: Entity,
        /// The id or name asked for.
        id: String,
    },
    /// A lifecycle rule.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A field's value is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as named in the API.
        field: &'static str,
        /// What is expected.
        reason: String,
    },
    /// The caller tried to grant a permission it does not hold itself, or to change (edit,
    /// delete, revoke the keys of) a user, group or key that holds one.
    #[error(
        "the caller does not hold {permission:?}, so it can neither grant it nor change a user, group or key that holds it"
    )]
    Escalation {
        /// The first permission outside the caller's.
        permission: String,
    },
    /// A caller bound to a tenant (organization) tried to place a user outside it.
    #[error(
        "{field}: a caller bound to a tenant cannot place or change anything outside its tenant (organization)"
    )]
    TenantForbidden {
        /// `tenant_id` or `organization_id`.
        field: &'static str,
    },
    /// A caller bound to a tenant (organization) asked for what belongs to every tenant at
    /// once ([`Actor::ensure_global`](crate::Actor::ensure_global)); says what, and why.
    #[error("a caller bound to a tenant (organization) cannot {0}")]
    GlobalOnly(&'static str),
    /// Another process has the store open.
    #[error("the store at {} is held by another process (is `latchkey serve` running on it?)", path.display())]
    Locked {
        /// The store's path.
        path: PathBuf,
    },
    /// No store was initialised at the path.
    #[error("no latchkey store at {}: run `latchkey init` first", path.display())]
    NotInitialized {
        /// The store's path.
        path: PathBuf,
    },
    /// `init` on a store that already exists.
    #[error("a latchkey store already exists at {}; nothing was changed", path.display())]
    AlreadyInitialized {
        /// The store's path.
        path: PathBuf,
    },
    /// The storage engine failed (disk, I/O, the database); the cause is the source.
    #[error("storage error: {0}")]
    Storage(#[source] BoxError),
    /// The keystore cannot serve the call now: its database cannot be reached (PostgreSQL
    /// down, the network) or did not answer in time, or an embedded store is being
    /// reopened after a storage failure (nothing changed: retry). A write that failed before its `COMMIT` changed nothing; one whose `COMMIT` timed
    /// out or lost its connection may have committed: look before retrying one that is not
    /// idempotent. Writes work again once it is back, without a restart.
    #[error("the keystore is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store (a directory, a database, or a backup's records) holds a schema newer than
    /// this version of latchkey knows.
    #[error(
        "the store holds latchkey schema version {found}, newer than this version knows ({supported}): upgrade latchkey"
    )]
    SchemaTooNew {
        /// The schema version found.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// A stored record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The disk holding the store is full: the call was refused and nothing changed.
    /// Verification goes on; writes work again once space is freed.
    #[error("the disk holding the store at {} is full: nothing was changed; free some space and retry", path.display())]
    StorageFull {
        /// The store's path.
        path: PathBuf,
    },
    /// The store's files are damaged, missing, or behind the last write the store
    /// acknowledged (a rolled-back or truncated log). The store refuses to open rather than
    /// silently forget; the remedy is `latchkey restore` from a backup.
    #[error("the store at {} {reason}: refusing to open it; restore the newest backup with `latchkey restore`", path.display())]
    Damaged {
        /// The store's path.
        path: PathBuf,
        /// What is wrong, as a phrase that follows the path ("is missing its `db` file").
        reason: String,
    },
}

/// The cause of a storage error raised by a `COMMIT` that failed other than by a conflict
/// (its connection lost, a timeout): the database may have committed and its answer been
/// lost. See [`StoreError::may_have_committed`].
#[derive(Debug)]
pub(crate) struct CommitInDoubt(pub(crate) BoxError);

impl fmt::Display for CommitInDoubt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at COMMIT: it may have been applied)", self.0)
    }
}

impl std::error::Error for CommitInDoubt {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The cause of the `Unavailable` error of an embedded store whose directory was removed or
/// replaced while this process held it open. See [`StoreError::is_displaced`].
#[derive(Debug)]
pub(crate) struct Displaced(pub(crate) String);

impl fmt::Display for Displaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Displaced {}

impl StoreError {
    /// Whether the embedded store's directory was removed or replaced while this process
    /// held it open: writes are refused for good (nothing would find them at the next
    /// start), and retrying will not help. An online backup still reads the open store.
    pub fn is_displaced(&self) -> bool {
        matches!(self, StoreError::Unavailable(cause) if cause.is::<Displaced>())
    }

    /// Whether the write that failed with this error may have committed all the same: only
    /// a `COMMIT` over a network whose answer was lost. Every other failure wrote nothing,
    /// so what the write took out of memory (an unspent credit slice) goes back.
    pub fn may_have_committed(&self) -> bool {
        match self {
            StoreError::Storage(cause) | StoreError::Unavailable(cause) => {
                cause.is::<CommitInDoubt>()
            }
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A storage failure described by a message alone.
    pub(crate) fn storage(message: impl Into<String>) -> StoreError {
        StoreError::Storage(message.into().into())
    }

    /// "Not found", naming the reference as given only when it could name a record of
    /// `entity`: a UUID, a display prefix or public id (keys), a name (users and groups).
    /// A longer text, or a key's full text, may be a secret given by mistake (a key pasted
    /// where a user's name goes, some other system's key), which an answer or a log must
    /// not carry back.
    pub(crate) fn not_found(entity: Entity, id: impl fmt::Display) -> StoreError {
        let id = id.to_string();
        let (longest, what) = match entity {
            Entity::Key => (crate::key::MAX_DISPLAY_PREFIX_LEN, "display prefix"),
            Entity::Group | Entity::User => (crate::limits::MAX_PRINCIPAL_NAME_BYTES, "name"),
        };
        let id = if uuid::Uuid::parse_str(&id).is_ok() {
            id
        } else if crate::key::ApiKey::has_its_shape(&id) {
            "(a key's full text, not shown)".to_owned()
        } else if id.len() > longest {
            format!("({} bytes, longer than any {what})", id.len())
        } else if longest_alphanumeric_run(&id) >= SECRET_LIKE_RUN
            || (id.len() >= crate::limits::MIN_IMPORTED_KEY_LEN && !crate::model::is_name_text(&id))
        {
            // A key cut short or run on, or another system's secret: most of one, whatever
            // the parse says. No name needs such a run, nor a display prefix; and a text as
            // long as a key that holds a mark no name or prefix may (`'`, `=`, `/`: re-check
            // s55b L3) names none.
            "(a key-like text, not shown)".to_owned()
        } else {
            id
        };
        StoreError::NotFound { entity, id }
    }

    /// A stable, machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict(c) => c.code(),
            StoreError::Invalid { .. } => "invalid_field",
            StoreError::Escalation { .. } => "insufficient_permission",
            StoreError::TenantForbidden { .. } | StoreError::GlobalOnly(_) => "tenant_forbidden",
            StoreError::Locked { .. } => "store_locked",
            StoreError::NotInitialized { .. } => "not_initialized",
            StoreError::AlreadyInitialized { .. } => "already_initialized",
            StoreError::StorageFull { .. } => "storage_full",
            StoreError::Damaged { .. } => "store_damaged",
            StoreError::Unavailable(_) => "keystore_unavailable",
            StoreError::SchemaTooNew { .. } => "schema_too_new",
            StoreError::Storage(_) | StoreError::Corrupt(_) => "internal",
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Storage(Box::new(err))
    }
}

/// A run of this many letters and digits is taken for (part of) a secret: a key's secret
/// and checksum are one run of 38, a display prefix's longest is 12.
const SECRET_LIKE_RUN: usize = 20;

fn longest_alphanumeric_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(entity: Entity, reference: &str) -> String {
        match StoreError::not_found(entity, reference) {
            StoreError::NotFound { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_cut_short_or_run_on_is_never_carried_back() {
        let prefix = crate::key::Prefix::new("lk").unwrap();
        let generated = crate::key::ApiKey::generate(&prefix, crate::key::Env::Live);
        let key = generated.expose();
        // Another system's secret: a run of 30 letters and digits behind its own prefix.
        let other = crate::key::ApiKey::generate(&prefix, crate::key::Env::Live);
        let foreign = format!("sk_{}", &other.expose()[other.expose().len() - 30..]);
        // Twelve characters from the middle of each secret: never in what is said.
        let secret = &key[key.len() - 32..key.len() - 20];
        let foreign_secret = &foreign[foreign.len() - 20..foreign.len() - 8];
        for reference in [
            key.to_owned(),
            format!("{key} "),
            format!(" {key}"),
            key[..key.len() - 1].to_owned(),
            key[..key.len() - 12].to_owned(),
            format!("{key}x"),
            foreign.clone(),
            // Marks that cut it into runs shorter than a key's (re-check s55b L3).
            format!("{}'{}'{}", &foreign[..12], &foreign[12..24], &foreign[24..]),
            format!("{}==", &foreign[..20]),
        ] {
            for entity in [Entity::User, Entity::Group, Entity::Key] {
                let said = shown(entity, &reference);
                assert!(!said.contains(secret), "{entity:?}: {said}");
                assert!(!said.contains(foreign_secret), "{entity:?}: {said}");
                assert!(
                    said.contains("not shown") || said.contains("bytes"),
                    "{said}"
                );
            }
        }
    }

    #[test]
    fn a_name_a_prefix_or_an_id_is_named() {
        for (entity, reference) in [
            (Entity::User, "billing-integration.prod@acme"),
            (Entity::Group, "orders_readers"),
            (Entity::Key, "lk_live_4fT9kQ2mX8pZ"),
            (Entity::Key, "4fT9kQ2mX8pZ"),
            (Entity::User, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        ] {
            assert_eq!(shown(entity, reference), reference);
        }
    }
}
