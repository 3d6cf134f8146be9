//! Usage control in the layer: the client's address (the peer's, or the one a trusted proxy
//! forwarded), [`admit`](latchkey_core::admit) after authentication, and the 403/429
//! answers with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers-10: `"name";q=<limit>;w=<window>` and
//! `"name";r=<remaining>;t=<seconds>`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use latchkey_core::controls::is_limit_state_name;
use latchkey_core::meter::RateLimited;
use latchkey_core::{Admission, Admitted, Principal, Reservation, VerifyError};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::rejection::{Challenges, Reason, Rejection};
use crate::verifier::Charged;

pub use ipnet::IpNet;

/// `RateLimit-Policy`.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Checks the principal's usage control for this request (IP, rate limits, credits at
/// `cost`), in core's one order, without waiting on storage: `Some` when the key's credit
/// slice (or a shared rate limit's) is short and a reservation, a write, decides. A
/// principal without usage
/// control passes at the cost of one check.
#[inline]
pub(crate) fn admit<B>(
    principal: &Principal,
    request: &Request<B>,
    trusted: &TrustedProxies,
    challenges: &Challenges,
    cost: u32,
) -> Result<Option<Reservation>, Rejection> {
    if principal.meter.is_none() {
        return Ok(None);
    }
    let admission = Admission {
        client_ip: client_ip(request, trusted),
        permissions: &[],
        cost,
    };
    match latchkey_core::try_admit(principal, &admission) {
        Admitted::Done(Ok(())) => Ok(None),
        Admitted::Done(Err(refused)) => Err(rejection(&refused, challenges)),
        Admitted::Reserve(reservation) => Ok(Some(reservation)),
    }
}

/// What a charge to a key's meter came to: a reservation (credits, or a shared rate
/// limit's slice) runs on tokio's blocking pool ([`reserve`]).
pub(crate) fn charged(admitted: Admitted) -> Charged {
    match admitted {
        Admitted::Done(answer) => Charged::Done(answer),
        Admitted::Reserve(reservation) => match reserve(reservation) {
            Ok(task) => Charged::Waiting(task),
            Err(answer) => Charged::Done(answer),
        },
    }
}

/// A reservation (of credits, or of a rate limit's slice on a database several daemons
/// share) on tokio's blocking pool, so that its write never holds up
/// an async worker; outside any tokio runtime, finished on this thread at once (`Err`).
pub(crate) fn reserve(
    reservation: Reservation,
) -> Result<JoinHandle<Result<(), VerifyError>>, Result<(), VerifyError>> {
    match Handle::try_current() {
        Ok(runtime) => Ok(runtime.spawn_blocking(move || reservation.finish())),
        Err(_) => Err(reservation.finish()),
    }
}

/// A credit reservation running on the blocking pool, with what waits for its answer (the
/// request and the ready inner service).
#[derive(Debug)]
pub(crate) struct Reserving<T> {
    task: JoinHandle<Result<(), VerifyError>>,
    waiting: Option<T>,
}

impl<T> Reserving<T> {
    pub(crate) fn new(task: JoinHandle<Result<(), VerifyError>>, waiting: T) -> Self {
        Reserving {
            task,
            waiting: Some(waiting),
        }
    }

    /// The reservation's answer, with what waited for it. A panic in the reservation
    /// resumes here, as it would inline; a runtime shutting down makes the keystore
    /// unavailable for this request.
    pub(crate) fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(Result<(), VerifyError>, T)> {
        let joined = ready!(Pin::new(&mut self.task).poll(cx));
        let answer = crate::store_verifier::answer_of(joined, "the credit reservation");
        let waiting = self
            .waiting
            .take()
            .expect("a reservation polled after it answered");
        Poll::Ready((answer, waiting))
    }
}

/// The answer to a usage refusal: 403 `ip_not_allowed`, 429 `rate_limited` (with
/// `Retry-After` and the rate-limit headers) or 429 `usage_exceeded`; any other error as the
/// layer answers it, with the layer's `challenges`.
pub(crate) fn rejection(error: &VerifyError, challenges: &Challenges) -> Rejection {
    match error {
        VerifyError::IpNotAllowed => Rejection::from_parts(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            Bytes::from_static(IP_NOT_ALLOWED.as_bytes()),
            Vec::new(),
        ),
        VerifyError::UsageExceeded {
            retry_after_seconds,
        } => usage_exceeded(*retry_after_seconds),
        VerifyError::RateLimited(limited) => rate_limited(limited),
        VerifyError::InsufficientPermission => Rejection::insufficient_permission_unnamed(),
        // A charge that could not reach the store (503, no challenge), or a key refused
        // since the layer admitted it (revoked, disabled or expired meanwhile: what the
        // daemon answered a remote verifier's charge): the layer's answer for it.
        error => Reason::of(error).rejection(challenges),
    }
}

/// 403 `ip_not_allowed`'s body.
const IP_NOT_ALLOWED: &str = "{\"type\":\"urn:latchkey:problem:ip_not_allowed\",\
\"title\":\"Address not allowed\",\"status\":403,\"code\":\"ip_not_allowed\",\
\"detail\":\"This key may not be used from this address.\"}";

/// 429 `usage_exceeded`'s body, for credits that are never refilled.
const USAGE_EXCEEDED: &str = "{\"type\":\"urn:latchkey:problem:usage_exceeded\",\
\"title\":\"Usage exceeded\",\"status\":429,\"code\":\"usage_exceeded\",\
\"detail\":\"This key has too few credits left for this request.\"}";

/// 429 `usage_exceeded`: with `Retry-After` and `retry_after` until the credits' next
/// refill, when they have one.
fn usage_exceeded(retry_after_seconds: Option<u64>) -> Rejection {
    let Some(retry) = retry_after_seconds else {
        return Rejection::from_parts(
            StatusCode::TOO_MANY_REQUESTS,
            "usage_exceeded",
            Bytes::from_static(USAGE_EXCEEDED.as_bytes()),
            Vec::new(),
        );
    };
    let body = format!(
        "{{\"type\":\"urn:latchkey:problem:usage_exceeded\",\"title\":\"Usage exceeded\",\
         \"status\":429,\"code\":\"usage_exceeded\",\
         \"detail\":\"This key has too few credits left for this request; they are refilled in {retry} s.\",\
         \"retry_after\":{retry}}}"
    );
    Rejection::from_parts(
        StatusCode::TOO_MANY_REQUESTS,
        "usage_exceeded",
        Bytes::from(body),
        vec![(RETRY_AFTER, HeaderValue::from(retry))],
    )
}

fn rate_limited(limited: &RateLimited) -> Rejection {
    let limit = &limited.limit;
    let retry = limited.retry_after_seconds;
    // A store's names are `[A-Za-z0-9_.-]` (a user's with `user:` before), nothing to
    // escape in a header or in JSON; any other name (a custom verifier's) is answered as
    // `default` rather than sent.
    let name = if is_limit_state_name(&limit.name) {
        &limit.name
    } else {
        "default"
    };
    let body = format!(
        "{{\"type\":\"urn:latchkey:problem:rate_limited\",\"title\":\"Rate limit reached\",\
         \"status\":429,\"code\":\"rate_limited\",\
         \"detail\":\"The rate limit `{name}` of this key is reached; retry in {retry} s.\",\
         \"limit\":\"{name}\",\"retry_after\":{retry}}}"
    );
    let policy = format!("\"{name}\";q={};w={}", limit.limit, limit.window_seconds);
    let state = format!("\"{name}\";r=0;t={retry}");
    // Header-safe by construction; a value that were not would be left out, never a panic.
    let headers = [(RATELIMIT_POLICY, policy), (RATELIMIT, state)]
        .into_iter()
        .filter_map(|(header, text)| Some((header, HeaderValue::try_from(text).ok()?)));
    let headers = std::iter::once((RETRY_AFTER, HeaderValue::from(retry)))
        .chain(headers)
        .collect();
    Rejection::from_parts(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        Bytes::from(body),
        headers,
    )
}

/// The header a trusted proxy names the client in
/// ([`ApiKeyAuthLayer::forwarded_header`](crate::ApiKeyAuthLayer::forwarded_header)).
///
/// The layer reads exactly one of them, never the other: a proxy appends to the header it
/// writes and passes any other through as the client sent it, so the header it does not
/// write holds whatever the client chose to put there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: <client>, <proxy>, …` (the default): what nginx, HAProxy, AWS ALB
    /// and Envoy write.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=<client>, for=<proxy>` (RFC 7239), for proxies configured to write
    /// it: its `for=` parameters.
    Forwarded,
}

/// The proxies the layer believes about the client's address, and the one header it reads
/// from them.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    pub(crate) nets: Vec<IpNet>,
    pub(crate) header: ForwardedHeader,
}

impl TrustedProxies {
    fn contains(&self, ip: &IpAddr) -> bool {
        self.nets
            .iter()
            .any(|net| latchkey_core::controls::net_holds(*net, *ip))
    }
}

/// The client's address: the peer's (axum's `ConnectInfo<SocketAddr>`, or a `SocketAddr`
/// in the request's extensions); when the peer is a trusted proxy, the nearest address that
/// is not one in the configured header ([`ForwardedHeader`]). `None` when unknown or when a
/// trusted proxy forwarded something that is not an address.
pub(crate) fn client_ip<B>(request: &Request<B>, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = peer(request)?.to_canonical();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops = match trusted.header {
        ForwardedHeader::XForwardedFor => x_forwarded_for_hops(request)?,
        ForwardedHeader::Forwarded => forwarded_hops(request)?,
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let hop = (*hop)?.to_canonical();
        client = hop;
        if !trusted.contains(&hop) {
            break;
        }
    }
    Some(client)
}

fn peer<B>(request: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    request.extensions().get::<SocketAddr>().map(|a| a.ip())
}

/// The addresses in `Forwarded`'s `for=` parameters, first to last; `None` in place of one
/// that is not an address (or an element without `for=`). Empty without the header.
fn forwarded_hops<B>(request: &Request<B>) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in request.headers().get_all(http::header::FORWARDED) {
        let line = line.to_str().ok()?;
        for element in line.split(',') {
            let value = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            hops.push(value.and_then(parse_node));
        }
    }
    Some(hops)
}

/// The addresses in `X-Forwarded-For`, first to last; `None` in place of one that is not an
/// address. Empty without the header.
fn x_forwarded_for_hops<B>(request: &Request<B>) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in request.headers().get_all("x-forwarded-for") {
        let line = line.to_str().ok()?;
        hops.extend(line.split(',').map(|hop| parse_node(hop.trim())));
    }
    Some(hops)
}

/// An address as `Forwarded` or `X-Forwarded-For` write it: `1.2.3.4`, `1.2.3.4:80`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches('"');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_refused_while_a_route_s_cost_is_charged_is_answered_as_the_layer_would() {
        use crate::rejection::ProblemCode;
        let realm = crate::Realm::from_static("orders");
        let revoked = rejection(&VerifyError::Revoked, &Challenges::new(&realm))
            .into_http_response::<Bytes>();
        assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            revoked.headers()["www-authenticate"],
            "Bearer realm=\"orders\", error=\"invalid_token\""
        );
        assert_eq!(
            revoked.extensions().get(),
            Some(&ProblemCode("key_revoked"))
        );
        let unavailable = rejection(
            &VerifyError::Unavailable("down".into()),
            &Challenges::default_realm(),
        );
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        let used_up = rejection(
            &VerifyError::UsageExceeded {
                retry_after_seconds: None,
            },
            &Challenges::default_realm(),
        );
        assert_eq!(used_up.code(), "usage_exceeded");
    }

    #[test]
    fn credits_used_up_say_when_they_are_refilled_if_they_ever_are() {
        let answer = |retry_after_seconds| {
            let error = VerifyError::UsageExceeded {
                retry_after_seconds,
            };
            rejection(&error, &Challenges::default_realm()).into_http_response::<Bytes>()
        };
        let refilled = answer(Some(3_600));
        assert_eq!(refilled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refilled.headers()["retry-after"], "3600");
        let body: serde_json::Value = serde_json::from_slice(refilled.body()).unwrap();
        assert_eq!(body["code"], "usage_exceeded");
        assert_eq!(body["retry_after"], 3_600);
        assert!(
            body["detail"].as_str().unwrap().contains("3600 s"),
            "{body}"
        );

        let never = answer(None);
        assert_eq!(never.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(never.headers().get("retry-after").is_none());
        let body: serde_json::Value = serde_json::from_slice(never.body()).unwrap();
        assert_eq!(body["code"], "usage_exceeded");
        assert!(body.get("retry_after").is_none(), "{body}");
    }

    #[test]
    fn a_limit_name_that_is_not_header_safe_is_answered_as_default_without_a_panic() {
        use latchkey_core::RateLimit;
        for name in ["a\"b", "line\nbreak\u{7f}", "", "é"] {
            let limited = VerifyError::RateLimited(Box::new(RateLimited {
                limit: RateLimit {
                    name: name.to_owned(),
                    limit: 10,
                    window_seconds: 60,
                },
                retry_after_seconds: 5,
            }));
            let response =
                rejection(&limited, &Challenges::default_realm()).into_http_response::<Bytes>();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                response.headers()["ratelimit-policy"],
                "\"default\";q=10;w=60"
            );
            assert_eq!(response.headers()["ratelimit"], "\"default\";r=0;t=5");
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["limit"], "default");
        }
        let user = VerifyError::RateLimited(Box::new(RateLimited {
            limit: RateLimit {
                name: "user:per_min".to_owned(),
                limit: 10,
                window_seconds: 60,
            },
            retry_after_seconds: 5,
        }));
        let response = rejection(&user, &Challenges::default_realm());
        let response = response.into_http_response::<Bytes>();
        assert_eq!(response.headers()["ratelimit"], "\"user:per_min\";r=0;t=5");
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(SocketAddr::new(peer.parse().unwrap(), 4000));
        request
    }

    fn nets(list: &[&str]) -> TrustedProxies {
        TrustedProxies {
            nets: list.iter().map(|n| n.parse().unwrap()).collect(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    fn reading(header: ForwardedHeader, list: &[&str]) -> TrustedProxies {
        TrustedProxies {
            header,
            ..nets(list)
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let r = request("203.0.113.9", &[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(
            client_ip(&r, &nets(&[])),
            Some("203.0.113.9".parse().unwrap())
        );
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&r, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_address_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let r = request(
            "10.0.0.2",
            &[("x-forwarded-for", "198.51.100.7, 192.0.2.1, 10.0.0.5")],
        );
        assert_eq!(client_ip(&r, &trusted), Some("192.0.2.1".parse().unwrap()));
        let r = request(
            "10.0.0.2",
            &[("forwarded", "for=198.51.100.7, for=\"[2001:db8::1]:4711\"")],
        );
        assert_eq!(
            client_ip(&r, &reading(ForwardedHeader::Forwarded, &["10.0.0.0/8"])),
            Some("2001:db8::1".parse().unwrap())
        );
        let r = request("10.0.0.2", &[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(&r, &trusted), None);
    }

    #[test]
    fn only_the_configured_header_names_the_client() {
        let r = request(
            "10.0.0.2",
            &[
                ("forwarded", "for=203.0.113.5"),
                ("x-forwarded-for", "198.51.100.66"),
            ],
        );
        let by_default = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&r, &by_default),
            Some("198.51.100.66".parse().unwrap())
        );
        let forwarded = reading(ForwardedHeader::Forwarded, &["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&r, &forwarded),
            Some("203.0.113.5".parse().unwrap())
        );
        // A proxy that adds only `Forwarded: proto=https` names no client in it: the
        // default reads `X-Forwarded-For` all the same.
        let r = request(
            "10.0.0.2",
            &[
                ("forwarded", "proto=https"),
                ("x-forwarded-for", "198.51.100.66"),
            ],
        );
        assert_eq!(
            client_ip(&r, &by_default),
            Some("198.51.100.66".parse().unwrap())
        );
    }
}
