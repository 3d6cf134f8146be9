//! `latchkey keys import FILE --user U`: JSON lines of keys issued elsewhere, sent to
//! `POST /v1/keys/import` in chunks (the same handler with `--url` and `--db`).
//!
//! Each chunk is a transaction of its own: when one fails (the daemon gone, 503, 507), the
//! chunks before it stay imported. The run then says which lines were imported and from
//! which line on nothing was, and exits 1. A chunk whose request failed after it was sent
//! (a timeout, a lost connection) may have been imported all the same: its lines are said
//! to be not known either way, never "not imported".

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use latchkey_admin::api::{ImportKeys, ImportReport};
use latchkey_core::limits::{MAX_BODY_BYTES, MAX_IMPORT_ITEMS};
use serde::Serialize;
use serde_json::Value;

use super::Cli;
use crate::cli::KeyImport;
use crate::client::Client;
use crate::output::{print_json, read};
use crate::transport::{Transport, outcome_unknown};

/// Items per request: the endpoint's maximum.
const CHUNK_ITEMS: usize = MAX_IMPORT_ITEMS;
/// Bytes of items per request, as sent (each with its comma): the API's body limit less
/// room for the rest of the body (`user_id`).
const CHUNK_BYTES: usize = MAX_BODY_BYTES - 8 * 1024;
/// The longest line read: the most one request carries, so that every item the API takes
/// (256 scopes of 128 bytes and 4 KiB of `meta` are about 37 KiB) is read. A longer one is
/// refused without being parsed.
const MAX_LINE: u64 = CHUNK_BYTES as u64;

/// A refused line: its number (from 1), the daemon's code and field (`invalid_line` for a
/// line not sent: too long, not UTF-8, not a JSON object), and why.
#[derive(Serialize)]
struct Refused {
    line: usize,
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    reason: String,
}

impl Refused {
    /// A line refused before it was sent.
    fn unsent(line: usize, reason: String) -> Refused {
        Refused {
            line,
            code: "invalid_line".to_owned(),
            field: None,
            reason,
        }
    }
}

/// An imported line: its number (from 1), and the key's record id and display prefix.
#[derive(Serialize)]
struct ImportedLine {
    line: usize,
    id: uuid::Uuid,
    prefix: String,
}

/// What a run has done so far.
#[derive(Default)]
struct Tally {
    /// The lines imported, in order.
    imported: Vec<ImportedLine>,
    refused: Vec<Refused>,
}

/// `--json`: what a run did, each key imported and each line refused; after a stop, also
/// which lines were imported (first and last of each span), the first line not known to be
/// imported (from which to import again), and the lines not known either way, if any.
#[derive(Serialize)]
struct Run<'a> {
    imported: usize,
    keys: &'a [ImportedLine],
    rejected: &'a [Refused],
    #[serde(skip_serializing_if = "Option::is_none")]
    imported_lines: Option<Vec<[usize; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_imported_from_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_lines: Option<[usize; 2]>,
}

/// Why a run stopped before the end of the file: nothing from `line` on was imported, or,
/// when `unknown_to` is some line, nothing after it, and whether `line` to it were is not
/// known (their request failed after it was sent).
struct Stopped {
    line: usize,
    unknown_to: Option<usize>,
    error: anyhow::Error,
}

impl Stopped {
    /// A stop before `line` was sent.
    fn at(line: usize, error: anyhow::Error) -> Stopped {
        Stopped {
            line,
            unknown_to: None,
            error,
        }
    }

    /// The lines not known to be imported or not, as words (`line 8`, `lines 8-14`), and
    /// the last of them.
    fn unknown_lines(&self) -> Option<(String, usize)> {
        let last = self.unknown_to?;
        let words = if last == self.line {
            format!("line {last}")
        } else {
            format!("lines {}-{last}", self.line)
        };
        Some((words, last))
    }
}

/// Items not sent yet, with their line numbers and their size in the request body.
#[derive(Default)]
struct Chunk {
    lines: Vec<usize>,
    items: Vec<Value>,
    bytes: usize,
}

impl Chunk {
    /// Whether an item of `size` bytes no longer fits in this request: checked before it is
    /// added, so a request never exceeds the body limit.
    fn is_full_for(&self, size: usize) -> bool {
        self.items.len() >= CHUNK_ITEMS
            || (!self.items.is_empty() && self.bytes + size > CHUNK_BYTES)
    }

    fn push(&mut self, line: usize, item: Value, size: usize) {
        self.lines.push(line);
        self.items.push(item);
        self.bytes += size;
    }
}

pub(super) async fn run<T: Transport>(cli: &Cli<T>, args: KeyImport) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let progress = std::io::stderr().is_terminal();
    let mut tally = Tally::default();
    let stopped = import_lines(cli, &args, BufReader::new(file), &mut tally, progress)
        .await
        .err();
    if progress {
        eprint!("\r\x1b[K");
    }
    tally.refused.sort_by_key(|r| r.line);
    // A run stopped before any line was taken or refused (no such user, a key lacking the
    // permission) has nothing to report but its error; one whose first request may have
    // been taken has its lines to name.
    let nothing_done = tally.imported.is_empty()
        && tally.refused.is_empty()
        && stopped.as_ref().is_none_or(|s| s.unknown_to.is_none());
    if !(stopped.is_some() && nothing_done) {
        report(cli.out.json, &args.user, &tally, stopped.as_ref());
    }
    if let Some(stopped) = stopped {
        let not_imported = match stopped.unknown_lines() {
            Some((lines, last)) => {
                format!("whether {lines} were imported is not known, and no line after {last} was")
            }
            None => format!("lines from {} on were not imported", stopped.line),
        };
        return Err(anyhow!(
            "{:#}; {not_imported} (importing again from line {} refuses any that were, as \
             already imported)",
            stopped.error,
            stopped.line
        ));
    }
    if tally.refused.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} of {} lines were refused (listed above)",
            tally.refused.len(),
            tally.imported.len() + tally.refused.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Reads the file and sends its items a chunk at a time, until the end or a failure.
async fn import_lines<T: Transport>(
    cli: &Cli<T>,
    args: &KeyImport,
    mut reader: impl BufRead,
    tally: &mut Tally,
    progress: bool,
) -> Result<(), Stopped> {
    let mut chunk = Chunk::default();
    let mut number = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", args.file.display()));
        let read = read.map_err(|error| {
            Stopped::at(chunk.lines.first().copied().unwrap_or(number + 1), error)
        })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() as u64 > MAX_LINE && !line.ends_with(b"\n") {
            let reason = format!("longer than {MAX_LINE} bytes");
            tally.refused.push(Refused::unsent(number, reason));
            let skipped =
                skip_line(&mut reader).with_context(|| format!("reading {}", args.file.display()));
            skipped.map_err(|error| {
                Stopped::at(chunk.lines.first().copied().unwrap_or(number + 1), error)
            })?;
            continue;
        }
        let Some(item) = parse_line(number, &line, &mut tally.refused) else {
            continue;
        };
        // As the request body holds it, with its comma.
        let size = item.to_string().len() + 1;
        if chunk.is_full_for(size) {
            send(&cli.api, &args.user, std::mem::take(&mut chunk), tally).await?;
            if progress {
                eprint!(
                    "\rimported {}, refused {}",
                    tally.imported.len(),
                    tally.refused.len()
                );
            }
        }
        chunk.push(number, item, size);
    }
    if !chunk.items.is_empty() {
        send(&cli.api, &args.user, chunk, tally).await?;
    }
    Ok(())
}

/// Reads past the rest of a line (its `\n` included) without keeping it: an over-long line
/// costs the reader's buffer, however long it is.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// A line's item: a JSON object; `None` for a blank line, or one refused (added to
/// `refused`).
fn parse_line(number: usize, line: &[u8], refused: &mut Vec<Refused>) -> Option<Value> {
    // A file saved by an editor that marks UTF-8 opens with a byte order mark.
    let line = match number {
        1 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line),
        _ => line,
    };
    // Refused, not mended: a name or a hash read with U+FFFD in place of its bytes would
    // be imported as something the file never held.
    let Ok(text) = std::str::from_utf8(line) else {
        refused.push(Refused::unsent(number, "not UTF-8".to_owned()));
        return None;
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let reason = match serde_json::from_str::<Value>(text) {
        Ok(item @ Value::Object(_)) => return Some(item),
        Ok(_) => "not a JSON object".to_owned(),
        Err(e) => format!("not JSON: {e}"),
    };
    refused.push(Refused::unsent(number, reason));
    None
}

/// Sends one chunk and adds what the answer says to `tally`; a failed request stops the
/// run at the chunk's first line, with the chunk's lines not known either way when the
/// request may have been acted on (or was, and its answer cannot be read).
async fn send<T: Transport>(
    api: &Client<T>,
    user: &str,
    chunk: Chunk,
    tally: &mut Tally,
) -> Result<(), Stopped> {
    let Chunk { lines, items, .. } = chunk;
    let body = ImportKeys {
        user_id: user.to_owned(),
        items,
    };
    let stopped = |unknown: bool, error| Stopped {
        line: lines[0],
        unknown_to: unknown.then(|| lines[lines.len() - 1]),
        error,
    };
    let answer = api
        .post("/v1/keys/import", body)
        .await
        .map_err(|error| stopped(outcome_unknown(&error), error))?;
    let report: ImportReport = read(&answer).map_err(|error| stopped(true, error))?;
    let line_of = |index: usize| lines.get(index).copied().unwrap_or(0);
    tally
        .imported
        .extend(report.imported.into_iter().map(|i| ImportedLine {
            line: line_of(i.index),
            id: i.id,
            prefix: i.prefix,
        }));
    for r in report.rejected {
        tally.refused.push(Refused {
            line: line_of(r.index),
            code: r.code,
            field: r.field,
            reason: r.reason,
        });
    }
    Ok(())
}

/// Prints what the run did: the refused lines, the count, and after a stop the lines
/// imported and the first line not imported.
fn report(json: bool, user: &str, tally: &Tally, stopped: Option<&Stopped>) {
    let imported = tally.imported.len();
    if json {
        print_json(&Run {
            imported,
            keys: &tally.imported,
            rejected: &tally.refused,
            imported_lines: stopped.map(|_| spans(&lines(&tally.imported))),
            not_imported_from_line: stopped.map(|s| s.line),
            unknown_lines: stopped.and_then(|s| s.unknown_to.map(|last| [s.line, last])),
        });
        return;
    }
    for r in &tally.refused {
        println!("line {}: {}", r.line, r.reason);
    }
    let refused = tally.refused.len();
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    println!(
        "Imported {imported} {} for {user}; {refused} {} refused.",
        plural(imported, "key", "keys"),
        plural(refused, "line", "lines"),
    );
    if let Some(stopped) = stopped {
        let spans: Vec<String> = spans(&lines(&tally.imported))
            .iter()
            .map(|&[first, last]| {
                if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                }
            })
            .collect();
        let spans = if spans.is_empty() {
            "none".to_owned()
        } else {
            spans.join(", ")
        };
        println!("Lines imported: {spans}.");
        match stopped.unknown_lines() {
            Some((lines, last)) => {
                println!(
                    "Not known whether imported: {lines} (the request failed after it was sent)."
                );
                println!("Not imported: any line after {last}.");
            }
            None => println!("Not imported: line {} and after.", stopped.line),
        }
    }
}

/// Runs of consecutive line numbers, each `[first, last]`.
/// The numbers of the lines imported.
fn lines(imported: &[ImportedLine]) -> Vec<usize> {
    imported.iter().map(|i| i.line).collect()
}

fn spans(lines: &[usize]) -> Vec<[usize; 2]> {
    let mut spans: Vec<[usize; 2]> = Vec::new();
    for &line in lines {
        match spans.last_mut() {
            Some(span) if line == span[1] + 1 => span[1] = line,
            _ => spans.push([line, line]),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_sent_before_an_item_would_take_it_past_the_body_limit() {
        let mut chunk = Chunk::default();
        assert!(!chunk.is_full_for(CHUNK_BYTES + 1), "one item always goes");
        for line in 1..=7 {
            assert!(!chunk.is_full_for(8_191), "{line}");
            chunk.push(line, serde_json::json!({}), 8_191);
        }
        assert!(
            chunk.is_full_for(8_191),
            "an eighth would make {}",
            8 * 8_191
        );
    }

    #[test]
    fn a_byte_order_mark_opening_the_file_is_skipped() {
        let mut refused = Vec::new();
        let marked = b"\xEF\xBB\xBF{\"key\": \"k\"}\n";
        assert_eq!(
            parse_line(1, marked, &mut refused),
            Some(serde_json::json!({"key": "k"}))
        );
        assert!(refused.is_empty());
        assert_eq!(parse_line(2, marked, &mut refused), None);
        assert_eq!(
            refused.len(),
            1,
            "only the file's first bytes may be a mark"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_not_mended() {
        let mut refused = Vec::new();
        let latin1 = b"{\"key\": \"k\", \"name\": \"caf\xE9\"}\n";
        assert_eq!(parse_line(3, latin1, &mut refused), None);
        assert_eq!(refused.len(), 1);
        assert_eq!(
            (refused[0].line, refused[0].reason.as_str()),
            (3, "not UTF-8")
        );
    }

    #[test]
    fn imported_lines_are_shown_as_runs() {
        assert_eq!(spans(&[1, 2, 3, 5, 7, 8]), [[1, 3], [5, 5], [7, 8]]);
        assert!(spans(&[]).is_empty());
    }
}
