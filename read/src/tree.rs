//! A request's spans as a tree: parents, roots, the root cause and its code location.
//!
//! Everything here is a pure function of the spans, so it does not matter in which order
//! or in how many exports they arrived: the tree is rebuilt from what is stored.

use std::collections::{BTreeMap, HashMap};

use flux_store::model::{Span, SpanKind, SpanSource};

use crate::failure::is_failed;
use crate::location::{Frame, Location};

/// One span in a [`Tree`].
#[derive(Debug, Clone)]
pub struct Node {
    /// The span.
    pub span: Span,
    /// Indexes of its children in [`Tree::nodes`], by start time.
    pub children: Vec<usize>,
    /// Index of its parent as the tree holds it (`None` for roots).
    pub parent: Option<usize>,
}

/// A request's spans arranged by parent.
///
/// Proxy statement spans whose parent is unknown (no sqlcommenter span id, or one the app
/// never exported) hang under the request's root. Spans whose parent has not arrived are
/// roots until it does; parent cycles (hostile input) are cut, never followed.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Every span, sorted by start time.
    pub nodes: Vec<Node>,
    /// Top-level spans: the request's root first, then any orphans by start time.
    pub roots: Vec<usize>,
}

impl Tree {
    /// Builds the tree. Duplicate span ids (an exporter's retry) keep the last copy.
    pub fn build(spans: Vec<Span>) -> Tree {
        let mut unique: BTreeMap<String, Span> = BTreeMap::new();
        for span in spans {
            unique.insert(span.id.clone(), span);
        }
        let mut spans: Vec<Span> = unique.into_values().collect();
        // Statements of one simple query share a start; the one that ended first ran first.
        spans.sort_by(|a, b| (a.start, a.end, &a.id).cmp(&(b.start, b.end, &b.id)));
        let index: HashMap<&str, usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let parent_of: Vec<Option<usize>> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parent
                    .as_deref()
                    .and_then(|p| index.get(p).copied())
                    .filter(|&p| p != i)
            })
            .collect();
        let main = main_root(&spans, &parent_of);
        let mut children = vec![Vec::new(); spans.len()];
        let mut roots = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match parent_of[i] {
                Some(p) => children[p].push(i),
                None => match main {
                    Some(m) if m != i && span.source == SpanSource::Proxy => children[m].push(i),
                    _ => roots.push(i),
                },
            }
        }
        // Cut parent cycles: a span not reachable from a root becomes one.
        loop {
            let reached = reachable(&roots, &children, spans.len());
            let Some(lost) = (0..spans.len()).find(|&i| !reached[i]) else {
                break;
            };
            for list in children.iter_mut() {
                list.retain(|&c| c != lost);
            }
            roots.push(lost);
        }
        roots.sort_by_key(|&r| (Some(r) != main, r));
        let mut parent = vec![None; spans.len()];
        for (i, list) in children.iter().enumerate() {
            for &c in list {
                parent[c] = Some(i);
            }
        }
        let nodes = spans
            .into_iter()
            .zip(children)
            .zip(parent)
            .map(|((span, children), parent)| Node {
                span,
                children,
                parent,
            })
            .collect();
        Tree { nodes, roots }
    }

    /// The request's root span, if there are any spans.
    pub fn root(&self) -> Option<&Span> {
        self.roots.first().map(|&r| &self.nodes[r].span)
    }

    /// Every node with its depth, depth-first in start order (the order `flux trace`
    /// prints).
    pub fn walk(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, usize)> = self.roots.iter().rev().map(|&r| (r, 0)).collect();
        while let Some((i, depth)) = stack.pop() {
            out.push((i, depth));
            for &c in self.nodes[i].children.iter().rev() {
                stack.push((c, depth + 1));
            }
        }
        out
    }

    /// The root cause: among failed spans, one none of whose descendants failed (the
    /// failure closest to its origin), earliest first.
    pub fn root_cause(&self) -> Option<usize> {
        let mut failed_below = vec![false; self.nodes.len()];
        // Children come after parents in the walk; go backwards to fold upwards.
        let walk = self.walk();
        for &(i, _) in walk.iter().rev() {
            if failed_below[i] || is_failed(&self.nodes[i].span) {
                if let Some(p) = self.nodes[i].parent {
                    failed_below[p] = true;
                }
            }
        }
        walk.iter()
            .map(|&(i, _)| i)
            .filter(|&i| is_failed(&self.nodes[i].span) && !failed_below[i])
            .min_by_key(|&i| (self.nodes[i].span.start, i))
    }

    /// Where in the code the failure at `node` happened: `code.filepath`/`code.lineno` on it
    /// or an ancestor, else the innermost application frame of a recorded exception's stack
    /// trace (its own, then its ancestors'); relative to the application's root, the
    /// directory its files share across the whole trace.
    pub fn location(&self, node: usize) -> Option<Location> {
        let mut chain = vec![node];
        let mut at = node;
        while let Some(p) = self.nodes[at].parent {
            if chain.contains(&p) {
                break;
            }
            chain.push(p);
            at = p;
        }
        let found = chain.iter().find_map(|&i| {
            let s = &self.nodes[i].span;
            let file = s.attr_any(&["code.filepath", "code.file.path"])?;
            let line = s.attr_any(&["code.lineno", "code.line.number"]);
            Some(Frame {
                file: file.to_string(),
                line: line.and_then(|l| l.parse().ok()),
                function: s
                    .attr_any(&["code.function", "code.function.name"])
                    .map(str::to_string),
                library: false,
            })
        });
        let found = found.or_else(|| {
            chain.iter().find_map(|&i| {
                stack_traces(&self.nodes[i].span)
                    .find_map(|t| crate::location::frames(t).into_iter().find(|f| !f.library))
            })
        })?;
        Some(found.locate(self.app_root().as_deref()))
    }

    /// The directory the application's own files share, over every stack trace and
    /// `code.filepath` in the trace.
    fn app_root(&self) -> Option<String> {
        let mut files = Vec::new();
        for n in &self.nodes {
            if let Some(f) = n.span.attr_any(&["code.filepath", "code.file.path"]) {
                files.push(f.to_string());
            }
            for t in stack_traces(&n.span) {
                files.extend(
                    crate::location::frames(t)
                        .into_iter()
                        .filter(|f| !f.library)
                        .map(|f| f.file),
                );
            }
        }
        crate::location::app_root(files.iter().map(String::as_str))
    }
}

/// The stack traces of a span's exception events.
fn stack_traces(span: &Span) -> impl Iterator<Item = &str> {
    span.events
        .iter()
        .filter(|e| e.name == "exception")
        .filter_map(|e| {
            e.attributes
                .iter()
                .find(|(k, _)| k == "exception.stacktrace")
                .map(|(_, v)| v.as_str())
        })
}

fn reachable(roots: &[usize], children: &[Vec<usize>], n: usize) -> Vec<bool> {
    let mut seen = vec![false; n];
    let mut stack = roots.to_vec();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        stack.extend(children[i].iter().copied());
    }
    seen
}

/// The request's root among spans without a (present) parent: an application SERVER span
/// that claims no parent, else any application span that claims none, else the earliest
/// application span whose parent is missing. Proxy spans are never the root of a request
/// that has application spans.
fn main_root(spans: &[Span], parent_of: &[Option<usize>]) -> Option<usize> {
    let top = |i: &usize| parent_of[*i].is_none();
    let app = |i: &usize| spans[*i].source == SpanSource::App;
    let n = spans.len();
    (0..n)
        .filter(top)
        .filter(app)
        .find(|&i| spans[i].parent.is_none() && spans[i].kind == SpanKind::Server)
        .or_else(|| {
            (0..n)
                .filter(top)
                .filter(app)
                .find(|&i| spans[i].parent.is_none())
        })
        .or_else(|| (0..n).filter(top).find(app))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::failure_message;
    use crate::fixture::{names, proxy, server, span};
    use crate::location::app_frame;
    use crate::summary::summarize;
    use flux_store::model::{SpanEvent, SpanKind};

    #[test]
    fn any_arrival_order_builds_the_same_tree() {
        let spans = vec![
            server("a", 0, 100, "201"),
            span("b", Some("a"), "create_order", 10, 60),
            span("c", Some("b"), "payment.charge", 20, 50),
            proxy("p1", Some("b"), "insert", "orders", 12),
            proxy("p2", None, "select", "users", 5),
        ];
        let expected = vec![
            ("POST /checkout".to_string(), 0),
            ("db.select(users)".to_string(), 1),
            ("create_order".to_string(), 1),
            ("db.insert(orders)".to_string(), 2),
            ("payment.charge".to_string(), 2),
        ];
        // Every rotation and the reverse: children before parents, roots last, etc.
        for r in 0..spans.len() {
            let mut s = spans.clone();
            s.rotate_left(r);
            assert_eq!(names(&Tree::build(s.clone())), expected, "rotation {r}");
            s.reverse();
            assert_eq!(names(&Tree::build(s)), expected, "reversed rotation {r}");
        }
        // A retried export (same span twice) changes nothing.
        let mut twice = spans.clone();
        twice.extend(spans.clone());
        assert_eq!(names(&Tree::build(twice)), expected);
    }

    #[test]
    fn missing_parents_and_cycles_do_not_lose_spans() {
        // The parent "x" never arrived: the child is a root until it does.
        let tree = Tree::build(vec![
            span("b", Some("x"), "child", 10, 20),
            proxy("p", None, "update", "users", 12),
        ]);
        assert_eq!(tree.root().map(|s| s.name.as_str()), Some("child"));
        assert_eq!(tree.walk().len(), 2);
        // Hostile input: a parent cycle.
        let tree = Tree::build(vec![
            span("a", Some("b"), "a", 0, 1),
            span("b", Some("a"), "b", 0, 1),
            span("c", Some("c"), "self", 0, 1),
        ]);
        assert_eq!(tree.walk().len(), 3);
    }

    #[test]
    fn root_cause_is_the_deepest_failure_and_location_comes_from_the_stack() {
        let mut root = server("a", 0, 3_000_000_000, "500");
        let mut charge = span("c", Some("b"), "payment.charge", 20, 2_000_000_000);
        let mut http = span("d", Some("c"), "POST", 21, 2_000_000_000);
        http.kind = SpanKind::Client;
        http.error = Some("Read timed out. (read timeout=2)".into());
        let stack = "Traceback (most recent call last):\n  File \"/srv/shop/app.py\", line 88, in checkout\n    charge(order)\n  File \"/srv/shop/payments.py\", line 42, in charge\n    requests.post(url, timeout=2)\n  File \"/venv/lib/python3.11/site-packages/requests/api.py\", line 115, in post\n    return request(\"post\", url, data=data, json=json, **kwargs)\nrequests.exceptions.ReadTimeout: Read timed out.";
        let exception = |ty: &str| SpanEvent {
            name: "exception".into(),
            at: 2_000_000_000,
            attributes: vec![
                ("exception.type".into(), ty.into()),
                (
                    "exception.message".into(),
                    "Read timed out. (read timeout=2)".into(),
                ),
                ("exception.stacktrace".into(), stack.into()),
            ],
        };
        charge
            .events
            .push(exception("requests.exceptions.ReadTimeout"));
        root.events
            .push(exception("requests.exceptions.ReadTimeout"));
        root.error = Some("ReadTimeout".into());
        let tree = Tree::build(vec![
            root,
            span("b", Some("a"), "create_order", 10, 2_500_000_000),
            charge,
            http,
        ]);
        let cause = tree.root_cause().unwrap();
        assert_eq!(tree.nodes[cause].span.name, "POST");
        assert_eq!(
            failure_message(&tree.nodes[cause].span),
            "Read timed out. (read timeout=2)"
        );
        // The client span has no stack; its parent's exception names the app frame.
        let loc = tree.location(cause).unwrap();
        // Relative to the directory the app's frames share.
        assert_eq!(loc.to_string(), "payments.py:42");
        assert_eq!(loc.path, "/srv/shop/payments.py");
        assert_eq!(loc.function.as_deref(), Some("charge"));

        let summary = summarize("t", &tree);
        assert_eq!(summary.method.as_deref(), Some("POST"));
        assert_eq!(summary.path.as_deref(), Some("/checkout"));
        assert_eq!(summary.status, Some(500));
        assert_eq!(summary.duration, 3_000_000_000);
        // `flux tail`'s one-liner: the call and how long it waited.
        assert_eq!(summary.error.as_deref(), Some("POST timeout after 2s"));
    }

    #[test]
    fn code_attributes_win_over_stack_traces_and_js_frames_are_read() {
        let mut s = span("a", None, "handler", 0, 1);
        s.error = Some("boom".into());
        s.attributes = vec![
            ("code.filepath".into(), "payments/create.ts".into()),
            ("code.lineno".into(), "42".into()),
        ];
        let tree = Tree::build(vec![s]);
        assert_eq!(
            tree.location(0).map(|l| l.to_string()).as_deref(),
            Some("payments/create.ts:42")
        );
        let js = "Error: timeout\n    at Socket.<anonymous> (node:internal/net:1:2)\n    at charge (/app/node_modules/stripe/lib/x.js:10:5)\n    at createOrder (/app/src/payments/create.js:42:11)\n    at /app/src/server.js:7:3";
        assert_eq!(
            app_frame(js).map(|l| l.to_string()).as_deref(),
            Some("payments/create.js:42")
        );
        let java = "java.net.SocketTimeoutException: Read timed out\n\tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:1)\n\tat com.shop.Payments.charge(Payments.java:42)";
        // Java's own frames carry no library marker; the first frame with a line wins.
        assert!(app_frame(java).is_some());
        assert_eq!(app_frame("no frames here"), None);
    }

    #[test]
    fn summary_of_a_db_only_request_comes_from_its_statements() {
        let mut failing = proxy("p2", None, "insert", "orders", 3_000_000);
        failing.error = Some("duplicate key (SQLSTATE 23505)".into());
        let tree = Tree::build(vec![
            proxy("p1", None, "select", "users", 1_000_000),
            failing,
        ]);
        let s = summarize("t", &tree);
        assert!(!s.app);
        assert_eq!(s.method, None);
        assert_eq!(s.start, 1_000_000);
        assert_eq!(s.duration, 3_000_000);
        assert_eq!(s.error.as_deref(), Some("duplicate key (SQLSTATE 23505)"));
    }
}
