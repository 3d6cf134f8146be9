//! `latchkey verify KEY [--permission P]...`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::Cli;
use crate::cli::VerifyArgs;
use crate::output::{fields, text};
use crate::transport::Transport;

pub(super) async fn run<T: Transport>(cli: &Cli<T>, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = if args.key == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the key from stdin")?;
        line.trim().to_owned()
    } else {
        args.key.trim().to_owned()
    };
    let answer = cli
        .api
        .post(
            "/v1/verify",
            json!({"key": key, "permissions": args.permissions}),
        )
        .await?;
    let valid = answer["valid"].as_bool() == Some(true);
    let document = json!({
        "valid": valid,
        "code": answer["code"],
        "principal": answer.get("principal").cloned().unwrap_or(Value::Null),
    });
    cli.out.print(&document, |_| {
        if valid {
            let p = &answer["principal"];
            println!("valid");
            print!(
                "{}",
                fields(&[
                    (
                        "key",
                        format!("{} ({})", text(&p["prefix"]), text(&p["key_name"]))
                    ),
                    (
                        "user",
                        format!("{} ({})", text(&p["user_name"]), text(&p["user_id"]))
                    ),
                    ("env", text(&p["env"])),
                    ("tenant_id", text(&p["tenant_id"])),
                    ("organization_id", text(&p["organization_id"])),
                    ("permissions", text(&p["permissions"])),
                ])
            );
        } else {
            println!("invalid: {}", text(&answer["code"]));
        }
    });
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
