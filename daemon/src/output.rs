//! Human output: aligned tables and `field  value` blocks; and the `--json` document.
//!
//! Renderers read `serde_json::Value`s, so a field the server adds later cannot break the CLI.

use std::fmt::Write as _;

use serde_json::Value;

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
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// A value for people: strings bare, `null` as `-`, arrays comma-separated.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A time for people: RFC 3339 to the second (`2026-01-02T03:04:05Z`); `null` as `-`.
pub fn when(value: &Value) -> String {
    let text = text(value);
    match (text.find('.'), text.ends_with('Z')) {
        (Some(dot), true)
            if text[dot + 1..text.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit()) =>
        {
            format!("{}Z", &text[..dot])
        }
        _ => text,
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
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!(["a", "b"])), "a,b");
        assert_eq!(text(&json!([])), "-");
        assert_eq!(text(&json!(3)), "3");
        assert_eq!(text(&json!(true)), "true");
        assert_eq!(
            when(&json!("2026-11-22T15:00:05.984202621Z")),
            "2026-11-22T15:00:05Z"
        );
        assert_eq!(when(&json!("2026-11-22T15:00:05Z")), "2026-11-22T15:00:05Z");
        assert_eq!(when(&json!(null)), "-");
        assert_eq!(
            fields(&[("id", "1".into()), ("name", "x".into())]),
            "id    1\nname  x\n"
        );
    }
}
