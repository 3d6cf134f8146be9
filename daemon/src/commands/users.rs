//! `latchkey users …`.

use std::collections::HashMap;
use std::process::ExitCode;

use latchkey_admin::api::{KeysRevoked, List, UpdateUser};
use latchkey_core::User;
use uuid::Uuid;

use super::{Body, Cli, cleaned, usage_flags};
use crate::cli::UsersCommand;
use crate::client::{more, query, segment};
use crate::output::{Table, fields, joined, or_dash, read};
use crate::transport::Transport;

pub(super) async fn run<T: Transport>(
    cli: &Cli<T>,
    command: UsersCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        UsersCommand::Add(args) => {
            let body = Body::default()
                .opt("name", Some(args.name))
                .opt("enabled", Some(!args.disabled))
                .opt("groups", Some(cleaned(args.groups)))
                .opt("permissions", Some(cleaned(args.permissions)))
                .opt("tenant_id", args.tenant_id)
                .opt("organization_id", args.organization_id)
                .opt("rate_limits", usage_flags::rate_limits(&args.rate_limits)?);
            let user = cli.api.post("/v1/users", body.build()).await?;
            print_user(cli, &user).await?;
        }
        UsersCommand::List(list) => {
            let list = cli
                .api
                .get(&format!("/v1/users{}", query(&list.query())))
                .await?;
            let names = if cli.out.json {
                HashMap::new()
            } else {
                let users: List<User> = read(&list)?;
                let groups = users.items.into_iter().flat_map(|u| u.groups);
                cli.api.names_of("groups", groups).await
            };
            cli.out.print(&list, |users: List<User>| {
                let mut table = Table::new(&["ID", "NAME", "ENABLED", "GROUPS", "PERMISSIONS"]);
                for u in &users.items {
                    table.row(vec![
                        u.id.to_string(),
                        u.name.clone(),
                        u.enabled.to_string(),
                        group_names(&u.groups, &names),
                        joined(u.permissions.iter()),
                    ]);
                }
                table.print("No users.");
                more(&users, "users");
            })?;
        }
        UsersCommand::Show { user } => {
            let user = cli.api.get(&path(&user)).await?;
            print_user(cli, &user).await?;
        }
        UsersCommand::Update(args) => {
            let body = Body::default()
                .opt("name", args.name)
                .opt("groups", args.groups.map(cleaned))
                .list("add_groups", cleaned(args.add_groups))
                .list("remove_groups", cleaned(args.remove_groups))
                .permissions(args.permissions)
                .opt("tenant_id", args.tenant_id)
                .clear("tenant_id", args.clear_tenant_id)
                .opt("organization_id", args.organization_id)
                .clear("organization_id", args.clear_organization_id)
                .opt("rate_limits", usage_flags::rate_limits(&args.rate_limits)?)
                .clear("rate_limits", args.clear_rate_limits);
            let user = super::update(&cli.api, &path(&args.user), body).await?;
            print_user(cli, &user).await?;
        }
        UsersCommand::Enable { user } => {
            let user = cli.api.patch(&path(&user), enabled(true)).await?;
            print_user(cli, &user).await?;
        }
        UsersCommand::Disable { user } => {
            let user = cli.api.patch(&path(&user), enabled(false)).await?;
            print_user(cli, &user).await?;
        }
        UsersCommand::RevokeKeys { user } => {
            // By the reference given: the API takes a name, and the answer has the id.
            let revoke = format!("{}/revoke-keys", path(&user));
            let done = cli.api.call(http::Method::POST, &revoke, None).await?;
            cli.out.print(&done, |done: KeysRevoked| {
                let background = if done.in_background {
                    " (their records follow in the background)"
                } else {
                    ""
                };
                println!("Revoked every key of user {user}{background}.");
            })?;
        }
        UsersCommand::Delete { user } => {
            let id = cli.api.id_of("users", &user).await?;
            let id = id.unwrap_or(user.clone());
            let done = format!("Deleted user {user}; its keys are revoked.");
            super::delete(cli, &path(&id), &id, &done).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `PATCH /v1/users/{id}` enabling or disabling the user.
fn enabled(enabled: bool) -> UpdateUser {
    UpdateUser {
        enabled: Some(enabled),
        ..UpdateUser::default()
    }
}

pub(super) fn path(user: &str) -> String {
    format!("/v1/users/{}", segment(user))
}

/// Groups by name where known, by id otherwise.
fn group_names(ids: &[Uuid], names: &HashMap<Uuid, String>) -> String {
    joined(
        ids.iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string())),
    )
}

async fn print_user<T: Transport>(cli: &Cli<T>, answer: &serde_json::Value) -> anyhow::Result<()> {
    if cli.out.json {
        crate::output::print_json(answer);
        return Ok(());
    }
    let user: User = read(answer)?;
    let names = cli.api.names_of("groups", user.groups.clone()).await;
    print!(
        "{}",
        fields(&[
            ("id", user.id.to_string()),
            ("name", user.name),
            ("enabled", user.enabled.to_string()),
            ("groups", group_names(&user.groups, &names)),
            ("permissions", joined(user.permissions.iter())),
            ("tenant_id", or_dash(user.tenant_id)),
            ("organization_id", or_dash(user.organization_id)),
            (
                "rate_limits",
                usage_flags::limits_line(&user.rate_limits).unwrap_or_else(|| "-".into()),
            ),
        ])
    );
    Ok(())
}
