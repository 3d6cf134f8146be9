//! Human output: aligned tables and `field  value` blocks; and the `--json` document.
//!
//! `--json` prints the answer as the server sent it. For people, the answer is read as the
//! API's own type ([`read`]: `Key`, `User`, `List<Group>`…, as `latchkey_admin::api` and
//! `latchkey_core` define them), and the renderers below format its fields.

use std::fmt::{Display, Write as _};

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A check's exit status: 0 when it found all well (a valid key, an intact chain, no key
/// in the files), 1 when not.
pub fn verdict(all_well: bool) -> std::process::ExitCode {
    if all_well {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Prints a JSON document on stdout, pretty.
pub fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers and documents serialize")
    );
}

/// How a command that makes a store prints what it made: for people, or with `--json` as
/// one pretty document (`init`), or as one line among the others of a stream (`serve
/// --json`, whose `listening` lines follow: a reader takes a line at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Printed {
    /// For people.
    Text,
    /// One pretty JSON document.
    Json,
    /// One JSON document on one line.
    JsonLine,
}

impl Printed {
    /// `--json` or not, for a command that prints one document.
    pub fn document(json: bool) -> Printed {
        if json { Printed::Json } else { Printed::Text }
    }

    /// `--json` or not, for a command whose output is a stream.
    pub fn stream(json: bool) -> Printed {
        if json {
            Printed::JsonLine
        } else {
            Printed::Text
        }
    }

    /// Prints `value` as JSON, as this says: `false` for `Text`, which the caller prints
    /// its own way.
    pub fn json(self, value: &impl Serialize) -> bool {
        match self {
            Printed::Text => return false,
            Printed::Json => print_json(value),
            Printed::JsonLine => println!(
                "{}",
                serde_json::to_string(value).expect("answers and documents serialize")
            ),
        }
        true
    }
}

/// An answer of the API read as its type `R`, for people.
pub fn read<R: DeserializeOwned>(answer: &Value) -> anyhow::Result<R> {
    R::deserialize(answer)
        .context("the daemon's answer is not what this latchkey reads: are both the same version?")
}

/// An optional value for people: `-` when absent or empty.
pub fn or_dash(value: Option<impl Display>) -> String {
    value
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// Items for people, comma-separated; `-` for none.
pub fn joined<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let joined = items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",");
    or_dash(Some(joined))
}

/// A time for people: RFC 3339 in UTC, to the second (`2026-01-02T03:04:05Z`); `-` for none.
pub fn when(at: Option<OffsetDateTime>) -> String {
    or_dash(at.and_then(|at| {
        // A time UTC puts past year 9999 is written as it was given.
        at.checked_to_offset(UtcOffset::UTC)
            .unwrap_or(at)
            .replace_nanosecond(0)
            .ok()?
            .format(&Rfc3339)
            .ok()
    }))
}

/// Who acted or created: a key id, or `operator` (the CLI on the store) for none.
pub fn actor(id: Option<uuid::Uuid>) -> String {
    id.map_or_else(|| "operator".to_owned(), |id| id.to_string())
}

/// A unit variant by its name on the wire (`key.create`, `month`): the API's enums have no
/// other text form.
pub fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

/// A table with aligned columns, two spaces apart.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table, or a note when it has no rows.
    pub fn print(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }
}

/// `field  value` lines, the fields aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(field, value)| format!("{field:<width$}  {value}\n"))
        .collect()
}

/// An error and its causes on one line, joined with `: ` as `{:#}` joins them, but a cause
/// whose text the line already holds said once: an error that shows its source in its own
/// message (`storage error: {0}`) would otherwise repeat it. A key's full text in it (a
/// value given to the wrong flag by mistake) is not shown.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    latchkey_core::without_keys(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["ID", "NAME", "PERMISSIONS"]);
        table.row(vec!["1".into(), "ops".into(), "orders:*".into()]);
        table.row(vec!["22".into(), "readers".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "ID  NAME     PERMISSIONS\n1   ops      orders:*\n22  readers  -\n"
        );
    }

    #[test]
    fn values_for_people() {
        assert_eq!(or_dash(None::<u8>), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some(3)), "3");
        assert_eq!(joined(["a", "b"]), "a,b");
        assert_eq!(joined(Vec::<String>::new()), "-");
        let at = OffsetDateTime::parse("2026-11-22T16:00:05.984202621+01:00", &Rfc3339).unwrap();
        assert_eq!(when(Some(at)), "2026-11-22T15:00:05Z");
        assert_eq!(when(None), "-");
        assert_eq!(wire_name(&latchkey_core::KeyStatus::Revoked), "revoked");
        let answer = json!({"status": "ok"});
        assert_eq!(
            read::<latchkey_admin::api::Health>(&answer).unwrap().status,
            "ok"
        );
        let error = read::<latchkey_admin::api::Health>(&json!({})).unwrap_err();
        assert!(error.to_string().contains("same version"), "{error}");
        assert_eq!(
            fields(&[("id", "1".into()), ("name", "x".into())]),
            "id    1\nname  x\n"
        );
    }

    #[test]
    fn a_cause_the_error_already_shows_is_said_once() {
        let cause = || std::io::Error::other("the disk is full");
        let shows = latchkey_core::StoreError::Storage(Box::new(cause()));
        let err = anyhow::Error::from(shows).context("cannot init d");
        assert_eq!(
            error_line(&err),
            "cannot init d: storage error: the disk is full"
        );
        let err = anyhow::Error::from(cause()).context("cannot init d");
        assert_eq!(error_line(&err), format!("{err:#}"));
    }
}
