//! What a statement is called in a request's record: the command it runs and the tables
//! it names, read from the proxy's own analysis (so nothing downstream lexes SQL again).

use sqlparser::ast::{FromTable, SetExpr, Statement, TableFactor, TableObject, TableWithJoins};

use crate::capture::names::name_parts;

/// The tables a parsed statement names as what it acts on: a write's target, a query's
/// top-level `FROM` tables (joins included, subqueries not), in order; schema-qualified as
/// written, identifiers folded as PostgreSQL folds them.
pub fn tables(statement: &Statement) -> Vec<String> {
    let mut out = Vec::new();
    match statement {
        Statement::Insert(insert) => {
            if let TableObject::TableName(name) = &insert.table {
                out.push(name_parts(name).join("."));
            }
        }
        Statement::Update(update) => from_item(&update.table, &mut out),
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            for item in from {
                from_item(item, &mut out);
            }
        }
        Statement::Query(query) => {
            if let SetExpr::Select(select) = query.body.as_ref() {
                for item in &select.from {
                    from_item(item, &mut out);
                }
            }
        }
        Statement::Truncate(t) => {
            out.extend(t.table_names.iter().map(|n| name_parts(&n.name).join(".")))
        }
        _ => {}
    }
    out
}

fn from_item(item: &TableWithJoins, out: &mut Vec<String>) {
    let relations = std::iter::once(&item.relation).chain(item.joins.iter().map(|j| &j.relation));
    for relation in relations {
        if let TableFactor::Table { name, .. } = relation {
            out.push(name_parts(name).join("."));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::capture::analysis::analyze;

    #[test]
    fn verbs_and_tables_come_from_the_analysis() {
        for (sql, verb, tables) in [
            (
                "INSERT INTO orders (id) VALUES (1)",
                Some("insert"),
                vec!["orders"],
            ),
            (
                "insert into public.\"Orders\" values (1)",
                Some("insert"),
                vec!["public.Orders"],
            ),
            (
                "SELECT * FROM users u JOIN plans p ON true WHERE id = 42",
                Some("select"),
                vec!["users", "plans"],
            ),
            (
                "select (select max(x) from other) from users",
                Some("select"),
                vec!["users"],
            ),
            (
                "UPDATE ONLY users SET plan = 'a from b'",
                Some("update"),
                vec!["users"],
            ),
            (
                "DELETE FROM carts WHERE id = 1",
                Some("delete"),
                vec!["carts"],
            ),
            ("/* c */ BEGIN", Some("begin"), vec![]),
            ("SELECT 1", Some("select"), vec![]),
            ("CREATE TABLE t (a int)", Some("create"), vec![]),
        ] {
            let a = analyze(sql);
            let step = &a.steps[0];
            assert_eq!(step.verb.as_deref(), verb, "{sql}");
            assert_eq!(step.tables, tables, "{sql}");
        }
        assert!(analyze("").steps.is_empty());
    }
}
