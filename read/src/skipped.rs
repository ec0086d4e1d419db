//! Spans that never ran: where a request failed, the spans the same route's recent
//! passing request has after the failure point, and this one lacks (DESIGN §5, the seed's
//! `send_slack — skipped (upstream error)`).

use std::collections::HashMap;

use serde::Serialize;

use crate::diff::{diff, Verdict};
use crate::tree::Tree;
use flux_store::model::RequestSummary;
use flux_store::{Store, StoreError};

/// How many of the latest requests are searched for a passing one of the same route.
const SEARCH: usize = 2_000;

/// A span a failed request did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Its path in the passing request's tree (names from the root).
    pub path: String,
    /// The span of the failed request it would have been a child of (a node index).
    #[serde(skip)]
    pub parent: usize,
    /// The passing request it was seen in.
    pub seen_in: String,
}

/// The spans `request` (whose tree is `tree`) did not run after its failure that the
/// latest passing request of the same route ran; empty when the request did not fail or
/// no passing request of its route is recorded.
pub fn skipped(store: &Store, request: &str, tree: &Tree) -> Result<Vec<Skipped>, StoreError> {
    let Some(summary) = store.request(request)? else {
        return Ok(Vec::new());
    };
    let Some(cause) = tree.root_cause() else {
        return Ok(Vec::new());
    };
    let Some(passing) = latest_passing(store, &summary)? else {
        return Ok(Vec::new());
    };
    let reference = crate::trace(store, &passing.id)?;
    let (Some(ref_root), Some(root)) = (reference.root(), tree.root()) else {
        return Ok(Vec::new());
    };
    // Where the failure happened, as an offset into the request.
    let failed_at = tree.nodes[cause].span.start.saturating_sub(root.start);
    let ref_start = ref_root.start;
    let ref_offsets: HashMap<String, u64> = node_paths(&reference, &ref_root.name)
        .into_iter()
        .map(|(path, i)| {
            (
                path,
                reference.nodes[i].span.start.saturating_sub(ref_start),
            )
        })
        .collect();
    let here = node_paths(tree, &ref_root.name);
    let mut out: Vec<Skipped> = Vec::new();
    for row in diff(&reference, tree) {
        if row.verdict != Verdict::Missing {
            continue;
        }
        let Some((parent_path, _)) = row.path.rsplit_once('/') else {
            continue;
        };
        // Only the topmost span of a missing subtree: its parent ran here.
        let Some(&parent) = here.get(parent_path) else {
            continue;
        };
        if ref_offsets.get(&row.path).is_none_or(|&at| at < failed_at) {
            continue;
        }
        out.push(Skipped {
            name: row.name,
            path: row.path,
            parent,
            seen_in: passing.id.clone(),
        });
    }
    Ok(out)
}

/// The latest recorded request of the same route (root span name) that passed.
fn latest_passing(
    store: &Store,
    failed: &RequestSummary,
) -> Result<Option<RequestSummary>, StoreError> {
    Ok(store.latest_requests(SEARCH)?.into_iter().rev().find(|r| {
        r.id != failed.id
            && r.name == failed.name
            && r.method == failed.method
            && !crate::failure::request_failed(r)
            && r.status.is_none_or(crate::failure::success_status)
    }))
}

/// Every node's path as [`diff`] names it (the root by `root_name`; repeated sibling names
/// numbered in start order).
fn node_paths(tree: &Tree, root_name: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut stack: Vec<(usize, String)> = tree
        .roots
        .first()
        .map(|&r| (r, root_name.to_string()))
        .into_iter()
        .collect();
    while let Some((i, path)) = stack.pop() {
        for (key, c) in crate::diff::keyed(tree, &tree.nodes[i].children) {
            stack.push((c, format!("{path}/{key}")));
        }
        out.insert(path, i);
    }
    out
}
