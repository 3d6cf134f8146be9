//! [`ApiKeyAuth`]: the service that authenticates each request.

use std::cell::OnceCell;
use std::future::Future;
use std::mem;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use latchkey_core::{ApiKey, Env, Principal, Store, VerifyError, key};
use tokio::task::JoinHandle;
use tower::Service;
use tracing::Span;

use super::config::Config;
use super::credentials;
use super::future::{Pending, ResponseFuture};
use super::layer::ApiKeyAuthLayer;
use super::trace;
use crate::rejection::{Reason, Rejection};
use crate::require::extra::{BaseCharge, ExtraCharger};
use crate::usage;
use crate::verifier::Verifier;

/// Authenticates each request by API key before the inner service sees it; made by
/// [`ApiKeyAuthLayer`].
///
/// # Example
///
/// ```
/// use latchkey_tower::{ApiKeyAuth, Store, StoreConfig};
/// use tower::service_fn;
///
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::create_empty(dir.path(), "lk", StoreConfig::default()).unwrap();
/// let service = ApiKeyAuth::new(
///     service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
///     }),
///     store,
/// );
/// # let _ = service;
/// ```
///
/// # Rejections
///
/// Answered with `Ok(response)` (400, 401, 403, 429, or 503 when the keystore is
/// unavailable), never with
/// the inner service's error type: see the [module docs](crate::auth).
pub struct ApiKeyAuth<S, V = Store> {
    inner: S,
    /// Behind one `Arc`: the service is cloned for every request (hyper's glue does), and
    /// one reference count is cheaper than the layer's two.
    layer: Arc<ApiKeyAuthLayer<V>>,
}

impl<S, V: Verifier> ApiKeyAuth<S, V> {
    /// Wraps `inner` with the default configuration of [`ApiKeyAuthLayer::new`].
    pub fn new(inner: S, verifier: V) -> Self {
        Self::from_parts(inner, ApiKeyAuthLayer::new(verifier))
    }
}

// In its own impl so that `ApiKeyAuth::layer(..)` infers the service type, as `HashMap::new`
// infers its hasher.
impl<V: Verifier> ApiKeyAuth<(), V> {
    /// The layer, to configure and apply to services: the same as [`ApiKeyAuthLayer::new`].
    pub fn layer(verifier: V) -> ApiKeyAuthLayer<V> {
        ApiKeyAuthLayer::new(verifier)
    }
}

impl<S, V> ApiKeyAuth<S, V> {
    pub(super) fn from_parts(inner: S, layer: ApiKeyAuthLayer<V>) -> Self {
        ApiKeyAuth {
            inner,
            layer: Arc::new(layer),
        }
    }

    crate::macros::define_inner_service_accessors!();
}

impl<S: Clone, V> Clone for ApiKeyAuth<S, V> {
    fn clone(&self) -> Self {
        ApiKeyAuth {
            inner: self.inner.clone(),
            layer: Arc::clone(&self.layer),
        }
    }
}

impl<S: std::fmt::Debug, V> std::fmt::Debug for ApiKeyAuth<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyAuth")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, V, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyAuth<S, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    V: Verifier,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, V::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &*self.layer.config;
        if config.is_public(request.uri().path()) {
            return ResponseFuture::calling(self.inner.call(request), Span::none());
        }
        let span = trace::span();
        let entered = span.enter();
        let longest = credentials::longest(self.layer.verifier.verifies_foreign());
        let (source, text) = match credentials::find(&request, config, longest) {
            Ok(found) => found,
            Err(reason) => {
                trace::rejected(&span, reason, None);
                drop(entered);
                return ResponseFuture::rejected(reason.rejection(&config.challenges), span);
            }
        };
        // The client's address, read from the request's headers at most once, for whichever
        // of the charger and the verifier asks for it.
        let client = OnceCell::new();
        let client_of = |request: &Request<ReqBody>| {
            *client.get_or_init(|| usage::client_ip(request, &config.trusted_proxies))
        };
        // A verifier that charges a route's extra cost itself (a remote verifier) gets the
        // key text and the client's address for the request's routes: see `require::extra`.
        let charger = if self.layer.verifier.charges_extra() {
            ExtraCharger::new(
                &self.layer.verifier,
                text,
                client_of(&request),
                &config.challenges,
            )
        } else {
            None
        };
        // The fast path: a key text of an accepted environment that the verifier has
        // verified before and recognises without parsing it. Anything else (a new key, a
        // wrong one, a refused environment, any status but valid) takes the full path
        // below, which gives every answer.
        if (config.accepts_all() || key::env_hint(text).is_some_and(|env| config.accepts(env)))
            && let Some(principal) = self.layer.verifier.verify_known(text)
        {
            trace::presented(&span, &principal.prefix);
            if let Some(charger) = charger {
                request.extensions_mut().insert(charger);
            }
            if config.hide_credentials {
                credentials::hide(&mut request, source, config);
            }
            trace::accepted(&span, &principal);
            let next = admitted(principal, &span, &request, config);
            drop(entered);
            return self
                .proceed(next, request, span)
                .private_if(source == credentials::Source::Query);
        }
        let mut verify = match ApiKey::parse_bytes(text) {
            Ok(key) => {
                trace::presented(&span, key.display_prefix());
                if !config.accepts(key.env()) {
                    trace::rejected(&span, Reason::RefusedEnv, None);
                    drop(entered);
                    return ResponseFuture::rejected(
                        Reason::RefusedEnv.rejection(&config.challenges),
                        span,
                    );
                }
                let verifier = &self.layer.verifier;
                if verifier.wants_client_ip() {
                    verifier.verify_from(&key, client_of(&request))
                } else {
                    verifier.verify(&key)
                }
            }
            Err(_) => match foreign(&*self.layer.verifier, text, || client_of(&request), config) {
                Ok(verify) => verify,
                Err(reason) => {
                    trace::rejected(&span, reason, None);
                    drop(entered);
                    return ResponseFuture::rejected(reason.rejection(&config.challenges), span);
                }
            },
        };
        if let Some(charger) = charger {
            request.extensions_mut().insert(charger);
        }
        if config.hide_credentials {
            credentials::hide(&mut request, source, config);
        }
        // Poll once in place: a store answers at once, and then the whole authentication
        // happens here, calling the inner service that `poll_ready` just made ready, with no
        // clone and no request moved into the response future. Polling with a no-op waker is
        // sound: a future wakes only the waker of its latest poll, and a pending one is polled
        // again from `ResponseFuture::poll` with the real one.
        match Pin::new(&mut verify).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => {
                let next = decide(result, &span, config, &request);
                drop(entered);
                self.proceed(next, request, span)
            }
            Poll::Pending => {
                drop(entered);
                ResponseFuture::verifying(verify, self.hand_over(request), span)
            }
        }
        .private_if(source == credentials::Source::Query)
    }
}

impl<S, V> ApiKeyAuth<S, V> {
    /// The response future for a request whose authentication has come to `next`.
    #[inline]
    fn proceed<ReqBody, ResBody, VF>(
        &mut self,
        next: Next,
        mut request: Request<ReqBody>,
        span: Span,
    ) -> ResponseFuture<S, ReqBody, VF>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    {
        let (principal, reservation, base) = match next {
            Next::Pass(principal, reservation, base) => (principal, reservation, base),
            Next::Reject(rejection) => return ResponseFuture::rejected(rejection, span),
        };
        self.layer
            .config
            .extensions
            .insert(&mut request, principal.into(), base);
        match reservation {
            None => {
                // `in_scope` moves the request into its closure, a copy that a span that is
                // none (no subscriber wants DEBUG, the usual case) can do without.
                let future = if span.is_none() {
                    self.inner.call(request)
                } else {
                    span.in_scope(|| self.inner.call(request))
                };
                ResponseFuture::calling(future, span)
            }
            Some(task) => ResponseFuture::reserving(task, self.hand_over(request), span),
        }
    }

    /// The request with the service that `poll_ready` made ready, for a future that calls
    /// it once an answer comes; `self` keeps a clone that has not been polled. See
    /// https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
    fn hand_over<ReqBody>(&mut self, request: Request<ReqBody>) -> Box<Pending<S, ReqBody>>
    where
        S: Clone,
    {
        let mut inner = self.inner.clone();
        mem::swap(&mut self.inner, &mut inner);
        Pending::boxed(request, inner, Arc::clone(&self.layer.config))
    }
}

/// The verification of a text that is not a latchkey key: refused unless the verifier holds
/// imported keys of other formats (a store without any answers `None` at once). Imported
/// keys are all `live`, so a layer refusing that environment refuses them as it refuses a
/// native `live` key, before any lookup (and so tells nothing of whether the text is one).
fn foreign<V: Verifier>(
    verifier: &V,
    text: &[u8],
    client: impl FnOnce() -> Option<IpAddr>,
    config: &Config,
) -> Result<V::Future, Reason> {
    // ASCII already (`credentials::find`): this never fails.
    let text = std::str::from_utf8(text).map_err(|_| Reason::NotUtf8)?;
    if !config.accepts(Env::Live) {
        return Err(Reason::RefusedEnv);
    }
    let verify = if verifier.wants_client_ip() {
        verifier.verify_foreign_from(text, client())
    } else {
        verifier.verify_foreign(text)
    };
    verify.ok_or(Reason::Malformed)
}

/// What an authenticated request comes to.
pub(super) enum Next {
    /// Call the inner service with this principal: at once, or once the key's credit
    /// reservation, running on the blocking pool, admits the request.
    Pass(
        Principal,
        Option<JoinHandle<Result<(), VerifyError>>>,
        Option<BaseCharge>,
    ),
    /// Answer this.
    Reject(Rejection),
}

/// The verifier's answer as the principal to pass on or the rejection to send; traced.
/// Then the principal's usage control, in core's one order ([`latchkey_core::admit`]).
pub(super) fn decide<B>(
    result: Result<Principal, VerifyError>,
    span: &Span,
    config: &Config,
    request: &Request<B>,
) -> Next {
    match result {
        Ok(principal) => {
            trace::accepted(span, &principal);
            admitted(principal, span, request, config)
        }
        Err(
            error @ (VerifyError::IpNotAllowed
            | VerifyError::RateLimited(_)
            | VerifyError::UsageExceeded { .. }
            | VerifyError::InsufficientPermission),
        ) => Next::Reject(usage_refused(span, &error, config)),
        Err(error) => {
            let reason = Reason::of(&error);
            trace::rejected(span, reason, Some(&error));
            Next::Reject(reason.rejection(&config.challenges))
        }
    }
}

/// An accepted principal's usage control: IP, rate limits, credits. A credit reservation
/// goes to the blocking pool (a durable write must not hold up an async worker).
#[inline]
fn admitted<B>(principal: Principal, span: &Span, request: &Request<B>, config: &Config) -> Next {
    // Read before the charge: should the period end in between, a give-back into the old
    // one is refused (a credit lost), never one into the new period it was not taken from.
    let base = BaseCharge::of(&principal);
    match usage::admit(
        &principal,
        request,
        &config.trusted_proxies,
        &config.challenges,
        1,
    ) {
        Ok(None) => Next::Pass(principal, None, base),
        Err(rejection) => {
            trace::rejected_usage(span, rejection.code());
            Next::Reject(rejection)
        }
        Ok(Some(reservation)) => match usage::reserve(reservation) {
            Ok(task) => Next::Pass(principal, Some(task), base),
            Err(Ok(())) => Next::Pass(principal, None, base),
            Err(Err(error)) => Next::Reject(usage_refused(span, &error, config)),
        },
    }
}

/// The answer to a usage refusal (or a reservation that failed), traced.
pub(super) fn usage_refused(span: &Span, error: &VerifyError, config: &Config) -> Rejection {
    let rejection = usage::rejection(error, &config.challenges);
    match error {
        VerifyError::Unavailable(_) => trace::rejected(span, Reason::Unavailable, Some(error)),
        _ => trace::rejected_usage(span, rejection.code()),
    }
    rejection
}
