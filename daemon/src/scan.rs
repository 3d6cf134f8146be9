//! `latchkey scan PATH...`: finds latchkey keys in files.
//!
//! A candidate counts only when its checksum matches ([`latchkey_core::find_keys`]), so
//! look-alikes in docs and tests do not fail a pre-commit hook. Findings show the display
//! prefix, never the secret.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use latchkey_core::key::MAX_KEY_LEN;
use serde::Serialize;

/// One key found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, as reached from the path given (`-` for stdin).
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The key's display prefix (`lk_live_<id>`), safe to print.
    pub prefix: String,
}

/// Bytes scanned at a time: memory stays bounded whatever the size of a file or of stdin.
const CHUNK: usize = 1 << 20;

/// The keys in a text, with their line numbers.
pub fn scan_text(path: &Path, text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    scan_bytes(path, text.as_bytes(), text.len(), 1, &mut findings);
    findings
}

/// The keys in `input`, read a megabyte (`CHUNK`) at a time, with their line numbers: the same
/// findings as [`scan_text`] on the whole input (which need not be UTF-8).
pub fn scan_reader(path: &Path, input: impl Read) -> std::io::Result<Vec<Finding>> {
    scan_chunks(path, input, CHUNK)
}

/// A key may stand anywhere, glued to other bytes ([`latchkey_core::find_keys`]), so the
/// last `MAX_KEY_LEN - 1` bytes of each chunk, where a key could start and not yet end, are
/// kept and scanned again with the next read; a key found there was not reported before.
fn scan_chunks(path: &Path, mut input: impl Read, chunk: usize) -> std::io::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut buffer = Vec::with_capacity(chunk + MAX_KEY_LEN);
    let mut line = 1;
    loop {
        let read = (&mut input).take(chunk as u64).read_to_end(&mut buffer)?;
        let end = read < chunk;
        let cut = if end {
            buffer.len()
        } else {
            buffer.len().saturating_sub(MAX_KEY_LEN - 1)
        };
        line = scan_bytes(path, &buffer, cut, line, &mut findings);
        buffer.drain(..cut);
        if end {
            return Ok(findings);
        }
    }
}

/// Adds the keys in `text` that start before `cut` to `findings`, with `text` starting on
/// line `line`; answers the number of the line `cut` is on.
fn scan_bytes(
    path: &Path,
    text: &[u8],
    cut: usize,
    mut line: usize,
    findings: &mut Vec<Finding>,
) -> usize {
    let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count();
    let mut counted_to = 0;
    for (offset, key) in latchkey_core::find_keys(text).take_while(|&(at, _)| at < cut) {
        line += newlines(&text[counted_to..offset]);
        counted_to = offset;
        findings.push(Finding {
            path: path.to_owned(),
            line,
            prefix: key.display_prefix().to_owned(),
        });
    }
    line + newlines(&text[counted_to..cut])
}

/// What a scan found, and how many of the paths given could not be read.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The keys found.
    pub findings: Vec<Finding>,
    /// The paths given on the command line that could not be read (each said on stderr).
    pub unreadable: usize,
}

/// Scans files and directories (recursively; `.git` and symbolic links are skipped). A
/// path given on the command line that cannot be read is said on stderr as an error and
/// counted, and the others are scanned all the same; a file inside a directory that cannot
/// be read is said as a warning and skipped.
pub fn scan_paths(paths: &[PathBuf]) -> Scanned {
    let mut scanned = Scanned::default();
    for path in paths {
        let found = if path.as_os_str() == "-" {
            scan_reader(path, std::io::stdin().lock()).context("reading stdin")
        } else {
            match std::fs::metadata(path) {
                // A directory given that cannot be listed is a path not read; one met
                // inside it is warned about and skipped.
                Ok(meta) if meta.is_dir() => {
                    match std::fs::read_dir(path) {
                        Ok(_) => {
                            walk(path, &mut scanned.findings);
                            continue;
                        }
                        Err(e) => Err(anyhow::Error::new(e)
                            .context(format!("cannot read {}", path.display()))),
                    }
                }
                Ok(_) => scan_file(path),
                Err(e) => {
                    Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
                }
            }
        };
        match found {
            Ok(found) => scanned.findings.extend(found),
            Err(e) => {
                eprintln!("error: {}", crate::output::error_line(&e));
                scanned.unreadable += 1;
            }
        }
    }
    scanned
}

fn scan_file(path: &Path) -> anyhow::Result<Vec<Finding>> {
    let cannot = || format!("cannot read {}", path.display());
    let file = std::fs::File::open(path).with_context(cannot)?;
    scan_reader(path, file).with_context(cannot)
}

fn walk(dir: &Path, findings: &mut Vec<Finding>) {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).collect::<Vec<_>>(),
        Err(e) => {
            eprintln!("warning: skipping {}: {e}", dir.display());
            return;
        }
    };
    // Sorted, so the output is the same from one run to the next.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(&path, findings);
            }
        } else if kind.is_file() {
            match scan_file(&path) {
                Ok(found) => findings.extend(found),
                Err(e) => eprintln!("warning: skipping {}: {e:#}", path.display()),
            }
        }
    }
}

/// Runs `latchkey scan`: prints `file:line: prefix` per finding (or JSON); exits 2 when a
/// path given could not be read (whatever was found: the scan is not whole), else 1 when a
/// key was found, else 0.
pub fn run(paths: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let Scanned {
        findings,
        unreadable,
    } = scan_paths(paths);
    if json {
        crate::output::print_json(&serde_json::json!({ "findings": findings }));
    } else {
        for f in &findings {
            println!("{}:{}: {}", f.path.display(), f.line, f.prefix);
        }
        if !findings.is_empty() {
            eprintln!(
                "{} latchkey key{} found: revoke {} (`latchkey keys revoke PREFIX`) and remove {} from the files",
                findings.len(),
                if findings.len() == 1 { "" } else { "s" },
                if findings.len() == 1 { "it" } else { "them" },
                if findings.len() == 1 { "it" } else { "them" },
            );
        }
    }
    Ok(match (unreadable, findings.is_empty()) {
        (0, true) => ExitCode::SUCCESS,
        (0, false) => ExitCode::FAILURE,
        _ => ExitCode::from(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::{ApiKey, Env, Prefix};

    #[test]
    fn finds_keys_with_their_lines_and_never_the_secret() {
        let a = ApiKey::generate(&Prefix::default(), Env::Live);
        let b = ApiKey::generate(&Prefix::new("acme").unwrap(), Env::Test);
        let mut forged = a.expose().to_owned();
        forged.pop();
        forged.push(if a.expose().ends_with('0') { '1' } else { '0' });
        let text = format!(
            "first\nTOKEN={}\n\nlook-alike: {forged}\nheaders: 'Bearer {}' x\n",
            a.expose(),
            b.expose()
        );
        let found = scan_text(Path::new("f.env"), &text);
        let lines: Vec<(usize, &str)> = found.iter().map(|f| (f.line, f.prefix.as_str())).collect();
        assert_eq!(lines, [(2, a.display_prefix()), (5, b.display_prefix())]);
        for f in &found {
            assert!(!f.prefix.contains(a.secret()) && !f.prefix.contains(b.secret()));
        }
    }

    #[test]
    fn chunks_find_what_the_whole_text_holds() {
        let keys: Vec<ApiKey> = (0..4)
            .map(|_| ApiKey::generate(&Prefix::default(), Env::Live))
            .collect();
        let long_run = "x".repeat(3 * MAX_KEY_LEN);
        let text = format!(
            "{}\n\n a{} {} {long_run}{}\n{long_run} \u{e9}{}\n{long_run}\n{}",
            keys[0].expose(),
            keys[1].expose(),
            keys[1].expose(),
            keys[2].expose(),
            keys[2].expose(),
            keys[3].expose(),
        );
        let whole = scan_text(Path::new("f"), &text);
        let lines: Vec<(usize, &str)> = whole.iter().map(|f| (f.line, f.prefix.as_str())).collect();
        let prefix = |i: usize| keys[i].display_prefix();
        assert_eq!(
            lines,
            [
                (1, prefix(0)),
                (3, prefix(1)),
                (3, prefix(1)),
                (3, prefix(2)),
                (4, prefix(2)),
                (6, prefix(3))
            ]
        );
        for chunk in [1, 2, 7, 64, MAX_KEY_LEN - 1, MAX_KEY_LEN, 100, 4096] {
            let found = scan_chunks(Path::new("f"), text.as_bytes(), chunk).unwrap();
            assert_eq!(found, whole, "chunks of {chunk}");
        }
        // Bytes that are not UTF-8 around and between keys change nothing.
        let bytes = [
            keys[0].expose().as_bytes(),
            b"\xff\n\xfe",
            keys[3].expose().as_bytes(),
            b"\x80",
        ]
        .concat();
        let lines = |found: Vec<Finding>| found.into_iter().map(|f| f.line).collect::<Vec<_>>();
        for chunk in [1, 3, 70, 4096] {
            let found = scan_chunks(Path::new("f"), &bytes[..], chunk).unwrap();
            assert_eq!(lines(found), [1, 2], "chunks of {chunk}");
        }
    }

    #[test]
    fn walks_directories_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        std::fs::create_dir_all(dir.path().join("src/deep")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(
            dir.path().join("src/deep/config.toml"),
            format!("k = \"{}\"", key.expose()),
        )
        .unwrap();
        std::fs::write(dir.path().join(".git/COMMIT"), key.expose()).unwrap();
        std::fs::write(dir.path().join("clean.txt"), "nothing here").unwrap();
        let scanned = scan_paths(&[dir.path().to_owned()]);
        assert_eq!((scanned.findings.len(), scanned.unreadable), (1, 0));
        assert!(scanned.findings[0].path.ends_with("src/deep/config.toml"));
        let scanned = scan_paths(&[dir.path().join("missing"), dir.path().to_owned()]);
        assert_eq!((scanned.findings.len(), scanned.unreadable), (1, 1));
    }
}
