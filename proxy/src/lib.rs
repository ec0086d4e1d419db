//! `flux-proxy`: a PostgreSQL wire-protocol proxy that relays sessions byte for byte and
//! reports what it sees to a capture sink.
//!
//! - [`frame`]: finding message boundaries, enforcing the size limit.
//! - [`message`]: decoding the few messages the proxy reads; encoding its own errors.
//! - [`startup`]: TLS negotiation, `StartupMessage`/`CancelRequest`, the auth relay.
//! - [`pipeline`]: the per-connection FIFO matching responses to requests.
//! - [`session`]: one client session, two relay loops in one task.
//! - [`upstream`]: the database address, TLS per `sslmode`, connecting.
//! - [`server`]: the listener, shutdown, counters.
//! - [`capture`]: the events a session emits and the sink that takes them.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod capture;
pub mod catalog;
pub mod frame;
pub mod message;
pub mod pipeline;
pub mod plan;
pub mod rewrite;
pub mod role;
pub mod server;
pub mod session;
pub mod startup;
pub mod stream;
pub mod txn;
pub mod upstream;

pub use capture::{CaptureEvent, EventSink};
pub use server::{client_tls_config, Proxy, ProxyConfig, ProxyError, Stats};
pub use upstream::{SslMode, Upstream};
