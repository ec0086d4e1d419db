//! Capture events: what a session reports about the traffic it relays.
//!
//! The proxy never writes storage itself; it hands events to an [`EventSink`]. A sink must
//! not block the session (the store writer behind it is fed through a bounded channel
//! and reports what it had to drop), so `emit` is synchronous and cheap.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Identifies one client session for the life of the process.
pub type SessionId = u64;

/// Something the proxy observed.
#[derive(Debug, Clone)]
pub enum CaptureEvent {
    /// A client authenticated and the session entered the relay.
    SessionStarted {
        /// The session.
        session: SessionId,
        /// Client address.
        peer: SocketAddr,
        /// User the client connected as.
        user: String,
        /// Database the client connected to.
        database: String,
    },
    /// The server finished a statement (or a simple query's statement).
    Statement {
        /// The session.
        session: SessionId,
        /// SQL text as the client sent it (a simple query's whole string).
        sql: String,
        /// When the proxy forwarded it.
        started: SystemTime,
        /// Time from forwarding to the server's completion message.
        elapsed: Duration,
        /// `CommandComplete` tag (`INSERT 0 1`), or `None` on error.
        tag: Option<String>,
        /// SQLSTATE when the statement failed.
        sqlstate: Option<String>,
        /// The error's primary message.
        error: Option<String>,
    },
    /// The session ended.
    SessionEnded {
        /// The session.
        session: SessionId,
    },
}

/// Receives capture events. Implementations must return quickly and never block.
pub trait EventSink: Send + Sync + 'static {
    /// Accepts one event.
    fn emit(&self, event: CaptureEvent);
}
