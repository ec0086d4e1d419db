//! What differs between a recording and its replay on every run by construction, so that
//! comparing them shows only real differences (DESIGN §7 step 6):
//!
//! - columns filled by sequences and identities, and columns whose default is volatile or
//!   stable (`now()`, `clock_timestamp()`, `gen_random_uuid()`, `random()`,
//!   `CURRENT_TIMESTAMP`…), read from the scratch database's catalog;
//! - columns a statement of the request assigns a volatile or stable expression
//!   (`SET updated_at = now()`, `VALUES (…, gen_random_uuid())`), read from the recorded
//!   statements with `sqlparser`;
//! - in JSON responses, values generated during the request: UUIDs and ULIDs, and
//!   timestamps that fall within the request's own time.
//!
//! `--strict` turns all of this off; `[replay] ignore` patterns apply either way.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use flux_store::Nanos;
use sqlparser::ast::{
    AssignmentTarget, Expr, Insert, ObjectName, OnConflictAction, OnInsert, SetExpr, Statement,
    TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;

/// `schema.table.column` for every column the catalog says is filled by a sequence, an
/// identity, or a volatile or stable default.
const NOISE_COLUMNS: &str = "\
SELECT n.nspname, c.relname, a.attname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND (a.attidentity <> ''
    OR pg_get_expr(d.adbin, d.adrelid) ~* '(^|[^a-z0-9_])(current_timestamp|current_date|current_time|localtimestamp|localtime)([^a-z0-9_]|$)'
    OR EXISTS (
      SELECT 1 FROM pg_proc p
      WHERE p.provolatile <> 'i'
        AND pg_get_expr(d.adbin, d.adrelid) ~* ('(^|[^a-z0-9_])' || p.proname || '\\s*\\(')))";

/// Names of the functions whose result may differ between two calls (volatile or
/// stable), plus the SQL value functions that read the clock.
const VOLATILE_FUNCTIONS: &str =
    "SELECT DISTINCT lower(proname) FROM pg_proc WHERE provolatile <> 'i'";

/// The keywords PostgreSQL parses as clock functions without parentheses.
const CLOCK_KEYWORDS: [&str; 5] = [
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
];

/// What the catalog says differs on every run.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// `schema.table.column` patterns.
    pub columns: Vec<String>,
    /// Lower-case names of volatile and stable functions.
    pub functions: HashSet<String>,
}

impl Catalog {
    /// Reads the scratch database's catalog. A failed read leaves that part empty (and
    /// logged): those values then count as differences, which is loud, not silent.
    pub async fn read(client: &tokio_postgres::Client) -> Catalog {
        let columns = match client.query(NOISE_COLUMNS, &[]).await {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| {
                    let schema: String = r.try_get(0).ok()?;
                    let table: String = r.try_get(1).ok()?;
                    let column: String = r.try_get(2).ok()?;
                    Some(format!("{schema}.{table}.{column}"))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read which columns have sequence or volatile defaults; their new values will count as differences");
                Vec::new()
            }
        };
        let functions = match client.query(VOLATILE_FUNCTIONS, &[]).await {
            Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read which functions are volatile; values they assign will count as differences");
                HashSet::new()
            }
        };
        Catalog { columns, functions }
    }

    /// `table.column` for each column `sql` assigns an expression calling a volatile or
    /// stable function (UPDATE … SET, INSERT … VALUES, ON CONFLICT DO UPDATE SET).
    /// Statements that do not parse assign nothing.
    pub fn assigned(&self, sql: &str) -> Vec<String> {
        let Ok(statements) = sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for statement in statements {
            match statement {
                Statement::Update(update) => {
                    if let TableFactor::Table { name, .. } = &update.table.relation {
                        let table = last(name);
                        for a in &update.assignments {
                            self.assignment(&table, &a.target, &a.value, &mut out);
                        }
                    }
                }
                Statement::Insert(insert) => self.insert(&insert, &mut out),
                _ => {}
            }
        }
        out
    }

    fn insert(&self, insert: &Insert, out: &mut Vec<String>) {
        let table = insert.table.to_string();
        let table = table
            .rsplit('.')
            .next()
            .unwrap_or(&table)
            .trim_matches('"')
            .to_string();
        if let Some(SetExpr::Values(values)) = insert.source.as_ref().map(|q| q.body.as_ref()) {
            for row in &values.rows {
                for (column, value) in insert.columns.iter().zip(&row.content) {
                    if self.volatile(value) {
                        out.push(format!("{table}.{}", last(column)));
                    }
                }
            }
        }
        if let Some(OnInsert::OnConflict(on)) = &insert.on {
            if let OnConflictAction::DoUpdate(update) = &on.action {
                for a in &update.assignments {
                    self.assignment(&table, &a.target, &a.value, out);
                }
            }
        }
    }

    fn assignment(
        &self,
        table: &str,
        target: &AssignmentTarget,
        value: &Expr,
        out: &mut Vec<String>,
    ) {
        if !self.volatile(value) {
            return;
        }
        let names: Vec<&ObjectName> = match target {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        for n in names {
            out.push(format!("{table}.{}", last(n)));
        }
    }

    /// Whether an expression calls a volatile or stable function (read from its text: an
    /// identifier followed by `(`, or a clock keyword).
    fn volatile(&self, expr: &Expr) -> bool {
        let text = expr.to_string().to_ascii_lowercase();
        let words = identifiers(&text);
        words.iter().any(|(word, call)| {
            (*call && self.functions.contains(*word)) || CLOCK_KEYWORDS.contains(word)
        })
    }
}

/// The last part of a possibly qualified name, unquoted.
fn last(name: &ObjectName) -> String {
    let text = name.to_string();
    text.rsplit('.')
        .next()
        .unwrap_or(&text)
        .trim_matches('"')
        .to_string()
}

/// Identifiers in `text`, each with whether a `(` follows it; string literals and quoted
/// names are skipped (`'now()'` calls nothing).
fn identifiers(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&quote @ (b'\'' | b'"')) = bytes.get(i) {
            i += 1;
            while i < bytes.len() {
                if bytes.get(i) == Some(&quote) {
                    // A doubled quote is an escaped one.
                    if bytes.get(i + 1) == Some(&quote) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        let start = i;
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            i += 1;
        }
        if i > start {
            let mut j = i;
            while bytes.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            if let Some(word) = text.get(start..i) {
                out.push((word, bytes.get(j) == Some(&b'(')));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Whether two differing JSON leaf values are both generated during their requests: two
/// UUIDs, two ULIDs, or two timestamps each within its own request's time (`windows`:
/// the original's, then the replay's; a minute of slack either side for clocks and
/// time zones written without an offset).
pub fn generated(a: &str, b: &str, windows: Option<((Nanos, Nanos), (Nanos, Nanos))>) -> bool {
    if (uuid(a) && uuid(b)) || (ulid(a) && ulid(b)) {
        return true;
    }
    let Some((wa, wb)) = windows else {
        return false;
    };
    let within = |s: &str, (from, to): (Nanos, Nanos)| {
        let slack = 60_000_000_000u64;
        timestamps(s)
            .into_iter()
            .any(|t| t + slack >= from && t <= to + slack)
    };
    within(a, wa) && within(b, wb)
}

fn uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn ulid(s: &str) -> bool {
    // 26 characters of Crockford's base32, the first at most 7 (128 bits).
    s.len() == 26
        && s.bytes().next().is_some_and(|c| (b'0'..=b'7').contains(&c))
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"ILOU".contains(&c)))
}

/// The instants a timestamp text may mean, ns since the epoch: with an offset, one; without,
/// as UTC and as this machine's local time.
fn timestamps(s: &str) -> Vec<Nanos> {
    let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().and_then(|n| u64::try_from(n).ok());
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return ns(t.with_timezone(&Utc)).into_iter().collect();
    }
    // PostgreSQL's own text (`2026-12-07 18:23:52.52+00`), and offsets without colons.
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return ns(t.with_timezone(&Utc)).into_iter().collect();
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            let utc = ns(Utc.from_utc_datetime(&t));
            let local = chrono::Local
                .from_local_datetime(&t)
                .earliest()
                .and_then(|l| ns(l.with_timezone(&Utc)));
            return utc.into_iter().chain(local).collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            columns: Vec::new(),
            functions: [
                "now",
                "gen_random_uuid",
                "random",
                "clock_timestamp",
                "nextval",
            ]
            .map(String::from)
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn statements_that_assign_volatile_expressions_name_their_columns() {
        let c = catalog();
        assert_eq!(
            c.assigned("UPDATE public.accounts SET balance = balance - $1, updated_at = now() WHERE id = $2"),
            vec!["accounts.updated_at"]
        );
        assert_eq!(
            c.assigned("INSERT INTO transfers (from_id, ref, at) VALUES ($1, gen_random_uuid(), CURRENT_TIMESTAMP)"),
            vec!["transfers.ref", "transfers.at"]
        );
        assert_eq!(
            c.assigned("INSERT INTO t (id, seen) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET seen = clock_timestamp()"),
            vec!["t.seen"]
        );
        assert_eq!(
            c.assigned("UPDATE accounts SET (a, b) = (random(), 2)"),
            vec!["accounts.a", "accounts.b"]
        );
        assert!(c
            .assigned("UPDATE accounts SET note = 'now()' WHERE id = 1")
            .is_empty());
        assert!(c
            .assigned("UPDATE accounts SET balance = abs($1)")
            .is_empty());
        assert!(c.assigned("not sql at all").is_empty());
    }

    #[test]
    fn generated_values_are_uuids_ulids_and_timestamps_in_the_requests_time() {
        assert!(generated(
            "0b6c5a4e-8f51-4b9e-9d55-3c1f0a7e2b11",
            "5f0e3c2a-1d4b-4c6a-8e9f-7a6b5c4d3e2f",
            None
        ));
        assert!(generated(
            "01HZX3J8K9M2N4P6Q8R0S2T4V6",
            "01HZX3JB00000000000000000Z",
            None
        ));
        assert!(!generated(
            "0b6c5a4e-8f51-4b9e-9d55-3c1f0a7e2b11",
            "pro",
            None
        ));
        let at = |s: &str| timestamps(s)[0];
        let original = at("2026-12-07T14:00:00Z");
        let replay = at("2026-12-07T18:30:00Z");
        let windows = Some((
            (original, original + 1_000_000_000),
            (replay, replay + 1_000_000_000),
        ));
        assert!(generated(
            "2026-12-07T14:00:00.5+00:00",
            "2026-12-07 18:30:00.2+00",
            windows
        ));
        assert!(
            !generated(
                "2026-12-07T14:00:00.5+00:00",
                "2027-01-06T18:30:00+00:00",
                windows
            ),
            "a date a month out is the app's arithmetic, not the clock"
        );
        assert!(!generated(
            "2026-12-07T14:00:00Z",
            "2026-12-07T18:30:00Z",
            None
        ));
    }
}
