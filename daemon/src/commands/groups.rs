//! `latchkey groups …`.

use std::process::ExitCode;

use latchkey_admin::api::List;
use latchkey_core::Group;

use super::{Body, Cli, cleaned};
use crate::cli::GroupsCommand;
use crate::client::{more, query, segment};
use crate::output::{Table, fields, joined};
use crate::transport::Transport;

pub(super) async fn run<T: Transport>(
    cli: &Cli<T>,
    command: GroupsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        GroupsCommand::Add(args) => {
            // Permissions go as given: the server checks them, and names a bad one.
            let body = Body::default()
                .opt("name", Some(args.name))
                .opt("permissions", Some(cleaned(args.permissions)));
            let group = cli.api.post("/v1/groups", body.build()).await?;
            cli.out.print(&group, show)?;
        }
        GroupsCommand::List(page) => {
            let list = cli
                .api
                .get(&format!("/v1/groups{}", query(&page.query())))
                .await?;
            cli.out.print(&list, |groups: List<Group>| {
                let mut table = Table::new(&["ID", "NAME", "PERMISSIONS"]);
                for g in &groups.items {
                    table.row(vec![
                        g.id.to_string(),
                        g.name.clone(),
                        joined(g.permissions.iter()),
                    ]);
                }
                table.print("No groups.");
                more(&groups, "groups");
            })?;
        }
        GroupsCommand::Show { group } => {
            let group = cli.api.get(&path(&group)).await?;
            cli.out.print(&group, show)?;
        }
        GroupsCommand::Update(args) => {
            let body = Body::default()
                .opt("name", args.name)
                .permissions(args.permissions);
            let group = super::update(&cli.api, &path(&args.group), body).await?;
            cli.out.print(&group, show)?;
        }
        GroupsCommand::Delete { group } => {
            let id = cli.api.id_of("groups", &group).await?;
            let id = id.unwrap_or(group.clone());
            let done = format!("Deleted group {group}.");
            super::delete(cli, &path(&id), &id, &done).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn path(group: &str) -> String {
    format!("/v1/groups/{}", segment(group))
}

fn show(group: Group) {
    print!(
        "{}",
        fields(&[
            ("id", group.id.to_string()),
            ("name", group.name),
            ("permissions", joined(group.permissions.iter())),
        ])
    );
}
