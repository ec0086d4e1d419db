//! What the session decided for each statement it forwarded, and reading the captured
//! images back out of the results.
//!
//! [`plan`] combines a statement's [`Analysis`] with the catalog: each write either gets a
//! [`CapturePlan`] (and the text appended to it) or a gap saying why it cannot be imaged.
//! The response side uses [`split_data_row`] and [`strip_row_description`] to take the
//! appended columns off before the client sees them.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::catalog::{Lookup, Snapshot};
use crate::rewrite::{self, Analysis, Kind, SetRequest, WriteOp, CAPTURE_COLUMNS};

/// The session's decision for one statement, carried with it through the response FIFO.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Where the statement's text is in the string the client sent.
    pub text: std::ops::Range<usize>,
    /// What the statement is.
    pub kind: Kind,
    /// The request id from a sqlcommenter comment.
    pub request_id: Option<String>,
    /// A `set_config('flux.request_id', …)` inside the statement.
    pub set_request: Option<SetRequest>,
    /// How to read the images, when the statement was rewritten.
    pub capture: Option<Arc<CapturePlan>>,
    /// Why a write could not be imaged (recorded as a gap when it completes).
    pub gap: Option<GapPlan>,
}

/// A write the proxy rewrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    /// The table as the store names it (see [`crate::catalog::display_name`]).
    pub table: String,
    /// Its `pg_class` oid: rows whose `tableoid` differs went elsewhere (a partition).
    pub oid: u32,
    /// Its primary key.
    pub pk: Vec<String>,
    /// The statement.
    pub op: WriteOp,
    /// The app asked for `RETURNING` itself: its columns stay, ours are stripped; else the
    /// whole result (row description and rows) is ours and is dropped.
    pub keep_returning: bool,
    /// Why the before image is missing, when it is.
    pub before_note: Option<&'static str>,
    /// Writes this statement may cause that `RETURNING` cannot show: `(table, why)`.
    pub unseen: Vec<(Option<String>, String)>,
}

/// A write the proxy could not image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapPlan {
    /// The table, when known.
    pub table: Option<String>,
    /// Why.
    pub reason: String,
}

/// The outcome of planning one SQL string.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The text to send instead, when any write was rewritten.
    pub sql: Option<String>,
    /// One plan per statement, in order.
    pub steps: Arc<[StepPlan]>,
    /// A written table was not in the catalog snapshot: refresh it. (DDL refreshes the
    /// catalog when it completes; see the session.)
    pub unknown_table: bool,
}

/// Plans `sql` (whose statements `analysis` describes). `trailing_request` is the request
/// id from a sqlcommenter comment at the end of the string; `snapshot` is `None` when the
/// catalog could not be read (`catalog_error` says why).
pub fn plan(
    sql: &str,
    analysis: &Analysis,
    trailing_request: Option<&str>,
    snapshot: Option<&Snapshot>,
    catalog_error: Option<&str>,
) -> Planned {
    let mut out = String::new();
    let mut copied = 0;
    let mut unknown_table = false;
    let steps: Vec<StepPlan> = analysis
        .steps
        .iter()
        .map(|step| {
            let mut plan = StepPlan {
                text: step.start..step.insert_at,
                kind: step.kind.clone(),
                request_id: step
                    .request_id
                    .clone()
                    .or_else(|| trailing_request.map(str::to_string)),
                set_request: step.set_request.clone(),
                capture: None,
                gap: None,
            };
            match &step.kind {
                Kind::Write(write) => {
                    let table = write.table.join(".");
                    let decision = match snapshot {
                        None => Err(format!(
                            "pg_catalog unreadable: {}",
                            catalog_error.unwrap_or("not read yet")
                        )),
                        Some(s) => match s.lookup(&write.table) {
                            Lookup::Missing => {
                                unknown_table = true;
                                Err("table not found in pg_catalog".to_string())
                            }
                            Lookup::Ambiguous => {
                                Err("table name found in several schemas; search_path decides"
                                    .to_string())
                            }
                            Lookup::Found(t) if !t.can_select => {
                                Err("the session's role lacks SELECT on the table".to_string())
                            }
                            Lookup::Found(t) if t.rls => {
                                Err("row-level security is enabled on the table".to_string())
                            }
                            Lookup::Found(t) => Ok((t, s.has_old_new())),
                        },
                    };
                    match decision {
                        Ok((t, pg18)) => {
                            let (text, note) = rewrite::appendix(write, &t.pk, pg18);
                            if let Some(prefix) = sql.get(copied..step.insert_at) {
                                out.push_str(prefix);
                                out.push_str(&text);
                                copied = step.insert_at;
                                plan.capture = Some(Arc::new(CapturePlan {
                                    table: t.display_name(),
                                    oid: t.oid,
                                    pk: t.pk.clone(),
                                    op: write.op,
                                    keep_returning: write.has_returning,
                                    before_note: note,
                                    unseen: unseen(&t, write.op),
                                }));
                            }
                        }
                        Err(reason) => {
                            plan.gap = Some(GapPlan {
                                table: Some(table),
                                reason,
                            })
                        }
                    }
                }
                Kind::Unimaged { table, reason } => {
                    plan.gap = Some(GapPlan {
                        table: table.clone(),
                        reason: (*reason).to_string(),
                    })
                }
                _ => {}
            }
            plan
        })
        .collect();
    let sql = (copied > 0).then(|| {
        out.push_str(sql.get(copied..).unwrap_or_default());
        out
    });
    Planned {
        sql,
        steps: steps.into(),
        unknown_table,
    }
}

/// What a write to `t` may change beyond the rows it returns.
fn unseen(t: &crate::catalog::TableInfo, op: WriteOp) -> Vec<(Option<String>, String)> {
    let name = t.display_name();
    let mut out = Vec::new();
    if let Some(triggers) = &t.triggers {
        out.push((
            Some(name.clone()),
            format!("rows written by triggers on {name} ({triggers}) are not captured"),
        ));
    }
    if matches!(op, WriteOp::Delete | WriteOp::Update | WriteOp::Upsert) {
        for child in &t.cascades_to {
            let child = child.strip_prefix("public.").unwrap_or(child);
            out.push((
                Some(child.to_string()),
                format!("rows may have changed through the ON DELETE/UPDATE action of a foreign key to {name}"),
            ));
        }
    }
    out
}

/// The images one returned row carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    /// Before image (JSON), when there was a row before.
    pub before: Option<String>,
    /// After image (JSON), when there is a row after.
    pub after: Option<String>,
    /// The row's `tableoid`.
    pub oid: Option<u32>,
}

/// Reads a `DataRow` of a rewritten statement: the images in its last
/// [`CAPTURE_COLUMNS`] columns, and the frame without them (`None` when the app asked for
/// no columns, so the whole row is dropped). `binary` when the columns came in binary
/// format. `None` when the row is malformed.
pub fn split_data_row(frame: &[u8], binary: bool, keep: bool) -> Option<(Option<Bytes>, Images)> {
    let body = frame.get(5..)?;
    let count = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let kept = count.checked_sub(CAPTURE_COLUMNS)?;
    let mut at = 2;
    let mut kept_end = at;
    let mut ours: Vec<Option<&[u8]>> = Vec::with_capacity(CAPTURE_COLUMNS);
    for i in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let value = if len < 0 {
            None
        } else {
            let len = usize::try_from(len).ok()?;
            let v = body.get(at..at + len)?;
            at += len;
            Some(v)
        };
        if i < kept {
            kept_end = at;
        } else {
            ours.push(value);
        }
    }
    let [before, after, oid] = ours.as_slice() else {
        return None;
    };
    let images = Images {
        before: before.and_then(|v| jsonb_text(v, binary)),
        after: after.and_then(|v| jsonb_text(v, binary)),
        oid: oid.and_then(|v| oid_value(v, binary)),
    };
    let stripped = keep.then(|| {
        let cols = body.get(2..kept_end).unwrap_or_default();
        let mut f = BytesMut::with_capacity(7 + cols.len());
        f.put_u8(b'D');
        f.put_u32((4 + 2 + cols.len()) as u32);
        f.put_u16(kept as u16);
        f.put_slice(cols);
        f.freeze()
    });
    Some((stripped, images))
}

fn jsonb_text(v: &[u8], binary: bool) -> Option<String> {
    // Binary jsonb is a version byte (1) followed by the text form.
    let text = if binary {
        match v.split_first() {
            Some((1, rest)) => rest,
            _ => return None,
        }
    } else {
        v
    };
    std::str::from_utf8(text).ok().map(str::to_string)
}

fn oid_value(v: &[u8], binary: bool) -> Option<u32> {
    if binary {
        Some(u32::from_be_bytes(v.try_into().ok()?))
    } else {
        std::str::from_utf8(v).ok()?.parse().ok()
    }
}

/// A `RowDescription` of a rewritten statement without the appended fields.
pub fn strip_row_description(frame: &[u8]) -> Option<Bytes> {
    let body = frame.get(5..)?;
    let count = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let kept = count.checked_sub(CAPTURE_COLUMNS)?;
    let mut at = 2;
    for _ in 0..kept {
        let name_len = body.get(at..)?.iter().position(|&b| b == 0)?;
        at += name_len + 1 + 18; // table oid, attnum, type oid, typlen, typmod, format
    }
    let fields = body.get(2..at)?;
    let mut f = BytesMut::with_capacity(7 + fields.len());
    f.put_u8(b'T');
    f.put_u32((4 + 2 + fields.len()) as u32);
    f.put_u16(kept as u16);
    f.put_slice(fields);
    Some(f.freeze())
}

/// The primary-key values of a row image, as text in key order (`None` without a key or
/// when the image lacks a key column).
pub fn key_of(image: &str, pk: &[String]) -> Option<Vec<String>> {
    if pk.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(image).ok()?;
    pk.iter()
        .map(|c| {
            value.get(c).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .collect()
}

/// The number of rows a `CommandComplete` tag reports (`UPDATE 5`, `INSERT 0 5`).
pub fn tag_rows(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TableInfo;

    fn snapshot(version: i32) -> Snapshot {
        Snapshot::new(
            version,
            vec![TableInfo {
                oid: 10,
                schema: "public".into(),
                name: "users".into(),
                pk: vec!["id".into()],
                rls: false,
                can_select: true,
                root: 10,
                triggers: None,
                cascades_to: Vec::new(),
            }],
        )
    }

    #[test]
    fn plans_rewrites_and_gaps_per_statement() {
        let sql = "UPDATE users SET plan='pro' WHERE id=1; TRUNCATE users; INSERT INTO ghosts VALUES (1) RETURNING *";
        let a = rewrite::analyze(sql);
        let p = plan(sql, &a, Some("req-1"), Some(&snapshot(150000)), None);
        let text = p.sql.expect("rewritten");
        assert!(text.starts_with("UPDATE users SET plan='pro' WHERE id=1 RETURNING (SELECT"));
        assert!(text.ends_with("; TRUNCATE users; INSERT INTO ghosts VALUES (1) RETURNING *"));
        assert!(p.unknown_table);
        let c = p.steps[0].capture.as_ref().expect("captured");
        assert_eq!((c.table.as_str(), c.keep_returning), ("users", false));
        assert_eq!(
            p.steps[1].gap.as_ref().map(|g| g.reason.as_str()),
            Some("TRUNCATE")
        );
        assert!(p.steps[2].gap.is_some());
        assert_eq!(p.steps[2].request_id.as_deref(), Some("req-1"));
        let none = plan(sql, &a, None, None, Some("password authentication failed"));
        assert!(none.sql.is_none());
        assert!(none.steps[0]
            .gap
            .as_ref()
            .is_some_and(|g| g.reason.contains("password")));
    }

    fn data_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (cols.len() as u16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                Some(v) => {
                    body.extend((v.len() as i32).to_be_bytes());
                    body.extend(*v);
                }
                None => body.extend((-1i32).to_be_bytes()),
            }
        }
        let mut f = vec![b'D'];
        f.extend(((body.len() + 4) as u32).to_be_bytes());
        f.extend(body);
        f
    }

    #[test]
    fn data_rows_lose_exactly_the_appended_columns() {
        let row = data_row(&[Some(b"42"), None, Some(br#"{"id": 42}"#), Some(b"16384")]);
        let (kept, images) = split_data_row(&row, false, true).expect("row");
        assert_eq!(kept.as_deref(), Some(&data_row(&[Some(b"42")])[..]));
        assert_eq!(images.before, None);
        assert_eq!(images.after.as_deref(), Some(r#"{"id": 42}"#));
        assert_eq!(images.oid, Some(16384));
        let bin = data_row(&[
            Some(b"\x01{}"),
            Some(b"\x01[]"),
            Some(&16384u32.to_be_bytes()),
        ]);
        let (kept, images) = split_data_row(&bin, true, false).expect("row");
        assert!(kept.is_none());
        assert_eq!(images.before.as_deref(), Some("{}"));
        assert_eq!(images.oid, Some(16384));
        assert!(split_data_row(&row[..row.len() - 1], false, true).is_none());
        assert!(split_data_row(&data_row(&[Some(b"1")]), false, true).is_none());
    }

    #[test]
    fn keys_come_from_images_in_key_order() {
        let pk = vec!["k".to_string(), "id".to_string()];
        assert_eq!(
            key_of(r#"{"id": 7, "k": "a b", "x": null}"#, &pk),
            Some(vec!["a b".to_string(), "7".to_string()])
        );
        assert_eq!(key_of(r#"{"id": 7}"#, &pk), None);
        assert_eq!(key_of("{}", &[]), None);
        assert_eq!(tag_rows("INSERT 0 12"), 12);
        assert_eq!(tag_rows("UPDATE 3"), 3);
    }
}
