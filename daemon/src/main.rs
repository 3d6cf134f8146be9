//! The `latchkey` binary: parse arguments, set up logging, dispatch.
//!
//! Exit codes: 0 on success; 1 on an error (one `error: …` line on stderr), and for a
//! negative answer of `verify`, `scan` or `audit verify`; 2 for a usage error.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use latchkey_core::StoreConfig;
use latchkey_daemon::cli::{Cli, Command, ServeArgs};
use latchkey_daemon::config::{DEFAULT_CONFIG, Settings};
use latchkey_daemon::{ServeConfig, backup, commands, init, scan};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the error's causes on one line.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&cli.global)?;
    let serving = matches!(cli.command, Command::Serve(_));
    init_tracing(
        settings.log.as_deref(),
        if serving { "info" } else { "warn" },
    );
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(serve(&settings, &args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => {
            init::run(
                &settings.store_path(),
                &settings.init_prefix(&args),
                settings.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api(command) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(commands::execute(&settings, command))
        }
        Command::Backup(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(backup::backup(&settings, &args.out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) => {
            backup::restore(&settings, &args.file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan(args) => scan::run(&args.paths, settings.json),
        Command::Completions { shell } => {
            let mut stdout = std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "latchkey", &mut stdout);
            Ok(ExitCode::SUCCESS)
        }
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `latchkey serve`: open (or initialise) the store, bind, announce, serve until a signal.
async fn serve(settings: &Settings, args: &ServeArgs) -> anyhow::Result<()> {
    let path = settings.store_path();
    let addr = settings.listen(args)?;
    let request_timeout = settings.request_timeout(args)?;
    let prefix = settings.prefix(args.prefix.as_deref());
    let (store, created) = init::open_or_init(&path, &prefix, StoreConfig::default())?;
    if let Some(admin) = &created {
        init::print_admin_key(&path, admin, settings.json);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    // Scripts and tests read the port from this line when they pass port 0.
    println!("listening on {local}");
    std::io::stdout().flush().context("writing to stdout")?;
    tracing::info!(%local, store = %path.display(), "latchkey daemon started");
    let config = ServeConfig {
        request_timeout,
        ..ServeConfig::new(store)
    };
    latchkey_daemon::run(config, listener, latchkey_daemon::shutdown_signal()).await
}

/// Logs go to stderr, filtered by `LATCHKEY_LOG`, else the config file, else `default`.
fn init_tracing(from_file: Option<&str>, default: &str) {
    let filter = std::env::var("LATCHKEY_LOG")
        .ok()
        .or_else(|| from_file.map(str::to_owned))
        .unwrap_or_else(|| default.to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
