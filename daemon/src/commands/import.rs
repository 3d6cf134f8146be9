//! `latchkey keys import FILE --user U`: JSON lines of keys issued elsewhere, sent to
//! `POST /v1/keys/import` in chunks (the same handler with `--url` and `--db`).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::Cli;
use crate::cli::KeyImport;
use crate::client::Client;
use crate::output::print_json;
use crate::transport::Transport;

/// Items per request: the endpoint's maximum.
const CHUNK_ITEMS: usize = 1_000;
/// Bytes of items per request, well under the API's body limit (64 KiB).
const CHUNK_BYTES: usize = 56 * 1024;
/// The longest line read; a longer one is refused without being parsed.
const MAX_LINE: u64 = 8 * 1024;

/// A refused line: its number (from 1) and why.
struct Refused {
    line: usize,
    reason: String,
}

pub(super) async fn run<T: Transport>(cli: &Cli<T>, args: KeyImport) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut reader = BufReader::new(file);
    let progress = std::io::stderr().is_terminal();
    let mut refused = Vec::new();
    let mut imported = 0usize;
    let mut chunk: Vec<(usize, Value)> = Vec::new();
    let mut chunk_bytes = 0;
    let mut number = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", args.file.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() as u64 > MAX_LINE && !line.ends_with(b"\n") {
            refused.push(Refused {
                line: number,
                reason: format!("longer than {MAX_LINE} bytes"),
            });
            // Skip the rest of the line, bounded by the file.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).ok();
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(item @ Value::Object(_)) => {
                chunk_bytes += text.len();
                chunk.push((number, item));
            }
            Ok(_) => refused.push(Refused {
                line: number,
                reason: "not a JSON object".into(),
            }),
            Err(e) => refused.push(Refused {
                line: number,
                reason: format!("not JSON: {e}"),
            }),
        }
        if chunk.len() >= CHUNK_ITEMS || chunk_bytes >= CHUNK_BYTES {
            imported += send(
                &cli.api,
                &args.user,
                std::mem::take(&mut chunk),
                &mut refused,
            )
            .await?;
            chunk_bytes = 0;
            if progress {
                eprint!("\rimported {imported}, refused {}", refused.len());
            }
        }
    }
    if !chunk.is_empty() {
        imported += send(&cli.api, &args.user, chunk, &mut refused).await?;
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    refused.sort_by_key(|r| r.line);
    if cli.out.json {
        let rejected: Vec<Value> = refused
            .iter()
            .map(|r| json!({"line": r.line, "reason": r.reason}))
            .collect();
        print_json(&json!({"imported": imported, "rejected": rejected}));
    } else {
        for r in &refused {
            println!("line {}: {}", r.line, r.reason);
        }
        println!(
            "Imported {imported} keys for {}; {} lines refused.",
            args.user,
            refused.len()
        );
    }
    if refused.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} of {} lines were refused (listed above)",
            refused.len(),
            imported + refused.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Sends one chunk; returns how many were imported and adds the refused to `refused`.
async fn send<T: Transport>(
    api: &Client<T>,
    user: &str,
    chunk: Vec<(usize, Value)>,
    refused: &mut Vec<Refused>,
) -> anyhow::Result<usize> {
    let (lines, items): (Vec<usize>, Vec<Value>) = chunk.into_iter().unzip();
    let report = api
        .post("/v1/keys/import", json!({"user_id": user, "items": items}))
        .await?;
    let rejected = report["rejected"].as_array().cloned().unwrap_or_default();
    for r in &rejected {
        let line = r["index"]
            .as_u64()
            .and_then(|i| lines.get(i as usize))
            .copied()
            .unwrap_or(0);
        let reason = r["reason"].as_str().unwrap_or("refused").to_owned();
        refused.push(Refused { line, reason });
    }
    Ok(report["imported"].as_array().map_or(0, Vec::len))
}
