//! A pooled connection that goes back to the pool only in a known state.
//!
//! A statement that did not finish in time ([`OP_TIMEOUT`](super::client::OP_TIMEOUT),
//! client-side) may still run on the server, and a `BEGIN` that failed that way may still
//! open a transaction there: the next user of the connection would queue behind the one,
//! or write inside the other. Such a connection is dropped from the pool instead, its
//! session ending with it.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use deadpool_postgres::Object;

thread_local! {
    /// How many connections this thread holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Whether this thread holds a pooled connection already: it must not wait for another
/// (a write holds its lock's connection while it asks for its transaction's, and would
/// wait for itself on a pool that cannot grow).
pub(super) fn holds_one() -> bool {
    HELD.get() > 0
}

/// A pooled connection; discarded on drop once [`Conn::discard`] was called.
pub(crate) struct Conn {
    object: Option<Object>,
    doubtful: AtomicBool,
    /// The thread that took it, whose count it is in.
    taken_by: ThreadId,
}

impl Conn {
    pub(super) fn new(object: Object) -> Conn {
        HELD.set(HELD.get() + 1);
        Conn {
            object: Some(object),
            doubtful: AtomicBool::new(false),
            taken_by: std::thread::current().id(),
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
        if std::thread::current().id() == self.taken_by {
            HELD.set(HELD.get().saturating_sub(1));
        }
        if let Some(object) = self.object.take()
            && self.doubtful.load(Ordering::Relaxed)
        {
            drop(Object::take(object));
        }
    }
}
