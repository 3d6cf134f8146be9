//! What every console handler shares.

use std::sync::Arc;

use latchkey_core::Store;

use crate::client::Api;
use crate::session::Sessions;

/// The console's state. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Console {
    /// The management API, called in process.
    pub(crate) api: Api,
    /// The store, only to authenticate the session's key at each request.
    pub(crate) store: Store,
    /// The signed-in sessions.
    pub(crate) sessions: Arc<Sessions>,
    /// Whether cookies carry `Secure` and the `__Host-` prefix (browsers use HTTPS).
    pub(crate) secure: bool,
}
