//! latchkey's web console: server-rendered pages at `/ui` over the management API.
//!
//! Every page reads and writes through the **same** admin router the JSON API serves,
//! called in process with the signed-in key as its Bearer token: what a key may see and
//! do in the console is exactly what it may do over the API, checked by the same code.
//! The console only decides what to *show* (write actions are hidden from a key that lacks
//! the permission); the API refuses them anyway.
//!
//! # Security
//!
//! - Sign-in with an API key that may read a section of the console opens a server-side
//!   session ([`session`]): a random id in an HttpOnly, SameSite=Strict cookie scoped to
//!   `/ui` (over HTTPS `__Host-` prefixed, Secure, for `/`), expiring after 30 idle minutes and at most 12 hours, at most
//!   [`session::MAX_SESSIONS`] at a time and [`session::MAX_SESSIONS_PER_USER`] per user.
//!   The key is held in memory only and is never rendered.
//! - Every form carries the session's CSRF token (`csrf.rs`), checked on every POST; the
//!   sign-in form carries a token bound to a short-lived cookie of its own.
//! - Every answer has a strict Content-Security-Policy (no inline script or style), no
//!   referrer, `nosniff` and `Cache-Control: no-store`, and under TLS
//!   `Strict-Transport-Security` (`headers.rs`).
//! - A form that shows a secret (create, rotate) can be submitted once: a reload does not
//!   make a second key, nor shows a secret again.
//!
//! # Layout
//!
//! - `router`: the routes; `state`: what handlers share.
//! - `session`, `cookies`, `csrf`, `headers`: the session and the browser's defences;
//!   `ending`: sessions ended as soon as a change refuses their key.
//! - `client`: the in-process calls to the admin router, with the browser's address
//!   (`origin`); `verify`: a session's key checked as the API's layer does, its use not
//!   counted; `extract`: the request extractors; `errors`: the error pages.
//! - `pages/`: one file per page; `edits`: what an editor changed against what its page
//!   showed; `assets`: the stylesheet and the small script.

mod assets;
mod client;
mod cookies;
mod csrf;
mod edits;
mod ending;
mod errors;
mod extract;
mod fetch_site;
mod headers;
mod origin;
mod pages;
mod router;
pub mod session;
mod state;
mod usage;
mod verify;
mod view;

pub use errors::{TimedOut, timed_out_page};
pub use router::{ConsoleConfig, router};
