//! `latchkey groups …`.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Body, Cli, cleaned};
use crate::cli::GroupsCommand;
use crate::client::{items, more, query, segment};
use crate::output::{Table, fields, text};
use crate::transport::Transport;

pub(super) async fn run<T: Transport>(
    cli: &Cli<T>,
    command: GroupsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        GroupsCommand::Add(args) => {
            let body = json!({"name": args.name, "permissions": cleaned(args.permissions)});
            let group = cli.api.post("/v1/groups", body).await?;
            cli.out.print(&group, |g| print!("{}", show(g)));
        }
        GroupsCommand::List(page) => {
            let list = cli
                .api
                .get(&format!("/v1/groups{}", query(&page.query())))
                .await?;
            cli.out.print(&list, |list| {
                let mut table = Table::new(&["ID", "NAME", "PERMISSIONS"]);
                for g in items(list) {
                    table.row(vec![
                        text(&g["id"]),
                        text(&g["name"]),
                        text(&g["permissions"]),
                    ]);
                }
                table.print("No groups.");
                more(list, "groups");
            });
        }
        GroupsCommand::Show { group } => {
            let group = cli.api.get(&path(&group)).await?;
            cli.out.print(&group, |g| print!("{}", show(g)));
        }
        GroupsCommand::Update(args) => {
            let body = Body::default()
                .opt("name", args.name)
                .permissions(args.permissions);
            let group = super::update(&cli.api, &path(&args.group), body).await?;
            cli.out.print(&group, |g| print!("{}", show(g)));
        }
        GroupsCommand::Delete { group } => {
            let id = cli.api.group_id(&group).await?;
            let done = format!("Deleted group {group}.");
            super::delete(cli, &path(&id), &id, &done).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn path(group: &str) -> String {
    format!("/v1/groups/{}", segment(group))
}

fn show(group: &Value) -> String {
    fields(&[
        ("id", text(&group["id"])),
        ("name", text(&group["name"])),
        ("permissions", text(&group["permissions"])),
    ])
}
