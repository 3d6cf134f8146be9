//! Where a browser's request came from: its peer address, carried onto the console's
//! in-process API calls so that the API's layer checks a key's `allowed_ips` against the
//! browser, as it would a direct call. (`latchkey_admin`'s layer trusts no proxy, so
//! forwarding headers would not count: none is carried.)

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{Extensions, Request};

/// A browser request's peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    peer: Option<SocketAddr>,
}

impl Origin {
    /// The origin of a request with these extensions: the peer as the listener gave it
    /// (axum's `ConnectInfo<SocketAddr>`, or a bare `SocketAddr`).
    pub(crate) fn of(extensions: &Extensions) -> Origin {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .or_else(|| extensions.get::<SocketAddr>().copied());
        Origin { peer }
    }

    /// Gives an in-process API request this origin.
    pub(crate) fn apply<B>(&self, request: &mut Request<B>) {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
    }

    /// The client's address as the management API's layer sees it: the peer's.
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.peer.map(|peer| peer.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_goes_onto_the_api_request() {
        let mut extensions = Extensions::new();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        extensions.insert(ConnectInfo(peer));
        let origin = Origin::of(&extensions);
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
        assert!(request.headers().is_empty());
    }
}
