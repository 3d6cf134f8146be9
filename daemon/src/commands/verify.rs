//! `latchkey verify KEY [--permission P]... [--client-ip IP] [--cost N]`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use latchkey_admin::api::VerifyResponse;
use serde_json::json;

use super::Cli;
use crate::cli::VerifyArgs;
use crate::output::{fields, joined, or_dash, print_json, read};
use crate::transport::Transport;

/// The longest line `verify -` reads: twice the longest key the API takes (an imported
/// one, 512 bytes), so nothing real is refused and endless input is.
const MAX_KEY_LINE: u64 = 1024;

/// The key on the first line of `input`, trimmed; a first line longer than
/// [`MAX_KEY_LINE`] is refused after reading that much of it.
fn read_key(input: impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    input
        .take(MAX_KEY_LINE + 1)
        .read_until(b'\n', &mut line)
        .context("reading the key from stdin")?;
    anyhow::ensure!(
        line.len() as u64 <= MAX_KEY_LINE || line.ends_with(b"\n"),
        "the first line of stdin is longer than {MAX_KEY_LINE} bytes: that is not a key"
    );
    let line = String::from_utf8(line)
        .map_err(|_| anyhow::anyhow!("the key on stdin is not UTF-8 text"))?;
    Ok(line.trim().to_owned())
}

pub(super) async fn run<T: Transport>(cli: &Cli<T>, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = if args.key == "-" {
        read_key(std::io::stdin().lock())?
    } else {
        args.key.trim().to_owned()
    };
    // Permissions go as given: the server checks them, and names a bad one.
    let mut body = json!({"key": key, "permissions": args.permissions});
    if let Some(client_ip) = args.client_ip {
        body["client_ip"] = json!(client_ip);
    }
    if let Some(cost) = args.cost {
        body["cost"] = json!(cost);
    }
    let answer = cli.api.post("/v1/verify", body).await?;
    let verdict: VerifyResponse = read(&answer)?;
    let valid = verdict.valid;
    if cli.out.json {
        // The answer as the daemon sent it (its limits, expiry, retry), with `principal`
        // always there: `null` for a key that does not authenticate.
        let mut answer = answer;
        if let Some(fields) = answer.as_object_mut() {
            fields.entry("principal").or_insert(serde_json::Value::Null);
        }
        print_json(&answer);
    } else if let Some(p) = verdict.principal.filter(|_| valid) {
        println!("valid");
        print!(
            "{}",
            fields(&[
                ("key", format!("{} ({})", p.prefix, p.key_name)),
                ("user", format!("{} ({})", p.user_name, p.user_id)),
                ("env", p.env.to_string()),
                ("tenant_id", or_dash(p.tenant_id)),
                ("organization_id", or_dash(p.organization_id)),
                ("permissions", joined(p.permissions.iter())),
            ])
        );
    } else {
        println!("invalid: {}", verdict.code);
    }
    Ok(crate::output::verdict(valid))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_key_is_the_first_line_and_a_long_one_is_refused() {
        assert_eq!(read_key(&b" lk_live_x \nrest"[..]).unwrap(), "lk_live_x");
        assert_eq!(read_key(&b"no newline"[..]).unwrap(), "no newline");
        let longest = format!("{}\n", "k".repeat(1024));
        assert_eq!(read_key(longest.as_bytes()).unwrap(), "k".repeat(1024));
        // A megabyte without a newline: refused after 1 KiB and a byte of it.
        let endless = std::io::BufReader::new(std::io::repeat(b'k').take(1 << 20));
        let error = read_key(endless).unwrap_err().to_string();
        assert!(error.contains("longer than 1024 bytes"), "{error}");
    }
}
