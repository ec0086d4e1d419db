//! `flux-store`: Flux's record of what every request did.
//!
//! - [`model`]: the records (mutations with before/after images, transaction events,
//!   gaps) and how a mutation's outcome is resolved.
//! - [`keys`]: order-preserving key encodings.
//! - [`db`]: the RocksDB layout, writing batches, reading as a live secondary.
//! - [`writer`]: the batched writer thread behind a bounded channel, with durability modes.
//! - [`query`]: row history, a request's changes, per-column blame.
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
pub mod trace;
pub mod why;
pub mod writer;

pub use db::{private_dir, Store, StoreError, SCHEMA_VERSION};
pub use model::{
    Exchange, Gap, Mutation, Nanos, Op, Outcome, Record, RequestSummary, Source, Span, SpanEvent,
    SpanKind, SpanSource, StatementRecord, TxEvent, TxId, TxRecord,
};
pub use query::{blame, Blame, ColumnBlame, HistoryEntry};
pub use writer::{Durability, WriteRejected, Writer, WriterConfig, WriterHandle, WriterStats};
