//! `flux-store`: Flux's record of what every request did.
//!
//! - [`model`]: the records (mutations with before/after images, transaction events,
//!   gaps) and how a mutation's outcome is resolved.
//! - [`cause`]: root causes read as one-liners (HTTP statuses, timeouts, connections, gRPC).
//! - [`location`]: stack frames of every common language, relative to the app's root.
//! - [`keys`]: order-preserving key encodings.
//! - [`db`]: the RocksDB layout, writing batches, reading as a live secondary.
//! - [`writer`]: the batched writer thread behind a bounded channel, with durability modes.
//! - [`query`]: row history, a request's changes, per-column blame.
//! - [`retention`]: dropping the oldest requests whole, by age or size.
//! - [`skipped`]: spans a failed request never ran that its route's passing requests ran.
//! - [`steps`]: a request span by span with inputs, outputs and row images (`trace debug`).
//! - [`stats`]: per-family sizes and time ranges.
//! - [`trace`]: a request's span tree, its summary, root cause, location, and trace diffs.
//!
//! It knows nothing of the wire protocol: the daemon turns the proxy's capture events
//! into these records.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod cause;
pub mod db;
pub mod keys;
pub mod location;
pub mod model;
pub mod query;
pub mod retention;
pub mod skipped;
pub mod stats;
pub mod steps;
pub mod trace;
pub mod why;
pub mod writer;

pub use db::{private_dir, Store, StoreError, SCHEMA_VERSION};
pub use model::{
    Exchange, Gap, Mutation, Nanos, Op, Outcome, Record, RequestSummary, Source, Span, SpanEvent,
    SpanKind, SpanSource, StatementRecord, TxEvent, TxId, TxRecord,
};
pub use query::{blame, Blame, ColumnBlame, HistoryEntry};
pub use retention::{Expired, Policy};
pub use stats::FamilyStats;
pub use writer::{
    Durability, StoreSlot, WriteRejected, Writer, WriterConfig, WriterHandle, WriterStats,
};

/// Nanoseconds since the Unix epoch (0 before it).
pub fn nanos(t: std::time::SystemTime) -> Nanos {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
