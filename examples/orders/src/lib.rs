//! The orders API of latchkey's examples, as a library so that `examples/remote-orders`
//! serves the very same routes over a remote verifier.
//!
//! - [`app`]: the routes, over any [`latchkey_tower::Verifier`].
//! - [`demo`]: the demo user and keys of a first start.

mod app;
pub mod demo;

pub use app::{SUMMARY_COST, app};
