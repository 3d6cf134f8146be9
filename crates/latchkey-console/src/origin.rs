//! Where a browser's request came from: its peer address and the addresses proxies
//! forwarded, carried onto the console's in-process API calls so that the API's layer
//! checks a key's `allowed_ips` against the browser, as it would a direct call.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::header::FORWARDED;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Request};

/// The headers that name the addresses proxies forwarded. The layer reads them only when
/// the peer is a proxy it trusts, so carrying them never lets a browser choose its address.
const FORWARDING: [HeaderName; 2] = [FORWARDED, HeaderName::from_static("x-forwarded-for")];

/// A browser request's peer and forwarding headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    peer: Option<SocketAddr>,
    forwarded: Vec<(HeaderName, HeaderValue)>,
}

impl Origin {
    /// The origin of a request with these extensions and headers: the peer as the listener
    /// gave it (axum's `ConnectInfo<SocketAddr>`, or a bare `SocketAddr`).
    pub(crate) fn of(extensions: &Extensions, headers: &HeaderMap) -> Origin {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .or_else(|| extensions.get::<SocketAddr>().copied());
        let forwarded = FORWARDING
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Origin { peer, forwarded }
    }

    /// Gives an in-process API request this origin.
    pub(crate) fn apply<B>(&self, request: &mut Request<B>) {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let headers = request.headers_mut();
        for (name, value) in &self.forwarded {
            headers.append(name.clone(), value.clone());
        }
    }

    /// The client's address as the management API's layer sees it: the peer's
    /// (`latchkey_admin`'s layer trusts no proxy, so forwarded addresses do not count).
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.peer.map(|peer| peer.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_and_the_forwarding_headers_go_onto_the_api_request() {
        let mut extensions = Extensions::new();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        extensions.insert(ConnectInfo(peer));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("cookie", "lk_session=secret".parse().unwrap());
        let origin = Origin::of(&extensions, &headers);
        assert_eq!(origin.client_ip(), Some(peer.ip()));
        let mut request = Request::new(());
        origin.apply(&mut request);
        assert_eq!(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            Some(peer)
        );
        assert_eq!(request.headers()["x-forwarded-for"], "203.0.113.9");
        assert!(
            request.headers().get("cookie").is_none(),
            "only forwarding headers"
        );
    }
}
