//! Per-column blame over a row's resolved history (`flux state blame`): a pure function,
//! so its rules are tested without a database.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use flux_store::model::{Nanos, Op, Outcome};
use flux_store::query::{HistoryEntry, MutationView};

/// Who wrote a column's current value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// The request, if tagged.
    pub request: Option<String>,
    /// When.
    pub at: Nanos,
}

/// A newer attempt on a column that did not stick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The request, if tagged.
    pub request: Option<String>,
    /// When.
    pub at: Nanos,
    /// The value it tried to set (`null` for a delete).
    pub value: Value,
    /// Rolled back, unknown, or still pending.
    pub outcome: Outcome,
}

/// One column's blame line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnBlame {
    /// Column name.
    pub column: String,
    /// Current value (from the last committed image).
    pub value: Value,
    /// The last committed write of this column.
    pub written: Option<Attribution>,
    /// The newest attempt on this column, when it came after the last committed write
    /// and did not commit.
    pub newest_attempt: Option<Attempt>,
}

/// Per-column attribution of a row's current state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blame {
    /// Whether the row exists after the last committed change.
    pub exists: bool,
    /// Columns, alphabetically.
    pub columns: Vec<ColumnBlame>,
}

fn object(v: &Option<Value>) -> Option<&Map<String, Value>> {
    v.as_ref().and_then(Value::as_object)
}

/// The columns a change wrote, with the values it wrote (`null` for a delete).
fn written_columns(m: &MutationView) -> Vec<(String, Value)> {
    match (object(&m.before), object(&m.after)) {
        (_, None) => object(&m.before)
            .map(|b| b.keys().map(|k| (k.clone(), Value::Null)).collect())
            .unwrap_or_default(),
        // An update whose before image is missing: every column counts as written.
        (None, Some(after)) => after.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        (Some(before), Some(after)) => after
            .iter()
            .filter(|(k, v)| m.op == Op::Insert.as_str() || before.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Blames each column of a row on the last committed change that wrote it, and marks a
/// newer attempt that rolled back (or whose fate is unknown).
pub fn blame(history: &[HistoryEntry]) -> Blame {
    let mut current: Option<Map<String, Value>> = None;
    let mut written: BTreeMap<String, Attribution> = BTreeMap::new();
    let mut attempts: BTreeMap<String, Attempt> = BTreeMap::new();
    for entry in history {
        let m = &entry.mutation;
        let columns = written_columns(m);
        match entry.outcome {
            Outcome::Committed => {
                current = object(&m.after).cloned();
                for (column, _) in columns {
                    attempts.remove(&column);
                    written.insert(
                        column,
                        Attribution {
                            request: m.request.clone(),
                            at: m.at,
                        },
                    );
                }
            }
            outcome => {
                for (column, value) in columns {
                    attempts.insert(
                        column,
                        Attempt {
                            request: m.request.clone(),
                            at: m.at,
                            value,
                            outcome,
                        },
                    );
                }
            }
        }
    }
    let mut names: Vec<String> = current.iter().flat_map(|c| c.keys().cloned()).collect();
    names.extend(
        attempts
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    names.sort();
    let columns = names
        .into_iter()
        .map(|column| ColumnBlame {
            value: current
                .as_ref()
                .and_then(|c| c.get(&column))
                .cloned()
                .unwrap_or(Value::Null),
            written: written.get(&column).cloned(),
            newest_attempt: attempts.get(&column).cloned(),
            column,
        })
        .collect();
    Blame {
        exists: current.is_some(),
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_store::model::{Mutation, TxId};

    fn entry(
        op: Op,
        before: Option<&str>,
        after: Option<&str>,
        request: &str,
        at: Nanos,
        outcome: Outcome,
    ) -> HistoryEntry {
        HistoryEntry {
            mutation: MutationView::from(Mutation {
                table: "public.users".into(),
                key: Some(vec!["42".into()]),
                at,
                op,
                before: before.map(str::to_string),
                after: after.map(str::to_string),
                request: Some(request.into()),
                tx: TxId {
                    boot: 1,
                    session: 1,
                    n: at,
                },
                tx_index: 0,
            }),
            outcome,
        }
    }

    /// The seed's row story: insert, set name, set plan, a rolled-back plan change.
    fn seed_story() -> Vec<HistoryEntry> {
        let v0 = r#"{"id": 42, "email": "a@b.com", "name": null, "plan": "free"}"#;
        let v1 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": "free"}"#;
        let v2 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": "pro"}"#;
        let v3 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": null}"#;
        vec![
            entry(
                Op::Insert,
                None,
                Some(v0),
                "req-insert",
                10,
                Outcome::Committed,
            ),
            entry(
                Op::Update,
                Some(v0),
                Some(v1),
                "req-name",
                20,
                Outcome::Committed,
            ),
            entry(
                Op::Update,
                Some(v1),
                Some(v2),
                "req-plan",
                30,
                Outcome::Committed,
            ),
            entry(
                Op::Update,
                Some(v2),
                Some(v3),
                "req-fail",
                40,
                Outcome::RolledBack,
            ),
        ]
    }

    fn line(b: &Blame, column: &str) -> ColumnBlame {
        b.columns
            .iter()
            .find(|c| c.column == column)
            .cloned()
            .expect("column present")
    }

    #[test]
    fn blame_attributes_each_column_to_its_last_committed_write() {
        let b = blame(&seed_story());
        assert!(b.exists);
        let email = line(&b, "email");
        assert_eq!(email.value, "a@b.com");
        assert_eq!(
            email.written.map(|w| w.request),
            Some(Some("req-insert".into()))
        );
        assert!(email.newest_attempt.is_none());
        let name = line(&b, "name");
        assert_eq!(name.value, "Alice Smith");
        assert_eq!(
            name.written.map(|w| (w.request, w.at)),
            Some((Some("req-name".into()), 20))
        );
        let plan = line(&b, "plan");
        assert_eq!(plan.value, "pro");
        assert_eq!(
            plan.written.map(|w| w.request),
            Some(Some("req-plan".into()))
        );
        let attempt = plan.newest_attempt.expect("rolled-back attempt is shown");
        assert_eq!(
            (attempt.request.as_deref(), attempt.outcome),
            (Some("req-fail"), Outcome::RolledBack)
        );
        assert_eq!(attempt.value, Value::Null);
    }

    #[test]
    fn a_later_commit_clears_an_earlier_rolled_back_attempt() {
        let mut story = seed_story();
        let v3 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": null}"#;
        let v4 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": "team"}"#;
        story.push(entry(
            Op::Update,
            Some(v3),
            Some(v4),
            "req-team",
            50,
            Outcome::Committed,
        ));
        let plan = line(&blame(&story), "plan");
        assert_eq!(plan.value, "team");
        assert!(plan.newest_attempt.is_none());
    }

    #[test]
    fn delete_removes_the_row_and_blames_the_delete() {
        let mut story = seed_story();
        let v2 = r#"{"id": 42, "email": "a@b.com", "name": "Alice Smith", "plan": "pro"}"#;
        story.push(entry(
            Op::Delete,
            Some(v2),
            None,
            "req-del",
            60,
            Outcome::Committed,
        ));
        let b = blame(&story);
        assert!(!b.exists);
        assert!(b.columns.is_empty());
    }
}
