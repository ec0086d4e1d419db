//! Capture: the layer behind the relay's seams that records what each write did.
//!
//! - [`event`]: what capture reports ([`CaptureEvent`], typed [`GapReason`]s) and the
//!   [`EventSink`] that takes it.
//! - [`analysis`]: a string's statements and their role changes (`sqlparser`), with
//!   [`classify`]: what each parsed statement is.
//! - [`names`]: SQL names as PostgreSQL folds them.
//! - [`request_id`]: which request a statement belongs to (sqlcommenter, `SET`,
//!   `set_config`).
//! - [`shape`]: a statement's verb and tables, for the record.
//! - [`returning`]: the rewrite, the `RETURNING` appended to a write.
//! - [`catalog`]: primary keys, relation kinds, rules and per-role SELECT privilege from
//!   `pg_catalog`.
//! - [`role`]: role changes, and the session's effective role, exact and as the planner
//!   must assume it.
//! - [`plan`]: per-statement decisions (rewrite or gap) and reading images back.
//! - [`refuse`]: refusing writes the store cannot keep (`--on-store-failure=reject`).
//! - [`txn`]: transactions, savepoints, request ids and roles as the server confirms them.
//! - [`layer`]: the relay seams ([`crate::relay::ClientSide`],
//!   [`crate::relay::ServerSide`]) that put the above to work per frame.

pub mod analysis;
pub mod catalog;
pub mod classify;
pub mod event;
pub(crate) mod layer;
pub mod names;
pub mod plan;
pub mod refuse;
pub mod request_id;
pub mod returning;
pub mod role;
pub mod shape;
pub mod txn;

pub use event::{
    CaptureEvent, Durable, EventSink, GapReason, MutationEvent, Op, SessionId, TxOutcome,
};
