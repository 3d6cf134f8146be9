//! The audit trail, which is also the change feed.
//!
//! Every committed management change appends one [`AuditEvent`] in the same transaction as
//! the change itself. Its `seq` is the change feed's sequence number (monotonic, durable,
//! gap-free), and each event holds the BLAKE3 hash of the one before, so editing or deleting
//! a stored event breaks the chain where it happened ([`crate::Store::verify_audit`]).

use std::collections::BTreeMap;

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
    /// What an update or a rotation changed, by the record's field name (`enabled`,
    /// `credits`, `rate_limits`, `allowed_ips`, `meta`, `groups`, `permissions`, …; a
    /// rotation's `expires_at`, `credits` and `rotated_to`): each field's value before and
    /// after. `None` for other actions, for a follower of the change feed that may not
    /// read the audit trail, and for events written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, Change>>,
    /// Hash of the previous event (hex); all zeros for the first.
    pub prev_hash: String,
    /// BLAKE3 of this event's other fields (hex).
    pub hash: String,
}

/// One field's value before and after a change, as the record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// Before the change (`null`: not set).
    #[cfg_attr(feature = "openapi", schema(schema_with = any_json))]
    pub from: serde_json::Value,
    /// After it.
    #[cfg_attr(feature = "openapi", schema(schema_with = any_json))]
    pub to: serde_json::Value,
}

/// A schema any JSON value meets, its types named (utoipa reads no type-less schema back,
/// which the document's own passes need).
#[cfg(feature = "openapi")]
fn any_json() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let types = [
        Type::Null,
        Type::Boolean,
        Type::Number,
        Type::String,
        Type::Array,
        Type::Object,
    ];
    ObjectBuilder::new()
        .schema_type(types.into_iter().collect::<SchemaType>())
        .build()
}

/// What a write recorded for its event: the action, its record, and what it changed.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) action: Action,
    pub(crate) target: Uuid,
    pub(crate) user_id: Option<Uuid>,
    pub(crate) changes: Changes,
}

/// What a change did to a record's fields, built field by field; see
/// [`AuditEvent::changes`]. Never given a secret: callers name record fields a reader of
/// the record sees.
#[derive(Debug, Default)]
pub(crate) struct Changes(BTreeMap<String, Change>);

impl Changes {
    /// Adds `field` when `from` and `to` differ.
    pub(crate) fn field<T: Serialize + PartialEq + ?Sized>(
        mut self,
        field: &str,
        from: &T,
        to: &T,
    ) -> Changes {
        if from != to {
            let json = |value: &T| serde_json::to_value(value).expect("record fields serialize");
            let change = Change {
                from: json(from),
                to: json(to),
            };
            self.0.insert(field.to_owned(), change);
        }
        self
    }

    /// [`Changes::field`] for a time, in RFC 3339 as records show times.
    pub(crate) fn time(
        self,
        field: &str,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Changes {
        let text = |at: Option<OffsetDateTime>| {
            at.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        };
        self.field(field, &text(from), &text(to))
    }

    /// The changes, `None` when nothing changed.
    pub(crate) fn done(self) -> Option<BTreeMap<String, Change>> {
        (!self.0.is_empty()).then_some(self.0)
    }
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
    /// Left out when `None`: an event without changes hashes as before they existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a BTreeMap<String, Change>>,
    prev_hash: &'a str,
}

/// An event as stored: its fields, then the changes as JSON text (postcard reads no
/// `serde_json::Value`); `seq` is the record's key. Postcard writes a struct as its fields
/// one after the other, so an event stored before `changes` existed is the same bytes
/// without them ([`StoredEvent::decode`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    fields: StoredFields,
    changes: Option<String>,
}

/// The fields of a stored event, with raw hashes: all an event held before `changes`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredFields {
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
        let fields = StoredFields {
            at: event.at,
            actor: event.actor,
            action: event.action,
            target: event.target,
            user_id: event.user_id,
            prev_hash: hash_bytes(&event.prev_hash),
            hash: hash_bytes(&event.hash),
        };
        let changes = event
            .changes
            .as_ref()
            .map(|changes| serde_json::to_string(changes).expect("audit changes serialize"));
        StoredEvent { fields, changes }
    }

    /// Reads a stored event, of this version or written before events held their changes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredEvent, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|error| {
            let fields = postcard::from_bytes(bytes).map_err(|_| error)?;
            Ok(StoredEvent {
                fields,
                changes: None,
            })
        })
    }

    /// The event at `seq`. Changes whose text does not parse are kept out of the event,
    /// whose hash then no longer matches: `Store::verify_audit` finds it.
    pub(crate) fn into_event(self, seq: u64) -> AuditEvent {
        let StoredEvent { fields, changes } = self;
        AuditEvent {
            seq,
            at: fields.at,
            actor: fields.actor,
            action: fields.action,
            target: fields.target,
            user_id: fields.user_id,
            changes: changes.and_then(|text| serde_json::from_str(&text).ok()),
            prev_hash: hash_hex(&fields.prev_hash),
            hash: hash_hex(&fields.hash),
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
    /// Builds the next event of the chain: `recorded` by `actor` at `at`.
    pub(crate) fn new(
        seq: u64,
        at: OffsetDateTime,
        actor: Option<Uuid>,
        recorded: Recorded,
        prev_hash: String,
    ) -> AuditEvent {
        let Recorded {
            action,
            target,
            user_id,
            changes,
        } = recorded;
        let changes = changes.done();
        let mut event = AuditEvent {
            seq,
            at,
            actor,
            action,
            target,
            user_id,
            changes,
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
            changes: self.changes.as_ref(),
            prev_hash: &self.prev_hash,
        };
        let bytes = serde_json::to_vec(&hashed).expect("audit events serialize");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

impl AuditEvent {
    /// What the event changed, on one line for a table: `field: from → to` in compact
    /// JSON, fields in order, joined by `; `, each value cut at 60 characters (the whole
    /// is in [`AuditEvent::changes`]); empty without changes.
    ///
    /// ```
    /// # let event: latchkey_core::AuditEvent = serde_json::from_value(serde_json::json!({
    /// #     "seq": 5, "at": "2026-12-01T00:00:00Z", "actor": null, "action": "key.update",
    /// #     "target": "00000000-0000-0000-0000-000000000000", "user_id": null,
    /// #     "changes": {"enabled": {"from": true, "to": false}, "name": {"from": "a", "to": "b"}},
    /// #     "prev_hash": "", "hash": ""})).unwrap();
    /// assert_eq!(event.changes_line(), r#"enabled: true → false; name: "a" → "b""#);
    /// ```
    pub fn changes_line(&self) -> String {
        let short = |value: &serde_json::Value| {
            let text = value.to_string();
            match text.char_indices().nth(60) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        };
        let fields = self.changes.iter().flatten();
        let lines: Vec<String> = fields
            .map(|(field, change)| {
                format!("{field}: {} → {}", short(&change.from), short(&change.to))
            })
            .collect();
        lines.join("; ")
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
                let recorded = Recorded {
                    action: Action::KeyCreate,
                    target: Uuid::nil(),
                    user_id: None,
                    changes: Changes::default(),
                };
                let e = AuditEvent::new(
                    seq,
                    OffsetDateTime::UNIX_EPOCH,
                    None,
                    recorded,
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    /// An event stored before events held their changes (its bytes end where `changes`
    /// starts) reads as it was, without changes, and its hash still checks; one with
    /// changes reads them back, and changes edited no longer match its hash.
    #[test]
    fn events_stored_before_and_with_changes_read_and_check() {
        let event = chain(1).remove(0);
        let earlier = (
            event.at,
            event.actor,
            event.action,
            event.target,
            event.user_id,
            hash_bytes(&event.prev_hash),
            hash_bytes(&event.hash),
        );
        let bytes = postcard::to_stdvec(&earlier).unwrap();
        let read = StoredEvent::decode(&bytes).unwrap().into_event(1);
        assert_eq!(read, event);
        assert!(check_chain([&read], 1, GENESIS.into()).is_ok());

        let recorded = Recorded {
            action: Action::KeyUpdate,
            target: Uuid::nil(),
            user_id: None,
            changes: Changes::default()
                .field("enabled", &true, &false)
                .field("name", "same", "same"),
        };
        let changed = AuditEvent::new(2, OffsetDateTime::UNIX_EPOCH, None, recorded, event.hash);
        let bytes = postcard::to_stdvec(&StoredEvent::from_event(&changed)).unwrap();
        let read = StoredEvent::decode(&bytes).unwrap().into_event(2);
        assert_eq!(read, changed);
        let changes = read.changes.as_ref().unwrap();
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["enabled"]);
        assert_eq!(changes["enabled"].to, serde_json::json!(false));
        assert!(check_chain([&read], 2, read.prev_hash.clone()).is_ok());
        let mut edited = read.clone();
        edited
            .changes
            .as_mut()
            .unwrap()
            .get_mut("enabled")
            .unwrap()
            .to = true.into();
        assert!(check_chain([&edited], 2, read.prev_hash.clone()).is_err());
        // A change that changed nothing is no changes at all.
        assert!(Changes::default().field("name", "a", "a").done().is_none());
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
