//! What a parsed statement is, for capture: a write it can image (target, alias, assigned
//! columns, `RETURNING`), transaction control, a request-id setting, or a write it cannot
//! image and why.

use sqlparser::ast::{
    self, AssignmentTarget, FromTable, ObjectName, OnConflictAction, OnInsert, SetExpr, Statement,
    TableFactor, TableObject,
};

use crate::capture::analysis::{Kind, Write, WriteOp};
use crate::capture::event::GapReason;
use crate::capture::names::{ident, last_part_sql, name_parts};
use crate::capture::request_id::{is_request_setting, literal_string, SetRequest};

fn column_of(target: &ObjectName) -> Option<String> {
    name_parts(target).pop()
}

fn assigned_columns(assignments: &[ast::Assignment]) -> Vec<String> {
    let mut out = Vec::new();
    for a in assignments {
        match &a.target {
            AssignmentTarget::ColumnName(n) => out.extend(column_of(n)),
            AssignmentTarget::Tuple(ns) => out.extend(ns.iter().filter_map(column_of)),
        }
    }
    out
}

/// A write on `name` (aliased `alias`) as capture sees it.
fn write_kind(
    op: WriteOp,
    name: &ObjectName,
    alias: Option<&ast::Ident>,
    has_returning: bool,
    assigned: Vec<String>,
) -> Kind {
    Kind::Write(Write {
        op,
        table: name_parts(name),
        table_sql: name.to_string(),
        refname: alias.map_or_else(|| last_part_sql(name), |a| a.to_string()),
        has_returning,
        assigned,
        shadows_old_new: alias.is_some_and(is_old_new),
    })
}

fn is_old_new(alias: &ast::Ident) -> bool {
    let a = ident(alias);
    a == "old" || a == "new"
}

/// What a parsed statement is, for capture.
pub fn classify(statement: &Statement) -> Kind {
    match statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Kind::Unimaged {
                    table: None,
                    reason: GapReason::Statement("INSERT into a table function".into()),
                };
            };
            let (op, assigned) = match &insert.on {
                None => (WriteOp::Insert, Vec::new()),
                Some(OnInsert::OnConflict(c)) => match &c.action {
                    OnConflictAction::DoNothing => (WriteOp::Upsert, Vec::new()),
                    OnConflictAction::DoUpdate(u) => {
                        (WriteOp::Upsert, assigned_columns(&u.assignments))
                    }
                },
                Some(_) => {
                    return Kind::Unimaged {
                        table: Some(name_parts(name).join(".")),
                        reason: GapReason::Statement("INSERT form not supported by PostgreSQL".into()),
                    }
                }
            };
            let alias = insert.table_alias.as_ref().map(|a| &a.alias);
            write_kind(op, name, alias, insert.returning.is_some(), assigned)
        }
        Statement::Update(update) => {
            let TableFactor::Table { name, alias, .. } = &update.table.relation else {
                return Kind::Unimaged {
                    table: None,
                    reason: GapReason::Statement("UPDATE of something other than a table".into()),
                };
            };
            if !update.table.joins.is_empty() {
                return Kind::Unimaged {
                    table: Some(name_parts(name).join(".")),
                    reason: GapReason::Statement("UPDATE with joins".into()),
                };
            }
            let alias = alias.as_ref().map(|a| &a.name);
            write_kind(
                WriteOp::Update,
                name,
                alias,
                update.returning.is_some(),
                assigned_columns(&update.assignments),
            )
        }
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            let target = match (from.as_slice(), delete.tables.as_slice()) {
                ([one], []) if one.joins.is_empty() => &one.relation,
                _ => {
                    return Kind::Unimaged {
                        table: None,
                        reason: GapReason::Statement("DELETE from several tables".into()),
                    }
                }
            };
            let TableFactor::Table { name, alias, .. } = target else {
                return Kind::Unimaged {
                    table: None,
                    reason: GapReason::Statement("DELETE from something other than a table".into()),
                };
            };
            let alias = alias.as_ref().map(|a| &a.name);
            write_kind(
                WriteOp::Delete,
                name,
                alias,
                delete.returning.is_some(),
                Vec::new(),
            )
        }
        Statement::Query(q) => {
            if matches!(
                q.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) || q.with.as_ref().is_some_and(|w| {
                w.cte_tables.iter().any(|c| {
                    matches!(
                        c.query.body.as_ref(),
                        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
                    )
                })
            }) {
                Kind::Unimaged {
                    table: None,
                    reason: GapReason::Statement("data-modifying statement inside WITH".into()),
                }
            } else {
                Kind::Other
            }
        }
        Statement::Merge(_) => Kind::Unimaged {
            table: None,
            reason: GapReason::Statement("MERGE".into()),
        },
        Statement::Truncate(t) => Kind::Unimaged {
            table: t.table_names.first().map(|n| name_parts(&n.name).join(".")),
            reason: GapReason::Statement("TRUNCATE".into()),
        },
        Statement::Copy {
            source: ast::CopySource::Table { table_name, .. },
            to: false,
            ..
        } => Kind::Unimaged {
            table: Some(name_parts(table_name).join(".")),
            reason: GapReason::Statement("COPY FROM".into()),
        },
        Statement::StartTransaction { .. } => Kind::Begin,
        Statement::Commit { .. } => Kind::Commit,
        Statement::Rollback { savepoint, .. } => match savepoint {
            Some(s) => Kind::RollbackTo(ident(s)),
            None => Kind::Rollback,
        },
        Statement::Savepoint { name } => Kind::Savepoint(ident(name)),
        Statement::ReleaseSavepoint { name } => Kind::Release(ident(name)),
        Statement::Set(ast::Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        }) if is_request_setting(variable) => Kind::SetRequest(SetRequest {
            local: matches!(scope, Some(ast::ContextModifier::Local)),
            value: match values.as_slice() {
                [v] => literal_string(v),
                _ => None,
            },
            param: None,
        }),
        Statement::Reset(r) => match &r.reset {
            ast::Reset::ALL => Kind::SetRequest(SetRequest {
                local: false,
                value: None,
                param: None,
            }),
            ast::Reset::ConfigurationParameter(n) if is_request_setting(n) => {
                Kind::SetRequest(SetRequest {
                    local: false,
                    value: None,
                    param: None,
                })
            }
            _ => Kind::Other,
        },
        Statement::Discard { object_type } if object_type.to_string() == "ALL" => Kind::DiscardAll,
        Statement::Prepare {
            name, statement, ..
        } => Kind::Prepare {
            name: ident(name),
            write: match classify(statement) {
                Kind::Write(w) => Some(Some(w.table.join("."))),
                Kind::Unimaged { table, .. } => Some(table),
                _ => None,
            },
        },
        Statement::Execute {
            name: Some(name),
            immediate: false,
            ..
        } => Kind::Execute(name_parts(name).join(".")),
        Statement::Deallocate { name, .. } => {
            let name = ident(name);
            Kind::Deallocate((name != "all").then_some(name))
        }
        Statement::Explain {
            analyze,
            statement,
            options,
            ..
        } if *analyze
            || options.iter().flatten().any(|o| {
                ident(&o.name).starts_with("analy")
                    && !matches!(&o.arg, Some(e) if e.to_string().eq_ignore_ascii_case("false") || e.to_string().eq_ignore_ascii_case("off"))
            }) =>
        {
            match classify(statement) {
            Kind::Write(w) => Kind::Unimaged {
                table: Some(w.table.join(".")),
                reason: GapReason::Statement("EXPLAIN ANALYZE of a write".into()),
            },
            Kind::Unimaged { table, .. } => Kind::Unimaged {
                table,
                reason: GapReason::Statement("EXPLAIN ANALYZE of a write".into()),
            },
            _ => Kind::Other,
            }
        }
        // DDL is recognised by its first keyword before a statement is parsed
        // (`Words::catalog_statement`), so it never reaches here.
        _ => Kind::Other,
    }
}
