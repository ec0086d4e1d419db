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
        /// The request id in force for it (capture on).
        request: Option<String>,
        /// Its command, from the proxy's analysis (`insert`).
        verb: Option<String>,
        /// The tables it acts on, from the proxy's analysis.
        tables: Vec<String>,
        /// Rows its tag reports (`None`: no count, or it failed).
        rows: Option<u64>,
    },
    /// The session ended.
    SessionEnded {
        /// The session.
        session: SessionId,
    },
    /// A row a statement wrote, with its images.
    Mutation(MutationEvent),
    /// A transaction that wrote rows ended.
    TxEnded {
        /// The session.
        session: SessionId,
        /// The transaction's number within the session.
        tx: u64,
        /// When the proxy saw it end.
        at: SystemTime,
        /// How it ended.
        outcome: TxOutcome,
    },
    /// `ROLLBACK TO SAVEPOINT` undid the transaction's writes numbered `from..to`.
    RolledBackTo {
        /// The session.
        session: SessionId,
        /// The transaction's number within the session.
        tx: u64,
        /// When.
        at: SystemTime,
        /// First undone write (its `tx_index`).
        from: u32,
        /// One past the last undone write.
        to: u32,
    },
    /// Writes the proxy could not image.
    Gap {
        /// The session.
        session: SessionId,
        /// When.
        at: SystemTime,
        /// The table, when known.
        table: Option<String>,
        /// How many rows the statement reported (0 when unknown).
        count: u64,
        /// Why.
        reason: GapReason,
        /// The request that made them.
        request: Option<String>,
    },
}

/// One captured row change.
#[derive(Debug, Clone)]
pub struct MutationEvent {
    /// The session.
    pub session: SessionId,
    /// The transaction's number within the session.
    pub tx: u64,
    /// Order of this write within its transaction (savepoint ranges refer to it).
    pub tx_index: u32,
    /// When the proxy read the row's images.
    pub at: SystemTime,
    /// Table, as the store names it.
    pub table: String,
    /// Primary-key values in key order; `None` for tables without a primary key.
    pub key: Option<Vec<String>>,
    /// What happened to the row.
    pub op: Op,
    /// Row before (JSON as PostgreSQL produced it).
    pub before: Option<String>,
    /// Row after.
    pub after: Option<String>,
    /// The request that made the change.
    pub request: Option<String>,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Inserted.
    Insert,
    /// Updated.
    Update,
    /// Deleted.
    Delete,
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Committed.
    Committed,
    /// Rolled back (error, `ROLLBACK`, `COMMIT` of a failed transaction, connection lost).
    RolledBack,
    /// The connection was lost while the transaction's end was in flight.
    Unknown,
}

/// Resolves when what it waits for is durable.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Receives capture events. Implementations must return quickly and never block.
pub trait EventSink: Send + Sync + 'static {
    /// Accepts one event.
    fn emit(&self, event: CaptureEvent);

    /// Accepts the events a session gathered from one read, in order, leaving `events`
    /// empty. Sinks that hand events to another thread should take them in one go.
    fn emit_all(&self, events: &mut Vec<CaptureEvent>) {
        for e in events.drain(..) {
            self.emit(e);
        }
    }

    /// With strict durability, a future that resolves once every event emitted so far is
    /// on disk; the session holds a transaction's commit reply until then. `None` (the
    /// default) when durability is relaxed.
    fn durable(&self) -> Option<Durable> {
        None
    }

    /// Whether the sink wants [`CaptureEvent::Statement`] for statements no request id
    /// tags (the default); a sink that keeps only requests' statements says no, and the
    /// session skips building them.
    fn untagged_statements(&self) -> bool {
        true
    }

    /// When the sink has more queued than it wants to hold (a bulk write's images), a
    /// future that resolves once it has caught up or given up waiting; the session reads
    /// no more from the server until then, so images stream at the store's pace instead
    /// of piling up in memory. `None` (the default) when nothing is backed up.
    fn backpressure(&self) -> Option<Durable> {
        None
    }

    /// Whether the sink may ever refuse writes (`--on-store-failure=reject`); asked once
    /// per session, so sessions of a fail-open sink never ask [`refusal`](Self::refusal).
    fn may_refuse(&self) -> bool {
        false
    }

    /// With `--on-store-failure=reject`: why writes must be refused now (what they
    /// would record cannot be kept), else `None` (the default: fail open).
    fn refusal(&self) -> Option<String> {
        None
    }
}

/// Why capture left a write alone (or imaged it only in part): the record model's type,
/// so the store keeps what the planner decided, not a sentence.
pub use flux_record::GapReason;
