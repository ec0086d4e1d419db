//! What the session decided for each statement it forwarded, and reading the captured
//! images back out of the results.
//!
//! [`plan`] combines a statement's [`Analysis`] with the catalog: each write either gets a
//! [`CapturePlan`] (and the text appended to it) or a gap saying why it cannot be imaged.
//! The response side uses [`split_data_row`] and [`strip_row_description`] to take the
//! appended columns off before the client sees them.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use std::collections::HashMap;

use crate::capture::analysis::{self, Analysis, Kind, WriteOp};
use crate::capture::catalog::{CatalogError, Lookup, Snapshot, TableInfo};
use crate::capture::event::GapReason;
use crate::capture::request_id::SetRequest;
use crate::capture::returning::CAPTURE_COLUMNS;
use crate::capture::role::RoleChange;
use crate::capture::role::{self, RoleState};

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
    /// How the statement changes the session's role.
    pub role: Option<RoleChange>,
    /// How to read the images, when the statement was rewritten.
    pub capture: Option<Arc<CapturePlan>>,
    /// Why a write could not be imaged (recorded as a gap when it completes).
    pub gap: Option<GapPlan>,
    /// The statement's command, from its analysis (`insert`, `select`).
    pub verb: Option<String>,
    /// The tables it acts on, from its analysis.
    pub tables: Vec<String>,
}

/// A write the proxy rewrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    /// The table as the store names it (see [`crate::capture::catalog::display_name`]).
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
    pub before_note: Option<GapReason>,
    /// Writes this statement may cause that `RETURNING` cannot show: `(table, why)`.
    pub unseen: Vec<(Option<String>, GapReason)>,
}

/// A write the proxy could not image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapPlan {
    /// The table, when known.
    pub table: Option<String>,
    /// Why.
    pub reason: GapReason,
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
    /// The plan depends only on the text, the snapshot and the roles: no statement in it
    /// changes session state the planner tracks (roles, DDL, SQL-prepared statements), so
    /// it may be reused for the same text under the same conditions.
    pub reusable: bool,
}

/// What planning needs besides the text: the catalog, the roles the statements may run
/// as, and the session state the planner carries from string to string.
#[derive(Debug)]
pub struct Context<'a> {
    /// The catalog snapshot; `None` when it could not be read (`catalog_error` says why).
    pub snapshot: Option<&'a Snapshot>,
    /// Why the catalog could not be read.
    pub catalog_error: Option<&'a CatalogError>,
    /// The confirmed role state.
    pub confirmed: &'a RoleState,
    /// Role changes planned but not yet answered (the planner appends this string's).
    pub pending_roles: &'a mut Vec<RoleChange>,
    /// DDL (or a routine) planned but not yet settled: writes are not rewritten until the
    /// session is idle and the catalog re-read.
    pub unsettled: &'a mut bool,
    /// Statements prepared with SQL `PREPARE` that write: name → table.
    pub prepared: &'a mut HashMap<String, Option<String>>,
}

/// Plans `sql` (whose statements `analysis` describes). `trailing_request` is the request
/// id from a sqlcommenter comment at the end of the string.
pub fn plan(
    sql: &str,
    analysis: &Analysis,
    trailing_request: Option<&str>,
    cx: &mut Context<'_>,
) -> Planned {
    let mut out = String::new();
    let mut copied = 0;
    let mut unknown_table = false;
    let mut reusable = true;
    // The split into statements is ours; if part of the string was not understood, it
    // may not be the server's, so nothing in it is rewritten.
    let whole = analysis.steps.len() <= 1 || analysis.steps.iter().all(|s| s.parsed);
    let mut steps = Vec::with_capacity(analysis.steps.len());
    for step in &analysis.steps {
        let mut plan = StepPlan {
            text: step.start..step.insert_at,
            kind: step.kind.clone(),
            request_id: step
                .request_id
                .clone()
                .or_else(|| trailing_request.map(str::to_string)),
            set_request: step.set_request.clone(),
            role: step.role.clone(),
            capture: None,
            gap: None,
            verb: step.verb.clone(),
            tables: step.tables.clone(),
        };
        match &step.kind {
            Kind::Write(write) => {
                let table = write.table.join(".");
                match decide(write, whole, cx, &mut unknown_table) {
                    Ok((t, returning)) => {
                        let (text, note) =
                            crate::capture::returning::appendix(write, &t.pk, returning);
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
                    reason: reason.clone(),
                })
            }
            Kind::Ddl => {
                *cx.unsettled = true;
                reusable = false;
            }
            Kind::Routine { writes } => {
                *cx.unsettled = true;
                reusable = false;
                if *writes {
                    plan.gap = Some(GapPlan {
                        table: None,
                        reason: GapReason::Routine("a DO block or procedure".into()),
                    });
                }
            }
            Kind::Prepare { name, write } => {
                reusable = false;
                match write {
                    Some(table) => cx.prepared.insert(name.clone(), table.clone()),
                    None => cx.prepared.remove(name),
                };
            }
            Kind::Execute(name) => {
                reusable = false;
                if let Some(table) = cx.prepared.get(name) {
                    plan.gap = Some(GapPlan {
                        table: table.clone(),
                        reason: GapReason::Prepared(name.clone()),
                    });
                }
            }
            Kind::Deallocate(name) => {
                reusable = false;
                match name {
                    Some(name) => {
                        cx.prepared.remove(name);
                    }
                    None => cx.prepared.clear(),
                }
            }
            _ => {}
        }
        if let Some(change) = &step.role {
            cx.pending_roles.push(change.clone());
            reusable = false;
        }
        steps.push(plan);
    }
    let sql = (copied > 0).then(|| {
        out.push_str(sql.get(copied..).unwrap_or_default());
        out
    });
    Planned {
        sql,
        steps: steps.into(),
        unknown_table,
        reusable,
    }
}

/// Whether a write may be rewritten: the table it resolves to and whether the server has
/// `RETURNING old/new`, or why not.
fn decide(
    write: &analysis::Write,
    whole: bool,
    cx: &Context<'_>,
    unknown_table: &mut bool,
) -> Result<(Arc<TableInfo>, Returning), GapReason> {
    if !whole {
        return Err(GapReason::StringNotUnderstood);
    }
    if *cx.unsettled {
        return Err(GapReason::CatalogUnsettled);
    }
    let Some(s) = cx.snapshot else {
        return Err(GapReason::CatalogUnreadable(
            cx.catalog_error.map(ToString::to_string),
        ));
    };
    let (t, all) = match s.lookup(&write.table) {
        Lookup::Missing => {
            *unknown_table = true;
            return Err(GapReason::TableNotFound);
        }
        Lookup::Ambiguous => return Err(GapReason::Ambiguous),
        Lookup::Found(t, all) => (t, all),
    };
    if let Some(why) = t.refusal {
        return Err(GapReason::Relation(why.into()));
    }
    if t.rls {
        return Err(GapReason::RowSecurity);
    }
    let roles = role::candidates(cx.confirmed, cx.pending_roles).ok_or(GapReason::RoleUnknown)?;
    for role in &roles {
        for table in &all {
            match s.can_select(role, table) {
                Some(true) => {}
                Some(false) => return Err(GapReason::NoSelect(role.clone())),
                None => return Err(GapReason::PrivilegesUnread(role.clone())),
            }
        }
    }
    Ok((
        t.clone(),
        Returning {
            old_new: s.has_old_new(),
            // Which relation a row went to is known in advance unless the table has
            // partitions or children, or the name matched same-named tables elsewhere.
            table_oid: t.has_children || all.len() > 1,
        },
    ))
}

pub use crate::capture::returning::Returning;

/// What a write to `t` may change beyond the rows it returns.
fn unseen(t: &TableInfo, op: WriteOp) -> Vec<(Option<String>, GapReason)> {
    let name = t.display_name();
    let mut out = Vec::new();
    if let Some(triggers) = &t.triggers {
        out.push((
            Some(name.clone()),
            GapReason::Triggers {
                table: name.clone(),
                names: triggers.clone(),
            },
        ));
    }
    if matches!(op, WriteOp::Delete | WriteOp::Update | WriteOp::Upsert) {
        for child in &t.cascades_to {
            let child = flux_record::table_name(child);
            out.push((
                Some(child.to_string()),
                GapReason::Cascade {
                    parent: name.clone(),
                },
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
    let mut ours: [Option<&[u8]>; CAPTURE_COLUMNS] = [None; CAPTURE_COLUMNS];
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
            *ours.get_mut(i - kept)? = value;
        }
    }
    let [before, after, oid] = ours;
    let images = Images {
        before: before.and_then(json_text),
        after: after.and_then(json_text),
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

/// An image: `json` is sent as its text in both formats.
fn json_text(v: &[u8]) -> Option<String> {
    std::str::from_utf8(v).ok().map(str::to_string)
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
/// when the image lacks a key column). Streams through the image: only the key's values
/// are built, every other member is skipped without allocating.
pub fn key_of(image: &str, pk: &[String]) -> Option<Vec<String>> {
    use serde::de::Deserializer as _;
    if pk.is_empty() {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(image);
    let found = de.deserialize_map(KeyVisitor { pk }).ok()?;
    found.into_iter().collect()
}

/// Collects the values of the `pk` members of a JSON object.
struct KeyVisitor<'a> {
    pk: &'a [String],
}

impl<'de> serde::de::Visitor<'de> for KeyVisitor<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row image (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.pk.len()];
        while let Some(slot) = map.next_key_seed(KeySlot { pk: self.pk })? {
            match slot {
                Some(i) => {
                    let v: serde_json::Value = map.next_value()?;
                    if let Some(f) = found.get_mut(i) {
                        *f = Some(match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        });
                    }
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A member name: which key column it is, if any (compared in place, not copied).
struct KeySlot<'a> {
    pk: &'a [String],
}

impl<'de> serde::de::DeserializeSeed<'de> for KeySlot<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySlot<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.pk.iter().position(|c| c == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::catalog::TableInfo;

    fn table(oid: u32, name: &str) -> TableInfo {
        crate::capture::catalog::tests::table(oid, "public", name, &["id"])
    }

    fn snapshot(version: i32) -> Snapshot {
        let mut ruled = table(11, "ruled");
        ruled.refusal = Some("the table has rules (RETURNING would change what they do)");
        let mut view = table(12, "v");
        view.refusal = Some("a view");
        let mut secret = table(13, "secret");
        secret.can_select = false;
        Snapshot::new(
            version,
            "app",
            vec![table(10, "users"), ruled, view, secret],
        )
    }

    /// Session state the planner carries between strings.
    #[derive(Default)]
    struct Session {
        pending: Vec<RoleChange>,
        unsettled: bool,
        prepared: HashMap<String, Option<String>>,
    }

    impl Session {
        fn plan(&mut self, sql: &str, snapshot: Option<&Snapshot>) -> Planned {
            let confirmed = RoleState::new("app");
            let error = CatalogError::Query("password authentication failed".into());
            let mut cx = Context {
                snapshot,
                catalog_error: Some(&error),
                confirmed: &confirmed,
                pending_roles: &mut self.pending,
                unsettled: &mut self.unsettled,
                prepared: &mut self.prepared,
            };
            plan(sql, &analysis::analyze(sql), Some("req-1"), &mut cx)
        }
    }

    fn gap(p: &Planned, i: usize) -> Option<GapReason> {
        p.steps.get(i)?.gap.as_ref().map(|g| g.reason.clone())
    }

    #[test]
    fn plans_rewrites_and_gaps_per_statement() {
        let sql = "UPDATE users SET plan='pro' WHERE id=1; TRUNCATE users; INSERT INTO ghosts VALUES (1) RETURNING *";
        let s = snapshot(150000);
        let p = Session::default().plan(sql, Some(&s));
        let text = p.sql.clone().expect("rewritten");
        assert!(text.starts_with("UPDATE users SET plan='pro' WHERE id=1 RETURNING (SELECT"));
        assert!(text.ends_with("; TRUNCATE users; INSERT INTO ghosts VALUES (1) RETURNING *"));
        assert!(p.unknown_table);
        assert!(p.reusable);
        let c = p.steps[0].capture.as_ref().expect("captured");
        assert_eq!((c.table.as_str(), c.keep_returning), ("users", false));
        assert_eq!(gap(&p, 1), Some(GapReason::Statement("TRUNCATE".into())));
        assert_eq!(gap(&p, 2), Some(GapReason::TableNotFound));
        assert_eq!(p.steps[2].request_id.as_deref(), Some("req-1"));
        let none = Session::default().plan(sql, None);
        assert!(none.sql.is_none());
        assert!(matches!(
            gap(&none, 0),
            Some(GapReason::CatalogUnreadable(Some(ref why))) if why.contains("password")
        ));
    }

    #[test]
    fn relations_capture_must_not_touch_are_gaps() {
        let s = snapshot(150000);
        for (sql, reason) in [
            ("INSERT INTO ruled VALUES (1)", "rules"),
            ("UPDATE v SET a = 1", "a view"),
            ("DELETE FROM secret", "role"),
        ] {
            let p = Session::default().plan(sql, Some(&s));
            assert!(p.sql.is_none(), "{sql} must not be rewritten");
            let what = match gap(&p, 0) {
                Some(GapReason::Relation(what)) => what,
                Some(GapReason::NoSelect(_)) => "role".to_string(),
                other => panic!("{sql}: {other:?}"),
            };
            assert!(what.contains(reason), "{sql}: {what}");
        }
    }

    #[test]
    fn role_changes_count_until_the_server_answers_them() {
        let s = snapshot(150000);
        // r1's privileges were never read: a write after SET ROLE r1 in the same string
        // is left alone, and so is one in a later string while the SET is unanswered.
        let mut session = Session::default();
        let p = session.plan("SET ROLE r1; INSERT INTO users VALUES (1)", Some(&s));
        assert!(p.sql.is_none());
        assert_eq!(gap(&p, 1), Some(GapReason::PrivilegesUnread("r1".into())));
        assert!(!p.reusable);
        let p = session.plan("INSERT INTO users VALUES (2)", Some(&s));
        assert!(p.sql.is_none());
        // A computed role makes every write a gap.
        let mut session = Session::default();
        let p = session.plan(
            "SELECT set_config('role', current_setting('my.role'), true); UPDATE users SET a = 1",
            Some(&s),
        );
        assert_eq!(gap(&p, 1), Some(GapReason::RoleUnknown));
    }

    #[test]
    fn ddl_and_routines_unsettle_the_catalog() {
        let s = snapshot(150000);
        let mut session = Session::default();
        let p = session.plan(
            "CREATE RULE r AS ON INSERT TO users DO INSTEAD NOTHING; INSERT INTO users VALUES (1)",
            Some(&s),
        );
        assert!(p.sql.is_none());
        assert_eq!(gap(&p, 1), Some(GapReason::CatalogUnsettled));
        assert!(session.unsettled);
        let mut session = Session::default();
        let p = session.plan("DO $$ BEGIN INSERT INTO users VALUES (1); END $$", Some(&s));
        assert!(matches!(gap(&p, 0), Some(GapReason::Routine(_))));
        assert!(session.unsettled);
    }

    #[test]
    fn sql_prepared_writes_are_gaps_when_executed() {
        let s = snapshot(150000);
        let mut session = Session::default();
        let p = session.plan(
            "PREPARE ins(int) AS INSERT INTO users VALUES ($1)",
            Some(&s),
        );
        assert!(p.sql.is_none(), "the prepared text is never rewritten");
        let p = session.plan("EXECUTE ins(1)", Some(&s));
        assert_eq!(gap(&p, 0), Some(GapReason::Prepared("ins".into())));
        session.plan("DEALLOCATE ins", Some(&s));
        let p = session.plan("EXECUTE ins(1)", Some(&s));
        assert_eq!(gap(&p, 0), None);
    }

    #[test]
    fn nothing_is_rewritten_in_a_string_with_a_part_not_understood() {
        let s = snapshot(150000);
        let p = Session::default().plan(
            "INSERT INTO users VALUES (1); FROBNICATE users; UPDATE users SET a = 2",
            Some(&s),
        );
        assert!(p.sql.is_none());
        assert_eq!(gap(&p, 0), Some(GapReason::StringNotUnderstood));
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
        // Binary results: json is its text either way; the oid is four bytes.
        let bin = data_row(&[Some(b"{}"), Some(b"[]"), Some(&16384u32.to_be_bytes())]);
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
        // Nested values and escapes are skipped; to_json's spacing and key order vary.
        let pk = vec!["b".to_string(), "a".to_string()];
        assert_eq!(
            key_of(
                r#"{"x":{"a":[1,{"b":2}]},"a":"q\"uote","n":"\u00e9","b":15}"#,
                &pk
            ),
            Some(vec!["15".to_string(), "q\"uote".to_string()])
        );
        assert_eq!(key_of("[1]", &pk), None);
        assert_eq!(key_of("{bad", &pk), None);
    }
}
