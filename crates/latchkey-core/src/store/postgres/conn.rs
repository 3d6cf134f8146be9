//! A pooled connection that goes back to the pool only in a known state.
//!
//! A statement that did not finish in time ([`OP_TIMEOUT`](super::client::OP_TIMEOUT),
//! client-side) may still run on the server, and a `BEGIN` that failed that way may still
//! open a transaction there: the next user of the connection would queue behind the one,
//! or write inside the other. Such a connection is dropped from the pool instead, its
//! session ending with it.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Object;

/// A pooled connection; discarded on drop once [`Conn::discard`] was called.
pub(crate) struct Conn {
    object: Option<Object>,
    doubtful: AtomicBool,
}

impl Conn {
    pub(super) fn new(object: Object) -> Conn {
        Conn {
            object: Some(object),
            doubtful: AtomicBool::new(false),
        }
    }

    /// Its session's state is unknown: it ends when this is dropped, never reused.
    pub(super) fn discard(&self) {
        self.doubtful.store(true, Ordering::Relaxed);
    }

    /// Whether [`Conn::discard`] was called: nothing more is sent on it (a `ROLLBACK`
    /// would only wait behind the statement that timed out).
    pub(super) fn is_discarded(&self) -> bool {
        self.doubtful.load(Ordering::Relaxed)
    }
}

impl Deref for Conn {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.object.as_mut().expect("held until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && self.doubtful.load(Ordering::Relaxed)
        {
            drop(Object::take(object));
        }
    }
}
