//! The audit trail, which is also the change feed.
//!
//! Every committed management change appends one [`AuditEvent`] in the same transaction as
//! the change itself. Its `seq` is the change feed's sequence number (monotonic, durable,
//! gap-free), and each event holds the BLAKE3 hash of the one before, so editing or deleting
//! a stored event breaks the chain where it happened ([`crate::Store::verify_audit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::{RawValue, to_raw_value};
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
    /// A group's name or permissions changed; `changes` says which.
    #[serde(rename = "group.update")]
    GroupUpdate,
    /// A group was deleted (and removed from its users).
    #[serde(rename = "group.delete")]
    GroupDelete,
    /// A user was created.
    #[serde(rename = "user.create")]
    UserCreate,
    /// A user changed (name, enabled, groups, permissions, tenant, organization, rate
    /// limits); `changes` says which.
    #[serde(rename = "user.update")]
    UserUpdate,
    /// A user was deleted; its keys were revoked in the same transaction.
    #[serde(rename = "user.delete")]
    UserDelete,
    /// A key was created.
    #[serde(rename = "key.create")]
    KeyCreate,
    /// A key's name, description, enabled flag or usage control (meta, rate limits,
    /// credits, allowlist) changed; `changes` says which, before and after.
    #[serde(rename = "key.update")]
    KeyUpdate,
    /// A key was revoked.
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    /// A revoked key was deleted.
    #[serde(rename = "key.delete")]
    KeyDelete,
    /// A key was rotated: its expiry moved to the end of the grace period, its credits went
    /// to the key it was rotated to (`changes`: `expires_at`, `credits`, `rotated_to`).
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
    /// after, or for a set (`permissions`, `groups`, `allowed_ips`) what left it and what
    /// joined it. `None` for other actions, for a follower of the change feed that may not
    /// read the audit trail, and for events written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, Change>>,
    /// Hash of the previous event (hex); all zeros for the first.
    pub prev_hash: String,
    /// BLAKE3 of this event's other fields (hex).
    pub hash: String,
}

/// One field's change, as the record shows the field: its value before and after, or,
/// for a set (`permissions`, `groups`, `allowed_ips`), the members that left it (`from`)
/// and those that joined it (`to`), so that an event stays small however large the set.
///
/// Each side is kept as the JSON text the event was hashed with (read it with
/// [`serde_json::from_str`], or `.get()` for the text): parsed and written again, a
/// number could come back as other text and no longer match the hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// Before the change (`null`: not set); for a set, the members removed.
    #[cfg_attr(feature = "openapi", schema(schema_with = any_json))]
    pub from: Box<RawValue>,
    /// After it; for a set, the members added.
    #[cfg_attr(feature = "openapi", schema(schema_with = any_json))]
    pub to: Box<RawValue>,
}

impl PartialEq for Change {
    fn eq(&self, other: &Change) -> bool {
        (self.from.get(), self.to.get()) == (other.from.get(), other.to.get())
    }
}

impl Eq for Change {}

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

/// The fields whose changes are told as what left the set and what joined it.
const SETS: [&str; 3] = ["permissions", "groups", "allowed_ips"];

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
        self,
        field: &str,
        from: &T,
        to: &T,
    ) -> Changes {
        if from == to {
            return self;
        }
        self.with(field, from, to)
    }

    /// Adds the set `field` when it changed: the members that left it as `from`, those
    /// that joined it as `to`, each in the order the set holds them.
    pub(crate) fn set<'a, T, I>(self, field: &str, from: I, to: I) -> Changes
    where
        T: Serialize + PartialEq + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        let (from, to): (Vec<&T>, Vec<&T>) = (from.into_iter().collect(), to.into_iter().collect());
        let removed: Vec<&T> = from.iter().copied().filter(|m| !to.contains(m)).collect();
        let added: Vec<&T> = to.iter().copied().filter(|m| !from.contains(m)).collect();
        if removed.is_empty() && added.is_empty() {
            return self;
        }
        self.with(field, &removed, &added)
    }

    fn with<T: Serialize + ?Sized>(mut self, field: &str, from: &T, to: &T) -> Changes {
        let json = |value: &T| to_raw_value(value).expect("record fields serialize");
        let change = Change {
            from: json(from),
            to: json(to),
        };
        self.0.insert(field.to_owned(), change);
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
    /// JSON (for a set, `field: -removed +added`), fields in order, joined by `; `, each
    /// value cut at 60 characters (the whole is in [`AuditEvent::changes`]) and any
    /// control, bidirectional formatting or separator character in it written as
    /// `\u{…}`, so that no text stored in a record can move or colour what a terminal or
    /// page shows around it; empty without changes.
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
        let short = |value: &RawValue| {
            let mut shown = String::new();
            for (i, c) in value.get().chars().enumerate() {
                if i == 60 {
                    shown.push('…');
                    break;
                }
                if crate::limits::is_forbidden_char(c) {
                    shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
                } else {
                    shown.push(c);
                }
            }
            shown
        };
        let fields = self.changes.iter().flatten();
        let lines: Vec<String> = fields
            .map(|(field, change)| {
                let (from, to) = (short(&change.from), short(&change.to));
                if !SETS.contains(&field.as_str()) {
                    return format!("{field}: {from} → {to}");
                }
                let sides = [("-", from), ("+", to)];
                let shown = sides.iter().filter(|(_, side)| side != "[]");
                let shown: Vec<String> =
                    shown.map(|(sign, side)| format!("{sign}{side}")).collect();
                format!("{field}: {}", shown.join(" "))
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
        assert_eq!(changes["enabled"].to.get(), "false");
        assert!(check_chain([&read], 2, read.prev_hash.clone()).is_ok());
        let mut edited = read.clone();
        edited
            .changes
            .as_mut()
            .unwrap()
            .get_mut("enabled")
            .unwrap()
            .to = to_raw_value(&true).unwrap();
        assert!(check_chain([&edited], 2, read.prev_hash.clone()).is_err());
        // A change that changed nothing is no changes at all.
        assert!(Changes::default().field("name", "a", "a").done().is_none());
    }

    /// Changes keep the JSON text they were hashed with, through the store and the wire:
    /// a float that serde_json reads back one step off (review s57 H1) still checks.
    #[test]
    fn changes_keep_the_text_they_were_hashed_with() {
        let meta: serde_json::Value =
            serde_json::from_str(r#"{"v":5.7710294861749863e-29,"w":0.1}"#).unwrap();
        let recorded = Recorded {
            action: Action::KeyUpdate,
            target: Uuid::nil(),
            user_id: None,
            changes: Changes::default().field("meta", &None, &Some(meta)),
        };
        let event = AuditEvent::new(
            1,
            OffsetDateTime::UNIX_EPOCH,
            None,
            recorded,
            GENESIS.into(),
        );
        let bytes = postcard::to_stdvec(&StoredEvent::from_event(&event)).unwrap();
        let read = StoredEvent::decode(&bytes).unwrap().into_event(1);
        assert_eq!(read, event);
        assert!(check_chain([&read], 1, GENESIS.into()).is_ok());
        let text = serde_json::to_string(&read).unwrap();
        let wire: AuditEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(wire.compute_hash(), read.hash);
        // Read through a `serde_json::Value`, the float is parsed and written again: the
        // text can move a step (why the hash is never taken over a parsed value).
        let value: AuditEvent =
            serde_json::from_value(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(value.changes.unwrap().keys().collect::<Vec<_>>(), ["meta"]);
    }

    /// One line for a table: sets as what left and joined them, and no character that
    /// could move or colour the text around it.
    #[test]
    fn the_changes_line_shows_sets_and_escapes_what_a_terminal_would_act_on() {
        let recorded = Recorded {
            action: Action::UserUpdate,
            target: Uuid::nil(),
            user_id: None,
            changes: Changes::default()
                .field("name", "a", "\u{202E}x\u{9B}")
                .set("permissions", &["a:b", "c:d"], &["c:d", "e:f"])
                .set("groups", &[] as &[Uuid], &[Uuid::nil()][..]),
        };
        let event = AuditEvent::new(
            1,
            OffsetDateTime::UNIX_EPOCH,
            None,
            recorded,
            GENESIS.into(),
        );
        assert_eq!(
            event.changes_line(),
            format!(
                r#"groups: +["{}"]; name: "a" → "\u{{202e}}x\u{{9b}}"; permissions: -["a:b"] +["e:f"]"#,
                Uuid::nil()
            )
        );
        assert!(!event.changes_line().contains('\u{202E}'));
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
