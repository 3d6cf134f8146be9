//! `latchkey audit …`.

use std::process::ExitCode;

use latchkey_admin::api::{AuditCheck, List};
use latchkey_core::AuditEvent;
use serde::Deserialize;
use uuid::Uuid;

use super::Cli;
use crate::cli::AuditCommand;
use crate::client::query;
use crate::output::{Table, actor, or_dash, print_json, read, when, wire_name};
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
            target,
            key,
            user,
            group,
        } => {
            let target = match (target, key, user, group) {
                (Some(id), ..) => Some(id),
                (_, Some(key), ..) => Some(id_of(cli, &super::keys::path(&key)?).await?),
                (_, _, Some(user), _) => Some(id_of(cli, &super::users::path(&user)).await?),
                (.., Some(group)) => Some(id_of(cli, &super::groups::path(&group)).await?),
                _ => None,
            };
            let path = format!(
                "/v1/audit{}",
                query(&[
                    ("after", after.map(|a| a.to_string())),
                    ("before", before.map(|b| b.to_string())),
                    ("order", newest_first.then(|| "desc".to_owned())),
                    ("limit", limit.map(|l| l.to_string())),
                    ("target", target.map(|t| t.hyphenated().to_string())),
                ])
            );
            let go_on = if newest_first { "--before" } else { "--after" };
            let list = cli.api.get(&path).await?;
            cli.out.print(&list, |events: List<AuditEvent>| {
                let columns = ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "USER", "CHANGES"];
                let mut table = Table::new(&columns);
                for event in &events.items {
                    table.row(vec![
                        event.seq.to_string(),
                        when(Some(event.at)),
                        actor(event.actor),
                        wire_name(&event.action),
                        event.target.to_string(),
                        or_dash(event.user_id),
                        or_dash(Some(event.changes_line())),
                    ]);
                }
                table.print(if events.next_cursor.is_some() {
                    "No events on this page."
                } else {
                    "No events."
                });
                if let Some(cursor) = &events.next_cursor {
                    eprintln!("More events: add {go_on} {cursor}");
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify => {
            let answer = cli.api.get("/v1/audit/verify").await?;
            let report: AuditCheck = read(&answer)?;
            if cli.out.json {
                print_json(&answer);
            } else if let Some(broken) = &report.broken {
                println!(
                    "The audit chain is BROKEN at event {}: {} ({} events before it check out).",
                    broken.seq, broken.reason, report.events,
                );
            } else {
                println!("The audit chain is intact: {} events.", report.events);
            }
            Ok(crate::output::verdict(report.valid))
        }
    }
}

/// The id of the record at `path` (a key, user or group, looked up by any name the API
/// knows it by): the audit trail knows records by id only.
async fn id_of<T: Transport>(cli: &Cli<T>, path: &str) -> anyhow::Result<Uuid> {
    #[derive(Deserialize)]
    struct Record {
        id: Uuid,
    }
    Ok(read::<Record>(&cli.api.get(path).await?)?.id)
}
