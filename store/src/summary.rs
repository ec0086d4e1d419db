//! The per-request summary the store keeps for listing (`flux tail` reads it without
//! reading any span). What a summary says (the root span, the status, the root cause) is
//! the reading library's to decide, so the store asks a [`Summarizer`] for it as spans
//! arrive: `flux-read` provides the one every writer uses.

use crate::model::{RequestSummary, Span};

/// Computes request summaries for the store's writer.
pub trait Summarizer: Send + Sync + std::fmt::Debug {
    /// The summary of a request from all its spans.
    fn summarize(&self, request: &str, spans: Vec<Span>) -> RequestSummary;

    /// A summary updated with more spans without reading the request's others (requests
    /// with very many spans).
    fn fold(&self, old: &RequestSummary, new: &[Span]) -> RequestSummary;
}
