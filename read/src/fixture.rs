//! Spans for unit tests.

use flux_store::model::{Span, SpanKind, SpanSource, StatementRecord};

use crate::tree::Tree;

pub(crate) fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> Span {
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

pub(crate) fn server(id: &str, start: u64, end: u64, status: &str) -> Span {
    let mut s = span(id, None, "POST /checkout", start, end);
    s.kind = SpanKind::Server;
    s.attributes = vec![
        ("http.request.method".into(), "POST".into()),
        ("http.route".into(), "/checkout".into()),
        ("http.response.status_code".into(), status.into()),
    ];
    s
}

pub(crate) fn names(tree: &Tree) -> Vec<(String, usize)> {
    tree.walk()
        .into_iter()
        .map(|(i, d)| (tree.nodes[i].span.name.clone(), d))
        .collect()
}

/// The proxy's span of a statement `verb` on `table`, as the store writes it.
pub(crate) fn proxy(id: &str, parent: Option<&str>, verb: &str, table: &str, start: u64) -> Span {
    let st = StatementRecord {
        request: "t".into(),
        at: start,
        duration: 1_000_000,
        sql: format!("{verb} … {table}"),
        tag: Some("INSERT 0 1".into()),
        sqlstate: None,
        error: None,
        parent_span: parent.map(str::to_string),
        verb: Some(verb.to_string()),
        tables: vec![table.to_string()],
        rows: Some(1),
    };
    st.span(id.into())
}
