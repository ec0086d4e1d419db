//! Judging a replayed request against its original (DESIGN §7 step 6).
//!
//! Passing = a success status (below 400) and no error. Verdicts: passing (noting when
//! the original failed: `← was 500`), still failing, now failing (it passed before: a
//! regression). A passing request whose writes or JSON response differ from the
//! original's gets the first difference. Writes are compared by table, operation and
//! order within the request; sequence-generated columns and `[replay] ignore` patterns
//! (`table.column`, `*.column`) are left out, and so are JSON response keys of those names
//! (new serial ids don't count).

use serde_json::Value;

/// What a request did, as far as judging needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The HTTP status, if it got one.
    pub status: Option<u16>,
    /// The root cause when something failed (an error span, a failing statement).
    pub error: Option<String>,
    /// Its row changes in order.
    pub writes: Vec<Write>,
    /// The response body, when it was JSON.
    pub response: Option<Value>,
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Table, as the store names it.
    pub table: String,
    /// `INSERT`, `UPDATE`, `DELETE`.
    pub op: String,
    /// The row after (before, for a delete), as JSON.
    pub row: Value,
}

impl Outcome {
    /// Success status and no error.
    pub fn passing(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| s < 400)
    }

    /// A one-line root cause: the error, else the status.
    pub fn cause(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no response".to_string(),
        }
    }
}

/// The judgement of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passing now; `was`: the original's status or cause when it failed; `differs`: the
    /// first difference from a passing original's writes or response.
    Passing {
        /// What the original failed with, when it did.
        was: Option<String>,
        /// The first difference, when the original passed too.
        differs: Option<String>,
    },
    /// Failed before and now.
    StillFailing(String),
    /// Passed before, fails now: a regression.
    NowFailing(String),
}

impl Verdict {
    /// Whether this counts as failing (exit status 1).
    pub fn failing(&self) -> bool {
        !matches!(self, Verdict::Passing { .. })
    }
}

/// Columns whose values do not count.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(Option<String>, String)>,
}

impl Ignore {
    /// From `table.column` / `*.column` patterns (a bare `column` counts for every table),
    /// plus sequence-generated columns. Tables are named as the store names them:
    /// `public.orders.x` and `orders.x` both name `orders`.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let table = |t: &str| t.strip_prefix("public.").unwrap_or(t).to_string();
        Self {
            patterns: patterns
                .into_iter()
                .map(|p| match p.rsplit_once('.') {
                    Some(("*", c)) => (None, c.to_string()),
                    Some((t, c)) => (Some(table(t)), c.to_string()),
                    None => (None, p.to_string()),
                })
                .collect(),
        }
    }

    fn column(&self, table: &str, column: &str) -> bool {
        self.patterns
            .iter()
            .any(|(t, c)| c == column && t.as_deref().is_none_or(|t| t == table))
    }

    fn key(&self, key: &str) -> bool {
        self.patterns.iter().any(|(_, c)| c == key)
    }
}

/// Judges `replay` against `original`.
pub fn judge(original: &Outcome, replay: &Outcome, ignore: &Ignore) -> Verdict {
    match (original.passing(), replay.passing()) {
        (false, true) => Verdict::Passing {
            was: Some(match original.status {
                Some(s) => s.to_string(),
                None => original.cause(),
            }),
            differs: None,
        },
        (true, true) => Verdict::Passing {
            was: None,
            differs: first_difference(original, replay, ignore),
        },
        (false, false) => Verdict::StillFailing(replay.cause()),
        (true, false) => Verdict::NowFailing(replay.cause()),
    }
}

/// The first way `replay`'s writes or JSON response differ from `original`'s.
pub fn first_difference(original: &Outcome, replay: &Outcome, ignore: &Ignore) -> Option<String> {
    let n = original.writes.len().max(replay.writes.len());
    for i in 0..n {
        match (original.writes.get(i), replay.writes.get(i)) {
            (Some(a), Some(b)) if a.table != b.table || a.op != b.op => {
                return Some(format!(
                    "write {}: {} {} was {} {}",
                    i + 1,
                    b.op,
                    b.table,
                    a.op,
                    a.table
                ))
            }
            (Some(a), Some(b)) => {
                if let Some(d) = row_difference(&a.row, &b.row, &a.table, ignore) {
                    return Some(format!("write {} ({} {}): {d}", i + 1, a.op, a.table));
                }
            }
            (Some(a), None) => {
                return Some(format!("write {} missing: {} {}", i + 1, a.op, a.table))
            }
            (None, Some(b)) => return Some(format!("extra write {}: {} {}", i + 1, b.op, b.table)),
            (None, None) => {}
        }
    }
    match (&original.response, &replay.response) {
        (Some(a), Some(b)) => json_difference(a, b, "$", ignore),
        _ => None,
    }
}

fn row_difference(a: &Value, b: &Value, table: &str, ignore: &Ignore) -> Option<String> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return (a != b).then(|| format!("{a} → {b}"));
    };
    let mut columns: Vec<&String> = a.keys().chain(b.keys()).collect();
    columns.sort();
    columns.dedup();
    columns
        .into_iter()
        .filter(|c| !ignore.column(table, c))
        .find_map(|c| {
            let (x, y) = (a.get(c), b.get(c));
            (x != y).then(|| format!("{c}: {} → {}", show(x), show(y)))
        })
}

fn json_difference(a: &Value, b: &Value, path: &str, ignore: &Ignore) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().filter(|k| !ignore.key(k)).find_map(|k| {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => json_difference(v, w, &p, ignore),
                    (v, w) => Some(format!("response {p}: {} → {}", show(v), show(w))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("response {path}: {} items → {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| json_difference(v, w, &format!("{path}[{i}]"), ignore))
        }
        _ => (a != b).then(|| format!("response {path}: {a} → {b}")),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(status: u16, writes: Vec<Write>, response: Option<Value>) -> Outcome {
        Outcome {
            status: Some(status),
            error: None,
            writes,
            response,
        }
    }

    fn write(table: &str, op: &str, row: Value) -> Write {
        Write {
            table: table.into(),
            op: op.into(),
            row,
        }
    }

    #[test]
    fn verdicts() {
        let ok = outcome(200, vec![], None);
        let mut failed = outcome(500, vec![], None);
        failed.error = Some("payments timeout after 1s".into());
        let none = Ignore::default();
        assert_eq!(
            judge(&failed, &ok, &none),
            Verdict::Passing {
                was: Some("500".into()),
                differs: None
            }
        );
        assert_eq!(
            judge(&failed, &failed, &none),
            Verdict::StillFailing("payments timeout after 1s".into())
        );
        assert_eq!(
            judge(&ok, &failed, &none),
            Verdict::NowFailing("payments timeout after 1s".into())
        );
        assert_eq!(
            judge(&ok, &ok, &none),
            Verdict::Passing {
                was: None,
                differs: None
            }
        );
        assert!(!outcome(404, vec![], None).passing());
        assert!(outcome(302, vec![], None).passing());
    }

    #[test]
    fn writes_differ_by_table_op_order_and_values_but_not_ignored_columns() {
        let ignore = Ignore::new(["orders.id", "*.updated_at"]);
        let a = outcome(
            200,
            vec![
                write(
                    "orders",
                    "INSERT",
                    json!({"id": 41, "total": 990, "updated_at": "t1"}),
                ),
                write("users", "UPDATE", json!({"id": 7, "plan": "pro"})),
            ],
            Some(json!({"order": {"id": 41, "total": 990}})),
        );
        let mut b = a.clone();
        b.writes[0].row = json!({"id": 57, "total": 990, "updated_at": "t2"});
        b.response = Some(json!({"order": {"id": 57, "total": 990}}));
        assert_eq!(
            first_difference(&a, &b, &ignore),
            None,
            "new serial ids don't count"
        );
        b.writes[1].row = json!({"id": 7, "plan": "free"});
        assert_eq!(
            first_difference(&a, &b, &ignore).as_deref(),
            Some(r#"write 2 (UPDATE users): plan: "pro" → "free""#)
        );
        b.writes.pop();
        assert_eq!(
            first_difference(&a, &b, &ignore).as_deref(),
            Some("write 2 missing: UPDATE users")
        );
        let mut c = a.clone();
        c.writes.swap(0, 1);
        assert!(first_difference(&a, &c, &ignore)
            .is_some_and(|d| d.starts_with("write 1: UPDATE users was INSERT orders")));
        let mut d = a.clone();
        d.response = Some(json!({"order": {"id": 41, "total": 1000}}));
        assert_eq!(
            first_difference(&a, &d, &ignore).as_deref(),
            Some("response $.order.total: 990 → 1000")
        );
    }
}
