//! A request's spans as a tree, and what the CLI reads off it: the request's summary
//! (method, path, status, duration, error), the root cause and its code location, and the
//! span-by-span alignment of two requests (`flux trace diff`).
//!
//! Everything here is a pure function of the spans, so it does not matter in which order
//! or in how many exports they arrived: the tree is rebuilt from what is stored.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::location::Frame;
pub use crate::location::{app_frame, Location};
use crate::model::{Nanos, RequestSummary, Span, SpanKind, SpanSource, StatementRecord};

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

/// Whether a span failed: status ERROR, or an exception event.
pub fn is_failed(span: &Span) -> bool {
    span.error.is_some() || span.events.iter().any(|e| e.name == "exception")
}

/// A one-line account of a span's failure: the exception's type and message, else the
/// status description, else `error`.
pub fn failure_message(span: &Span) -> String {
    let exception = span.events.iter().find(|e| e.name == "exception");
    if let Some(e) = exception {
        let get = |k: &str| {
            e.attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        match (get("exception.type"), get("exception.message")) {
            (Some(t), Some(m)) => return format!("{t}: {m}"),
            (Some(t), None) => return t.to_string(),
            (None, Some(m)) => return m.to_string(),
            (None, None) => {}
        }
    }
    match &span.error {
        Some(m) if !m.is_empty() => m.clone(),
        _ => "error".to_string(),
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
        .or_else(|| status.filter(|s| *s >= 500).map(|s| format!("HTTP {s}")));
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

/// The proxy's span for a statement: `db.<verb>(<table>)`, its timing, rows, and error.
pub fn statement_span(st: &StatementRecord, id: String) -> Span {
    let mut attributes = vec![
        ("db.system".to_string(), "postgresql".to_string()),
        ("db.statement".to_string(), st.sql.clone()),
    ];
    if let Some(rows) = st.tag.as_deref().and_then(tag_rows) {
        attributes.push(("db.rows".to_string(), rows.to_string()));
    }
    if let Some(code) = &st.sqlstate {
        attributes.push(("db.sqlstate".to_string(), code.clone()));
    }
    Span {
        trace: st.request.clone(),
        id,
        parent: st.parent_span.clone(),
        name: statement_span_name(&st.sql),
        kind: SpanKind::Client,
        start: st.at,
        end: st.at.saturating_add(st.duration),
        error: st.sqlstate.as_ref().map(|code| {
            format!(
                "{} (SQLSTATE {code})",
                st.error.as_deref().unwrap_or("error")
            )
        }),
        attributes,
        events: Vec::new(),
        service: None,
        source: SpanSource::Proxy,
    }
}

/// Rows a `CommandComplete` tag reports (`INSERT 0 3` → 3, `UPDATE 2` → 2).
fn tag_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split_whitespace();
    let verb = words.next()?;
    let last = tag.split_whitespace().last()?;
    if verb == last {
        return None;
    }
    last.parse().ok()
}

/// `db.insert(orders)`, `db.select(users)`, `db.update(users)`, `db.begin`: the statement's
/// verb and (for DML) its target or first `FROM` table, schema `public.` dropped.
pub fn statement_span_name(sql: &str) -> String {
    let words = sql_words(sql);
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let Some(verb) = lower.first() else {
        return "db.statement".to_string();
    };
    let after = |kw: &str| {
        lower
            .iter()
            .position(|w| w == kw)
            .and_then(|i| words.get(i + 1))
    };
    let table = match verb.as_str() {
        "insert" => after("into"),
        "update" => words
            .get(1)
            .filter(|w| !w.eq_ignore_ascii_case("only"))
            .or_else(|| words.get(2)),
        "delete" | "select" => after("from"),
        _ => None,
    };
    match table {
        Some(t) => {
            let t = t.replace('"', "");
            let t = t.strip_prefix("public.").unwrap_or(&t);
            format!("db.{verb}({t})")
        }
        None => format!("db.{verb}"),
    }
}

/// Words of a SQL text outside comments, string literals and parentheses' depth > 0 (so
/// a subquery's `FROM` does not name the statement's table).
fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut depth = 0usize;
    let mut chars = sql.chars().peekable();
    let flush = |word: &mut String, words: &mut Vec<String>, depth: usize| {
        if !word.is_empty() && depth == 0 {
            words.push(std::mem::take(word));
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut word, &mut words, depth);
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word, &mut words, depth);
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '\'' => {
                flush(&mut word, &mut words, depth);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
            }
            '(' => {
                flush(&mut word, &mut words, depth);
                depth += 1;
            }
            ')' => {
                flush(&mut word, &mut words, depth);
                depth = depth.saturating_sub(1);
            }
            c if c.is_whitespace() || c == ',' || c == ';' => flush(&mut word, &mut words, depth),
            c => word.push(c),
        }
        if words.len() > 64 {
            break;
        }
    }
    flush(&mut word, &mut words, depth);
    words
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanEvent;

    fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> Span {
        Span {
            trace: "t".into(),
            id: id.into(),
            parent: parent.map(str::to_string),
            name: name.into(),
            kind: SpanKind::Internal,
            start,
            end,
            error: None,
            attributes: vec![],
            events: vec![],
            service: Some("shop".into()),
            source: SpanSource::App,
        }
    }

    fn server(id: &str, start: u64, end: u64, status: &str) -> Span {
        let mut s = span(id, None, "POST /checkout", start, end);
        s.kind = SpanKind::Server;
        s.attributes = vec![
            ("http.request.method".into(), "POST".into()),
            ("http.route".into(), "/checkout".into()),
            ("http.response.status_code".into(), status.into()),
        ];
        s
    }

    fn names(tree: &Tree) -> Vec<(String, usize)> {
        tree.walk()
            .into_iter()
            .map(|(i, d)| (tree.nodes[i].span.name.clone(), d))
            .collect()
    }

    fn proxy(id: &str, parent: Option<&str>, sql: &str, start: u64) -> Span {
        let st = StatementRecord {
            request: "t".into(),
            at: start,
            duration: 1_000_000,
            sql: sql.into(),
            tag: Some("INSERT 0 1".into()),
            sqlstate: None,
            error: None,
            parent_span: parent.map(str::to_string),
        };
        statement_span(&st, id.into())
    }

    #[test]
    fn any_arrival_order_builds_the_same_tree() {
        let spans = vec![
            server("a", 0, 100, "201"),
            span("b", Some("a"), "create_order", 10, 60),
            span("c", Some("b"), "payment.charge", 20, 50),
            proxy("p1", Some("b"), "INSERT INTO orders VALUES (1)", 12),
            proxy("p2", None, "SELECT * FROM users WHERE id = 1", 5),
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
            proxy("p", None, "UPDATE users SET a = 1", 12),
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
        let mut failing = proxy("p2", None, "INSERT INTO orders VALUES (1)", 3_000_000);
        failing.error = Some("duplicate key (SQLSTATE 23505)".into());
        let tree = Tree::build(vec![
            proxy("p1", None, "SELECT 1 FROM users", 1_000_000),
            failing,
        ]);
        let s = summarize("t", &tree);
        assert!(!s.app);
        assert_eq!(s.method, None);
        assert_eq!(s.start, 1_000_000);
        assert_eq!(s.duration, 3_000_000);
        assert_eq!(s.error.as_deref(), Some("duplicate key (SQLSTATE 23505)"));
    }

    #[test]
    fn statement_span_names() {
        for (sql, name) in [
            ("INSERT INTO orders (id) VALUES (1)", "db.insert(orders)"),
            (
                "insert into public.\"Orders\" values (1)",
                "db.insert(Orders)",
            ),
            ("SELECT * FROM users WHERE id = 42", "db.select(users)"),
            (
                "select (select max(x) from other) from users",
                "db.select(users)",
            ),
            (
                "UPDATE ONLY users SET plan = 'a from b'",
                "db.update(users)",
            ),
            ("DELETE FROM carts WHERE id = 1", "db.delete(carts)"),
            ("/* c */ BEGIN", "db.begin"),
            ("SELECT 1", "db.select"),
            ("", "db.statement"),
        ] {
            assert_eq!(statement_span_name(sql), name, "{sql}");
        }
        assert_eq!(tag_rows("INSERT 0 3"), Some(3));
        assert_eq!(tag_rows("UPDATE 2"), Some(2));
        assert_eq!(tag_rows("BEGIN"), None);
    }

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
