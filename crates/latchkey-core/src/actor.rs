//! Who performs a management change, and the no-escalation rule.

use uuid::Uuid;

use crate::error::StoreError;
use crate::permission::{Permission, PermissionSet};
use crate::verify::Principal;

/// The caller of a management operation: the key it authenticated with, and that key's
/// effective permissions.
///
/// **No escalation:** every write checks, in one place ([`Actor::ensure_covers`]), that the
/// caller's permissions cover everything the record it creates, changes or removes grants,
/// before and after the change. A caller can never mint a key, user or group stronger than
/// itself, nor disable, revoke or rename one.
#[derive(Debug, Clone)]
pub struct Actor {
    key_id: Option<Uuid>,
    permissions: PermissionSet,
}

impl Actor {
    /// The operator working on the store directly (`latchkey init`, `--db`): holds `*`.
    pub fn system() -> Actor {
        Actor {
            key_id: None,
            permissions: PermissionSet::from(vec![Permission::parse("*").expect("valid")]),
        }
    }

    /// A caller authenticated by a key.
    pub fn from_principal(principal: &Principal) -> Actor {
        Actor {
            key_id: Some(principal.key_id),
            permissions: principal.permissions.clone(),
        }
    }

    /// A caller with explicit permissions, for tests and embedding.
    pub fn new(key_id: Option<Uuid>, permissions: PermissionSet) -> Actor {
        Actor {
            key_id,
            permissions,
        }
    }

    /// The key that acts, for `created_by` and the audit trail; `None` for the operator.
    pub fn key_id(&self) -> Option<Uuid> {
        self.key_id
    }

    /// The caller's effective permissions.
    pub fn permissions(&self) -> &PermissionSet {
        &self.permissions
    }

    /// Fails with [`StoreError::Escalation`] unless the caller covers every permission of
    /// `granted`.
    pub fn ensure_covers(&self, granted: &PermissionSet) -> Result<(), StoreError> {
        match self.permissions.first_uncovered(granted) {
            None => Ok(()),
            Some(p) => Err(StoreError::Escalation {
                permission: p.to_string(),
            }),
        }
    }
}
