//! The `latchkey` binary: parse arguments, set up logging, dispatch.
//!
//! Exit codes: 0 on success; 1 on an error (one `error: …` line on stderr), and for a
//! negative answer of `verify`, `scan`, `audit verify` or `health`; 2 for a usage error. A
//! command whose output's reader has gone (`latchkey keys list | head -1`) ends by SIGPIPE,
//! as Unix tools do.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use latchkey_daemon::cli::{Cli, Command, WhereGiven};
use latchkey_daemon::config::{DEFAULT_CONFIG, Settings};
use latchkey_daemon::{backup, commands, health, init, migrate, scan, start};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// jemalloc, for the daemon binary only: fewer pages held back than glibc's per-thread
/// arenas under sled's and tokio's threads (the root Cargo.toml has the figures). Its
/// options (two arenas, a background thread purging freed pages after 1 s) are compiled in
/// from `.cargo/config.toml`, which has the figures for them.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Whatever this binary creates is its owner's only: the store's files (which sled makes
    // and remakes itself, with the umask's mode) hold its hashing key and every key's hash,
    // and a directory made beforehand with mode 0755 would otherwise leave them readable
    // by every local user; backups hold the same.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| latchkey_daemon::usage_error::exit(e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.global.given = WhereGiven::of(&matches);
    if !matches!(cli.command, Command::Serve(_)) {
        // Rust ignores SIGPIPE, so `println!` into a closed pipe panics. The daemon keeps
        // ignoring it: a write to a closed socket must be an error, never its death.
        sigpipe::reset();
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", latchkey_daemon::output::error_line(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&cli.global)?;
    let serving = matches!(cli.command, Command::Serve(_));
    init_tracing(
        settings.log.as_deref(),
        if serving {
            // PostgreSQL's NOTICEs (e.g. "relation … already exists, skipping" from a
            // migration that found the schema in place) are the database's chatter.
            "info,tokio_postgres=warn"
        } else {
            // sled logs a failed write (a full disk) as several ERRORs: the commands'
            // one-line error already says it (and rustls-platform-verifier is `CAPPED`).
            "warn,sled=off"
        },
        settings.log_json,
    )?;
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(start::serve(&settings, &args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => {
            init::run(
                &settings.store_location(),
                &settings.init_prefix(&args)?,
                settings.engine(&args.engine)?,
                settings.json,
                args.admin_key_file.as_deref(),
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
        Command::Migrate => migrate::run(&settings),
        Command::Restore(args) => {
            backup::restore(&settings, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan(args) => scan::run(&args.paths, settings.json),
        Command::Health => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(health::run(&settings))
        }
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

/// The directives added to every filter, whatever it asks: the PostgreSQL driver's debug
/// records carry each statement's parameters (key hashes, the store's hash key), and the
/// embedded engines' debug and trace records whole write batches (the same).
const CAPPED: [(&str, &str); 3] = [
    ("tokio_postgres", "warn"),
    ("sled", "info"),
    ("redb", "info"),
];

/// Whether a record passes whatever the filter asks: not rustls-platform-verifier's ERROR
/// for each certificate it refuses, which is unthrottled (a database whose certificate
/// stopped verifying had every request, `/healthz` without a key included, add one: TLS
/// hunt M1, 212 lines for 200 requests), while the store's own WARN says the same cause
/// once a second. Its WARNs (a root certificate that did not load: a mistyped
/// `SSL_CERT_FILE`) pass.
fn not_flooding(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::ERROR
        && meta.target().starts_with("rustls_platform_verifier"))
}

/// `text` as a log filter, its directives for a [`CAPPED`] crate (or a module of it, which
/// would be more specific than the cap) replaced by the cap.
fn log_filter(text: &str) -> anyhow::Result<EnvFilter> {
    // The error's own text, once: its source repeats it.
    let filter = EnvFilter::try_new(text).map_err(|e| {
        anyhow::anyhow!(
            "invalid log filter {text:?} (from LATCHKEY_LOG, RUST_LOG or the file's `log`): {e}"
        )
    })?;
    let capped = |directive: &str| {
        let target = directive.trim().split(['=', '[']).next().unwrap_or("");
        CAPPED.iter().any(|(name, _)| {
            target == *name
                || target
                    .strip_prefix(name)
                    .is_some_and(|m| m.starts_with("::"))
        })
    };
    let kept: Vec<&str> = text.split(',').filter(|d| !capped(d)).collect();
    let mut filter = if kept.len() == text.split(',').count() {
        filter
    } else {
        EnvFilter::try_new(kept.join(","))?
    };
    for (name, cap) in CAPPED {
        // A cap lowers, never raises: `warn` keeps sled at warn, `sled=off` turns it off.
        let cap: LevelFilter = cap.parse()?;
        let level = asked_level(text, name).map_or(cap, |asked| asked.min(cap));
        filter = filter.add_directive(format!("{name}={level}").parse()?);
    }
    Ok(filter)
}

/// The level `text` asks for the crate `name`: its own directive's, else the bare level's.
fn asked_level(text: &str, name: &str) -> Option<LevelFilter> {
    let directives = text.split(',').map(str::trim);
    let own = directives.clone().find_map(|d| {
        let (target, level) = d.split_once('=')?;
        (target == name).then(|| level.parse().ok()).flatten()
    });
    own.or_else(|| directives.filter_map(|d| d.parse().ok()).next_back())
}

/// Logs go to stderr as text or JSON lines, filtered by `LATCHKEY_LOG`, else `RUST_LOG`,
/// else the config file, else `default`. A filter that does not parse is an error, as an
/// unknown setting is: a typo must not silently log something else.
fn init_tracing(from_file: Option<&str>, default: &str, json: bool) -> anyhow::Result<()> {
    let filter = std::env::var("LATCHKEY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .or_else(|| from_file.map(str::to_owned))
        .unwrap_or_else(|| default.to_owned());
    let filter = log_filter(&filter)?;
    // A log line that cannot be written (stderr on a full disk) is lost, and the request
    // is answered all the same: by default the subscriber reports its own failed writes
    // with `eprintln!`, which panics when stderr fails, and the request's task with it.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let quiet = tracing_subscriber::filter::filter_fn(not_flooding);
    if json {
        logs.json().finish().with(quiet).try_init()?;
    } else {
        logs.with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(quiet)
            .try_init()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whatever the filter asks, the PostgreSQL driver logs no debug record (they carry the
    /// statements' parameters); other targets keep what was asked.
    #[test]
    fn the_database_driver_never_logs_its_parameters() {
        for text in [
            "trace",
            "debug,tokio_postgres=trace",
            "tokio_postgres::query=debug",
        ] {
            let subscriber = tracing_subscriber::registry().with(log_filter(text).unwrap());
            tracing::subscriber::with_default(subscriber, || {
                assert!(
                    !tracing::enabled!(target: "tokio_postgres::query", Level::DEBUG),
                    "{text}"
                );
                assert!(
                    !tracing::enabled!(target: "tokio_postgres::query", Level::INFO),
                    "{text}"
                );
                assert!(
                    tracing::enabled!(target: "tokio_postgres", Level::WARN),
                    "{text}"
                );
            });
        }
        let subscriber = tracing_subscriber::registry().with(log_filter("debug").unwrap());
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "latchkey", Level::DEBUG));
        });
    }

    /// Nor do the embedded engines log below info (their records carry write batches),
    /// while a crate whose name merely starts like theirs keeps what was asked.
    #[test]
    fn the_embedded_engines_never_log_their_batches() {
        for text in ["trace", "sled=trace", "sled::pagecache=trace,redb=debug"] {
            let subscriber = tracing_subscriber::registry().with(log_filter(text).unwrap());
            tracing::subscriber::with_default(subscriber, || {
                assert!(!tracing::enabled!(target: "sled", Level::DEBUG), "{text}");
                assert!(
                    !tracing::enabled!(target: "sled::pagecache", Level::DEBUG),
                    "{text}"
                );
                assert!(
                    !tracing::enabled!(target: "redb::tree_store", Level::DEBUG),
                    "{text}"
                );
                assert!(
                    tracing::enabled!(target: "sled::pagecache", Level::INFO),
                    "{text}"
                );
            });
        }
        let subscriber = tracing_subscriber::registry().with(log_filter("sledge=trace").unwrap());
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "sledge", Level::TRACE));
        });
    }

    /// A cap only lowers: a filter asking less of a capped crate (the commands' `warn`, or
    /// `sled=off`, which keeps sled's own ERROR lines about a full disk out of a command's
    /// one-line error) gets no more.
    #[test]
    fn a_cap_never_raises_what_was_asked() {
        let enabled = |text: &str| {
            let subscriber = tracing_subscriber::registry().with(log_filter(text).unwrap());
            tracing::subscriber::with_default(subscriber, || {
                [
                    tracing::enabled!(target: "sled::tree", Level::ERROR),
                    tracing::enabled!(target: "sled::tree", Level::WARN),
                    tracing::enabled!(target: "sled::tree", Level::INFO),
                ]
            })
        };
        assert_eq!(enabled("warn"), [true, true, false]);
        assert_eq!(enabled("warn,sled=off"), [false, false, false]);
        assert_eq!(enabled("info,sled=error"), [true, false, false]);
        assert_eq!(enabled("info"), [true, true, true]);
    }

    /// The certificate verifier's own ERROR per refused certificate is never written,
    /// whatever the filter (the store's throttled WARN says the cause); its WARN about a
    /// root certificate that did not load is.
    #[test]
    fn the_certificate_verifier_never_floods_the_log() {
        for text in ["info", "trace", "warn,rustls_platform_verifier=trace"] {
            let subscriber = tracing_subscriber::registry()
                .with(log_filter(text).unwrap())
                .with(tracing_subscriber::filter::filter_fn(not_flooding));
            tracing::subscriber::with_default(subscriber, || {
                assert!(
                    !tracing::enabled!(
                        target: "rustls_platform_verifier::verification::others",
                        Level::ERROR
                    ),
                    "{text}"
                );
                assert!(
                    tracing::enabled!(
                        target: "rustls_platform_verifier::verification::others",
                        Level::WARN
                    ),
                    "{text}"
                );
                assert!(
                    tracing::enabled!(target: "latchkey_core", Level::ERROR),
                    "{text}"
                );
            });
        }
    }
}
