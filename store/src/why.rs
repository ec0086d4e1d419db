//! `flux why` from what the proxy recorded: the failing statement, the request's data
//! changes with their fate, and a suggestion from deterministic rules over the error's
//! SQLSTATE (say nothing rather than guess). Spans, when a later issue ingests them, add
//! the application's own error and location on top of this.

use serde::Serialize;

use crate::db::{Store, StoreError};
use crate::model::StatementRecord;
use crate::query::HistoryEntry;

/// What a request did and why it failed, as far as the database saw.
#[derive(Debug, Clone, Serialize)]
pub struct Why {
    /// The request id.
    pub request: String,
    /// The first statement that failed, if any.
    pub failed: Option<StatementRecord>,
    /// Every row the request changed, with outcomes.
    pub changes: Vec<HistoryEntry>,
    /// A rule's advice for the failure, when one applies.
    pub suggestion: Option<&'static str>,
    /// How many statements were recorded for the request.
    pub statements: usize,
}

impl Store {
    /// Assembles [`Why`] for a request id (exact, already resolved).
    pub fn why(&self, request: &str) -> Result<Why, StoreError> {
        let statements = self.request_statements(request)?;
        let failed = statements.iter().find(|s| s.sqlstate.is_some()).cloned();
        let suggestion = failed.as_ref().and_then(|f| {
            suggestion(
                f.sqlstate.as_deref().unwrap_or_default(),
                f.error.as_deref().unwrap_or_default(),
            )
        });
        Ok(Why {
            request: request.to_string(),
            failed,
            changes: self.request_history(request)?,
            suggestion,
            statements: statements.len(),
        })
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
        "57014" if message.contains("statement timeout") => {
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
    }
}
