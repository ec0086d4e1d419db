//! Two requests' spans aligned by their path in the tree (`flux trace diff`), each pair
//! judged same, faster, slower, changed, missing or new.

use std::collections::HashMap;

use serde::Serialize;

use flux_store::model::Span;

use crate::failure::{failure_message, is_failed};
use crate::tree::Tree;

/// How a span compares between two requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Both ran, similar duration, same outcome.
    Same,
    /// Both ran; the second took markedly less time.
    Faster,
    /// Both ran; the second took markedly more time.
    Slower,
    /// Both ran; one failed and the other did not, or they failed differently.
    Changed,
    /// Only in the first request.
    Missing,
    /// Only in the second request.
    New,
}

/// One side of a [`DiffRow`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpanFacts {
    /// Duration, ns.
    pub duration: u64,
    /// The failure's message, if it failed.
    pub error: Option<String>,
}

/// One aligned span of `flux trace diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    /// The span's path from the root (`GET /x/handler/db.select(users)`), with `#2`, `#3`
    /// for repeated sibling names.
    pub path: String,
    /// Span name.
    pub name: String,
    /// Depth in the tree.
    pub depth: usize,
    /// In the first request.
    pub before: Option<SpanFacts>,
    /// In the second request.
    pub after: Option<SpanFacts>,
    /// How they compare.
    pub verdict: Verdict,
}

fn facts(span: &Span) -> SpanFacts {
    SpanFacts {
        duration: span.duration(),
        error: is_failed(span).then(|| failure_message(span)),
    }
}

/// A tolerance below which two durations count as the same: 10%, at least 1 ms.
fn same_duration(a: u64, b: u64) -> bool {
    let tolerance = (a.max(b) / 10).max(1_000_000);
    a.abs_diff(b) <= tolerance
}

fn verdict(a: &SpanFacts, b: &SpanFacts) -> Verdict {
    if a.error != b.error {
        Verdict::Changed
    } else if same_duration(a.duration, b.duration) {
        Verdict::Same
    } else if b.duration < a.duration {
        Verdict::Faster
    } else {
        Verdict::Slower
    }
}

/// Aligns two requests' spans by their path in the tree (names from the root; repeated
/// sibling names numbered in start order). Rows follow the first tree's order, with spans
/// only the second has placed after their aligned siblings.
pub fn diff(a: &Tree, b: &Tree) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    merge_level(a, &a.roots, b, &b.roots, "", 0, &mut rows);
    rows
}

/// Children keyed `name#k` (k-th sibling of that name, from 1), in order.
pub(crate) fn keyed(tree: &Tree, ids: &[usize]) -> Vec<(String, usize)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    ids.iter()
        .map(|&i| {
            let name = tree.nodes[i].span.name.as_str();
            let k = seen.entry(name).or_insert(0);
            *k += 1;
            let key = if *k == 1 {
                name.to_string()
            } else {
                format!("{name}#{k}")
            };
            (key, i)
        })
        .collect()
}

fn merge_level(
    a: &Tree,
    a_ids: &[usize],
    b: &Tree,
    b_ids: &[usize],
    prefix: &str,
    depth: usize,
    rows: &mut Vec<DiffRow>,
) {
    // Roots align as "the request's root" whatever their names (two endpoints can be diffed).
    let (ka, kb) = if depth == 0 {
        let mut ka = keyed(a, a_ids);
        let mut kb = keyed(b, b_ids);
        if let (Some(x), Some(y)) = (ka.first_mut(), kb.first_mut()) {
            x.0 = "(root)".to_string();
            y.0 = "(root)".to_string();
        }
        (ka, kb)
    } else {
        (keyed(a, a_ids), keyed(b, b_ids))
    };
    let b_map: HashMap<&str, usize> = kb.iter().map(|(k, i)| (k.as_str(), *i)).collect();
    let a_keys: std::collections::HashSet<&str> = ka.iter().map(|(k, _)| k.as_str()).collect();
    let emit = |key: &str, ai: Option<usize>, bi: Option<usize>, rows: &mut Vec<DiffRow>| {
        let span = ai
            .map(|i| &a.nodes[i].span)
            .or(bi.map(|i| &b.nodes[i].span));
        let Some(span) = span else { return };
        let path = if prefix.is_empty() {
            span.name.clone()
        } else {
            format!("{prefix}/{key}")
        };
        let before = ai.map(|i| facts(&a.nodes[i].span));
        let after = bi.map(|i| facts(&b.nodes[i].span));
        let v = match (&before, &after) {
            (Some(x), Some(y)) => verdict(x, y),
            (Some(_), None) => Verdict::Missing,
            _ => Verdict::New,
        };
        let name = match (ai, bi) {
            (Some(i), Some(j)) if a.nodes[i].span.name != b.nodes[j].span.name => {
                format!("{} → {}", a.nodes[i].span.name, b.nodes[j].span.name)
            }
            _ => span.name.clone(),
        };
        rows.push(DiffRow {
            path: path.clone(),
            name,
            depth,
            before,
            after,
            verdict: v,
        });
        let a_children = ai.map_or(&[][..], |i| &a.nodes[i].children[..]);
        let b_children = bi.map_or(&[][..], |i| &b.nodes[i].children[..]);
        merge_level(a, a_children, b, b_children, &path, depth + 1, rows);
    };
    for (key, ai) in &ka {
        emit(key, Some(*ai), b_map.get(key.as_str()).copied(), rows);
    }
    for (key, bi) in &kb {
        if !a_keys.contains(key.as_str()) {
            emit(key, None, Some(*bi), rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{server, span};

    #[test]
    fn diff_aligns_by_path_and_judges_each_span() {
        let ms = 1_000_000;
        let a = Tree::build(vec![
            server("a", 0, 81 * ms, "201"),
            span("b", Some("a"), "db.insert(orders)", ms, 5 * ms),
            span("c", Some("a"), "stripe.charge", 6 * ms, 74 * ms),
            span("d", Some("a"), "send_slack", 75 * ms, 82 * ms),
            span("e", Some("a"), "cache", 1, 2),
            span("f", Some("a"), "cache", 3, 4),
        ]);
        let mut charge = span("c2", Some("a2"), "stripe.charge", 6 * ms, 40 * ms);
        charge.error = Some("timeout".into());
        let b = Tree::build(vec![
            server("a2", 0, 44 * ms, "500"),
            span("b2", Some("a2"), "db.insert(orders)", ms, 5 * ms),
            charge,
            span("e2", Some("a2"), "cache", 1, 2),
            span("g2", Some("a2"), "audit", 41 * ms, 42 * ms),
        ]);
        let rows = diff(&a, &b);
        let got: Vec<(&str, Verdict)> = rows.iter().map(|r| (r.path.as_str(), r.verdict)).collect();
        use Verdict::*;
        assert_eq!(
            got,
            vec![
                ("POST /checkout", Faster),
                ("POST /checkout/cache", Same),
                ("POST /checkout/cache#2", Missing),
                ("POST /checkout/db.insert(orders)", Same),
                ("POST /checkout/stripe.charge", Changed),
                ("POST /checkout/send_slack", Missing),
                ("POST /checkout/audit", New),
            ]
        );
        assert_eq!(
            rows[4].after.as_ref().unwrap().error.as_deref(),
            Some("timeout")
        );
    }
}
