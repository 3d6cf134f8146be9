//! [`ApiKeyAuthLayer`]: the configuration, and the `Layer` that applies it.

use std::sync::Arc;

use http::HeaderName;
use latchkey_core::{Env, Store};
use tower::Layer;

use super::config::{Config, PublicPath};
use super::realm::Realm;
use super::service::ApiKeyAuth;
use crate::rejection::Challenges;
use crate::usage::ForwardedHeader;
use crate::verifier::Verifier;

/// Authenticates every request by API key: a [`tower::Layer`] that makes [`ApiKeyAuth`]
/// services.
///
/// Configuration only; cheap to clone (two `Arc`s). The verifier is any [`Verifier`]: a
/// [`Store`] opened in the process, a remote verifier, or a closure in tests.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use http::HeaderName;
/// use latchkey_tower::Realm;
/// use latchkey_tower::{ApiKeyAuthLayer, Store, StoreConfig};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "[]" }))
///     .layer(
///         ApiKeyAuthLayer::new(store)
///             .realm(Realm::from_static("orders"))
///             .header(HeaderName::from_static("x-api-key"))
///             .hide_credentials(true)
///             .refuse_test_keys(),
///     );
/// # let _ = app;
/// ```
///
/// # Rejections
///
/// 401 `missing_key` (`WWW-Authenticate: Bearer realm="<realm>"`) without a key; 400
/// `invalid_request` (`error="invalid_request"`) for a key sent more than once or in more
/// than one place; 401 with
/// `error="invalid_token"` and `invalid_key`, `key_disabled`, `key_revoked`, `key_expired`
/// or `user_disabled` for a key that does not authenticate; 503 `keystore_unavailable`
/// when the verifier cannot answer. See the [module docs](crate::auth).
pub struct ApiKeyAuthLayer<V = Store> {
    pub(super) verifier: Arc<V>,
    pub(super) config: Arc<Config>,
}

impl<V: Verifier> ApiKeyAuthLayer<V> {
    /// A layer verifying keys with `verifier`: realm `api`, `Authorization: Bearer` only,
    /// every environment accepted, no public path.
    pub fn new(verifier: V) -> Self {
        ApiKeyAuthLayer {
            verifier: Arc::new(verifier),
            config: Arc::new(Config::default()),
        }
    }
}

impl<V> ApiKeyAuthLayer<V> {
    /// The realm named in `WWW-Authenticate` challenges (default `api`).
    pub fn realm(mut self, realm: Realm) -> Self {
        Arc::make_mut(&mut self.config).challenges = Challenges::new(&realm);
        self
    }

    /// Also reads the key from this header, whose whole value is the key (e.g. `X-API-Key`).
    pub fn header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).header = Some(name);
        self
    }

    /// Also reads the key from this query parameter (e.g. `api_key`). Off by default: query
    /// strings end up in access logs, proxies and browser histories. A success answer to a
    /// request whose key came this way is marked `Cache-Control: private` (RFC 6750 §2.3).
    pub fn allow_query_param(mut self, name: &str) -> Self {
        Arc::make_mut(&mut self.config).query_param = Some(name.into());
        self
    }

    /// Removes the key (its header or query parameter) from the request before the inner
    /// service sees it (default `false`). A query parameter is removed from the request's
    /// URI and, with the `axum` feature, from axum's `OriginalUri` extension too.
    pub fn hide_credentials(mut self, hide: bool) -> Self {
        Arc::make_mut(&mut self.config).hide_credentials = hide;
        self
    }

    /// Accepts only keys of this environment (default: every environment); the others are
    /// answered 401 `invalid_key` before any store read. Keys imported from other systems
    /// are `live` keys: with `accept_only(Env::Test)`, a text that is not a latchkey key is
    /// refused the same way, without asking the verifier.
    pub fn accept_only(mut self, env: Env) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.accept_live = env == Env::Live;
        config.accept_test = env == Env::Test;
        self
    }

    /// Accepts `live` keys only: what a production service usually wants.
    pub fn refuse_test_keys(self) -> Self {
        self.accept_only(Env::Live)
    }

    /// Paths served without authentication, as the layer sees `uri().path()`: exact
    /// (`/health`), or a prefix when the pattern ends with `*` (`/public/*`). A request to
    /// one goes to the inner service untouched, with no principal.
    pub fn public_paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Arc::make_mut(&mut self.config)
            .public_paths
            .extend(paths.into_iter().map(|p| PublicPath::new(p.as_ref())));
        self
    }

    /// Proxies to believe about the client's address, for keys with `allowed_ips`: when the
    /// peer is one of these, the client is the nearest address that is not a trusted proxy
    /// in the one header [`forwarded_header`](Self::forwarded_header) names
    /// (`X-Forwarded-For` by default). Without any (the default), the client is the peer
    /// (axum's `ConnectInfo<SocketAddr>`: serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`), and forwarded headers are
    /// ignored. A range of IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) is taken as
    /// the IPv4 range it maps, as addresses are compared as IPv4 when they map one.
    ///
    /// ```
    /// # use latchkey_tower::{ApiKeyAuthLayer, IpNet};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = latchkey_tower::Store::create_empty(dir.path(), "lk", Default::default()).unwrap();
    /// let layer = ApiKeyAuthLayer::new(store).trust_proxies(["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    /// # let _ = layer;
    /// ```
    pub fn trust_proxies(mut self, proxies: impl IntoIterator<Item = ipnet::IpNet>) -> Self {
        Arc::make_mut(&mut self.config).trusted_proxies.nets.extend(
            proxies
                .into_iter()
                .map(latchkey_core::controls::canonical_net),
        );
        self
    }

    /// The header the [trusted proxies](Self::trust_proxies) name the client in (default
    /// [`ForwardedHeader::XForwardedFor`], what nginx, HAProxy, AWS ALB and Envoy write).
    /// Only this header is read, never the other: a proxy passes the header it does not
    /// write through from the client, who could name any address in it. Choose
    /// [`ForwardedHeader::Forwarded`] (RFC 7239) only for proxies that write `for=` there.
    ///
    /// ```
    /// # use latchkey_tower::{ApiKeyAuthLayer, ForwardedHeader, IpNet};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = latchkey_tower::Store::create_empty(dir.path(), "lk", Default::default()).unwrap();
    /// let layer = ApiKeyAuthLayer::new(store)
    ///     .trust_proxies(["10.0.0.0/8".parse::<IpNet>().unwrap()])
    ///     .forwarded_header(ForwardedHeader::Forwarded);
    /// # let _ = layer;
    /// ```
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        Arc::make_mut(&mut self.config).trusted_proxies.header = header;
        self
    }
}

impl<V> Clone for ApiKeyAuthLayer<V> {
    fn clone(&self) -> Self {
        ApiKeyAuthLayer {
            verifier: Arc::clone(&self.verifier),
            config: Arc::clone(&self.config),
        }
    }
}

impl<V> std::fmt::Debug for ApiKeyAuthLayer<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyAuthLayer")
            .field("verifier", &std::any::type_name::<V>())
            .field("config", &self.config)
            .finish()
    }
}

impl<S, V> Layer<S> for ApiKeyAuthLayer<V> {
    type Service = ApiKeyAuth<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyAuth::from_parts(inner, self.clone())
    }
}
