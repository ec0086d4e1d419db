//! The scratch database, put back to where the window started (DESIGN §7 step 2): every
//! row the selected requests wrote — committed or not — returns to its committed state at
//! the window's start: the before image of its first change at or after the start, or
//! gone if that change inserted it. All in one transaction; sequences are left alone.
//!
//! Where the first change has no before image (PostgreSQL before 18 cannot image an
//! UPDATE of a primary-key column), the last committed image before the start is used;
//! where there is none either, and for tables without a primary key, the row is listed
//! as not restored rather than guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flux_store::{HistoryEntry, Nanos, Outcome, Store, StoreError};
use serde_json::{Map, Value};

/// One row to put back.
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    /// Table, as the store names it (`users` for `public.users`, else `schema.table`).
    pub table: String,
    /// Primary-key values as text, in key order.
    pub key: Vec<String>,
    /// The row at the window's start; `None`: it did not exist.
    pub row: Option<Value>,
}

/// What the restore will do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Rows to put back, in table and key order.
    pub rows: Vec<RowState>,
    /// Rows that cannot be put back, and why.
    pub not_restored: Vec<String>,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scratch database refused something.
    #[error("restoring {table} on the scratch database: {source}")]
    Database {
        /// The table being restored (or `-` for the transaction itself).
        table: String,
        /// The database's error.
        source: tokio_postgres::Error,
    },
    /// A recorded table is not on the scratch database.
    #[error("table {0} is not on the scratch database (or has no primary key there): is [replay] database a copy of the recorded one?")]
    NoTable(String),
}

/// Plans the restore of every row `requests` wrote, to its state at `start`.
pub fn plan(store: &Store, requests: &[String], start: Nanos) -> Result<Plan, StoreError> {
    let mut rows: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    let mut keyless: BTreeSet<String> = BTreeSet::new();
    for request in requests {
        for m in store.request_mutations(request)? {
            match m.key {
                Some(key) => {
                    rows.insert((m.table, key));
                }
                None => {
                    keyless.insert(m.table);
                }
            }
        }
    }
    let mut out = Plan::default();
    for table in keyless {
        out.not_restored.push(format!(
            "{table}: no primary key, so its rows cannot be put back one by one"
        ));
    }
    for (table, key) in rows {
        let history = store.history(&table, &key, None, None)?;
        match state_at(&history, start) {
            Some(row) => out.rows.push(RowState { table, key, row }),
            None => out.not_restored.push(format!(
                "{table} {}: no image of the row as it was at the window's start",
                key.join(",")
            )),
        }
    }
    Ok(out)
}

/// A row's committed state at `start` from its history: `Some(None)` when it did not exist,
/// `None` when the record cannot say.
pub fn state_at(history: &[HistoryEntry], start: Nanos) -> Option<Option<Value>> {
    if let Some(first) = history.iter().find(|e| e.mutation.at >= start) {
        if first.mutation.op == "INSERT" {
            return Some(None);
        }
        if let Some(before) = &first.mutation.before {
            return Some(Some(before.clone()));
        }
    }
    let last = history
        .iter()
        .rev()
        .find(|e| e.mutation.at < start && e.outcome == Outcome::Committed)?;
    Some(match last.mutation.op {
        "DELETE" => None,
        _ => Some(last.mutation.after.clone()?),
    })
}

/// The restore's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows put back (re-inserted with their image).
    pub restored: usize,
    /// Rows removed (they did not exist at the start).
    pub removed: usize,
    /// Whether foreign-key checks and the app's triggers were off during the restore
    /// (`session_replication_role = replica`, which needs a superuser or its grant).
    pub triggers_off: bool,
}

/// Applies `plan` on the scratch database in one transaction.
pub async fn apply(
    client: &mut tokio_postgres::Client,
    plan: &Plan,
) -> Result<Applied, RestoreError> {
    let db = |table: &str| {
        let table = table.to_string();
        move |source| RestoreError::Database { table, source }
    };
    let mut tx = client.transaction().await.map_err(db("-"))?;
    // Rows are put back one by one, in any order: foreign keys between them would refuse
    // intermediate states, and the app's triggers must not fire on a restore.
    let triggers_off = {
        let sp = tx.savepoint("flux_replica").await.map_err(db("-"))?;
        let ok = sp
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .is_ok();
        if ok {
            sp.commit().await.map_err(db("-"))?;
        } else {
            sp.rollback().await.map_err(db("-"))?;
        }
        ok
    };
    if !triggers_off {
        tracing::warn!("restore: cannot set session_replication_role (needs a superuser): foreign keys and triggers stay on");
    }
    let mut shapes: HashMap<&str, Shape> = HashMap::new();
    let mut applied = Applied {
        triggers_off,
        ..Applied::default()
    };
    for row in &plan.rows {
        if !shapes.contains_key(row.table.as_str()) {
            let shape = shape(&tx, &row.table).await?;
            shapes.insert(&row.table, shape);
        }
        let shape = shapes
            .get(row.table.as_str())
            .ok_or_else(|| RestoreError::NoTable(row.table.clone()))?;
        let key: Map<String, Value> = shape
            .pk
            .iter()
            .cloned()
            .zip(row.key.iter().map(|v| Value::String(v.clone())))
            .collect();
        let key = Value::Object(key).to_string();
        tx.execute(shape.delete.as_str(), &[&key])
            .await
            .map_err(db(&row.table))?;
        match &row.row {
            Some(image) => {
                tx.execute(shape.insert.as_str(), &[&image.to_string()])
                    .await
                    .map_err(db(&row.table))?;
                applied.restored += 1;
            }
            None => applied.removed += 1,
        }
    }
    tx.commit().await.map_err(db("-"))?;
    Ok(applied)
}

/// How to delete and insert rows of one table on the scratch database.
struct Shape {
    pk: Vec<String>,
    delete: String,
    insert: String,
}

/// The store's table name as a SQL name: `users` is `public.users`.
pub fn sql_name(table: &str) -> String {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    format!("{}.{}", quote(schema), quote(name))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn shape(tx: &tokio_postgres::Transaction<'_>, table: &str) -> Result<Shape, RestoreError> {
    let name = sql_name(table);
    let rows = tx
        .query(
            "SELECT a.attname::text, coalesce(k.ord, 0)::int4
               FROM pg_attribute a
               LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
               LEFT JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                      ON k.attnum = a.attnum
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attgenerated = ''
              ORDER BY a.attnum",
            &[&name],
        )
        .await
        .map_err(|source| RestoreError::Database {
            table: table.to_string(),
            source,
        })?;
    let mut pk: BTreeMap<i32, String> = BTreeMap::new();
    let mut columns = Vec::new();
    for r in &rows {
        let column: String = r.get(0);
        let ord: i32 = r.get(1);
        if ord > 0 {
            pk.insert(ord, column.clone());
        }
        columns.push(quote(&column));
    }
    let pk: Vec<String> = pk.into_values().collect();
    if pk.is_empty() || columns.is_empty() {
        return Err(RestoreError::NoTable(table.to_string()));
    }
    let pk_sql = pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let cols = columns.join(", ");
    Ok(Shape {
        delete: format!(
            "DELETE FROM {name} WHERE ({pk_sql}) = (SELECT {pk_sql} FROM jsonb_populate_record(NULL::{name}, $1::text::jsonb))"
        ),
        insert: format!(
            "INSERT INTO {name} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM jsonb_populate_record(NULL::{name}, $1::text::jsonb)"
        ),
        pk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_store::query::MutationView;
    use flux_store::TxId;
    use serde_json::json;

    fn entry(
        at: Nanos,
        op: &'static str,
        before: Option<Value>,
        after: Option<Value>,
        outcome: Outcome,
    ) -> HistoryEntry {
        HistoryEntry {
            mutation: MutationView {
                table: "users".into(),
                key: Some(vec!["1".into()]),
                at,
                op,
                before,
                after,
                request: None,
                tx: TxId {
                    boot: 0,
                    session: 0,
                    n: 0,
                },
            },
            outcome,
        }
    }

    #[test]
    fn the_state_at_the_start_comes_from_the_first_change_in_the_window() {
        let c = Outcome::Committed;
        let h = vec![
            entry(5, "INSERT", None, Some(json!({"id": 1, "plan": "free"})), c),
            entry(
                10,
                "UPDATE",
                Some(json!({"id": 1, "plan": "free"})),
                Some(json!({"id": 1, "plan": "pro"})),
                Outcome::RolledBack,
            ),
        ];
        assert_eq!(
            state_at(&h, 10),
            Some(Some(json!({"id": 1, "plan": "free"})))
        );
        assert_eq!(
            state_at(&h, 5),
            Some(None),
            "inserted in the window: removed"
        );
        // No before image in the window: the last committed image before it.
        let h = vec![
            entry(5, "INSERT", None, Some(json!({"id": 1})), c),
            entry(10, "UPDATE", None, Some(json!({"id": 2})), c),
        ];
        assert_eq!(state_at(&h, 10), Some(Some(json!({"id": 1}))));
        let h = vec![entry(10, "UPDATE", None, Some(json!({"id": 2})), c)];
        assert_eq!(state_at(&h, 10), None, "nothing says what it was");
        let h = vec![
            entry(5, "DELETE", Some(json!({"id": 1})), None, c),
            entry(10, "UPDATE", None, Some(json!({"id": 1})), c),
        ];
        assert_eq!(state_at(&h, 10), Some(None));
    }

    #[test]
    fn table_names() {
        assert_eq!(sql_name("users"), r#""public"."users""#);
        assert_eq!(sql_name("app.Users"), r#""app"."Users""#);
    }
}
