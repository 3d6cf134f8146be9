//! The command line, as clap derive types. Every command and argument carries its help text.

use std::path::PathBuf;

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use latchkey_core::Engine;
use latchkey_core::key::Redacted;

use crate::config::MAX_CACHE_MIB;

mod reference;

pub use reference::PrincipalRef;

/// API keys done right: run the latchkey daemon and manage groups, users and keys.
///
/// Commands talk to the daemon at --url with --admin-key, or work on a store directly with
/// --db when no daemon holds it. Flags override environment variables, which override the
/// --config file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command's name. Its `Debug` shows the
/// admin key's display prefix only.
#[derive(Args)]
pub struct GlobalArgs {
    /// The daemon's management API [default: http://127.0.0.1:7878]
    #[arg(
        long,
        env = "LATCHKEY_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// A key holding the latchkey:* permissions the command needs (prefer the environment
    /// variable: command lines are visible to other local users)
    #[arg(
        long,
        env = "LATCHKEY_ADMIN_KEY",
        hide_env_values = true,
        global = true,
        value_name = "KEY"
    )]
    pub admin_key: Option<String>,
    /// The store: a directory (the embedded store) or a PostgreSQL URL
    /// (`postgres://USER:PASSWORD@HOST/DB?sslmode=require`; prefer the environment variable
    /// for a URL with a password). Management commands then work on it directly, as the
    /// operator, instead of through the daemon; `serve`, `init` and `migrate` use it as their
    /// store [default for those: ./latchkey-data]
    #[arg(
        long,
        env = "LATCHKEY_DB",
        hide_env_values = true,
        global = true,
        value_name = "PATH|URL"
    )]
    // Read as text and parsed by `Settings::load`: clap's own error for a value it cannot
    // parse repeats the value, and a mistyped database URL holds a password.
    pub db: Option<String>,
    /// Print one JSON document on stdout instead of human-readable text
    #[arg(long, global = true)]
    pub json: bool,
    /// Read settings from this TOML file (see `latchkey default-config`)
    #[arg(long, env = "LATCHKEY_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Trust this CA certificate (PEM) beside the system's roots for an https:// --url
    #[arg(long, env = "LATCHKEY_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The log format on stderr: `text` for people, `json` (one object a line) for log
    /// shippers. Filter with RUST_LOG or LATCHKEY_LOG [default: text]
    #[arg(
        long,
        env = "LATCHKEY_LOG_FORMAT",
        global = true,
        value_name = "FORMAT",
        value_parser = ["text", "json"]
    )]
    pub log_format: Option<String>,
    /// Which of `--url` and `--db` were given on the command line (not by the environment
    /// or the file): see `Settings::management_store`.
    #[arg(skip)]
    pub given: WhereGiven,
}

/// Where the flags that say where to work came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhereGiven {
    /// `--url` (`LATCHKEY_URL`).
    pub url: Given,
    /// `--db` (`LATCHKEY_DB`).
    pub db: Given,
}

/// Where a setting came from, weakest first: a flag beats the environment, which beats the
/// file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Given {
    /// The config file, or nowhere.
    #[default]
    FileOrNone,
    /// Its environment variable.
    Environment,
    /// The command line.
    CommandLine,
}

impl WhereGiven {
    /// Read from the parsed command line.
    pub fn of(matches: &clap::ArgMatches) -> WhereGiven {
        use clap::parser::ValueSource;
        let given = |id: &str| match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Given::CommandLine,
            Some(ValueSource::EnvVariable) => Given::Environment,
            _ => Given::FileOrNone,
        };
        WhereGiven {
            url: given("url"),
            db: given("db"),
        }
    }
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("url", &self.url)
            .field("admin_key", &self.admin_key.as_deref().map(Redacted))
            .field("db", &self.db)
            .field("json", &self.json)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the management API over HTTP. Initialises the store first if there is
    /// none, printing the admin key once
    Serve(ServeArgs),
    /// Create a store with an `admin` group (`*`), an `admin` user and its key, printed once
    Init(InitArgs),
    /// Management commands (through the daemon, or on the store with --db).
    #[command(flatten)]
    Api(ApiCommand),
    /// Write a backup of the whole store to a file: through the daemon (the key needs
    /// latchkey:backup), or with --db from a store no daemon holds. Consistent: every write
    /// acknowledged before it starts, none after
    Backup(BackupArgs),
    /// Migrate a PostgreSQL store's schema forward (as `serve` does at start) and print its
    /// version; refuses a schema newer than this version knows. Stop every older daemon
    /// first (running ones go on writing the old layout), then run it alone before starting
    /// a new version of several daemons
    Migrate,
    /// Make a new store from a backup file, in the empty or new directory or the empty
    /// PostgreSQL database named by --db.
    /// The restored store is a new lineage: remote verifiers drop what they cached
    Restore(RestoreArgs),
    /// Find latchkey keys in files (checksum-verified, so no look-alikes); exit 1 when any
    /// is found, 0 when clean. Usable as a pre-commit hook
    Scan(ScanArgs),
    /// Check the daemon at --url: exit 0 printing `ok` when it answers GET /healthz (its
    /// keystore readable), 1 saying why otherwise. Needs no key: a container's HEALTHCHECK
    Health,
    /// Print a completion script for a shell
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print a commented configuration file with every setting and its default
    DefaultConfig,
}

/// `latchkey serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port, printed as `listening on ADDR`
    /// (`{"listening":"ADDR"}` with --json) [default: 127.0.0.1:7878]
    #[arg(long, env = "LATCHKEY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The key prefix, should `serve` have to initialise the store [default: lk]
    #[arg(long, env = "LATCHKEY_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// How long a request may take before it is answered 503 `request_timeout`, e.g. `30s`
    /// [default: 30s]
    #[arg(long, env = "LATCHKEY_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opens (after a TLS handshake, bounded alike) or from the previous response: slow or
    /// idle connections are closed after it [default: 10s]
    #[arg(long, env = "LATCHKEY_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// The embedded store's cache in MiB: sled's page cache (in memory at two to four times
    /// this) or redb's. Less saves memory and slows reads of keys not in the verify cache
    /// (README, *Operations notes*) [default: 24]
    #[arg(long, env = "LATCHKEY_CACHE_MIB", value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..=MAX_CACHE_MIB))]
    pub cache_mib: Option<u64>,
    /// Serve HTTPS with this certificate chain (PEM); needs a key (--tls-key, or the
    /// config file's `tls_key`)
    #[arg(long, env = "LATCHKEY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "LATCHKEY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (for a TLS-terminating proxy in front);
    /// without it, plain HTTP listens on loopback only
    #[arg(long, env = "LATCHKEY_INSECURE_HTTP", value_parser = BoolishValueParser::new())]
    pub insecure_http: bool,
    /// Serve /metrics on this address only (not on --listen), without a key
    // Not clap's `conflicts_with` --metrics-auth: clap takes a value from the environment
    // as given, and `LATCHKEY_METRICS_AUTH=false` would conflict. `Settings::metrics_listen`
    // refuses the two set together, naming their variables.
    #[arg(long, env = "LATCHKEY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Keep /metrics on --listen but behind a key holding `latchkey:metrics`
    #[arg(long, env = "LATCHKEY_METRICS_AUTH", value_parser = BoolishValueParser::new())]
    pub metrics_auth: bool,
    /// Do not serve the web console at /ui
    #[arg(long, env = "LATCHKEY_NO_UI", value_parser = BoolishValueParser::new())]
    pub no_ui: bool,
    /// Browsers reach the web console over HTTPS through a TLS-terminating proxy in front
    /// (with --insecure-http): its cookies are Secure and __Host- prefixed, and it sends
    /// Strict-Transport-Security, as when the daemon serves HTTPS itself
    #[arg(long, env = "LATCHKEY_CONSOLE_HTTPS", value_parser = BoolishValueParser::new())]
    pub console_https: bool,
    /// Should `serve` initialise the store, write its admin key to this new file (mode
    /// 0600) instead of printing it
    #[arg(long, env = "LATCHKEY_ADMIN_KEY_FILE", value_name = "FILE")]
    pub admin_key_file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArg,
}

/// `--engine` of the commands that can create a store: `init`, `serve`, `restore`.
#[derive(Debug, Args)]
pub struct EngineArg {
    /// The embedded engine of a store this creates: `sled` or `redb` (memory bounded at a
    /// million keys, slower writes: README, *Storage*). An existing store opens with its
    /// own engine, and naming the other one is an error; so is naming one for a PostgreSQL
    /// --db [default: sled]
    #[arg(long, env = "LATCHKEY_ENGINE", value_name = "ENGINE",
        value_parser = clap::builder::PossibleValuesParser::new(["sled", "redb"])
            .try_map(|name| name.parse::<Engine>()))]
    pub engine: Option<Engine>,
}

/// `latchkey init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The key prefix: 2 to 8 characters of [a-z0-9] [default: lk]
    #[arg(long, env = "LATCHKEY_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Write the admin key to this new file (mode 0600) instead of printing it
    #[arg(long, env = "LATCHKEY_ADMIN_KEY_FILE", value_name = "FILE")]
    pub admin_key_file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArg,
}

/// `latchkey backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write; it must not exist yet
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `latchkey restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file, as `latchkey backup` wrote it
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArg,
    /// Restore a backup whose audit chain does not verify, as it is (to recover the keys
    /// of a store whose trail was edited or damaged); without it such a backup restores
    /// nothing
    #[arg(long)]
    pub keep_broken_chain: bool,
}

/// `latchkey scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or directories (walked recursively, skipping `.git`); `-` reads stdin
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The commands that go through the management API.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Manage groups (roles): a name and a set of permissions
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Manage users: each key belongs to one and inherits its permissions
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read and check the audit trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check a key: exit 0 when it authenticates and holds every permission named, 1
    /// otherwise
    Verify(VerifyArgs),
}

/// `latchkey groups …`.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Create a group
    Add(GroupAdd),
    /// List groups, oldest first, one page at a time
    List(PageArgs),
    /// Show a group
    Show {
        /// The group's name or id
        #[arg(value_parser = PrincipalRef)]
        group: String,
    },
    /// Change a group; its members' keys follow at once
    Update(GroupUpdate),
    /// Delete a group; its members lose its permissions at once
    Delete {
        /// The group's name or id
        #[arg(value_parser = PrincipalRef)]
        group: String,
    },
}

/// `latchkey groups add`.
#[derive(Debug, Args)]
pub struct GroupAdd {
    /// Unique name: 1 to 64 characters of [A-Za-z0-9_.@-]
    #[arg(long)]
    pub name: String,
    /// Permissions, comma-separated, e.g. `orders:read,invoices:*`
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub permissions: Vec<String>,
}

/// `latchkey groups update`.
#[derive(Debug, Args)]
pub struct GroupUpdate {
    /// The group's name or id
    #[arg(value_parser = PrincipalRef)]
    pub group: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub permissions: PermissionChanges,
}

/// The permission flags of `groups update` and `users update` (a user's are its direct
/// permissions).
#[derive(Debug, Args)]
pub struct PermissionChanges {
    /// Replace the permissions (comma-separated; an empty value removes them all)
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub permissions: Option<Vec<String>>,
    /// Add permissions (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub add_permissions: Vec<String>,
    /// Remove permissions (comma-separated, exact text)
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub remove_permissions: Vec<String>,
}

/// `latchkey users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user
    Add(UserAdd),
    /// List users, oldest first, one page at a time (or those of --id)
    List(UserList),
    /// Show a user
    Show {
        /// The user's name or id
        #[arg(value_parser = PrincipalRef)]
        user: String,
    },
    /// Change a user; its keys follow at once
    Update(UserUpdate),
    /// Let the user's keys authenticate again
    Enable {
        /// The user's name or id
        #[arg(value_parser = PrincipalRef)]
        user: String,
    },
    /// Stop every key of the user from authenticating, reversibly
    Disable {
        /// The user's name or id
        #[arg(value_parser = PrincipalRef)]
        user: String,
    },
    /// Delete a user; none of its keys authenticates from then on (a user with many keys
    /// has their records revoked in the background)
    Delete {
        /// The user's name or id
        #[arg(value_parser = PrincipalRef)]
        user: String,
    },
    /// Revoke every key of a user, irreversibly; none authenticates from then on
    RevokeKeys {
        /// The user's name or id
        #[arg(value_parser = PrincipalRef)]
        user: String,
    },
}

/// Paging of `users list` and `groups list`.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// At most this many records (1 to 1000; default 50)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue from the `next_cursor` of a previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

impl PageArgs {
    /// The query string of the page.
    pub fn query(self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("limit", self.limit.map(|l| l.to_string())),
            ("cursor", self.cursor),
        ]
    }
}

/// `latchkey users list`.
#[derive(Debug, Args)]
pub struct UserList {
    /// The page (without --id)
    #[command(flatten)]
    pub page: PageArgs,
    /// Only this user (by id; repeat for up to 100), in one answer without pages
    #[arg(long = "id", value_name = "ID", conflicts_with_all = ["limit", "cursor"])]
    pub ids: Vec<String>,
}

impl UserList {
    /// The query string.
    pub fn query(self) -> Vec<(&'static str, Option<String>)> {
        let mut query = self.page.query();
        query.push(("ids", (!self.ids.is_empty()).then(|| self.ids.join(","))));
        query
    }
}

/// `latchkey users add`.
#[derive(Debug, Args)]
pub struct UserAdd {
    /// Unique name: 1 to 64 characters of [A-Za-z0-9_.@-]
    #[arg(long)]
    pub name: String,
    /// Groups, by name or id, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "GROUPS", value_parser = PrincipalRef)]
    pub groups: Vec<String>,
    /// Direct permissions, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub permissions: Vec<String>,
    /// Tenant, handed to services in the principal
    #[arg(long, value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Organization, handed to services in the principal
    #[arg(long, value_name = "ID")]
    pub organization_id: Option<String>,
    /// Create the user disabled: its keys do not authenticate until it is enabled
    #[arg(long)]
    pub disabled: bool,
    /// A rate limit shared by all the user's keys, such as `100/60s` or `1000/1h,hourly`
    /// (named `default` without a name); repeat for more, up to 8
    #[arg(long = "rate-limit", value_name = "LIMIT/WINDOW[,NAME]")]
    pub rate_limits: Vec<String>,
}

/// `latchkey users update`.
#[derive(Debug, Args)]
pub struct UserUpdate {
    /// The user's name or id
    #[arg(value_parser = PrincipalRef)]
    pub user: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    /// Replace the groups (names or ids, comma-separated; an empty value removes them all)
    #[arg(long, value_delimiter = ',', value_name = "GROUPS", value_parser = PrincipalRef)]
    pub groups: Option<Vec<String>>,
    /// Add groups (names or ids, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "GROUPS", value_parser = PrincipalRef)]
    pub add_groups: Vec<String>,
    /// Remove groups (names or ids, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "GROUPS", value_parser = PrincipalRef)]
    pub remove_groups: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub permissions: PermissionChanges,
    /// Set the tenant
    #[arg(long, value_name = "ID", conflicts_with = "clear_tenant_id")]
    pub tenant_id: Option<String>,
    /// Remove the tenant
    #[arg(long)]
    pub clear_tenant_id: bool,
    /// Set the organization
    #[arg(long, value_name = "ID", conflicts_with = "clear_organization_id")]
    pub organization_id: Option<String>,
    /// Remove the organization
    #[arg(long)]
    pub clear_organization_id: bool,
    /// Replace the rate limits shared by all the user's keys (`100/60s[,NAME]`); repeat
    /// for more, up to 8
    #[arg(
        long = "rate-limit",
        value_name = "LIMIT/WINDOW[,NAME]",
        conflicts_with = "clear_rate_limits"
    )]
    pub rate_limits: Vec<String>,
    /// Remove the user's rate limits
    #[arg(long)]
    pub clear_rate_limits: bool,
}

/// `latchkey keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a user and print it once
    Add(KeyAdd),
    /// Import keys issued elsewhere from a file of JSON lines, each `{"key": "<full key>"}`
    /// or `{"sha256": "<hex>", "prefix": "<display prefix>"}` with optional `name`,
    /// `expires_at`, `scopes`, `meta`. They authenticate under their old text. Refused lines
    /// are listed (number and reason) and the rest imported; exit 1 when any was refused.
    /// A failed request stops the run: it lists the lines imported and the first one not
    Import(KeyImport),
    /// List keys, oldest first unless --sort says otherwise
    List(KeyList),
    /// Show a key
    Show {
        /// The key's id, display prefix (`lk_live_…`) or public id
        key: String,
    },
    /// Change a key: name, description, meta, rate limits, credits, allowlist (`keys
    /// disable` and `keys enable` stop and restart it)
    Update(KeyUpdate),
    /// Stop a key from authenticating, reversibly
    Disable {
        /// The key's id, display prefix or public id
        key: String,
    },
    /// Let a disabled key authenticate again
    Enable {
        /// The key's id, display prefix or public id
        key: String,
    },
    /// Revoke a key for good
    Revoke {
        /// The key's id, display prefix or public id
        key: String,
    },
    /// Delete a revoked key's record
    Delete {
        /// The key's id, display prefix or public id
        key: String,
    },
    /// Replace a key with a new one (same user, scopes and name), printed once; the old key
    /// authenticates until the grace period ends (its credits, if any, move to the new key
    /// at once)
    Rotate {
        /// The key's id, display prefix or public id
        key: String,
        /// How long the old key keeps working, e.g. `24h`, `90m`, `0` for not at all
        #[arg(long, default_value = "0", value_name = "DURATION")]
        grace: String,
    },
}

/// `latchkey keys import`.
#[derive(Debug, Args)]
pub struct KeyImport {
    /// The file of JSON lines
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The user the keys will belong to (name or id)
    #[arg(long, value_parser = PrincipalRef)]
    pub user: String,
}

/// `latchkey keys add`.
#[derive(Debug, Args)]
pub struct KeyAdd {
    /// A human name, e.g. what the key is for
    #[arg(long)]
    pub name: String,
    /// The owning user, by name or id
    #[arg(long, value_parser = PrincipalRef)]
    pub user: String,
    /// Free text
    #[arg(long)]
    pub description: Option<String>,
    /// Narrow the user's permissions to these (comma-separated); unrestricted when absent
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    pub scopes: Option<Vec<String>>,
    /// When the key stops working: an RFC 3339 time, or a duration from now such as `90d`
    /// (from this machine's clock, rounded up to a whole second: the daemon stores the time
    /// it comes to)
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// The environment written into the key
    #[arg(long, value_parser = ["live", "test"])]
    pub env: Option<String>,
    /// Usage control: meta, rate limits, credits, allowlist.
    #[command(flatten)]
    pub usage: UsageFlags,
}

/// The usage control flags of `keys add` and `keys update`.
#[derive(Debug, Args)]
pub struct UsageFlags {
    /// A JSON object handed to the app in `principal.meta` (at most 4 KiB, 16 levels deep)
    #[arg(long, value_name = "JSON")]
    pub meta: Option<String>,
    /// A rate limit such as `100/60s` or `1000/1h,hourly` (named `default` without a name);
    /// repeat for more, up to 8
    #[arg(long = "rate-limit", value_name = "LIMIT/WINDOW[,NAME]")]
    pub rate_limits: Vec<String>,
    /// Credits: each request costs 1 (or its route's cost); none left answers 429
    #[arg(long, value_name = "N")]
    pub credits: Option<u64>,
    /// Refill the credits to N every day, or every month on the 1st (`N/month`) or on day D,
    /// 1 to 28 (`N/month@D`). With --credits on `keys add`; on `keys update`, alone it
    /// changes the refill and keeps the balance
    #[arg(long, value_name = "N/day|month[@D]")]
    pub refill: Option<String>,
    /// The only addresses the key may be used from (comma-separated CIDRs, or single
    /// addresses)
    #[arg(long = "allow-ip", value_delimiter = ',', value_name = "CIDR|IP")]
    pub allow_ips: Vec<String>,
}

/// `latchkey keys list`.
#[derive(Debug, Args)]
pub struct KeyList {
    /// Only this user's keys (name or id)
    #[arg(long, value_parser = PrincipalRef)]
    pub user: Option<String>,
    /// Only keys in this status
    #[arg(long, value_parser = ["active", "disabled", "revoked", "expired"])]
    pub status: Option<String>,
    /// Only keys of this environment
    #[arg(long, value_parser = ["live", "test"])]
    pub env: Option<String>,
    /// Search names, descriptions and display prefixes
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Sort by `created_at`, `name` or `last_used_at`; a leading `-` sorts descending
    #[arg(long, value_name = "FIELD", allow_hyphen_values = true, value_parser = [
        "created_at", "-created_at", "name", "-name", "last_used_at", "-last_used_at",
    ])]
    pub sort: Option<String>,
    /// At most this many keys
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue from the `next_cursor` of a previous page, given with the same filters
    /// and sort (a cursor goes on only in the list it came from)
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `latchkey keys update`.
#[derive(Debug, Args)]
pub struct KeyUpdate {
    /// The key's id, display prefix or public id
    pub key: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    /// A new description
    #[arg(long, conflicts_with = "clear_description")]
    pub description: Option<String>,
    /// Remove the description
    #[arg(long)]
    pub clear_description: bool,
    /// Usage control: meta, rate limits, credits, allowlist.
    #[command(flatten)]
    pub usage: UsageFlags,
    /// Add to the credits left
    #[arg(long, value_name = "N", conflicts_with_all = ["credits", "refill"])]
    pub add_credits: Option<u64>,
    /// Remove the meta
    #[arg(long, conflicts_with = "meta")]
    pub clear_meta: bool,
    /// Remove the key's own rate limits (its user's still apply)
    #[arg(long, conflicts_with = "rate_limits")]
    pub clear_rate_limits: bool,
    /// Remove the credits: uses are no longer counted against a balance
    #[arg(long, conflicts_with_all = ["credits", "add_credits", "refill"])]
    pub clear_credits: bool,
    /// Remove the credits' refill and keep the balance (with --credits N: set it)
    #[arg(long, conflicts_with_all = ["add_credits", "refill", "clear_credits"])]
    pub clear_refill: bool,
    /// Remove the allowlist: any address may use the key
    #[arg(long, conflicts_with = "allow_ips")]
    pub clear_allowed_ips: bool,
    /// Remove meta, rate limits, credits and the allowlist
    #[arg(long, conflicts_with_all = ["meta", "rate_limits", "credits", "refill", "allow_ips", "add_credits", "clear_refill"])]
    pub clear_usage_control: bool,
}

/// `latchkey audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List changes: who did what to which record, and when, oldest first
    List {
        /// Only events after this sequence number
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Only events before this sequence number
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
        /// Newest first: the latest events, then older ones with --before
        #[arg(long)]
        newest_first: bool,
        /// At most this many events
        #[arg(long)]
        limit: Option<u32>,
        /// Only the events about this record (a key's, user's or group's id); a page
        /// passes over at most 10,000 events and may say to go on
        #[arg(long, value_name = "ID", group = "about")]
        target: Option<uuid::Uuid>,
        /// Only the events about this key (its id, display prefix or public id), as
        /// --target does; the key is looked up first, which needs latchkey:keys:read
        #[arg(long, value_name = "KEY", group = "about")]
        key: Option<String>,
        /// Only the events about this user's record (its id or name), as --target does;
        /// needs latchkey:users:read to look it up
        #[arg(long, value_name = "USER", group = "about", value_parser = PrincipalRef)]
        user: Option<String>,
        /// Only the events about this group's record (its id or name), as --target does;
        /// needs latchkey:groups:read to look it up
        #[arg(long, value_name = "GROUP", group = "about", value_parser = PrincipalRef)]
        group: Option<String>,
    },
    /// Check the audit chain; exit 1 and say where when it is broken
    Verify,
}

/// `latchkey verify`. Its `Debug` shows the key's display prefix only.
#[derive(Args)]
pub struct VerifyArgs {
    /// The key to check; `-` reads it from stdin (keeps it out of shell history)
    pub key: String,
    /// A permission the key must hold (repeatable)
    #[arg(long = "permission", short = 'p', value_name = "PERMISSION")]
    pub permissions: Vec<String>,
    /// Check as a request from this address: a key with an IP allowlist is refused without
    /// one
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<std::net::IpAddr>,
    /// What the check costs against the key's rate limits and credits, as a request would
    /// (default 1); 0 checks without spending any (it still counts as a use of the key)
    #[arg(long, value_name = "N")]
    pub cost: Option<u32>,
}

impl std::fmt::Debug for VerifyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyArgs")
            .field("key", &Redacted(&self.key))
            .field("permissions", &self.permissions)
            .field("client_ip", &self.client_ip)
            .field("cost", &self.cost)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// A refill beside a flag that changes the balance otherwise would be dropped: refused.
    #[test]
    fn a_refill_goes_with_no_other_balance_change() {
        for other in [
            &["--add-credits", "1"][..],
            &["--clear-credits"],
            &["--clear-refill"],
            &["--clear-usage-control"],
        ] {
            let mut argv = vec!["latchkey", "keys", "update", "k", "--refill", "1/day"];
            argv.extend(other);
            let refused = Cli::try_parse_from(&argv).map(drop).unwrap_err();
            assert_eq!(
                refused.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{argv:?}"
            );
        }
        let alone = ["latchkey", "keys", "update", "k", "--refill", "1/day"];
        assert!(Cli::try_parse_from(alone).is_ok());
    }

    #[test]
    fn debug_never_shows_a_key() {
        use latchkey_core::{ApiKey, Env, Prefix};
        let admin = ApiKey::generate(&Prefix::default(), Env::Live);
        let checked = ApiKey::generate(&Prefix::default(), Env::Test);
        let cli = Cli::try_parse_from([
            "latchkey",
            "--admin-key",
            admin.expose(),
            "verify",
            checked.expose(),
        ])
        .expect("parses");
        for shown in crate::testing::debug_texts(&[&cli]) {
            for key in [&admin, &checked] {
                assert!(!shown.contains(key.secret()), "{shown}");
                assert!(shown.contains(key.display_prefix()), "{shown}");
            }
        }
    }
}
