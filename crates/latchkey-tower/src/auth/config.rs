//! What an [`ApiKeyAuthLayer`](super::ApiKeyAuthLayer) is configured with.

use http::HeaderName;
use latchkey_core::Env;

use super::extensions::Presized;
use crate::rejection::Challenges;
use crate::usage::TrustedProxies;

/// The layer's settings; shared by every service it makes, behind an `Arc`.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) challenges: Challenges,
    pub(super) header: Option<HeaderName>,
    pub(super) query_param: Option<Box<str>>,
    pub(super) hide_credentials: bool,
    pub(super) accept_live: bool,
    pub(super) accept_test: bool,
    pub(super) public_paths: Vec<PublicPath>,
    /// Proxies whose `X-Forwarded-For` (or `Forwarded`) names the client (usage control).
    pub(super) trusted_proxies: TrustedProxies,
    /// What a request without extensions gets before its principal is inserted.
    pub(super) extensions: Presized,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            challenges: Challenges::default_realm(),
            header: None,
            query_param: None,
            hide_credentials: false,
            accept_live: true,
            accept_test: true,
            public_paths: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            extensions: Presized::default(),
        }
    }
}

impl Config {
    pub(super) fn accepts(&self, env: Env) -> bool {
        match env {
            Env::Live => self.accept_live,
            Env::Test => self.accept_test,
        }
    }

    /// Whether every environment is accepted (the default).
    pub(super) fn accepts_all(&self) -> bool {
        self.accept_live && self.accept_test
    }

    pub(super) fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| p.matches(path))
    }
}

/// A path served without authentication: exact, or a prefix when it ends with `*`.
#[derive(Debug, Clone)]
pub(super) enum PublicPath {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl PublicPath {
    pub(super) fn new(pattern: &str) -> PublicPath {
        match pattern.strip_suffix('*') {
            Some(prefix) => PublicPath::Prefix(prefix.into()),
            None => PublicPath::Exact(pattern.into()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PublicPath::Exact(exact) => path == &**exact,
            PublicPath::Prefix(prefix) => path.starts_with(&**prefix),
        }
    }
}
