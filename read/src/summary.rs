//! A request's one-line summary as `flux tail` lists it, derived from its span tree and
//! kept by the store as spans arrive (see [`Summaries`]).

use flux_store::model::{Nanos, RequestSummary, Span, SpanKind, SpanSource};

use flux_store::Summarizer;

use crate::failure::{failed_status, failure_message, is_failed};
use crate::tree::Tree;

/// The summaries every writer keeps: [`summarize`] over the request's tree, [`fold`]
/// past the store's rebuild bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summaries;

impl Summarizer for Summaries {
    fn summarize(&self, request: &str, spans: Vec<Span>) -> RequestSummary {
        summarize(request, &Tree::build(spans))
    }

    fn fold(&self, old: &RequestSummary, new: &[Span]) -> RequestSummary {
        fold(old, new)
    }
}

/// The request's summary: method, path, status from the root span's HTTP attributes (old
/// and new semantic-convention names), timing from the root (or all spans when the request
/// is DB-only), and the root cause's message.
pub fn summarize(id: &str, tree: &Tree) -> RequestSummary {
    let spans = || tree.nodes.iter().map(|n| &n.span);
    let app = spans().any(|s| s.source == SpanSource::App);
    let root = tree.root().filter(|r| r.source == SpanSource::App);
    let http = root
        .into_iter()
        .chain(spans().filter(|s| s.kind == SpanKind::Server));
    let find = |keys: &[&str]| {
        http.clone()
            .find_map(|s| s.attr_any(keys))
            .map(str::to_string)
    };
    let method = find(&["http.request.method", "http.method"]);
    let path = find(&["http.route"])
        .or_else(|| find(&["url.path"]))
        .or_else(|| find(&["http.target"]).map(|t| strip_query(&t)))
        .or_else(|| find(&["url.full", "http.url"]).map(|u| url_path(&u)));
    let status = find(&["http.response.status_code", "http.status_code"])
        .and_then(|s| s.parse::<u16>().ok());
    let (start, duration) = match root {
        Some(r) => (r.start, r.duration()),
        None => {
            let start = spans().map(|s| s.start).min().unwrap_or(0);
            let end = spans().map(|s| s.end).max().unwrap_or(start);
            (start, end.saturating_sub(start))
        }
    };
    let error = tree
        .root_cause()
        .map(|i| crate::cause::read(tree, i).text)
        .or_else(|| {
            status
                .filter(|s| failed_status(*s))
                .map(|s| format!("HTTP {s}"))
        });
    RequestSummary {
        id: id.to_string(),
        method,
        path,
        status,
        start,
        duration,
        error,
        service: tree.root().and_then(|r| r.service.clone()),
        name: tree.root().map(|r| r.name.clone()).unwrap_or_default(),
        spans: tree.nodes.len() as u32,
        app,
    }
}

/// A summary updated with more spans without rebuilding the tree (for requests with very
/// many spans): counts, the end of the request, and a first failure if none was known.
pub fn fold(old: &RequestSummary, new: &[Span]) -> RequestSummary {
    let mut out = old.clone();
    out.spans = out.spans.saturating_add(new.len() as u32);
    let end = new
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or(0)
        .max(old.start.saturating_add(old.duration));
    if !old.app {
        out.duration = end.saturating_sub(old.start);
    }
    if out.error.is_none() {
        out.error = new.iter().find(|s| is_failed(s)).map(failure_message);
    }
    out.app |= new.iter().any(|s| s.source == SpanSource::App);
    out
}

fn strip_query(target: &str) -> String {
    target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string()
}

fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) => strip_query(&after_scheme[i..]),
        None => "/".to_string(),
    }
}

/// Whether a request's summary is worth listing yet: it has its root span, or nothing has
/// been added to it for `settle` (DB-only requests, or apps that never export the root).
pub fn settled(summary: &RequestSummary, now: Nanos, settle: u64) -> bool {
    summary.method.is_some()
        || summary
            .start
            .saturating_add(summary.duration)
            .saturating_add(settle)
            <= now
}
