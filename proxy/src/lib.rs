//! `flux-proxy`: a PostgreSQL wire-protocol proxy that relays sessions byte for byte and
//! reports what it sees to a capture sink.
//!
//! Two layers. The relay, which alone must be transparent:
//! - [`server`]: the listener, one task per session, shutdown.
//! - [`session`]: one connection's life: startup, the relay, its end.
//! - [`startup`]: TLS negotiation, `StartupMessage`/`CancelRequest`, the auth relay.
//! - [`relay`]: the two relay loops and their per-frame seams, with the pass-through one.
//! - [`pipeline`]: the per-connection FIFO matching responses to requests.
//! - [`frame`] / [`message`]: message boundaries and the size limit; decoding the few
//!   messages the proxy reads, encoding its own errors.
//! - [`upstream`] / [`stream`]: the database address, TLS per `sslmode`, connecting.
//! - [`config`], [`shared`], [`error`]: configuration, what sessions share, why one ended.
//!
//! And [`capture`], behind the relay's seams: statement analysis and rewriting, the
//! catalog, roles, transactions, and the events it hands to an [`EventSink`].

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod capture;
pub mod config;
pub(crate) mod error;
pub mod frame;
pub mod message;
pub mod pipeline;
pub(crate) mod relay;
pub mod server;
pub(crate) mod session;
pub(crate) mod shared;
pub mod startup;
pub mod stream;
pub mod upstream;

pub use capture::{CaptureEvent, EventSink};
pub use config::{client_tls_config, CatalogLogin, ProxyConfig, ProxyError};
pub use server::Proxy;
pub use shared::{StatementStats, Stats, COMMANDS, LATENCY_BUCKETS};
pub use upstream::{SslMode, Upstream};
