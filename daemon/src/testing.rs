//! Helpers shared by the unit tests.

use std::fmt::Debug;

/// What `values` show in a log line or a panic message: each one's `Debug`, plain (`{:?}`)
/// and pretty (`{:#?}`). A test of redaction checks every text of it.
pub(crate) fn debug_texts(values: &[&dyn Debug]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| [format!("{value:?}"), format!("{value:#?}")])
        .collect()
}
