//! [`RemoteError`]: why a [`RemoteVerifier`](super::RemoteVerifier) could not start.

use std::error::Error;
use std::fmt;

use latchkey_core::ParseError;

/// Why [`RemoteVerifierBuilder::build`](super::RemoteVerifierBuilder::build) failed. Its
/// messages never hold the service key.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoteError {
    /// The daemon's URL is not an `http://` or `https://` URL.
    Url(String),
    /// The service key is not a well-formed latchkey key.
    ServiceKey(ParseError),
    /// Not called from inside a tokio runtime.
    NoRuntime,
    /// The HTTP client could not be built.
    Client(Box<dyn Error + Send + Sync>),
    /// A setting out of its range (the message names it).
    Setting(&'static str),
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Url(reason) => write!(f, "invalid latchkey URL: {reason}"),
            RemoteError::ServiceKey(e) => write!(f, "invalid service key: {e}"),
            RemoteError::NoRuntime => {
                f.write_str("the remote verifier must be built inside a tokio runtime")
            }
            RemoteError::Client(e) => write!(f, "could not build the HTTP client: {e}"),
            RemoteError::Setting(reason) => write!(f, "invalid remote verifier setting: {reason}"),
        }
    }
}

impl Error for RemoteError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RemoteError::ServiceKey(e) => Some(e),
            RemoteError::Client(e) => Some(&**e),
            _ => None,
        }
    }
}
