//! The `latchkey` daemon and CLI.
//!
//! `latchkey serve` runs the management API of `latchkey-admin` over HTTP; every other
//! command is a client of that same API, over HTTP to a daemon or in process on a store
//! (`--db`). The binary (`main.rs`) only parses arguments, sets up logging and dispatches.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap derive).
//! - [`config`]: flags > environment > `--config` file > defaults; `latchkey default-config`.
//! - [`usage_error`]: a command line clap refuses, said with the environment's part in it.
//! - [`server`]: [`run`], [`shutdown_signal`], the HTTP [`app`]; `listen`: the accept loop
//!   (TLS, header-read timeout, graceful drain).
//! - [`start`]: `latchkey serve`'s start-up: check and bind everything, then initialise.
//! - [`tls`]: the server's certificate and key.
//! - [`init`]: `latchkey init`, and the first start of `serve` on an empty path.
//! - [`engine`]: `--engine`, the embedded engine of a new store, checked against the store.
//! - [`migrate`]: `latchkey migrate`, a store's schema brought forward alone.
//! - [`backup`]: `latchkey backup` (through the daemon or `--db`) and `latchkey restore`.
//! - [`transport`]: the [`Transport`](transport::Transport) trait; HTTP and in-process.
//! - [`client`]: JSON requests and problem+json answers over a transport.
//! - [`commands`]: the management commands, written once against the API.
//! - [`output`]: tables and `--json`.
//! - [`scan`]: `latchkey scan`, the secret scanner.
//! - [`health`]: `latchkey health`, the daemon's `/healthz` as an exit code.
//! - [`duration`]: `24h`-style durations.
//!
//! **Invariant:** a secret is printed only by `init`, `serve` on first start, `keys add` and
//! `keys rotate`, each exactly once; nothing is logged with one.

pub mod backup;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
mod date;
pub mod duration;
pub mod engine;
pub mod health;
pub mod init;
mod listen;
pub mod migrate;
pub mod output;
mod partial;
mod request_log;
pub mod scan;
pub mod server;
pub mod start;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod transport;
mod unread_body;
pub mod usage_error;

pub use duration::parse_duration;
pub use server::{MetricsServing, ServeConfig, app, run, shutdown_signal};
