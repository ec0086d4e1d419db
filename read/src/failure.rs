//! What "failed" means, once: for a span, for an HTTP answer, and for a request. Every
//! reader (`flux tail`, `trace`, `why`, replay's selection and judge, bisect, skipped
//! spans) asks here.
//!
//! A request failed when something in it failed (a span with status ERROR or an
//! exception: its root cause) or when its answer was a server error: HTTP 5xx, or no
//! answer at all. A 4xx answer is the application working as designed (a missing page, a
//! refused card): that is OpenTelemetry's convention for server spans, and what `flux
//! tail` always showed. A request without an HTTP status (database only) fails only by
//! its spans.
//!
//! Succeeding is a separate fact ([`success_status`]): 2xx and 3xx.

use flux_store::model::{RequestSummary, Span};

/// Whether an HTTP status is a server error (the request failed).
pub fn failed_status(status: u16) -> bool {
    status >= 500
}

/// Whether an HTTP status is a success (2xx, 3xx). Not the opposite of failed: a 4xx
/// neither failed nor succeeded. Bisect asks for success of a commit that should behave as
/// a good one did, and a passing request is taken as a reference only when it succeeded.
pub fn success_status(status: u16) -> bool {
    (200..400).contains(&status)
}

/// Whether an HTTP answer failed: a server error, or no answer at all.
pub fn answer_failed(status: Option<u16>) -> bool {
    status.is_none_or(failed_status)
}

/// Whether a listed request failed: a recorded root cause, or a server-error status.
pub fn request_failed(summary: &RequestSummary) -> bool {
    summary.error.is_some() || summary.status.is_some_and(failed_status)
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

/// Whether a failure's text says it timed out (`Read timed out`, `ETIMEDOUT`, gRPC's
/// `DEADLINE_EXCEEDED`, axios' `ECONNABORTED`): the one test, for causes, advice, diffs
/// and replay's stubs.
pub fn is_timeout(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "timeout",
        "timed out",
        "etimedout",
        "deadline exceeded",
        "deadline_exceeded",
        "econnaborted",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(status: Option<u16>, error: Option<&str>) -> RequestSummary {
        RequestSummary {
            id: "r".into(),
            method: status.map(|_| "GET".into()),
            path: None,
            status,
            start: 0,
            duration: 1,
            error: error.map(str::to_string),
            service: None,
            name: "GET /users/{id}".into(),
            spans: 1,
            app: true,
        }
    }

    #[test]
    fn one_definition_of_failed_and_succeeded() {
        // A 404 is the app working: not failed for tail, replay's selection or its judge.
        assert!(!request_failed(&summary(Some(404), None)));
        assert!(!answer_failed(Some(404)));
        // A server error, a recorded root cause, no answer at all: failed.
        assert!(request_failed(&summary(Some(502), None)));
        assert!(request_failed(&summary(
            Some(200),
            Some("POST /charge timeout after 1s")
        )));
        assert!(answer_failed(None));
        // A database-only request fails only by its spans.
        assert!(!request_failed(&summary(None, None)));
        // Succeeding is its own fact: a 4xx neither failed nor succeeded.
        assert!(success_status(201) && success_status(302));
        assert!(!success_status(404) && !success_status(500));
        assert!(is_timeout(
            "requests.exceptions.ReadTimeout: Read timed out."
        ));
        assert!(is_timeout("ETIMEDOUT") && is_timeout("DEADLINE_EXCEEDED"));
        assert!(!is_timeout("connection refused"));
    }
}
