//! `latchkey audit …`.

use std::process::ExitCode;

use serde_json::Value;

use super::Cli;
use crate::cli::AuditCommand;
use crate::client::{items, query};
use crate::output::{Table, text, when};
use crate::transport::Transport;

pub(super) async fn run<T: Transport>(
    cli: &Cli<T>,
    command: AuditCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::List {
            after,
            before,
            newest_first,
            limit,
        } => {
            let path = format!(
                "/v1/audit{}",
                query(&[
                    ("after", after.map(|a| a.to_string())),
                    ("before", before.map(|b| b.to_string())),
                    ("order", newest_first.then(|| "desc".to_owned())),
                    ("limit", limit.map(|l| l.to_string())),
                ])
            );
            let go_on = if newest_first { "--before" } else { "--after" };
            let list = cli.api.get(&path).await?;
            cli.out.print(&list, |list| {
                let mut table = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "USER"]);
                for event in items(list) {
                    table.row(vec![
                        text(&event["seq"]),
                        when(&event["at"]),
                        actor(&event["actor"]),
                        text(&event["action"]),
                        text(&event["target"]),
                        text(&event["user_id"]),
                    ]);
                }
                table.print("No events.");
                if let Some(cursor) = list["next_cursor"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| list["next_cursor"].as_u64().map(|c| c.to_string()))
                {
                    eprintln!("More events: add {go_on} {cursor}");
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify => {
            let report = cli.api.get("/v1/audit/verify").await?;
            let valid = report["valid"].as_bool() == Some(true);
            cli.out.print(&report, |report| {
                if valid {
                    println!("The audit chain is intact: {} events.", text(&report["events"]));
                } else {
                    println!(
                        "The audit chain is BROKEN at event {}: {} ({} events before it check out).",
                        text(&report["broken"]["seq"]),
                        text(&report["broken"]["reason"]),
                        text(&report["events"]),
                    );
                }
            });
            Ok(crate::output::verdict(valid))
        }
    }
}

/// Who acted: a key id, or the operator (the CLI on the store).
fn actor(value: &Value) -> String {
    match value {
        Value::Null => "operator".to_owned(),
        other => text(other),
    }
}
