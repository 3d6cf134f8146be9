//! `latchkey users …`.

use std::collections::HashMap;
use std::process::ExitCode;

use latchkey_admin::api::UpdateUser;
use serde_json::{Value, json};

use super::{Body, Cli, cleaned, usage_flags};
use crate::cli::UsersCommand;
use crate::client::{items, more, query, segment};
use crate::output::{Table, fields, text};
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
            print_user(cli, &user).await;
        }
        UsersCommand::List(list) => {
            let list = cli
                .api
                .get(&format!("/v1/users{}", query(&list.query())))
                .await?;
            let names = if cli.out.json {
                HashMap::new()
            } else {
                cli.api.names("groups").await
            };
            cli.out.print(&list, |list| {
                let mut table = Table::new(&["ID", "NAME", "ENABLED", "GROUPS", "PERMISSIONS"]);
                for u in items(list) {
                    table.row(vec![
                        text(&u["id"]),
                        text(&u["name"]),
                        text(&u["enabled"]),
                        group_names(&u["groups"], &names),
                        text(&u["permissions"]),
                    ]);
                }
                table.print("No users.");
                more(list, "users");
            });
        }
        UsersCommand::Show { user } => {
            let user = cli.api.get(&path(&user)).await?;
            print_user(cli, &user).await;
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
            print_user(cli, &user).await;
        }
        UsersCommand::Enable { user } => {
            let user = cli.api.patch(&path(&user), enabled(true)).await?;
            print_user(cli, &user).await;
        }
        UsersCommand::Disable { user } => {
            let user = cli.api.patch(&path(&user), enabled(false)).await?;
            print_user(cli, &user).await;
        }
        UsersCommand::RevokeKeys { user } => {
            let id = cli.api.user_id(&user).await?;
            let done = cli
                .api
                .post(&format!("{}/revoke-keys", path(&id)), json!({}))
                .await?;
            cli.out.print(&done, |done| {
                let background = if done["in_background"].as_bool() == Some(true) {
                    " (their records follow in the background)"
                } else {
                    ""
                };
                println!("Revoked every key of user {user}{background}.");
            });
        }
        UsersCommand::Delete { user } => {
            let id = cli.api.user_id(&user).await?;
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

fn path(user: &str) -> String {
    format!("/v1/users/{}", segment(user))
}

fn group_names(ids: &Value, names: &HashMap<String, String>) -> String {
    let named: Vec<Value> = ids
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|id| {
            let id = text(id);
            Value::String(names.get(&id).cloned().unwrap_or(id))
        })
        .collect();
    text(&Value::Array(named))
}

async fn print_user<T: Transport>(cli: &Cli<T>, user: &Value) {
    if cli.out.json {
        cli.out.print(user, |_| {});
        return;
    }
    let names = cli.api.names("groups").await;
    print!(
        "{}",
        fields(&[
            ("id", text(&user["id"])),
            ("name", text(&user["name"])),
            ("enabled", text(&user["enabled"])),
            ("groups", group_names(&user["groups"], &names)),
            ("permissions", text(&user["permissions"])),
            ("tenant_id", text(&user["tenant_id"])),
            ("organization_id", text(&user["organization_id"])),
            (
                "rate_limits",
                usage_flags::limits_line(user).unwrap_or_else(|| "-".into()),
            ),
        ])
    );
}
