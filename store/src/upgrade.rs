//! Older data dirs, upgraded in place when the writer opens them.
//!
//! - Version 2 lacked the `exchanges` family: opening creates it.
//! - Version 3 stored a gap's reason as text and statements without the proxy's analysis
//!   (verb, tables, row count). Its gaps become [`GapReason::Legacy`] (the text as
//!   written: it cannot be typed without parsing it back); its statements take their verb
//!   and row count from their `CommandComplete` tag, the server's own account, and no
//!   tables. Their spans were named when written and are kept as they are.
//!
//! Each family is rewritten in batches; the version is written last, so an upgrade cut
//! short is done again from the start on the next open (rewriting a record twice gives
//! the same record).

use rocksdb::{IteratorMode, WriteBatch};
use serde::Deserialize;

use crate::db::{Store, StoreError, GAPS, STATEMENTS};
use crate::model::{tag_rows, Gap, GapReason, Nanos, Record, StatementRecord};

/// Records rewritten per batch.
const BATCH: usize = 10_000;

/// A version-3 record, as far as the families rewritten here hold it (values are encoded
/// by variant position: `Mutation` and `Tx` are never read, only counted).
#[derive(Deserialize)]
enum RecordV3 {
    Mutation(()),
    Tx(()),
    Gap(GapV3),
    Statement(StatementV3),
}

#[derive(Deserialize)]
struct GapV3 {
    at: Nanos,
    until: Nanos,
    table: Option<String>,
    count: u64,
    reason: String,
    request: Option<String>,
}

#[derive(Deserialize)]
struct StatementV3 {
    request: String,
    at: Nanos,
    duration: u64,
    sql: String,
    tag: Option<String>,
    sqlstate: Option<String>,
    error: Option<String>,
    parent_span: Option<String>,
}

impl From<GapV3> for Gap {
    fn from(g: GapV3) -> Gap {
        Gap {
            at: g.at,
            until: g.until,
            table: g.table,
            count: g.count,
            reason: GapReason::Legacy(g.reason),
            request: g.request,
        }
    }
}

impl From<StatementV3> for StatementRecord {
    fn from(st: StatementV3) -> StatementRecord {
        let verb = st
            .tag
            .as_deref()
            .and_then(|t| t.split_whitespace().next())
            .map(str::to_ascii_lowercase);
        let rows = st.tag.as_deref().and_then(tag_rows);
        StatementRecord {
            request: st.request,
            at: st.at,
            duration: st.duration,
            sql: st.sql,
            tag: st.tag,
            sqlstate: st.sqlstate,
            error: st.error,
            parent_span: st.parent_span,
            verb,
            tables: Vec::new(),
            rows,
        }
    }
}

fn family_record(family: &str) -> &'static str {
    if family == GAPS {
        "gap"
    } else {
        "statement"
    }
}

/// Rewrites a version-3 store's gaps and statements in the current encoding.
pub(crate) fn from_v3(store: &Store) -> Result<u64, StoreError> {
    let mut rewritten = 0;
    for family in [GAPS, STATEMENTS] {
        let mut batch = WriteBatch::default();
        let mut pending = 0;
        for entry in store.db.iterator_cf(store.cf(family), IteratorMode::Start) {
            let (key, value) = entry.map_err(|e| store.rocks(e))?;
            // Already in the new encoding: an upgrade cut short rewrote it.
            if matches!(postcard::take_from_bytes::<Record>(&value), Ok((_, rest)) if rest.is_empty())
            {
                continue;
            }
            let record = match postcard::take_from_bytes::<RecordV3>(&value) {
                Ok((RecordV3::Gap(g), [])) => Record::Gap(g.into()),
                Ok((RecordV3::Statement(st), [])) => Record::Statement(st.into()),
                _ => return Err(store.corrupt(family_record(family))),
            };
            let encoded = postcard::to_stdvec(&record).map_err(|_| store.corrupt("upgraded"))?;
            batch.put_cf(store.cf(family), key, encoded);
            pending += 1;
            rewritten += 1;
            if pending == BATCH {
                store
                    .db
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| store.rocks(e))?;
                pending = 0;
            }
        }
        store.db.write(batch).map_err(|e| store.rocks(e))?;
    }
    Ok(rewritten)
}
