//! `flux why`: the root cause (the first failure in the span tree: the application's own
//! exception, or a statement's SQLSTATE), where in the code it happened, the request's data
//! changes with their fate, and a suggestion from deterministic rules over the error class
//! (say nothing rather than guess).

use serde::Serialize;

use crate::cause::Shape;
use crate::location::Location;
use crate::tree::Tree;
use flux_store::model::{Nanos, RequestSummary, SpanSource, StatementRecord};
use flux_store::query::HistoryEntry;
use flux_store::{Store, StoreError};

/// The failure a request's trouble started with.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    /// One line a person reads at a glance ([`crate::cause`]): `POST host/path → 403
    /// Forbidden`, `… timeout after 1s`, the statement's error.
    pub message: String,
    /// What was recorded: the exception's type and message, or the status description.
    pub raw: String,
    /// The failure's shape (`client_error`, `timeout`, `database`, …).
    pub shape: Shape,
    /// Who was called, when a call failed.
    pub peer: Option<String>,
    /// The HTTP status of a failed call.
    pub status: Option<u16>,
    /// The span it happened in.
    pub span: String,
    /// When the span started.
    pub at: Nanos,
    /// SQLSTATE, when a statement failed.
    pub sqlstate: Option<String>,
    /// The statement, when a statement failed.
    pub sql: Option<String>,
}

/// What a request did and why it failed, as far as the database saw.
#[derive(Debug, Clone, Serialize)]
pub struct Why {
    /// The request id.
    pub request: String,
    /// The request as `flux tail` shows it, when spans are recorded.
    pub summary: Option<RequestSummary>,
    /// The root cause, if anything failed.
    pub cause: Option<Cause>,
    /// Where in the application's code, when its spans say.
    pub location: Option<Location>,
    /// The first statement that failed, if any.
    pub failed: Option<StatementRecord>,
    /// Every row the request changed, with outcomes.
    pub changes: Vec<HistoryEntry>,
    /// A rule's advice for the failure, when one applies.
    pub suggestion: Option<&'static str>,
    /// How many statements were recorded for the request.
    pub statements: usize,
    /// Whether the request's own root span failed (a failure the app handled inside a
    /// request that then succeeded leaves it unfailed).
    pub root_failed: bool,
}

/// Assembles [`Why`] for a request id (exact, already resolved).
pub fn why(store: &Store, request: &str) -> Result<Why, StoreError> {
    let statements = store.request_statements(request)?;
    let failed = statements.iter().find(|s| s.sqlstate.is_some()).cloned();
    let tree = crate::trace(store, request)?;
    let root = tree.root_cause();
    let root_failed = tree.root().is_some_and(crate::failure::is_failed);
    let location = root.and_then(|i| tree.location(i));
    let cause = match root {
        Some(i) => Some(span_cause(&tree, i)),
        None => failed.as_ref().map(|f| Cause {
            message: f.error.clone().unwrap_or_else(|| "error".into()),
            raw: f.error.clone().unwrap_or_else(|| "error".into()),
            shape: Shape::Database,
            peer: None,
            status: None,
            span: f.span_name(),
            at: f.at,
            sqlstate: f.sqlstate.clone(),
            sql: Some(f.sql.clone()),
        }),
    };
    let suggestion = cause.as_ref().and_then(|c| match &c.sqlstate {
        Some(code) => suggestion(code, &c.raw),
        None => shape_suggestion(c.shape, c.status).or_else(|| app_suggestion(&c.raw)),
    });
    Ok(Why {
        request: request.to_string(),
        summary: store.request(request)?,
        cause,
        location,
        failed,
        changes: store.request_history(request)?,
        suggestion,
        statements: statements.len(),
        root_failed,
    })
}

fn span_cause(tree: &Tree, i: usize) -> Cause {
    let span = &tree.nodes[i].span;
    let proxy = span.source == SpanSource::Proxy;
    let sqlstate = span.attr("db.sqlstate").map(str::to_string);
    let reading = crate::cause::read(tree, i);
    Cause {
        message: reading.text,
        raw: reading.raw,
        shape: reading.shape,
        peer: reading.peer,
        status: reading.status,
        span: span.name.clone(),
        at: span.start,
        sqlstate: sqlstate.filter(|_| proxy),
        sql: span
            .attr("db.statement")
            .filter(|_| proxy)
            .map(str::to_string),
    }
}

/// Advice for a failed call, by its shape ([`crate::cause`]) and status. `None` when the
/// shape says nothing a person could act on.
pub fn shape_suggestion(shape: Shape, status: Option<u16>) -> Option<&'static str> {
    Some(match (shape, status) {
        (Shape::ClientError, Some(401 | 403)) => "the service refused the call's credentials or permissions (401/403): check the token or key the app sends and what it may do; retrying will not help",
        (Shape::ClientError, Some(404)) => "the service has no such resource (404): check the URL and the id the app sends",
        (Shape::ClientError, Some(409)) => "the service reports a conflict (409): the resource changed or already exists; re-read it, or make the call idempotent",
        (Shape::ClientError, Some(422 | 400)) => "the service rejected the request's content (400/422): compare what the app sent with what the service expects",
        (Shape::ClientError, Some(429)) => "the service is rate limiting the app (429): back off and retry after the time it asks for (Retry-After), or spread the calls",
        (Shape::ClientError, _) => "the service refused the call (4xx): the request itself is wrong for it; retrying unchanged will not help",
        (Shape::ServerError, _) => "the service failed (5xx): retry with backoff (idempotently) and check its health; degrade gracefully when it stays down",
        (Shape::Dns, _) => "the service's host name did not resolve: check the URL the app is configured with, and DNS from where it runs",
        (Shape::ConnectionRefused, _) => "nothing accepted the connection: check that the service is up, listening on that port, and reachable from the app",
        _ => return None,
    })
}

/// Advice for an application error (exception type and message), by class: timeouts and
/// connection failures. `None` otherwise.
pub fn app_suggestion(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&["timeout", "timed out", "deadline exceeded", "etimedout"]) {
        Some("set an explicit timeout on the call, below the request's own budget, and retry it with an idempotency key so a retry cannot apply twice; do the call before writing, or compensate")
    } else if any(&[
        "connection refused",
        "connectionerror",
        "connection reset",
        "econnrefused",
        "econnreset",
        "remotedisconnected",
        "broken pipe",
    ]) {
        Some("the remote service refused or dropped the connection: retry with backoff, and check that it is up and reachable")
    } else {
        None
    }
}

/// Advice for an error, by SQLSTATE (and message where the class is broad). `None` when no
/// rule fits: a wrong suggestion costs more than none.
pub fn suggestion(sqlstate: &str, message: &str) -> Option<&'static str> {
    Some(match sqlstate {
        "23505" => "make the write idempotent (INSERT … ON CONFLICT) or check for the existing row first",
        "23503" => "write the referenced row first (or in the same transaction), or fix the reference",
        "23502" => "give the column a value (or a default) before writing",
        "23514" => "validate the value against the table's CHECK constraint before writing",
        "23P01" => "the row overlaps an existing one under an exclusion constraint; check for it first",
        "40P01" => "deadlock: take row locks in one consistent order across code paths, and retry the transaction",
        "40001" => "serialization failure: retry the whole transaction (expected under REPEATABLE READ/SERIALIZABLE)",
        "55P03" => "the row or table was locked (NOWAIT/lock_timeout): retry later or shorten the transaction holding it",
        "57014" if crate::failure::is_timeout(message) => {
            "statement timeout: look for a missing index or a lock wait; raise statement_timeout only if the work is legitimate"
        }
        "57014" => "the statement was cancelled (client timeout or cancel request): check the client's timeout",
        "25P02" => "an earlier statement failed and the transaction was aborted: fix that one (or use a savepoint)",
        "53300" => "too many connections: use a connection pool or raise max_connections",
        s if s.starts_with("08") => "the connection to the database failed: retry with backoff and check the network",
        s if s.starts_with("57P") => "the server shut down or restarted: retry with backoff",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_the_common_classes_and_stay_silent_otherwise() {
        for code in [
            "23505", "23503", "23502", "23514", "40P01", "40001", "08006", "57P01", "53300",
        ] {
            assert!(suggestion(code, "").is_some(), "{code}");
        }
        assert!(
            suggestion("57014", "canceling statement due to statement timeout")
                .is_some_and(|s| s.contains("timeout"))
        );
        assert!(
            suggestion("57014", "canceling statement due to user request")
                .is_some_and(|s| s.contains("cancel"))
        );
        for code in ["22012", "42P01", "XX000", ""] {
            assert_eq!(suggestion(code, "whatever"), None, "{code}");
        }
        for message in [
            "requests.exceptions.ReadTimeout: Read timed out. (read timeout=2)",
            "TimeoutError: operation timed out",
            "Error: connect ECONNREFUSED 127.0.0.1:9",
            "ConnectionError: Connection refused",
        ] {
            assert!(app_suggestion(message).is_some(), "{message}");
        }
        assert_eq!(
            app_suggestion("ValueError: invalid literal for int()"),
            None
        );
    }

    #[test]
    fn failed_calls_get_advice_by_shape_and_status() {
        let advice = |shape, status| shape_suggestion(shape, status).unwrap_or("");
        assert!(advice(Shape::ClientError, Some(403)).contains("401/403"));
        assert!(advice(Shape::ClientError, Some(429)).contains("rate limiting"));
        assert!(advice(Shape::ClientError, Some(418)).contains("4xx"));
        assert!(advice(Shape::ServerError, Some(503)).contains("5xx"));
        assert!(advice(Shape::Dns, None).contains("did not resolve"));
        assert!(advice(Shape::ConnectionRefused, None).contains("accepted the connection"));
        // Timeouts fall through to the message rules; plain exceptions get nothing.
        assert_eq!(shape_suggestion(Shape::Timeout, None), None);
        assert_eq!(shape_suggestion(Shape::Exception, None), None);
        assert_eq!(shape_suggestion(Shape::Grpc, None), None);
    }
}
