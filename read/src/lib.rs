//! `flux-read`: reading Flux's record. The one home of what the record means, used by
//! `flux` (which only parses arguments and renders), replay (selection, judging, stubs,
//! bisect) and the admin endpoint.
//!
//! - [`failure`]: what "failed" means for a span, a statement and a request.
//! - [`tree`]: a request's spans as a tree, its root cause and code location.
//! - [`cause`]: root causes read as one-liners (HTTP statuses, timeouts, connections, gRPC).
//! - [`location`]: stack frames of every common language, relative to the app's root.
//! - [`summary`]: the per-request summary the store keeps ([`Summaries`]).
//! - [`diff`]: two requests aligned span by span (`flux trace diff`).
//! - [`why`]: a request's causes, writes and advice (`flux why`).
//! - [`skipped`]: spans a failed request never ran that its route's passing requests ran.
//! - [`steps`]: a request span by span with inputs, outputs and row images (`trace debug`).
//! - [`blame`]: per-column blame over a row's history.
//! - [`gap`]: what a gap's reason says, in words.
//! - [`address`]: a request named by a unique prefix of its id.
//! - [`window`]: time windows (`14:00..14:05`, `-15m..now`).

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod address;
pub mod blame;
pub mod cause;
pub mod diff;
pub mod failure;
#[cfg(test)]
mod fixture;
pub mod gap;
pub mod location;
pub mod skipped;
pub mod steps;
pub mod summary;
pub mod tree;
pub mod why;
pub mod window;

use std::path::Path;
use std::sync::Arc;

use flux_store::{Store, StoreError};

pub use summary::Summaries;
pub use tree::Tree;

/// Opens a data dir as its writer, with the summaries this crate computes.
pub fn open_writer(path: &Path) -> Result<Store, StoreError> {
    Store::open(path, Arc::new(Summaries))
}

/// A request's span tree.
pub fn trace(store: &Store, request: &str) -> Result<Tree, StoreError> {
    Ok(Tree::build(store.trace_spans(request)?))
}
