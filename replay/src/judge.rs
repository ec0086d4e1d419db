//! Judging a replayed request against its original (DESIGN §7 step 6).
//!
//! Passing = a success status (below 400) and no error. Verdicts: passing (noting when
//! the original failed: `← was 500`), still failing, now failing (it passed before: a
//! regression). A passing request whose writes or JSON response differ from the
//! original's gets the first difference. Writes are compared by table, operation and
//! order within the request; `[replay] ignore` patterns (`table.column`, `*.column`) are
//! left out, and so is noise ([`crate::noise`]: sequence and volatile-default columns,
//! columns assigned volatile expressions, values generated during the request), unless
//! `--strict`; JSON response keys of those names too (new serial ids don't count), and
//! response values equal to a noise column's value in the same request's writes. What was
//! let pass as noise is counted.

use std::collections::HashSet;

use flux_store::Nanos;
use serde_json::Value;

use crate::noise;

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
    /// When the request ran (ns since the epoch): values generated in it are noise.
    pub window: Option<(Nanos, Nanos)>,
}

/// One row change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Write {
    /// Table, as the store names it.
    pub table: String,
    /// `INSERT`, `UPDATE`, `DELETE`.
    pub op: String,
    /// The row after (before, for a delete), as JSON.
    pub row: Value,
}

impl Outcome {
    /// An answer that is not a server error ([`flux_read::failure`]), and no error.
    pub fn passing(&self) -> bool {
        self.error.is_none() && !flux_read::failure::answer_failed(self.status)
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

/// Columns whose values do not count: `[replay] ignore`, and noise (left empty with
/// `--strict`).
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(Option<String>, String)>,
    noise: Vec<(Option<String>, String)>,
    /// Whether generated values in responses (UUIDs, timestamps) are noise.
    generated: bool,
}

/// `table.column` / `*.column` / `column` as (table, column). Tables are named as the
/// store names them: `public.orders.x` and `orders.x` both name `orders`.
fn pattern(p: &str) -> (Option<String>, String) {
    let table = |t: &str| flux_store::model::table_name(t).to_string();
    match p.rsplit_once('.') {
        Some(("*", c)) => (None, c.to_string()),
        Some((t, c)) => (Some(table(t)), c.to_string()),
        None => (None, p.to_string()),
    }
}

impl Ignore {
    /// From `table.column` / `*.column` patterns (a bare `column` counts for every
    /// table): never compared, even with `--strict`.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            patterns: patterns.into_iter().map(pattern).collect(),
            noise: Vec::new(),
            generated: false,
        }
    }

    /// Adds noise columns (same patterns), and treats generated response values as noise.
    pub fn with_noise<'a>(mut self, columns: impl IntoIterator<Item = &'a str>) -> Self {
        self.noise.extend(columns.into_iter().map(pattern));
        self.generated = true;
        self
    }

    fn matches(list: &[(Option<String>, String)], table: &str, column: &str) -> bool {
        let table = flux_store::model::table_name(table);
        list.iter()
            .any(|(t, c)| c == column && t.as_deref().is_none_or(|t| t == table))
    }

    fn key(&self, key: &str) -> bool {
        self.patterns.iter().any(|(_, c)| c == key)
    }

    fn noise_key(&self, key: &str) -> bool {
        self.noise.iter().any(|(_, c)| c == key)
    }
}

/// Comparing a replay with its original: the first difference, and how many differing
/// values were let pass as noise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// The first real difference.
    pub first: Option<String>,
    /// Differing values treated as noise.
    pub noise: usize,
}

/// Judges `replay` against `original`; with the number of values let pass as noise.
pub fn judge(original: &Outcome, replay: &Outcome, ignore: &Ignore) -> (Verdict, usize) {
    match (original.passing(), replay.passing()) {
        (false, true) => (
            Verdict::Passing {
                was: Some(match original.status {
                    Some(s) => s.to_string(),
                    None => original.cause(),
                }),
                differs: None,
            },
            0,
        ),
        (true, true) => {
            let c = compare(original, replay, ignore);
            (
                Verdict::Passing {
                    was: None,
                    differs: c.first,
                },
                c.noise,
            )
        }
        (false, false) => (Verdict::StillFailing(replay.cause()), 0),
        (true, false) => (Verdict::NowFailing(replay.cause()), 0),
    }
}

/// The first way `replay`'s writes or JSON response differ from `original`'s.
pub fn first_difference(original: &Outcome, replay: &Outcome, ignore: &Ignore) -> Option<String> {
    compare(original, replay, ignore).first
}

/// Compares writes (in order) and then the JSON responses, all the way through (so the
/// noise count covers everything), keeping the first real difference.
pub fn compare(original: &Outcome, replay: &Outcome, ignore: &Ignore) -> Comparison {
    let mut walk = Walk {
        ignore,
        noise: 0,
        first: None,
        values: (noise_values(original, ignore), noise_values(replay, ignore)),
        windows: original.window.zip(replay.window),
    };
    // The answer's status is output like the rest: 201 → 422 is a difference.
    if let (Some(a), Some(b)) = (original.status, replay.status) {
        if a != b {
            walk.differ(format!("status {a} → {b}"));
        }
    }
    let n = original.writes.len().max(replay.writes.len());
    for i in 0..n {
        match (original.writes.get(i), replay.writes.get(i)) {
            (Some(a), Some(b)) if a.table != b.table || a.op != b.op => walk.differ(format!(
                "write {}: {} {} was {} {}",
                i + 1,
                b.op,
                b.table,
                a.op,
                a.table
            )),
            (Some(a), Some(b)) => walk.rows(
                &a.row,
                &b.row,
                &a.table,
                &format!("write {} ({} {})", i + 1, a.op, a.table),
            ),
            (Some(a), None) => {
                walk.differ(format!("write {} missing: {} {}", i + 1, a.op, a.table))
            }
            (None, Some(b)) => walk.differ(format!("extra write {}: {} {}", i + 1, b.op, b.table)),
            (None, None) => {}
        }
    }
    if let (Some(a), Some(b)) = (&original.response, &replay.response) {
        walk.json(a, b, "$");
    }
    Comparison {
        first: walk.first,
        noise: walk.noise,
    }
}

/// The values a request wrote to noise columns (as JSON text): a response echoing one
/// is echoing noise.
fn noise_values(o: &Outcome, ignore: &Ignore) -> HashSet<String> {
    let mut out = HashSet::new();
    for w in &o.writes {
        if let Value::Object(row) = &w.row {
            for (c, v) in row {
                if Ignore::matches(&ignore.noise, &w.table, c) && !v.is_null() {
                    out.insert(leaf(v));
                }
            }
        }
    }
    out
}

/// A JSON leaf as comparable text (strings without their quotes).
fn leaf(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Walk<'a> {
    ignore: &'a Ignore,
    noise: usize,
    first: Option<String>,
    values: (HashSet<String>, HashSet<String>),
    windows: Option<((Nanos, Nanos), (Nanos, Nanos))>,
}

impl Walk<'_> {
    fn differ(&mut self, what: String) {
        self.first.get_or_insert(what);
    }

    fn rows(&mut self, a: &Value, b: &Value, table: &str, at: &str) {
        let (Value::Object(x), Value::Object(y)) = (a, b) else {
            if a != b {
                self.differ(format!("{at}: {a} → {b}"));
            }
            return;
        };
        let mut columns: Vec<&String> = x.keys().chain(y.keys()).collect();
        columns.sort();
        columns.dedup();
        for c in columns {
            let (v, w) = (x.get(c), y.get(c));
            if v == w || Ignore::matches(&self.ignore.patterns, table, c) {
                continue;
            }
            if Ignore::matches(&self.ignore.noise, table, c) {
                self.noise += 1;
                continue;
            }
            self.differ(format!("{at}: {c}: {} → {}", show(v), show(w)));
        }
    }

    fn json(&mut self, a: &Value, b: &Value, path: &str) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    if self.ignore.key(k) {
                        continue;
                    }
                    let p = format!("{path}.{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) if v != w && self.ignore.noise_key(k) => self.noise += 1,
                        (Some(v), Some(w)) => self.json(v, w, &p),
                        (v, w) => self.differ(format!("response {p}: {} → {}", show(v), show(w))),
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    self.differ(format!("response {path}: {} items → {}", x.len(), y.len()));
                    return;
                }
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    self.json(v, w, &format!("{path}[{i}]"));
                }
            }
            _ if a == b => {}
            _ if self.ignore.generated && self.is_noise(a, b) => self.noise += 1,
            _ => self.differ(format!("response {path}: {a} → {b}")),
        }
    }

    /// Two differing leaves that echo noise the requests wrote, or were generated in them.
    fn is_noise(&self, a: &Value, b: &Value) -> bool {
        let (a, b) = (leaf(a), leaf(b));
        (self.values.0.contains(&a) && self.values.1.contains(&b))
            || noise::generated(&a, &b, self.windows)
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
            window: None,
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
            judge(&failed, &ok, &none).0,
            Verdict::Passing {
                was: Some("500".into()),
                differs: None
            }
        );
        assert_eq!(
            judge(&failed, &failed, &none).0,
            Verdict::StillFailing("payments timeout after 1s".into())
        );
        assert_eq!(
            judge(&ok, &failed, &none).0,
            Verdict::NowFailing("payments timeout after 1s".into())
        );
        assert_eq!(
            judge(&ok, &ok, &none).0,
            Verdict::Passing {
                was: None,
                differs: None
            }
        );
        // One definition with `flux tail` (flux_read::failure): a 4xx answer is the app
        // working, a 5xx one is not.
        assert!(outcome(404, vec![], None).passing());
        assert!(!outcome(502, vec![], None).passing());
        assert!(outcome(302, vec![], None).passing());
        // A status that changed is a difference even where neither failed.
        assert_eq!(
            judge(
                &outcome(201, vec![], None),
                &outcome(422, vec![], None),
                &none
            )
            .0,
            Verdict::Passing {
                was: None,
                differs: Some("status 201 → 422".into())
            }
        );
    }

    #[test]
    fn writes_differ_by_table_op_order_and_values_but_not_ignored_columns() {
        let ignore = Ignore::new(["orders.id"]).with_noise(["*.updated_at"]);
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
