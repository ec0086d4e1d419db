//! A request span by span, with what each took in and gave back (`flux trace debug`):
//! the gateway's recorded request and response bodies on the root, a statement's SQL and
//! the rows it changed (before and after images), a call's target and answer, and every
//! attribute and event.

use serde::Serialize;

use crate::tree::Tree;
use flux_store::model::{Nanos, SpanSource};
use flux_store::query::HistoryEntry;
use flux_store::{Store, StoreError};

/// One step: a span and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The span's name.
    pub name: String,
    /// Its depth in the tree (0: the root).
    pub depth: usize,
    /// `app` or `proxy`, and the service.
    pub source: SpanSource,
    /// The service that recorded it.
    pub service: Option<String>,
    /// Start, relative to the request's start (ns).
    pub offset: Nanos,
    /// Duration (ns).
    pub duration: Nanos,
    /// What it was given: the HTTP request (method, target, headers, body), the SQL, the
    /// call's target.
    pub input: Vec<String>,
    /// What came of it: status, rows, the response body, the error.
    pub output: Vec<String>,
    /// Rows a statement changed, with their images and fate.
    pub changes: Vec<HistoryEntry>,
    /// Attributes, as recorded.
    pub attributes: Vec<(String, String)>,
    /// Events (exceptions with their stack traces), as `name: attributes`.
    pub events: Vec<String>,
    /// Whether it failed.
    pub failed: bool,
}

/// How much of a body a step shows.
const BODY_LIMIT: usize = 4096;

/// The request's spans in tree order, each with its inputs and outputs.
pub fn steps(store: &Store, request: &str, tree: &Tree) -> Result<Vec<Step>, StoreError> {
    let exchange = store.exchange(request)?;
    let changes = store.request_history(request)?;
    let start = tree.root().map_or(0, |r| r.start);
    let mut steps = Vec::new();
    for (i, depth) in tree.walk() {
        let s = &tree.nodes[i].span;
        let mut input = Vec::new();
        let mut output = Vec::new();
        let mut mine = Vec::new();
        let http_method = s.attr_any(&["http.request.method", "http.method"]);
        let target = s.attr_any(&["url.full", "http.url", "http.target", "url.path"]);
        if s.source == SpanSource::Proxy {
            if let Some(sql) = s.attr("db.statement") {
                input.push(sql.to_string());
            }
            if let Some(rows) = s.attr("db.rows") {
                output.push(format!("{rows} row(s)"));
            }
            // Images are stamped when the statement completed.
            let end = s.end.saturating_add(1_000_000);
            mine = changes
                .iter()
                .filter(|c| c.mutation.at >= s.start && c.mutation.at <= end)
                .cloned()
                .collect();
        } else if let (Some(m), Some(t)) = (http_method, target) {
            input.push(format!("{m} {t}"));
        }
        if depth == 0 {
            if let Some(x) = &exchange {
                input = vec![format!("{} {}", x.method, x.target)];
                input.extend(x.headers.iter().map(|(k, v)| format!("{k}: {v}")));
                input.push(String::new());
                input.push(body(&x.body, x.body_complete));
                output.push(match x.status {
                    Some(code) => format!("HTTP {code}"),
                    None => format!(
                        "no response: {}",
                        x.error.as_deref().unwrap_or("the app did not answer")
                    ),
                });
                output.extend(x.response_headers.iter().map(|(k, v)| format!("{k}: {v}")));
                output.push(String::new());
                output.push(body(&x.response_body, x.response_complete));
            }
        }
        if let Some(code) = s.attr_any(&["http.response.status_code", "http.status_code"]) {
            if depth != 0 || exchange.is_none() {
                output.push(format!("HTTP {code}"));
            }
        }
        if crate::failure::is_failed(s) {
            output.push(format!("✗ {}", crate::cause::read(tree, i).text));
        }
        steps.push(Step {
            name: s.name.clone(),
            depth,
            source: s.source,
            service: s.service.clone(),
            offset: s.start.saturating_sub(start),
            duration: s.duration(),
            input,
            output,
            changes: mine,
            attributes: s.attributes.clone(),
            events: s
                .events
                .iter()
                .map(|e| {
                    let attrs: Vec<String> = e
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("{}: {}", e.name, attrs.join("\n"))
                })
                .collect(),
            failed: crate::failure::is_failed(s),
        });
    }
    Ok(steps)
}

/// A recorded body as text (UTF-8, else its size), cut at [`BODY_LIMIT`].
fn body(bytes: &[u8], complete: bool) -> String {
    if bytes.is_empty() {
        return "(no body)".into();
    }
    let mut text = match std::str::from_utf8(bytes) {
        Ok(t) => t.chars().take(BODY_LIMIT).collect(),
        Err(_) => format!("({} bytes of binary)", bytes.len()),
    };
    if !complete {
        text.push_str(" … (recorded up to --http-body-limit)");
    }
    text
}
