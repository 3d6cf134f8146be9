//! Settings: flags > environment variables > the `--config` TOML file > defaults.
//!
//! clap resolves flags and environment variables (each argument names its variable); this
//! module fills what is still unset from the file, then from the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use latchkey_core::key::Redacted;
use latchkey_core::{Engine, Location, StoreConfig};
use serde::Deserialize;

use crate::cli::{EngineArg, Given, GlobalArgs, InitArgs, ServeArgs, WhereGiven};
use crate::duration::parse_duration;
use crate::engine;

/// Where commands send requests by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";
/// Where `serve` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// The store `serve` and `init` use by default.
pub const DEFAULT_DB: &str = "./latchkey-data";
/// The key prefix of a new store.
pub const DEFAULT_PREFIX: &str = "lk";
/// How long a request may take in the daemon.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may take to deliver a request's headers (from when it opens, or
/// from the previous response on a kept-alive connection).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `cache_mib`, sled's page cache in MiB (64 GiB).
pub const MAX_CACHE_MIB: u64 = 65_536;

/// What `latchkey default-config` prints: every setting, commented out, at its default.
pub const DEFAULT_CONFIG: &str = r#"# latchkey configuration. Use it with `latchkey --config PATH` or LATCHKEY_CONFIG=PATH.
# Every setting is optional. Flags override environment variables, which override this file.

# Where management commands send their requests (LATCHKEY_URL, --url).
# url = "http://127.0.0.1:7878"

# The key commands authenticate with (LATCHKEY_ADMIN_KEY, --admin-key). Prefer the
# environment variable; if you do write a key here, make the file readable by you only.
# admin_key = "lk_live_..."

# The store (LATCHKEY_DB, --db): a directory, or a PostgreSQL URL such as
# "postgres://latchkey:PASSWORD@db.internal/latchkey?sslmode=require". `serve`, `init` and
# `migrate` use it as their store. When it is set, management commands work on the store
# directly instead of through the daemon (on a directory, the daemon must not be running).
# db = "./latchkey-data"

# Where `latchkey serve` listens (LATCHKEY_LISTEN, --listen). Without TLS it must be a
# loopback address (unless --insecure-http, for a TLS-terminating proxy in front).
# listen = "127.0.0.1:7878"

# HTTPS for `latchkey serve`: a PEM certificate chain and its private key
# (LATCHKEY_TLS_CERT / --tls-cert, LATCHKEY_TLS_KEY / --tls-key). Set both or neither.
# tls_cert = "/etc/latchkey/cert.pem"
# tls_key = "/etc/latchkey/key.pem"

# A private CA (PEM) that commands trust beside the system's roots for an https:// url
# (LATCHKEY_CA_CERT, --ca-cert).
# ca_cert = "/etc/latchkey/ca.pem"

# Serve /metrics on this address only, not on `listen` (--metrics-listen,
# LATCHKEY_METRICS_LISTEN).
# metrics_listen = "127.0.0.1:9187"

# The key prefix of a store created by `init` or by `serve` on an empty path (--prefix,
# LATCHKEY_PREFIX): 2 to 8 characters of [a-z0-9].
# prefix = "lk"

# The embedded engine of a store created by `init`, `restore`, or `serve` on an empty
# directory (--engine, LATCHKEY_ENGINE): "sled" or "redb", whose memory stays bounded at a
# million keys and whose writes are slower (README, *Storage*). An existing store opens
# with its own engine, and naming the other one is an error; so is naming one with a
# PostgreSQL db.
# engine = "sled"

# How long the daemon lets a request run before answering 503 request_timeout
# (--request-timeout, LATCHKEY_REQUEST_TIMEOUT).
# request_timeout = "30s"

# How long a connection may take to send a request's headers, from when it opens or from
# the previous response; slow or idle connections are closed past it
# (--header-read-timeout, LATCHKEY_HEADER_READ_TIMEOUT).
# header_read_timeout = "10s"

# The embedded store's cache in MiB, 1 to 65536 (--cache-mib, LATCHKEY_CACHE_MIB): sled's
# page cache, which sits in memory at two to four times this, or redb's. Less saves memory,
# more speeds up reads of keys the verify cache does not hold.
# cache_mib = 24

# The log filter, in tracing's EnvFilter syntax (LATCHKEY_LOG). Logs go to stderr.
# Default: "info" for `serve`, "warn" for other commands.
# log = "info,tower_http=debug"

# The log format: "text" or "json", one object a line (LATCHKEY_LOG_FORMAT, --log-format).
# log_format = "text"
"#;

/// The configuration file. Unknown keys are an error, so a typo does not go unnoticed.
/// Its `Debug` shows the admin key's display prefix only.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`DEFAULT_CONFIG`].
    pub url: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub admin_key: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub db: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub listen: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub prefix: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub request_timeout: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub header_read_timeout: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub cache_mib: Option<u64>,
    /// See [`DEFAULT_CONFIG`].
    pub log: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub log_format: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub tls_cert: Option<PathBuf>,
    /// See [`DEFAULT_CONFIG`].
    pub tls_key: Option<PathBuf>,
    /// See [`DEFAULT_CONFIG`].
    pub ca_cert: Option<PathBuf>,
    /// See [`DEFAULT_CONFIG`].
    pub metrics_listen: Option<String>,
    /// See [`DEFAULT_CONFIG`].
    pub engine: Option<String>,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("url", &self.url)
            .field("admin_key", &self.admin_key.as_deref().map(Redacted))
            // A text that is no location (a connection string) is not shown: it may hold
            // a password.
            .field("db", &self.db.as_deref().map(str::parse::<Location>))
            .field("listen", &self.listen)
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("cache_mib", &self.cache_mib)
            .field("log", &self.log)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl FileConfig {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}{}", line_of(&text, e.span()), e.message()))
            .with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// `line N: ` for where a parse error is, so that one line of error leads to the setting;
/// nothing when the error has no place (a missing field is about the whole file).
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            format!("line {}: ", before.matches('\n').count() + 1)
        }
        None => String::new(),
    }
}

/// The settings shared by every command, resolved.
#[derive(Clone)]
pub struct Settings {
    /// The daemon's base URL.
    pub url: String,
    /// The key commands authenticate with.
    pub admin_key: Option<String>,
    /// The store, when set by flag, environment or file.
    pub db: Option<Location>,
    /// `--json`.
    pub json: bool,
    /// The log filter from the file, if any (`LATCHKEY_LOG` and `RUST_LOG` win over it).
    pub log: Option<String>,
    /// Logs as JSON lines rather than text.
    pub log_json: bool,
    /// A private CA for an `https://` URL.
    pub ca_cert: Option<PathBuf>,
    given: WhereGiven,
    file: FileConfigRest,
}

/// The parts of the file that only some commands read.
#[derive(Clone, Default)]
struct FileConfigRest {
    /// The config file these came from, to name it in an error about one of them.
    path: Option<PathBuf>,
    listen: Option<String>,
    prefix: Option<String>,
    request_timeout: Option<String>,
    header_read_timeout: Option<String>,
    cache_mib: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics_listen: Option<String>,
    engine: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("admin_key", &self.admin_key.as_deref().map(Redacted))
            .field("db", &self.db)
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Resolves the global flags against the config file (when one is named) and defaults.
    pub fn resolve(args: &GlobalArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let in_file = args.log_format.is_none() && file.log_format.is_some();
        let log_format = args.log_format.clone().or(file.log_format);
        let log_json = match log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                let error = anyhow::anyhow!("invalid log_format {other:?}: expected text or json");
                return Err(named_file(args.config.as_deref(), in_file, error));
            }
        };
        if args.url.is_none()
            && let Some(url) = &file.url
        {
            crate::transport::check_url("url", url)
                .map_err(|e| named_file(args.config.as_deref(), true, e))?;
        }
        Ok(Settings {
            url: args
                .url
                .clone()
                .or(file.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
            admin_key: args
                .admin_key
                .clone()
                .or(file.admin_key)
                .map(|key| key.trim().to_owned()),
            db: match (&args.db, &file.db) {
                (Some(db), _) => Some(db.parse::<Location>().context("--db (or LATCHKEY_DB)")?),
                (None, Some(db)) => Some(db.parse().context("the config file's db")?),
                (None, None) => None,
            },
            json: args.json,
            log: file.log,
            log_json,
            ca_cert: args.ca_cert.clone().or(file.ca_cert),
            given: args.given,
            file: FileConfigRest {
                path: args.config.clone(),
                listen: file.listen,
                prefix: file.prefix,
                request_timeout: file.request_timeout,
                header_read_timeout: file.header_read_timeout,
                cache_mib: file.cache_mib,
                tls_cert: file.tls_cert,
                tls_key: file.tls_key,
                metrics_listen: file.metrics_listen,
                engine: file.engine,
            },
        })
    }
}

/// The admin key to send (`settings.admin_key`, trimmed of the line end of the file or
/// mounted secret it was read from). One with a character inside that no key has (a line
/// break, a space, a control character) is refused here, by name, when a command is about
/// to send it: the HTTP client would refuse it as a header value with a "builder error".
/// Commands that send none (`serve`, `scan`, `health`) never look at it.
pub fn admin_key_to_send(settings: &Settings) -> anyhow::Result<Option<String>> {
    let Some(key) = &settings.admin_key else {
        return Ok(None);
    };
    anyhow::ensure!(
        key.bytes().all(|b| b.is_ascii_graphic()),
        "the admin key holds a character no key has (a line break, a space or a control \
         character inside it): check --admin-key, LATCHKEY_ADMIN_KEY or the config file's \
         admin_key"
    );
    Ok(Some(key.clone()))
}

impl Settings {
    /// Where a management command (or `backup`) works: on the store `db` names (`Some`),
    /// or through the daemon at `url` (`None`). A flag beats the environment, which beats
    /// the file, here too: `--url` given with `LATCHKEY_DB` (or `db` in the file) set goes
    /// through the daemon, and so does `LATCHKEY_URL` with `db` in the file; given alike
    /// (both in the environment, or both in the file), `db` wins; `--url` and `--db` both on
    /// the command line are refused.
    pub fn management_store(&self) -> anyhow::Result<Option<&Location>> {
        match (self.given.url, self.given.db) {
            (Given::CommandLine, Given::CommandLine) => anyhow::bail!(
                "--url and --db both say where to work: give one (--url: through the daemon; \
                 --db: on the store directly)"
            ),
            (url, db) if url > db => Ok(None),
            _ => Ok(self.db.as_ref()),
        }
    }

    /// The store `serve`, `init` and `migrate` use.
    pub fn store_location(&self) -> Location {
        self.db
            .clone()
            .unwrap_or_else(|| Location::from(PathBuf::from(DEFAULT_DB)))
    }

    /// The key prefix for a new store; one that is no prefix is refused naming where it was
    /// given (the config file, or the flag).
    pub fn prefix(&self, flag: Option<&str>) -> anyhow::Result<String> {
        let (text, in_file) = pick(flag, self.file.prefix.as_deref());
        let text = text.unwrap_or(DEFAULT_PREFIX);
        latchkey_core::Prefix::new(text).map_err(|e| {
            self.named(
                in_file,
                "prefix",
                anyhow::anyhow!("invalid prefix {text:?}: {e}"),
            )
        })?;
        Ok(text.to_owned())
    }

    /// The prefix `--prefix` (or its variable) or the file's `prefix` asks for, if either
    /// does: it applies to a store being created only.
    pub fn asked_prefix<'a>(&'a self, flag: Option<&'a str>) -> Option<&'a str> {
        pick(flag, self.file.prefix.as_deref()).0
    }

    /// `init`'s settings.
    pub fn init_prefix(&self, args: &InitArgs) -> anyhow::Result<String> {
        self.prefix(args.prefix.as_deref())
    }

    /// The engine a store created by this command gets: `--engine` (or `LATCHKEY_ENGINE`),
    /// else the file's `engine`, checked against the store (see [`engine::for_new_store`]).
    pub fn engine(&self, arg: &EngineArg) -> anyhow::Result<Engine> {
        let asked = match arg.engine {
            Some(engine) => Some(engine),
            None => self
                .file
                .engine
                .as_deref()
                .map(str::parse::<Engine>)
                .transpose()
                .map_err(|e| self.file.named(true, e))?,
        };
        engine::for_new_store(&self.store_location(), asked)
    }

    /// Where `serve` listens.
    pub fn listen(&self, args: &ServeArgs) -> anyhow::Result<SocketAddr> {
        let (text, in_file) = pick(args.listen.as_deref(), self.file.listen.as_deref());
        socket_addr("listen", text.unwrap_or(DEFAULT_LISTEN))
            .map_err(|e| self.named(in_file, "listen", e))
    }

    /// Where `serve` serves `/metrics` alone, if apart from the API.
    pub fn metrics_listen(&self, args: &ServeArgs) -> anyhow::Result<Option<SocketAddr>> {
        // `--metrics-auth` (metrics on the main listener, behind a key) is a flag, and a flag
        // beats the file: the file's own metrics address is then not used. Given beside
        // `--metrics-listen`, on the command line or in the environment, it is refused.
        if args.metrics_auth {
            anyhow::ensure!(
                args.metrics_listen.is_none(),
                "--metrics-listen (LATCHKEY_METRICS_LISTEN) and --metrics-auth \
                 (LATCHKEY_METRICS_AUTH) cannot be used together: metrics apart without a key, \
                 or on the API's listener behind one"
            );
            return Ok(None);
        }
        let (text, in_file) = pick(
            args.metrics_listen.as_deref(),
            self.file.metrics_listen.as_deref(),
        );
        text.map(|text| socket_addr("metrics listen", text))
            .transpose()
            .map_err(|e| self.named(in_file, "metrics-listen", e))
    }

    /// The certificate chain and key `serve` uses for HTTPS, when set (both or neither).
    pub fn tls_files(&self, args: &ServeArgs) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        let cert = args.tls_cert.clone().or_else(|| self.file.tls_cert.clone());
        let key = args.tls_key.clone().or_else(|| self.file.tls_key.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
        }
    }

    /// How long a request may take in the daemon.
    pub fn request_timeout(&self, args: &ServeArgs) -> anyhow::Result<Duration> {
        let file = self.file.request_timeout.as_deref();
        let given = args.request_timeout.as_deref();
        self.timeout("request-timeout", given, file, DEFAULT_REQUEST_TIMEOUT)
    }

    /// The store settings `serve` opens an embedded store with: the cache from
    /// `--cache-mib` or the file's `cache_mib`, and a new store's [`engine`](Self::engine).
    pub fn store_config(&self, args: &ServeArgs) -> anyhow::Result<StoreConfig> {
        let config = StoreConfig::default().engine(self.engine(&args.engine)?);
        match args.cache_mib.or(self.file.cache_mib) {
            None => Ok(config),
            Some(mib @ 1..=MAX_CACHE_MIB) => Ok(config.cache_capacity_bytes(mib << 20)),
            Some(mib) => {
                let error =
                    anyhow::anyhow!("invalid cache_mib {mib}: expected 1 to {MAX_CACHE_MIB} (MiB)");
                Err(self.file.named(args.cache_mib.is_none(), error))
            }
        }
    }

    /// How long a connection may take to send a request's headers.
    pub fn header_read_timeout(&self, args: &ServeArgs) -> anyhow::Result<Duration> {
        let file = self.file.header_read_timeout.as_deref();
        let given = args.header_read_timeout.as_deref();
        self.timeout(
            "header-read-timeout",
            given,
            file,
            DEFAULT_HEADER_READ_TIMEOUT,
        )
    }

    /// The timeout set by the flag `--long` (or its environment variable), else by the
    /// file, else `default`; an error names it as "the request timeout" for
    /// `request-timeout`, and where its value came from.
    fn timeout(
        &self,
        long: &str,
        given: Option<&str>,
        in_file: Option<&str>,
        default: Duration,
    ) -> anyhow::Result<Duration> {
        let (text, in_file) = pick(given, in_file);
        positive_duration(&long.replace('-', " "), text, default)
            .map_err(|e| self.named(in_file, long, e))
    }

    /// `error` about the setting of the flag `--long`, naming where its value came from
    /// when that was not the command line: the config file, or the flag's environment
    /// variable (as the parser's own errors do).
    fn named(&self, in_file: bool, long: &str, error: anyhow::Error) -> anyhow::Error {
        if in_file {
            return self.file.named(true, error);
        }
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match crate::usage_error::from_environment(&argv, long) {
            Some(variable) => error.context(format!("in the environment variable {variable}")),
            None => error,
        }
    }
}

/// A setting given by flag or environment, else from the file: its text, and whether it
/// came from the file.
fn pick<'a>(given: Option<&'a str>, in_file: Option<&'a str>) -> (Option<&'a str>, bool) {
    match given {
        Some(text) => (Some(text), false),
        None => (in_file, in_file.is_some()),
    }
}

/// `error`, about a value read from the config file at `path` when `in_file`: then naming
/// the file, so that the operator knows which of flag, environment and file to mend.
fn named_file(path: Option<&Path>, in_file: bool, error: anyhow::Error) -> anyhow::Error {
    match path {
        Some(path) if in_file => error.context(format!("in the config file {}", path.display())),
        _ => error,
    }
}

impl FileConfigRest {
    /// [`named_file`] for this file.
    fn named(&self, in_file: bool, error: impl Into<anyhow::Error>) -> anyhow::Error {
        named_file(self.path.as_deref(), in_file, error.into())
    }
}

fn socket_addr(what: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("invalid {what} address {text:?}: expected e.g. 127.0.0.1:7878"))
}

/// The longest request or header-read timeout: hyper adds a timeout to `Instant::now()` on
/// every connection, and a sum past `Instant`'s range panics, so a huge value would fail
/// every connection instead of the start.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A duration setting above zero and at most a day, or `default` when unset.
fn positive_duration(
    what: &str,
    text: Option<&str>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match text {
        Some(text) => {
            let duration = parse_duration(text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("the {what}"))?;
            anyhow::ensure!(!duration.is_zero(), "the {what} must be above 0");
            anyhow::ensure!(
                duration <= MAX_TIMEOUT,
                "the {what} must be at most a day (24h), not {text:?}"
            );
            Ok(duration)
        }
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses_and_every_setting_is_documented() {
        let uncommented: String = DEFAULT_CONFIG
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let file: FileConfig = toml::from_str(&uncommented).unwrap();
        assert_eq!(file.url.as_deref(), Some(DEFAULT_URL));
        assert_eq!(file.listen.as_deref(), Some(DEFAULT_LISTEN));
        assert_eq!(file.prefix.as_deref(), Some(DEFAULT_PREFIX));
        assert_eq!(file.request_timeout.as_deref(), Some("30s"));
        assert_eq!(file.header_read_timeout.as_deref(), Some("10s"));
        assert!(file.admin_key.is_some() && file.db.is_some() && file.log.is_some());
        assert_eq!(file.log_format.as_deref(), Some("text"));
        assert!(file.tls_cert.is_some() && file.tls_key.is_some() && file.ca_cert.is_some());
        assert!(file.metrics_listen.is_some());
        assert_eq!(file.cache_mib, Some(24));
        assert_eq!(
            file.engine.as_deref(),
            Some(Engine::default().name()),
            "the documented default engine is the default"
        );
    }

    #[test]
    fn debug_never_shows_the_admin_key_or_the_database_password() {
        use latchkey_core::{ApiKey, Env, Prefix};
        let key = ApiKey::generate(&Prefix::default(), Env::Live);
        let password = "pw-never-shown";
        let file: FileConfig = toml::from_str(&format!(
            "admin_key = \"{}\"\ndb = \"postgres://latchkey:{password}@db.internal/keys\"",
            key.expose()
        ))
        .unwrap();
        let settings = Settings {
            url: DEFAULT_URL.to_owned(),
            admin_key: file.admin_key.clone(),
            db: file.db.as_deref().map(Location::parse),
            json: false,
            log: None,
            log_json: false,
            ca_cert: None,
            given: WhereGiven::default(),
            file: FileConfigRest::default(),
        };
        for shown in crate::testing::debug_texts(&[&file, &settings]) {
            assert!(!shown.contains(key.secret()), "{shown}");
            assert!(shown.contains(key.display_prefix()), "{shown}");
            assert!(!shown.contains(password), "{shown}");
            assert!(shown.contains("db.internal"), "{shown}");
        }
    }

    /// Where a management command works: a `--url`/`LATCHKEY_URL` beats a `db` given more
    /// weakly (the file's), and a `db` given as strongly or more wins.
    #[test]
    fn the_stronger_of_url_and_db_says_where_to_work() {
        let settings = |url, db| Settings {
            url: DEFAULT_URL.to_owned(),
            admin_key: None,
            db: Some(Location::parse("/var/lib/latchkey")),
            json: false,
            log: None,
            log_json: false,
            ca_cert: None,
            given: WhereGiven { url, db },
            file: FileConfigRest::default(),
        };
        let through_daemon = |url, db| settings(url, db).management_store().unwrap().is_none();
        assert!(through_daemon(Given::Environment, Given::FileOrNone));
        assert!(through_daemon(Given::CommandLine, Given::Environment));
        assert!(!through_daemon(Given::FileOrNone, Given::FileOrNone));
        assert!(!through_daemon(Given::Environment, Given::Environment));
        assert!(!through_daemon(Given::Environment, Given::CommandLine));
        let both = settings(Given::CommandLine, Given::CommandLine);
        assert!(both.management_store().is_err());
    }

    #[test]
    fn a_config_error_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latchkey.toml");
        for (text, line) in [
            ("listen = \"127.0.0.1:1\"\n\nlisen = \"x\"\n", "line 3: "),
            ("cache_mib = \"big\"\n", "line 1: "),
            ("url = \"a\"\nprefix = \n", "line 2: "),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = format!("{:#}", FileConfig::load(&path).unwrap_err());
            assert!(error.contains(line), "{text:?}: {error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    /// `latchkey [--config FILE] serve ARGS…`, parsed, with its settings resolved; `file`,
    /// when given, is written to a config file first.
    fn serve(file: Option<&str>, args: &[&str]) -> (ServeArgs, Settings, tempfile::TempDir) {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("latchkey.toml");
        let mut argv = vec!["latchkey".to_owned()];
        if let Some(text) = file {
            std::fs::write(&config, text).unwrap();
            argv.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
        }
        argv.push("serve".to_owned());
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        let settings = Settings::resolve(&cli.global).unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        (args, settings, dir)
    }

    #[test]
    fn the_tls_files_and_the_header_read_timeout_may_come_from_the_file() {
        // A certificate by flag, its key in the file: clap must not refuse the flag alone.
        let file = "tls_key = \"/etc/k.pem\"\nheader_read_timeout = \"3s\"\n";
        let (args, settings, _dir) = serve(Some(file), &["--tls-cert", "/etc/c.pem"]);
        let (cert, key) = settings.tls_files(&args).unwrap().expect("both");
        assert_eq!(
            (cert.to_str(), key.to_str()),
            (Some("/etc/c.pem"), Some("/etc/k.pem"))
        );
        assert_eq!(
            settings.header_read_timeout(&args).unwrap(),
            Duration::from_secs(3)
        );
        // Only one of the two, anywhere: refused in one line.
        let (args, settings, _dir) = serve(None, &["--tls-cert", "c.pem"]);
        let error = settings.tls_files(&args).unwrap_err();
        assert!(error.to_string().contains("--tls-key"), "{error}");
    }

    /// `serve --metrics-auth` beats the file's `metrics_listen`: no unkeyed metrics port.
    #[test]
    fn the_metrics_auth_flag_beats_the_file_s_metrics_address() {
        let file = "metrics_listen = \"127.0.0.1:9187\"\n";
        for (flag, expected) in [(&[][..], Some(9187)), (&["--metrics-auth"][..], None)] {
            let (args, settings, _dir) = serve(Some(file), flag);
            let port = settings.metrics_listen(&args).unwrap().map(|a| a.port());
            assert_eq!(port, expected, "{flag:?}");
        }
        // Both given (by flag or variable: clap does not tell them apart): refused.
        let both = ["--metrics-auth", "--metrics-listen", "127.0.0.1:9188"];
        let (args, settings, _dir) = serve(None, &both);
        let error = settings.metrics_listen(&args).unwrap_err().to_string();
        assert!(error.contains("LATCHKEY_METRICS_AUTH"), "{error}");
    }

    /// A bad value from the config file names the file; the same value given by flag does
    /// not (the flag is what to mend then).
    #[test]
    fn a_bad_value_from_the_file_names_the_file() {
        let file = "listen = \"x\"\nrequest_timeout = \"0s\"\ncache_mib = 0\n";
        let (args, settings, dir) = serve(Some(file), &[]);
        let named = format!(
            "in the config file {}",
            dir.path().join("latchkey.toml").display()
        );
        let errors = [
            settings.listen(&args).unwrap_err(),
            settings.request_timeout(&args).unwrap_err(),
            settings.store_config(&args).unwrap_err(),
        ];
        for error in errors {
            let text = format!("{error:#}");
            assert!(text.contains(&named), "{text}");
        }
        // (`--cache-mib` out of range is refused by the parser itself.)
        let flags = ["--listen", "y", "--request-timeout", "0s"];
        let (args, settings, _dir) = serve(Some(file), &flags);
        let errors = [
            settings.listen(&args).unwrap_err(),
            settings.request_timeout(&args).unwrap_err(),
        ];
        for error in errors {
            let text = format!("{error:#}");
            assert!(!text.contains("config file"), "{text}");
        }
    }

    #[test]
    fn unknown_settings_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }
}
