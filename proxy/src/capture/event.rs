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

/// Why capture left a write alone (or imaged it only in part). The store keeps the
/// sentence [`Display`](std::fmt::Display) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapReason {
    /// A statement form the proxy does not image (`TRUNCATE`, `COPY FROM`, `MERGE`, …).
    Statement(&'static str),
    /// `sqlparser` did not understand the statement.
    NotUnderstood,
    /// Another statement of the same query string was not understood, so none is rewritten
    /// (the split between them may not be the server's).
    StringNotUnderstood,
    /// `DO` or `CALL`: writes inside a routine are invisible to `RETURNING`.
    Routine(&'static str),
    /// `EXECUTE` of a write prepared with SQL `PREPARE`.
    Prepared(String),
    /// `pg_catalog` could not be read (`None`: not read yet).
    CatalogUnreadable(Option<crate::capture::catalog::CatalogError>),
    /// The table is not in the catalog snapshot.
    TableNotFound,
    /// An unqualified name found in several schemas whose tables capture treats differently.
    Ambiguous,
    /// What the table is keeps capture away (a view, rules, a foreign table, …).
    Relation(&'static str),
    /// Row-level security applies SELECT policies to returned rows.
    RowSecurity,
    /// A role the statement may run as lacks table-level SELECT.
    NoSelect(String),
    /// A role the statement may run as was set in the same query string or pipeline, and
    /// its privileges were not read yet.
    PrivilegesUnread(String),
    /// The session's role is not known (set from a value only the server knows).
    RoleUnknown,
    /// DDL ran earlier in the transaction or pipeline: the catalog is not settled.
    CatalogUnsettled,
    /// Imaged, but without a before image, for this reason.
    NoBeforeImage(&'static str),
    /// Rows written by triggers on the table.
    Triggers {
        /// The table.
        table: String,
        /// Its trigger names, comma-separated.
        names: String,
    },
    /// Rows changed by a foreign key's ON DELETE/UPDATE action.
    Cascade {
        /// The referenced table the write touched.
        parent: String,
    },
}

impl GapReason {
    /// A short, fixed name for the reason (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            GapReason::Statement(_) => "statement_form",
            GapReason::NotUnderstood | GapReason::StringNotUnderstood => "not_understood",
            GapReason::Routine(_) => "routine",
            GapReason::Prepared(_) => "sql_prepare",
            GapReason::CatalogUnreadable(_) => "catalog_unreadable",
            GapReason::TableNotFound => "table_not_found",
            GapReason::Ambiguous => "ambiguous_name",
            GapReason::Relation(_) => "relation_kind",
            GapReason::RowSecurity => "row_security",
            GapReason::NoSelect(_) | GapReason::PrivilegesUnread(_) | GapReason::RoleUnknown => {
                "privileges"
            }
            GapReason::CatalogUnsettled => "catalog_unsettled",
            GapReason::NoBeforeImage(_) => "no_before_image",
            GapReason::Triggers { .. } => "triggers",
            GapReason::Cascade { .. } => "cascade",
        }
    }

    /// The write was recorded, only its before image is missing.
    pub fn partial(&self) -> bool {
        matches!(self, GapReason::NoBeforeImage(_))
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GapReason::Statement(what) => f.write_str(what),
            GapReason::NotUnderstood => {
                f.write_str("statement not understood by the proxy's SQL parser")
            }
            GapReason::StringNotUnderstood => f.write_str(
                "another statement in the same query string was not understood by the proxy's SQL parser",
            ),
            GapReason::Routine(what) => write!(f, "writes inside {what} are not captured"),
            GapReason::Prepared(name) => {
                write!(f, "EXECUTE of the SQL-prepared write {name} is not captured")
            }
            GapReason::CatalogUnreadable(Some(why)) => write!(f, "pg_catalog unreadable: {why}"),
            GapReason::CatalogUnreadable(None) => f.write_str("pg_catalog not read yet"),
            GapReason::TableNotFound => f.write_str("table not found in pg_catalog"),
            GapReason::Ambiguous => f.write_str(
                "table name found in several schemas that capture treats differently; search_path decides",
            ),
            GapReason::Relation(what) => f.write_str(what),
            GapReason::RowSecurity => f.write_str("row-level security is enabled on the table"),
            GapReason::NoSelect(role) => write!(
                f,
                "role {role} lacks SELECT on the table (capture reads rows back with RETURNING)"
            ),
            GapReason::PrivilegesUnread(role) => write!(
                f,
                "role {role} was set in the same query string or pipeline; its privileges were not read yet"
            ),
            GapReason::RoleUnknown => f.write_str(
                "the session's role was set to a value the proxy cannot see (computed set_config, DO block)",
            ),
            GapReason::CatalogUnsettled => f.write_str(
                "DDL earlier in this transaction or pipeline: pg_catalog not settled",
            ),
            GapReason::NoBeforeImage(why) => write!(f, "{why}: before image unavailable"),
            GapReason::Triggers { table, names } => write!(
                f,
                "rows written by triggers on {table} ({names}) are not captured"
            ),
            GapReason::Cascade { parent } => write!(
                f,
                "rows may have changed through the ON DELETE/UPDATE action of a foreign key to {parent}"
            ),
        }
    }
}
