//! What a gap's reason says, in words: the store keeps the [`GapReason`], this is where
//! it becomes a sentence (`flux state history`, `why`, JSON output).

use std::fmt;

use flux_store::model::{GapReason, Lost};

/// A reason, displayed: `format!("{}", Reason(&gap.reason))`.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'a>(pub &'a GapReason);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GapReason::Statement(what) => f.write_str(what),
            GapReason::NotUnderstood => {
                f.write_str("statement not understood by the proxy's SQL parser")
            }
            GapReason::StringNotUnderstood => f.write_str(
                "another statement in the same query string was not understood by the proxy's SQL parser",
            ),
            GapReason::Routine(what) => write!(f, "writes inside {what} are not captured"),
            GapReason::Prepared(name) => {
                write!(f, "EXECUTE of the SQL-prepared write {name} is not captured")
            }
            GapReason::CatalogUnreadable(Some(why)) => write!(f, "pg_catalog unreadable: {why}"),
            GapReason::CatalogUnreadable(None) => f.write_str("pg_catalog not read yet"),
            GapReason::TableNotFound => f.write_str("table not found in pg_catalog"),
            GapReason::Ambiguous => f.write_str(
                "table name found in several schemas that capture treats differently; search_path decides",
            ),
            GapReason::Relation(what) => f.write_str(what),
            GapReason::RowSecurity => f.write_str("row-level security is enabled on the table"),
            GapReason::NoSelect(role) => write!(
                f,
                "role {role} lacks SELECT on the table (capture reads rows back with RETURNING)"
            ),
            GapReason::PrivilegesUnread(role) => write!(
                f,
                "role {role} was set in the same query string or pipeline; its privileges were not read yet"
            ),
            GapReason::RoleUnknown => f.write_str(
                "the session's role was set to a value the proxy cannot see (computed set_config, DO block)",
            ),
            GapReason::CatalogUnsettled => f.write_str(
                "DDL earlier in this transaction or pipeline: pg_catalog not settled",
            ),
            // The status ("captured without a before image") is said by the layout.
            GapReason::NoBeforeImage(why) => f.write_str(why),
            GapReason::Triggers { table, names } => write!(
                f,
                "rows written by triggers on {table} ({names}) are not captured"
            ),
            GapReason::Cascade { parent } => write!(
                f,
                "rows may have changed through the ON DELETE/UPDATE action of a foreign key to {parent}"
            ),
            GapReason::Lost(kind) => f.write_str(lost(*kind)),
            GapReason::StoreFailed => f.write_str(
                "the store failed (disk full or I/O error); these records were not kept",
            ),
            GapReason::Legacy(text) => f.write_str(
                text.strip_suffix(flux_store::model::LEGACY_PARTIAL)
                    .unwrap_or(text),
            ),
        }
    }
}

fn lost(kind: Lost) -> &'static str {
    match kind {
        Lost::Mutations => "the store lagged or failed; these writes were not recorded",
        Lost::Outcomes => "the store lagged or failed; transaction outcomes were not recorded, so rows written then may show as in progress",
        Lost::Gaps => "the store lagged or failed; notes about writes that were not captured were lost too",
        Lost::Statements => "the store lagged or failed; statements of requests were not recorded",
        Lost::Spans => "the store lagged or failed; spans of requests were not recorded",
        Lost::Exchanges => "the store lagged or failed; HTTP requests the gateway relayed were not recorded (they cannot be replayed)",
        Lost::Sources => "the store lagged or failed; which database the proxy was in front of was not recorded (replay cannot check that its scratch database differs)",
        Lost::Replays => "the store lagged or failed; which replay belongs to which recorded request was not recorded",
    }
}

/// What the gap means for the rows: `not captured`, or `captured without a before image`.
pub fn status(reason: &GapReason) -> &'static str {
    if reason.partial() {
        "captured without a before image"
    } else {
        "not captured"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_sentences_and_partial_ones_say_so() {
        let partial = GapReason::NoBeforeImage("table has no primary key".into());
        assert_eq!(Reason(&partial).to_string(), "table has no primary key");
        assert_eq!(status(&partial), "captured without a before image");
        let legacy = GapReason::Legacy("table has no primary key: before image unavailable".into());
        assert_eq!(Reason(&legacy).to_string(), "table has no primary key");
        assert_eq!(status(&legacy), "captured without a before image");
        let truncate = GapReason::Statement("TRUNCATE".into());
        assert_eq!(Reason(&truncate).to_string(), "TRUNCATE");
        assert_eq!(status(&truncate), "not captured");
        assert!(Reason(&GapReason::Lost(Lost::Outcomes))
            .to_string()
            .contains("in progress"));
    }
}
