//! The unique-name indexes of users and groups: a name maps to the record's id, so a name
//! is taken at most once and a reference by name resolves in one read.

use uuid::Uuid;

use super::layout;
use super::tx::{Tx, TxResult, abort};
use crate::error::{Conflict, Entity};
use crate::model::validate_principal_name;

/// One kind of record's name index.
#[derive(Clone, Copy)]
pub(super) struct NameIndex {
    entity: Entity,
    key: fn(&str) -> Vec<u8>,
}

impl NameIndex {
    /// Users' names.
    pub(super) const USERS: NameIndex = NameIndex {
        entity: Entity::User,
        key: layout::user_name,
    };
    /// Groups' names.
    pub(super) const GROUPS: NameIndex = NameIndex {
        entity: Entity::Group,
        key: layout::group_name,
    };

    /// A `Conflict::NameTaken` when another record holds `name`.
    pub(super) fn ensure_free(self, tx: &Tx<'_>, name: &str) -> TxResult<()> {
        if tx.get_raw(&(self.key)(name))?.is_some() {
            return abort(
                Conflict::NameTaken {
                    entity: self.entity,
                    name: name.to_owned(),
                }
                .into(),
            );
        }
        Ok(())
    }

    /// Indexes a new record's name (checked free before).
    pub(super) fn insert(self, tx: &Tx<'_>, name: &str, id: Uuid) -> TxResult<()> {
        tx.put_raw(&(self.key)(name), id.as_bytes())
    }

    /// Drops a deleted record's name.
    pub(super) fn remove(self, tx: &Tx<'_>, name: &str) -> TxResult<()> {
        tx.remove(&(self.key)(name))
    }

    /// Renames record `id` from `current` to `new` (when given): the name is validated,
    /// must be free unless unchanged, and the index follows.
    pub(super) fn rename(
        self,
        tx: &Tx<'_>,
        id: Uuid,
        current: &mut String,
        new: Option<&String>,
    ) -> TxResult<()> {
        let Some(name) = new else {
            return Ok(());
        };
        if let Err(e) = validate_principal_name("name", name) {
            return abort(e);
        }
        if name != current {
            self.ensure_free(tx, name)?;
            self.remove(tx, current)?;
            self.insert(tx, name, id)?;
            current.clone_from(name);
        }
        Ok(())
    }
}
