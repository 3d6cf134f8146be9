//! Bounded memory on endless input: an over-long line or stream gets its clear answer
//! while memory stays small. Each command runs under `ulimit -v` (address space) well
//! below the bytes it is fed, from a pipe that a writer thread fills without a newline: a
//! command that kept its input would fail to allocate and abort.

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;

use latchkey_core::{ApiKey, Env, Prefix};

use crate::harness::{Run, bin};

/// The address space the CLI may use, in KiB: some 60 MiB are enough to run it.
const ADDRESS_SPACE_KIB: u64 = 160 * 1024;
/// What a writer feeds at most: more than the address space allowed.
const FED_BYTES: usize = 256 << 20;

/// Runs `latchkey ARGS` under the address-space limit, its stdin fed by a thread that
/// writes `head`, then `a` up to [`FED_BYTES`] with no newline, then `tail`; the writer
/// stops early when the command closes its stdin.
pub(crate) fn limited(args: &[&str], head: &[u8], tail: &[u8]) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning latchkey under sh");
    let mut stdin = child.stdin.take().unwrap();
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let block = vec![b'a'; 64 << 10];
        stdin.write_all(&head)?;
        let mut fed = head.len();
        while fed < FED_BYTES {
            stdin.write_all(&block)?;
            fed += block.len();
        }
        stdin.write_all(&tail)
    });
    let output = child.wait_with_output().expect("waiting for latchkey");
    // An error is the command closing its stdin early: it stopped reading, as it may.
    let _ = writer.join().expect("the writer thread");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// No daemon: a command that reaches the network fails to connect.
const NOWHERE: [&str; 4] = ["--url", "http://127.0.0.1:1", "--admin-key", "lk_live_x"];

#[test]
fn import_skips_an_endless_line_without_keeping_it() {
    let mut args = vec!["--json", "keys", "import", "/dev/stdin", "--user", "svc"];
    args.extend(NOWHERE);
    let run = limited(&args, br#"{"key": ""#, b"\"}\n\n");
    assert_eq!(run.code, 1, "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    assert_eq!(report["imported"], 0, "{run:#?}");
    assert_eq!(report["rejected"][0]["line"], 1, "{run:#?}");
    assert_eq!(
        report["rejected"][0]["reason"], "longer than 57344 bytes",
        "{run:#?}"
    );
}

#[test]
fn verify_refuses_an_endless_line_on_stdin() {
    let mut args = vec!["verify", "-"];
    args.extend(NOWHERE);
    let run = limited(&args, b"lk_live_", b"\n");
    run.fails(1, "the first line of stdin is longer than 1024 bytes");
}

#[test]
fn scan_reads_stdin_a_chunk_at_a_time() {
    let key = || ApiKey::generate(&Prefix::default(), Env::Live);
    let (first, glued, last) = (key(), key(), key());
    // Whatever stands before it, a key glued to the endless run of `a` is found: memory
    // stays bounded, and nothing in the run is held back waiting for its end.
    let head = format!("start\n{} ", first.expose());
    let tail = format!("{}\n{}\n", glued.expose(), last.expose());
    let run = limited(&["--json", "scan", "-"], head.as_bytes(), tail.as_bytes());
    assert_eq!(run.code, 1, "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    let found: Vec<(u64, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["prefix"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            (2, first.display_prefix()),
            (2, glued.display_prefix()),
            (3, last.display_prefix())
        ],
        "{run:#?}"
    );
}
