//! The audit trail, which is also the change feed.
//!
//! Every committed management change appends one [`AuditEvent`] in the same transaction as
//! the change itself. Its `seq` is the change feed's sequence number (monotonic, durable,
//! gap-free), and each event holds the BLAKE3 hash of the one before, so editing or deleting
//! a stored event breaks the chain where it happened ([`crate::Store::verify_audit`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Entity;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum Action {
    /// A group was created.
    #[serde(rename = "group.create")]
    GroupCreate,
    /// A group's name or permissions changed.
    #[serde(rename = "group.update")]
    GroupUpdate,
    /// A group was deleted (and removed from its users).
    #[serde(rename = "group.delete")]
    GroupDelete,
    /// A user was created.
    #[serde(rename = "user.create")]
    UserCreate,
    /// A user changed (name, enabled, groups, permissions, tenant, organization).
    #[serde(rename = "user.update")]
    UserUpdate,
    /// A user was deleted; its keys were revoked in the same transaction.
    #[serde(rename = "user.delete")]
    UserDelete,
    /// A key was created.
    #[serde(rename = "key.create")]
    KeyCreate,
    /// A key's name, description or enabled flag changed.
    #[serde(rename = "key.update")]
    KeyUpdate,
    /// A key was revoked.
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    /// A revoked key was deleted.
    #[serde(rename = "key.delete")]
    KeyDelete,
    /// A key was rotated: its expiry moved to the end of the grace period.
    #[serde(rename = "key.rotate")]
    KeyRotate,
    /// Every key of a user was revoked at once (none authenticates from this event on);
    /// a user with many keys has their records revoked in the background.
    #[serde(rename = "user.revoke_keys")]
    UserRevokeKeys,
    /// The background revocation of a user's keys (after `user.delete` or
    /// `user.revoke_keys`) finished: every record is revoked.
    #[serde(rename = "user.keys_revoked")]
    UserKeysRevoked,
}

impl Action {
    /// The kind of record the action targets.
    pub fn entity(self) -> Entity {
        use Action::*;
        match self {
            GroupCreate | GroupUpdate | GroupDelete => Entity::Group,
            UserCreate | UserUpdate | UserDelete | UserRevokeKeys | UserKeysRevoked => Entity::User,
            KeyCreate | KeyUpdate | KeyRevoke | KeyDelete | KeyRotate => Entity::Key,
        }
    }
}

/// One committed change: who did what to which record, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the change feed, from 1.
    pub seq: u64,
    /// When it was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The key that acted; `None` for the operator.
    pub actor: Option<Uuid>,
    /// What was done.
    pub action: Action,
    /// The record it was done to.
    pub target: Uuid,
    /// The user whose keys the change concerns: the key's owner for key actions, the user
    /// itself for user actions, `None` for groups (they may concern any user).
    pub user_id: Option<Uuid>,
    /// Hash of the previous event (hex); all zeros for the first.
    pub prev_hash: String,
    /// BLAKE3 of this event's other fields (hex).
    pub hash: String,
}

/// The fields that are hashed, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    actor: Option<Uuid>,
    action: Action,
    target: Uuid,
    user_id: Option<Uuid>,
    prev_hash: &'a str,
}

/// An event as stored: the same fields with raw hashes; `seq` is the record's key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    at: OffsetDateTime,
    actor: Option<Uuid>,
    action: Action,
    target: Uuid,
    user_id: Option<Uuid>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

impl StoredEvent {
    pub(crate) fn from_event(event: &AuditEvent) -> StoredEvent {
        StoredEvent {
            at: event.at,
            actor: event.actor,
            action: event.action,
            target: event.target,
            user_id: event.user_id,
            prev_hash: hash_bytes(&event.prev_hash),
            hash: hash_bytes(&event.hash),
        }
    }

    pub(crate) fn into_event(self, seq: u64) -> AuditEvent {
        AuditEvent {
            seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            user_id: self.user_id,
            prev_hash: hash_hex(&self.prev_hash),
            hash: hash_hex(&self.hash),
        }
    }
}

/// Raw bytes of a hex hash; this module only makes well-formed ones.
pub(crate) fn hash_bytes(hex: &str) -> [u8; 32] {
    blake3::Hash::from_hex(hex)
        .map(|h| *h.as_bytes())
        .unwrap_or_default()
}

pub(crate) fn hash_hex(bytes: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*bytes).to_hex().to_string()
}

/// The hash that starts the chain.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    /// Builds the next event of the chain.
    pub(crate) fn new(
        seq: u64,
        at: OffsetDateTime,
        actor: Option<Uuid>,
        action: Action,
        target: Uuid,
        user_id: Option<Uuid>,
        prev_hash: String,
    ) -> AuditEvent {
        let mut event = AuditEvent {
            seq,
            at,
            actor,
            action,
            target,
            user_id,
            prev_hash,
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// The hash this event should carry.
    pub fn compute_hash(&self) -> String {
        let hashed = Hashed {
            seq: self.seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            user_id: self.user_id,
            prev_hash: &self.prev_hash,
        };
        let bytes = serde_json::to_vec(&hashed).expect("audit events serialize");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// Where and why the audit chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    /// The first event that does not fit.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a sequence of events, in order, starting from `prev_hash` at `first_seq - 1`.
pub(crate) fn check_chain<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    mut expected_seq: u64,
    mut prev_hash: String,
) -> Result<(u64, String), ChainBreak> {
    for event in events {
        if event.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                reason: format!("found seq {} instead: an event is missing", event.seq),
            });
        }
        if event.prev_hash != prev_hash {
            return Err(ChainBreak {
                seq: event.seq,
                reason: "prev_hash does not match the event before".into(),
            });
        }
        if event.compute_hash() != event.hash {
            return Err(ChainBreak {
                seq: event.seq,
                reason: "the event's content does not match its hash".into(),
            });
        }
        prev_hash = event.hash.clone();
        expected_seq += 1;
    }
    Ok((expected_seq, prev_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::new(
                    seq,
                    OffsetDateTime::UNIX_EPOCH,
                    None,
                    Action::KeyCreate,
                    Uuid::nil(),
                    None,
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_checks() {
        let events = chain(5);
        assert_eq!(check_chain(&events, 1, GENESIS.into()).unwrap().0, 6);
    }

    #[test]
    fn tampering_is_found_where_it_happened() {
        let mut events = chain(5);
        events[2].action = Action::KeyRevoke;
        assert_eq!(check_chain(&events, 1, GENESIS.into()).unwrap_err().seq, 3);

        let mut events = chain(5);
        events.remove(1);
        assert_eq!(check_chain(&events, 1, GENESIS.into()).unwrap_err().seq, 2);

        // Rewriting an event and its own hash still breaks the next link.
        let mut events = chain(5);
        events[1].target = Uuid::max();
        events[1].hash = events[1].compute_hash();
        assert_eq!(check_chain(&events, 1, GENESIS.into()).unwrap_err().seq, 3);
    }
}
