//! `flux-store`: Flux's record of what every request did.
//!
//! - [`model`]: the records (`flux-record`, re-exported): mutations with before/after
//!   images, transaction events, typed gaps, statements, spans, and how a mutation's
//!   outcome is resolved.
//! - [`layout`]: the column families.
//! - [`compaction`]: compaction filters dropping unowned records past retention.
//! - [`keys`]: order-preserving key encodings.
//! - [`error`]: store failures; private data dirs.
//! - [`db`]: the RocksDB layout, writing batches, reading as a live secondary.
//! - [`writer`]: the batched writer thread behind a bounded channel, with durability modes.
//! - [`query`]: row history and a request's changes, each with its outcome.
//! - [`retention`]: dropping the oldest requests whole, by age or size.
//! - [`stats`]: per-family sizes and time ranges.
//! - [`summary`]: the slot for the per-request summary the store keeps as spans arrive;
//!   the reading library (`flux-read`) fills it, as it owns what spans mean.
//! - [`upgrade`]: reading older data dirs' records and rewriting them in place.
//!
//! It knows nothing of the wire protocol, and interprets nothing: the daemon turns the
//! proxy's capture events into these records, and `flux-read` reads them.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod compaction;
pub mod db;
pub mod error;
pub mod keys;
pub mod layout;
pub mod query;
pub mod retention;
pub mod stats;
pub mod summary;
pub mod upgrade;
pub mod writer;

pub use flux_record as model;

pub use db::{private_dir, Store, StoreError, SCHEMA_VERSION};
pub use model::{
    nanos, Exchange, Gap, GapReason, Mutation, Nanos, Op, Outcome, Record, RequestSummary, Source,
    Span, SpanEvent, SpanKind, SpanSource, StatementRecord, TxEvent, TxId, TxRecord,
};
pub use query::{HistoryEntry, MutationView};
pub use retention::{Expired, Policy};
pub use stats::FamilyStats;
pub use summary::Summarizer;
pub use writer::{
    Durability, StoreSlot, WriteRejected, Writer, WriterConfig, WriterHandle, WriterStats,
};
