//! Root causes a person reads at a glance.
//!
//! A failed span is read as one of a few common shapes — an HTTP call answered with an
//! error status, a timeout, a refused or reset connection, a name that did not resolve, a
//! gRPC status, a database error — and said in one line (`POST fraud.internal/check →
//! 403 Forbidden`, `POST 127.0.0.1:9100/charge timeout after 1s`). Anything else is the
//! exception's type and message as recorded. The raw text always stays alongside.

use serde::Serialize;

use crate::failure::failure_message;
use crate::tree::Tree;
use flux_store::model::{Span, SpanKind, SpanSource};

/// What kind of failure a span records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// An outgoing HTTP call answered with a 4xx.
    ClientError,
    /// An outgoing HTTP call answered with a 5xx.
    ServerError,
    /// A call that did not answer in time.
    Timeout,
    /// The peer refused the connection.
    ConnectionRefused,
    /// The peer dropped the connection.
    ConnectionReset,
    /// The peer's name did not resolve.
    Dns,
    /// A gRPC call ended with a non-OK status.
    Grpc,
    /// A statement failed in the database.
    Database,
    /// An exception (or error status) of no shape above.
    Exception,
}

/// A failure, read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// The one-liner.
    pub text: String,
    /// Its shape (what the suggestion rules go by).
    pub shape: Shape,
    /// The recorded text: exception type and message, or the status description.
    pub raw: String,
    /// The HTTP status, for the HTTP shapes.
    pub status: Option<u16>,
    /// Who was called (`host:port`), when a call failed.
    pub peer: Option<String>,
}

/// Reads the failure of `tree`'s span `i`. A span that only wraps the failing call (an
/// app's own span around a client call) is read through its failed CLIENT descendant.
pub fn read(tree: &Tree, i: usize) -> Reading {
    let span = &tree.nodes[i].span;
    let raw = failure_message(span);
    let call = client_call(tree, i);
    let call_span = call.map(|c| &tree.nodes[c].span);
    let peer = call_span.and_then(peer).or_else(|| peer(span));
    let target = call_span
        .and_then(http_target)
        .or_else(|| http_target(span))
        .or_else(|| peer.clone())
        .unwrap_or_else(|| span.name.clone());
    let reading = |text: String, shape: Shape, status: Option<u16>| Reading {
        text,
        shape,
        raw: raw.clone(),
        status,
        peer: peer.clone(),
    };
    if span.source == SpanSource::Proxy || span.attr("db.sqlstate").is_some() {
        return reading(raw.clone(), Shape::Database, None);
    }
    if let Some(code) = span
        .attr("rpc.grpc.status_code")
        .and_then(|c| c.parse::<u32>().ok())
        .filter(|&c| c != 0)
    {
        let method = match (span.attr("rpc.service"), span.attr("rpc.method")) {
            (Some(s), Some(m)) => format!("{s}/{m}"),
            _ => span.name.clone(),
        };
        return reading(
            format!("{method} → gRPC {}", grpc_code(code)),
            Shape::Grpc,
            None,
        );
    }
    let text = format!("{} {}", exception_type(span).unwrap_or_default(), raw).to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if crate::failure::is_timeout(&text) {
        let took = call_span.unwrap_or(span).duration();
        return reading(
            format!("{target} timeout after {}", seconds(took)),
            Shape::Timeout,
            None,
        );
    }
    if has(&[
        "enotfound",
        "eai_again",
        "getaddrinfo",
        "name or service not known",
        "nodename nor servname",
        "no such host",
        "unknownhostexception",
        "name resolution",
    ]) {
        return reading(format!("{target} → DNS lookup failed"), Shape::Dns, None);
    }
    if has(&[
        "econnrefused",
        "connection refused",
        "connectexception",
        "failed to establish a new connection",
    ]) {
        return reading(
            format!("{target} → connection refused"),
            Shape::ConnectionRefused,
            None,
        );
    }
    if has(&[
        "econnreset",
        "connection reset",
        "remotedisconnected",
        "broken pipe",
        "socket hang up",
        "connection aborted",
    ]) {
        return reading(
            format!("{target} → connection reset"),
            Shape::ConnectionReset,
            None,
        );
    }
    if let Some((status, at)) = [call_span, Some(span)]
        .into_iter()
        .flatten()
        .filter(|s| s.kind == SpanKind::Client)
        .find_map(|s| http_status(s).filter(|&c| c >= 400).map(|c| (c, s)))
    {
        let target = http_target(at).unwrap_or(target);
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        let shape = if status >= 500 {
            Shape::ServerError
        } else {
            Shape::ClientError
        };
        return reading(format!("{target} → {status}{reason}"), shape, Some(status));
    }
    reading(raw.clone(), Shape::Exception, None)
}

/// The failed CLIENT span at or under `i` that the failure is about: `i` itself when it
/// is one, else its failed CLIENT descendant (the earliest).
fn client_call(tree: &Tree, i: usize) -> Option<usize> {
    if tree.nodes[i].span.kind == SpanKind::Client {
        return Some(i);
    }
    let mut stack = tree.nodes[i].children.clone();
    let mut best: Option<usize> = None;
    while let Some(c) = stack.pop() {
        let s = &tree.nodes[c].span;
        if s.kind == SpanKind::Client
            && s.source == SpanSource::App
            && crate::failure::is_failed(s)
            && best.is_none_or(|b| s.start < tree.nodes[b].span.start)
        {
            best = Some(c);
        }
        stack.extend(tree.nodes[c].children.iter().copied());
    }
    best
}

fn http_status(span: &Span) -> Option<u16> {
    span.attr_any(&["http.response.status_code", "http.status_code"])?
        .parse()
        .ok()
}

fn exception_type(span: &Span) -> Option<&str> {
    span.events
        .iter()
        .find(|e| e.name == "exception")?
        .attributes
        .iter()
        .find(|(k, _)| k == "exception.type")
        .map(|(_, v)| v.as_str())
}

/// `host[:port]` of the called service.
fn peer(span: &Span) -> Option<String> {
    if let Some(service) = span.attr("peer.service") {
        return Some(service.to_string());
    }
    if let Some(url) = span.attr_any(&["url.full", "http.url"]) {
        if let Some((host, _)) = split_url(url) {
            return Some(host.to_string());
        }
    }
    let host = span.attr_any(&["server.address", "net.peer.name", "net.peer.ip"])?;
    Some(match span.attr_any(&["server.port", "net.peer.port"]) {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// `METHOD host[:port]/path` of an outgoing HTTP call.
fn http_target(span: &Span) -> Option<String> {
    let method = span.attr_any(&["http.request.method", "http.method"])?;
    let (host, path) = match span.attr_any(&["url.full", "http.url"]).and_then(split_url) {
        Some((host, path)) => (host.to_string(), path.to_string()),
        None => (
            peer(span)?,
            span.attr_any(&["url.path", "http.target"])
                .unwrap_or("")
                .to_string(),
        ),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    Some(format!("{method} {host}{path}"))
}

/// `(host[:port], /path?query)` of an absolute URL.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    // Credentials never belong in a one-liner.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some((host, path))
}

/// `1s`, `1.5s`, `250ms`.
fn seconds(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms < 1000.0 {
        return format!("{}ms", ms.round());
    }
    let s = (ms / 100.0).round() / 10.0;
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn grpc_code(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| code.to_string(), |n| n.to_string())
}

/// A recorded text (an error, a statement) on one line: whitespace runs as one space, cut
/// to `max` characters with `…`. The one way every layout and report shortens them.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_store::model::SpanEvent;

    fn span(id: &str, parent: Option<&str>, kind: SpanKind, attrs: &[(&str, &str)]) -> Span {
        Span {
            trace: "t".into(),
            id: id.into(),
            parent: parent.map(Into::into),
            name: if parent.is_none() {
                "POST /transfers"
            } else {
                "POST"
            }
            .into(),
            kind,
            start: 1_000,
            end: 1_000 + 1_001_243_707,
            error: None,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            events: vec![],
            service: Some("transfer".into()),
            source: SpanSource::App,
        }
    }

    fn exception(mut s: Span, kind: &str, message: &str) -> Span {
        s.events.push(SpanEvent {
            name: "exception".into(),
            at: s.end,
            attributes: vec![
                ("exception.type".into(), kind.into()),
                ("exception.message".into(), message.into()),
            ],
        });
        s.error = Some(format!("{kind}: {message}"));
        s
    }

    /// Reads the failure of the span `failing` in a request whose root is a SERVER span.
    fn read_child(child: Span) -> Reading {
        let mut root = span("r", None, SpanKind::Server, &[]);
        root.error = Some("error".into());
        let tree = Tree::build(vec![root, child]);
        let i = tree
            .nodes
            .iter()
            .position(|n| n.span.id == "c")
            .expect("child");
        read(&tree, i)
    }

    // The JS SDK's http instrumentation on a call answered 403 (attributes as recorded).
    const NODE_403: [(&str, &str); 6] = [
        ("error.type", "403"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "403"),
        ("server.address", "fraud.internal"),
        ("server.port", "443"),
        ("url.full", "https://fraud.internal/check?v=2"),
    ];

    #[test]
    fn a_call_failing_by_status_names_the_call_and_the_status() {
        let mut s = span("c", Some("r"), SpanKind::Client, &NODE_403);
        s.error = Some("error".into());
        let r = read_child(s);
        assert_eq!(r.text, "POST fraud.internal/check → 403 Forbidden");
        assert_eq!(r.shape, Shape::ClientError);
        assert_eq!(r.status, Some(403));
        assert_eq!(r.raw, "error");
        // Old attribute names (Python's requests instrumentation), a 5xx.
        let mut s = span(
            "c",
            Some("r"),
            SpanKind::Client,
            &[
                ("http.method", "GET"),
                ("http.url", "http://user:pw@inventory:8080/items/7"),
                ("http.status_code", "503"),
            ],
        );
        s.error = Some("error".into());
        let r = read_child(s);
        assert_eq!(
            r.text,
            "GET inventory:8080/items/7 → 503 Service Unavailable"
        );
        assert_eq!(r.shape, Shape::ServerError);
    }

    #[test]
    fn timeouts_name_the_peer_and_how_long_the_call_waited() {
        // Node: the app destroys the request with an ETIMEDOUT error.
        let s = exception(
            span(
                "c",
                Some("r"),
                SpanKind::Client,
                &[
                    ("http.request.method", "POST"),
                    ("url.full", "http://127.0.0.1:29200/check"),
                ],
            ),
            "ETIMEDOUT",
            "fraud check timed out after 1000ms",
        );
        let r = read_child(s);
        assert_eq!(r.text, "POST 127.0.0.1:29200/check timeout after 1s");
        assert_eq!(r.shape, Shape::Timeout);
        assert!(r.raw.starts_with("ETIMEDOUT: fraud check"), "{}", r.raw);
        // Python: requests' ReadTimeout on the app's own span, the call below it.
        let mut call = span(
            "call",
            Some("c"),
            SpanKind::Client,
            &[
                ("http.method", "POST"),
                ("http.url", "http://127.0.0.1:9100/charge"),
            ],
        );
        call.error = Some("ReadTimeout".into());
        call.end = call.start + 1_500_000_000;
        let own = exception(
            span("c", Some("r"), SpanKind::Internal, &[]),
            "requests.exceptions.ReadTimeout",
            "HTTPConnectionPool(host='127.0.0.1', port=9100): Read timed out. (read timeout=1.5)",
        );
        let mut root = span("r", None, SpanKind::Server, &[]);
        root.error = Some("error".into());
        let tree = Tree::build(vec![root, own, call]);
        let i = tree
            .nodes
            .iter()
            .position(|n| n.span.id == "c")
            .expect("own span");
        let r = read(&tree, i);
        assert_eq!(r.text, "POST 127.0.0.1:9100/charge timeout after 1.5s");
    }

    #[test]
    fn connection_failures_dns_and_grpc() {
        let call = |attrs: &[(&str, &str)]| span("c", Some("r"), SpanKind::Client, attrs);
        let http = [
            ("http.method", "POST"),
            ("http.url", "http://payments:9100/charge"),
        ];
        let r = read_child(exception(
            call(&http),
            "requests.exceptions.ConnectionError",
            "HTTPConnectionPool(host='payments', port=9100): Max retries exceeded with url: /charge (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))",
        ));
        assert_eq!(r.text, "POST payments:9100/charge → connection refused");
        assert_eq!(r.shape, Shape::ConnectionRefused);
        let r = read_child(exception(
            call(&http),
            "ENOTFOUND",
            "getaddrinfo ENOTFOUND payments",
        ));
        assert_eq!(r.text, "POST payments:9100/charge → DNS lookup failed");
        assert_eq!(r.shape, Shape::Dns);
        let r = read_child(exception(call(&http), "ECONNRESET", "socket hang up"));
        assert_eq!(r.shape, Shape::ConnectionReset);
        let mut grpc = call(&[
            ("rpc.system", "grpc"),
            ("rpc.service", "payments.v1.Charges"),
            ("rpc.method", "Create"),
            ("rpc.grpc.status_code", "14"),
        ]);
        grpc.error = Some("14 UNAVAILABLE: No connection established".into());
        let r = read_child(grpc);
        assert_eq!(r.text, "payments.v1.Charges/Create → gRPC UNAVAILABLE");
        assert_eq!(r.shape, Shape::Grpc);
    }

    #[test]
    fn other_exceptions_and_database_errors_read_as_recorded() {
        let r = read_child(exception(
            span("c", Some("r"), SpanKind::Internal, &[]),
            "KeyError",
            "'user_id'",
        ));
        assert_eq!(r.text, "KeyError: 'user_id'");
        assert_eq!(r.shape, Shape::Exception);
        let mut db = span(
            "c",
            Some("r"),
            SpanKind::Client,
            &[("db.sqlstate", "23514")],
        );
        db.source = SpanSource::Proxy;
        db.error = Some("new row for relation \"accounts\" violates check constraint".into());
        let r = read_child(db);
        assert_eq!(r.shape, Shape::Database);
        assert_eq!(r.text, r.raw);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(seconds(1_001_243_707), "1s");
        assert_eq!(seconds(1_500_000_000), "1.5s");
        assert_eq!(seconds(250_400_000), "250ms");
        assert_eq!(seconds(10_020_000_000), "10s");
    }
}
