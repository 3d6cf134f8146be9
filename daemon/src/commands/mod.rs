//! The management commands, written once against the management API.
//!
//! Each command builds requests (method, path, JSON body) and renders the answer; which
//! [`Transport`] carries them is chosen once, in [`execute`]: the daemon over HTTP, or the
//! store in process with `--db`.

mod audit;
mod groups;
mod import;
mod keys;
mod usage_flags;
mod users;
mod verify;

use std::process::ExitCode;

pub(crate) use keys::print_secret_block;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::cli::ApiCommand;
use crate::client::Client;
use crate::config::Settings;
use crate::output;
use crate::transport::{HttpTransport, Transport};

/// Runs a management command through the transport the settings choose.
pub async fn execute(settings: &Settings, command: ApiCommand) -> anyhow::Result<ExitCode> {
    let out = Output {
        json: settings.json,
    };
    match settings.management_store()? {
        Some(location) => {
            let transport = crate::transport::LocalTransport::open(location)?;
            let cli = Cli::new(transport, out);
            let result = run(&cli, command).await;
            let transport = cli.api.into_transport();
            tokio::task::spawn_blocking(move || transport.close()).await?;
            result
        }
        None => {
            let transport = HttpTransport::for_settings(settings)?;
            run(&Cli::new(transport, out), command).await
        }
    }
}

/// What every command works with: the management API, and how to print its answers.
#[derive(Debug)]
pub struct Cli<T> {
    /// The management API, over the chosen transport.
    pub api: Client<T>,
    /// How to print.
    pub out: Output,
}

impl<T: Transport> Cli<T> {
    /// The commands' context over `transport`.
    pub fn new(transport: T, out: Output) -> Cli<T> {
        Cli {
            api: Client::new(transport),
            out,
        }
    }
}

/// Runs a management command over a client.
pub async fn run<T: Transport>(cli: &Cli<T>, command: ApiCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApiCommand::Groups(command) => groups::run(cli, command).await,
        ApiCommand::Users(command) => users::run(cli, command).await,
        ApiCommand::Keys(command) => keys::run(cli, command).await,
        ApiCommand::Audit(command) => audit::run(cli, command).await,
        ApiCommand::Verify(args) => verify::run(cli, args).await,
    }
}

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON document instead of text.
    pub json: bool,
}

impl Output {
    /// Prints the `answer` as JSON, as the server sent it; or reads it as the API's type
    /// `R` and runs `human` to print that for people.
    pub fn print<R: DeserializeOwned>(
        &self,
        answer: &Value,
        human: impl FnOnce(R),
    ) -> anyhow::Result<()> {
        if self.json {
            output::print_json(answer);
        } else {
            human(output::read(answer)?);
        }
        Ok(())
    }
}

/// `PATCH path` with the fields the flags set; an error when they set none.
pub(crate) async fn update<T: Transport>(
    api: &Client<T>,
    path: &str,
    body: Body,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        !body.is_empty(),
        "nothing to change: name a field to update"
    );
    api.patch(path, body.build()).await
}

/// `DELETE path` (the record `id`'s), then says so: `{"id", "deleted": true}` as JSON, or
/// the sentence `done`. `id` is the record's id, or, where the caller may not read the
/// record, the reference it was given.
pub(crate) async fn delete<T: Transport>(
    cli: &Cli<T>,
    path: &str,
    id: &str,
    done: &str,
) -> anyhow::Result<()> {
    cli.api.delete(path).await?;
    if cli.out.json {
        output::print_json(&serde_json::json!({"id": id, "deleted": true}));
    } else {
        println!("{done}");
    }
    Ok(())
}

/// A JSON object builder that leaves out unset fields.
#[derive(Debug, Default)]
pub(crate) struct Body(Map<String, Value>);

impl Body {
    /// Sets `field` when `value` is `Some`.
    pub(crate) fn opt(mut self, field: &str, value: Option<impl Into<Value>>) -> Body {
        if let Some(value) = value {
            self.0.insert(field.to_owned(), value.into());
        }
        self
    }

    /// Sets `field` to a list when it is not empty.
    pub(crate) fn list(self, field: &str, values: Vec<String>) -> Body {
        let values = (!values.is_empty()).then_some(values);
        self.opt(field, values)
    }

    /// Sets `permissions`, `add_permissions` and `remove_permissions` from their flags.
    pub(crate) fn permissions(self, changes: crate::cli::PermissionChanges) -> Body {
        self.opt("permissions", changes.permissions.map(cleaned))
            .list("add_permissions", cleaned(changes.add_permissions))
            .list("remove_permissions", cleaned(changes.remove_permissions))
    }

    /// Sets `field` to `null` when `clear` is true.
    pub(crate) fn clear(mut self, field: &str, clear: bool) -> Body {
        if clear {
            self.0.insert(field.to_owned(), Value::Null);
        }
        self
    }

    /// The object.
    pub(crate) fn build(self) -> Value {
        Value::Object(self.0)
    }

    /// Whether no field is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A list flag as given: `--permissions ''` means "none", which clap hands over as `[""]`.
pub(crate) fn cleaned(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}
