//! `flux-store`: Flux's record of what every request did.
//!
//! - [`model`]: the records (mutations with before/after images, transaction events,
//!   gaps) and how a mutation's outcome is resolved.
//! - [`keys`]: order-preserving key encodings.
//! - [`db`]: the RocksDB layout, writing batches, reading as a live secondary.
//! - [`writer`]: the batched writer thread behind a bounded channel, with durability modes.
//! - [`query`]: row history, a request's changes, per-column blame.
//! - [`retention`]: dropping the oldest requests whole, by age or size.
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

pub mod db;
pub mod keys;
pub mod model;
pub mod query;
pub mod retention;
pub mod stats;
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
