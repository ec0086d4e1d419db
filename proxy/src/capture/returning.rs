//! The capture rewrite: the text appended to a write so it returns its rows' images.
//! The original text is only ever appended to, never re-printed from the AST, so what the
//! server parses is the app's statement plus this suffix.

use std::fmt::Write as _;

use crate::capture::analysis::{Write, WriteOp};
use crate::capture::event::GapReason;
use crate::capture::names::quote_ident;

/// How a write's appended `RETURNING` reads its images.
#[derive(Debug, Clone, Copy)]
pub struct Returning {
    /// PostgreSQL 18's `RETURNING old/new`.
    pub old_new: bool,
    /// Read back each row's `tableoid`.
    pub table_oid: bool,
}

/// How many columns the rewrite appends to a write's result: before image, after image
/// and the row's `tableoid`.
pub const CAPTURE_COLUMNS: usize = 3;

/// The text appended to a write so it returns its before image, after image and
/// `tableoid` (when `returning` says it is needed; else `NULL`). `pk` is the table's
/// primary key (empty when it has none); `returning.old_new` selects the exact `old`/`new`
/// form. The images are `to_json` documents: PostgreSQL writes them straight to text,
/// where `to_jsonb` built a binary document, sorted its keys and printed it again (about
/// 5 µs more per row, `bench/capture-sql.sh`). Returns the text and, when the before image
/// cannot be taken, why.
pub fn appendix(
    write: &Write,
    pk: &[String],
    returning: crate::capture::plan::Returning,
) -> (String, Option<GapReason>) {
    let r = &write.refname;
    let mut note = None;
    let (before, after) = if returning.old_new && !write.shadows_old_new {
        (
            "pg_catalog.to_json(old.*)".to_string(),
            "pg_catalog.to_json(new.*)".to_string(),
        )
    } else {
        let after = format!("pg_catalog.to_json({r}.*)");
        match write.op {
            WriteOp::Insert => ("NULL::pg_catalog.json".to_string(), after),
            WriteOp::Delete => (after, "NULL::pg_catalog.json".to_string()),
            WriteOp::Update | WriteOp::Upsert => {
                let before = if pk.is_empty() {
                    note = Some(GapReason::NoBeforeImage("table has no primary key".into()));
                    "NULL::pg_catalog.json".to_string()
                } else if write.op == WriteOp::Update
                    && write.assigned.iter().any(|c| pk.contains(c))
                {
                    note = Some(GapReason::NoBeforeImage(
                        "UPDATE changes a primary-key column".into(),
                    ));
                    "NULL::pg_catalog.json".to_string()
                } else {
                    snapshot_subquery(&write.table_sql, r, pk)
                };
                (before, after)
            }
        }
    };
    let mut text = String::with_capacity(128);
    text.push_str(if write.has_returning {
        ", "
    } else {
        " RETURNING "
    });
    let _ = if returning.table_oid {
        write!(
            text,
            "{before} AS __flux_b, {after} AS __flux_a, {r}.tableoid AS __flux_t"
        )
    } else {
        write!(
            text,
            "{before} AS __flux_b, {after} AS __flux_a, NULL::pg_catalog.oid AS __flux_t"
        )
    };
    (text, note)
}

/// Reads the row as the statement's snapshot saw it, i.e. before the statement.
fn snapshot_subquery(table_sql: &str, refname: &str, pk: &[String]) -> String {
    let cols = |prefix: &str| {
        pk.iter()
            .map(|c| format!("{prefix}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "(SELECT pg_catalog.to_json(__flux_o.*) FROM {table_sql} __flux_o WHERE ({}) = ({}))",
        cols("__flux_o"),
        cols(refname)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::analysis::tests::write;

    #[test]
    fn appendix_forms() {
        let pg15 = Returning {
            old_new: false,
            table_oid: true,
        };
        let pg18 = Returning {
            old_new: true,
            table_oid: false,
        };
        let (w, _) = write("UPDATE public.users u SET name = 'x' FROM t WHERE u.id = t.id");
        assert_eq!(w.table, ["public", "users"]);
        let (text, note) = appendix(&w, &["id".into()], pg15);
        assert_eq!(note, None);
        assert_eq!(
            text,
            " RETURNING (SELECT pg_catalog.to_json(__flux_o.*) FROM public.users __flux_o WHERE (__flux_o.\"id\") = (u.\"id\")) AS __flux_b, pg_catalog.to_json(u.*) AS __flux_a, u.tableoid AS __flux_t"
        );
        let (text, _) = appendix(&w, &["id".into()], pg18);
        assert_eq!(
            text,
            " RETURNING pg_catalog.to_json(old.*) AS __flux_b, pg_catalog.to_json(new.*) AS __flux_a, NULL::pg_catalog.oid AS __flux_t"
        );
        let (w, _) = write("UPDATE users SET id = 2 WHERE id = 1");
        assert!(appendix(&w, &["id".into()], pg15).1.is_some());
        let (w, _) = write("DELETE FROM users WHERE id = 1 RETURNING id");
        let (text, _) = appendix(&w, &[], pg15);
        assert!(
            text.starts_with(", pg_catalog.to_json(users.*) AS __flux_b, NULL::pg_catalog.json")
        );
        let (w, _) = write("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2");
        assert_eq!(w.op, WriteOp::Upsert);
    }
}
