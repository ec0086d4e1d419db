//! Statement analysis and the capture rewrite.
//!
//! [`analyze`] splits a SQL string (a simple query may hold several statements) with
//! `sqlparser`'s tokenizer, parses each statement, and says what it is: a write the proxy
//! can image, a transaction-control statement, a request-id `SET`, or something to pass by.
//! For a write, [`appendix`] builds the text appended to it: capture expressions added to
//! the statement's own `RETURNING` list, or a `RETURNING` clause when it has none. The
//! original text is only ever appended to, never re-printed from the AST, so what the
//! server parses is the app's statement plus our suffix.

use std::fmt::Write as _;

use sqlparser::ast::{
    self, AssignmentTarget, FromTable, ObjectName, ObjectNamePart, OnConflictAction, OnInsert,
    SetExpr, Statement, TableFactor, TableObject,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

/// How many columns the rewrite appends to a write's result: before image, after image
/// and the row's `tableoid`.
pub const CAPTURE_COLUMNS: usize = 3;

/// The GUC an app sets to tag its statements with a request id.
pub const REQUEST_ID_SETTING: &str = "flux.request_id";

/// What a SQL string holds, statement by statement, in execution order.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// One entry per statement.
    pub steps: Vec<Step>,
}

/// One statement of an analysed string.
#[derive(Debug, Clone)]
pub struct Step {
    /// Byte offset in the string where an appended `RETURNING` belongs: right after the
    /// statement's last token (before trailing comments and the `;`).
    pub insert_at: usize,
    /// Byte offset where the statement's first token starts (its text is
    /// `start..insert_at`).
    pub start: usize,
    /// What the statement is.
    pub kind: Kind,
    /// The request id from a sqlcommenter comment in the statement, if any.
    pub request_id: Option<String>,
    /// A `set_config('flux.request_id', …)` call inside the statement.
    pub set_request: Option<SetRequest>,
}

/// A change of the request id the app made with `SET`, `RESET` or `set_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRequest {
    /// `SET LOCAL` / `set_config(…, true)`: until the transaction ends.
    pub local: bool,
    /// The new value; `None` for `RESET` / `SET … TO DEFAULT`.
    pub value: Option<String>,
    /// The value is this bind parameter (`set_config('flux.request_id', $1, true)`),
    /// 1-based; the session fills `value` from each `Bind`.
    pub param: Option<usize>,
}

/// The kinds of statement capture cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// INSERT, UPDATE, DELETE or an upsert the proxy can image.
    Write(Write),
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `SET [LOCAL] flux.request_id …` or `RESET flux.request_id` / `RESET ALL`.
    SetRequest(SetRequest),
    /// `DISCARD ALL`: resets session settings.
    DiscardAll,
    /// A write whose rows the proxy cannot image; recorded as a gap.
    Unimaged {
        /// The written table, when known.
        table: Option<String>,
        /// Why it cannot be imaged.
        reason: &'static str,
    },
    /// DDL: the catalog the rewrite depends on may have changed.
    Ddl,
    /// Anything else (queries, utility statements): relayed untouched.
    Other,
}

/// A write the proxy can image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Which statement.
    pub op: WriteOp,
    /// The target's name parts as PostgreSQL resolves them (unquoted parts lower-cased).
    pub table: Vec<String>,
    /// The target's name as written (used in the snapshot subquery so it resolves the same).
    pub table_sql: String,
    /// How `RETURNING` refers to the target row: its alias, or the table's last name part.
    pub refname: String,
    /// The app wrote its own `RETURNING`.
    pub has_returning: bool,
    /// Columns an UPDATE (or `DO UPDATE`) assigns, normalised.
    pub assigned: Vec<String>,
    /// The target is aliased `old` or `new`, which hides PostgreSQL 18's `old`/`new`.
    pub shadows_old_new: bool,
}

/// The write statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// `INSERT` (single, multi-row, `INSERT … SELECT`).
    Insert,
    /// `INSERT … ON CONFLICT`: an insert or an update, known per row at run time.
    Upsert,
    /// `UPDATE` (incl. `FROM`).
    Update,
    /// `DELETE` (incl. `USING`).
    Delete,
}

/// Analyses `sql`. Never fails: what cannot be tokenized or parsed is reported as
/// [`Kind::Unimaged`] when it looks like a write and [`Kind::Other`] otherwise.
pub fn analyze(sql: &str) -> Analysis {
    let dialect = PostgreSqlDialect {};
    let tokens = match Tokenizer::new(&dialect, sql).tokenize_with_location() {
        Ok(t) => t,
        Err(_) => {
            return Analysis {
                steps: vec![Step {
                    insert_at: sql.len(),
                    start: 0,
                    kind: unparsed(sql),
                    request_id: None,
                    set_request: None,
                }],
            }
        }
    };
    let offsets = LineOffsets::new(sql);
    let mut steps = Vec::new();
    let mut start = 0;
    for i in 0..=tokens.len() {
        let at_end = i == tokens.len();
        if !at_end && !matches!(tokens.get(i).map(|t| &t.token), Some(Token::SemiColon)) {
            continue;
        }
        let segment = tokens.get(start..i).unwrap_or_default();
        start = i + 1;
        let significant = segment.iter().rposition(|t| !is_trivia(&t.token));
        let Some(last) = significant else {
            continue; // empty statement
        };
        // Append right after the last real token: the start of whatever follows it.
        let insert_at = match segment.get(last + 1).or_else(|| tokens.get(i)) {
            Some(next) => offsets.byte(next.span.start).unwrap_or(sql.len()),
            None => sql.len(),
        };
        let request_id = segment.iter().find_map(|t| match &t.token {
            Token::Whitespace(Whitespace::MultiLineComment(c)) => sqlcommenter_request_id(c),
            _ => None,
        });
        let set_request = set_config_call(segment);
        let start = segment
            .iter()
            .find(|t| !is_trivia(&t.token))
            .and_then(|t| offsets.byte(t.span.start))
            .unwrap_or(0)
            .min(insert_at);
        let text = sql.get(start..insert_at).unwrap_or_default();
        let kind = match Parser::new(&dialect)
            .with_tokens_with_locations(segment.to_vec())
            .parse_statement()
        {
            Ok(statement) => classify(&statement),
            Err(_) => unparsed(text),
        };
        steps.push(Step {
            insert_at,
            start,
            kind,
            request_id,
            set_request,
        });
    }
    Analysis { steps }
}

/// What a statement the parser rejected is taken for: a write (a gap) by its first word.
fn unparsed(text: &str) -> Kind {
    let first = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match first.as_str() {
        "insert" | "update" | "delete" | "merge" | "with" | "copy" | "truncate" => Kind::Unimaged {
            table: None,
            reason: "statement not understood by the proxy's SQL parser",
        },
        _ => Kind::Other,
    }
}

fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Converts the tokenizer's 1-based line/column (in characters) to byte offsets.
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, starts }
    }

    fn byte(&self, loc: Location) -> Option<usize> {
        let line_start = *self
            .starts
            .get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let line = self.sql.get(line_start..)?;
        match line.char_indices().nth(col) {
            Some((i, _)) => Some(line_start + i),
            None => Some(self.sql.len()),
        }
    }
}

fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            other => other.to_string(),
        })
        .collect()
}

fn last_part_sql(name: &ObjectName) -> String {
    name.0.last().map(|p| p.to_string()).unwrap_or_default()
}

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
                    reason: "INSERT into a table function",
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
                        reason: "INSERT form not supported by PostgreSQL",
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
                    reason: "UPDATE of something other than a table",
                };
            };
            if !update.table.joins.is_empty() {
                return Kind::Unimaged {
                    table: Some(name_parts(name).join(".")),
                    reason: "UPDATE with joins",
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
                        reason: "DELETE from several tables",
                    }
                }
            };
            let TableFactor::Table { name, alias, .. } = target else {
                return Kind::Unimaged {
                    table: None,
                    reason: "DELETE from something other than a table",
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
                    reason: "data-modifying statement inside WITH",
                }
            } else {
                Kind::Other
            }
        }
        Statement::Merge(_) => Kind::Unimaged {
            table: None,
            reason: "MERGE",
        },
        Statement::Truncate(t) => Kind::Unimaged {
            table: t.table_names.first().map(|n| name_parts(&n.name).join(".")),
            reason: "TRUNCATE",
        },
        Statement::Copy {
            source: ast::CopySource::Table { table_name, .. },
            to: false,
            ..
        } => Kind::Unimaged {
            table: Some(name_parts(table_name).join(".")),
            reason: "COPY FROM",
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
        Statement::CreateTable(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreatePolicy { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateFunction(_) => Kind::Ddl,
        _ => Kind::Other,
    }
}

fn is_request_setting(name: &ObjectName) -> bool {
    name_parts(name).join(".") == REQUEST_ID_SETTING
}

fn literal_string(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            ast::Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        ast::Expr::Identifier(i) if !i.value.eq_ignore_ascii_case("default") => {
            Some(i.value.clone())
        }
        _ => None,
    }
}

/// Finds `set_config('flux.request_id', '<value>', <is_local>)` among a statement's tokens.
fn set_config_call(tokens: &[TokenWithSpan]) -> Option<SetRequest> {
    let real: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !is_trivia(t))
        .collect();
    // Skips a `::type` cast at `i`, returning the index after it.
    let skip_cast = |i: usize| match (real.get(i), real.get(i + 1)) {
        (Some(Token::DoubleColon), Some(Token::Word(_))) => i + 2,
        _ => i,
    };
    (0..real.len()).find_map(|i| {
        let head = real.get(i..i + 4)?;
        let [Token::Word(f), Token::LParen, Token::SingleQuotedString(name), Token::Comma] = head
        else {
            return None;
        };
        if !f.value.eq_ignore_ascii_case("set_config")
            || !name.eq_ignore_ascii_case(REQUEST_ID_SETTING)
        {
            return None;
        }
        let (value, param) = match real.get(i + 4)? {
            Token::SingleQuotedString(v) => (Some(v.clone()), None),
            Token::Placeholder(p) => (None, Some(p.strip_prefix('$')?.parse().ok()?)),
            _ => return None,
        };
        let j = skip_cast(i + 5);
        let (Some(Token::Comma), Some(Token::Word(local))) = (real.get(j), real.get(j + 1)) else {
            return None;
        };
        Some(SetRequest {
            local: local.value.eq_ignore_ascii_case("true"),
            value,
            param,
        })
    })
}

/// The `key='value'` pairs of a sqlcommenter comment body, values URL-decoded. Values are
/// quoted per the spec, but some commenters (OpenTelemetry's Python dbapi) emit bare
/// numbers: those pairs are skipped rather than giving up on the comment.
fn sqlcommenter_pairs(comment: &str) -> impl Iterator<Item = (&str, String)> {
    comment.split(',').filter_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        Some((key.trim(), percent_decode(value)))
    })
}

/// A `traceparent` value's trace id and, when well-formed, its parent span id (lowercase).
fn traceparent(value: &str) -> Option<(String, Option<String>)> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let span = parts.next().filter(|s| hex(s, 16));
    hex(trace, 32).then(|| {
        (
            trace.to_ascii_lowercase(),
            span.map(|s| s.to_ascii_lowercase()),
        )
    })
}

/// The request id in a sqlcommenter comment body (`key='value',…`, values URL-encoded):
/// `traceparent`'s trace id, else `request_id`.
pub fn sqlcommenter_request_id(comment: &str) -> Option<String> {
    let mut request_id = None;
    for (key, value) in sqlcommenter_pairs(comment) {
        match key {
            "traceparent" => {
                if let Some((trace, _)) = traceparent(&value) {
                    return Some(trace);
                }
            }
            "request_id" if !value.is_empty() => request_id = Some(value),
            _ => {}
        }
    }
    request_id
}

/// The `traceparent` of a statement's trailing sqlcommenter comment, as (trace id, parent
/// span id) in lowercase hex: the application span that issued the statement.
pub fn sqlcommenter_traceparent(sql: &str) -> Option<(String, String)> {
    let (_, comment) = split_trailing_comment(sql);
    sqlcommenter_pairs(comment?)
        .filter(|(key, _)| *key == "traceparent")
        .find_map(|(_, value)| match traceparent(&value)? {
            (trace, Some(span)) => Some((trace, span)),
            _ => None,
        })
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits off a trailing comment (sqlcommenter's place) and the `;`/whitespace around it,
/// so statements that differ only in their tag share one cached analysis.
/// Returns `(body, trailing_comment_body)`.
pub fn split_trailing_comment(sql: &str) -> (&str, Option<&str>) {
    let trimmed = sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    if let Some(inner) = trimmed.strip_suffix("*/") {
        if let Some(open) = inner.rfind("/*") {
            // Only a plain trailing comment; nested or unterminated forms are left whole.
            let body = inner.get(open + 2..).unwrap_or_default();
            if !body.contains("/*") && !body.contains("*/") {
                return (sql.get(..open).unwrap_or(sql), Some(body));
            }
        }
    }
    (sql, None)
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a write is left alone.
pub type Refusal = &'static str;

/// The text appended to a write so it returns its before image, after image and
/// `tableoid`. `pk` is the table's primary key (empty when it has none); `pg18` selects
/// the exact `old`/`new` form. Returns the text and, when the before image cannot be
/// taken, why.
pub fn appendix(write: &Write, pk: &[String], pg18: bool) -> (String, Option<Refusal>) {
    let r = &write.refname;
    let mut note = None;
    let (before, after) = if pg18 && !write.shadows_old_new {
        ("to_jsonb(old.*)".to_string(), "to_jsonb(new.*)".to_string())
    } else {
        let after = format!("to_jsonb({r}.*)");
        match write.op {
            WriteOp::Insert => ("NULL::jsonb".to_string(), after),
            WriteOp::Delete => (after, "NULL::jsonb".to_string()),
            WriteOp::Update | WriteOp::Upsert => {
                let before = if pk.is_empty() {
                    note = Some("table has no primary key: before image unavailable");
                    "NULL::jsonb".to_string()
                } else if write.op == WriteOp::Update
                    && write.assigned.iter().any(|c| pk.contains(c))
                {
                    note = Some("UPDATE changes a primary-key column: before image unavailable");
                    "NULL::jsonb".to_string()
                } else {
                    snapshot_subquery(&write.table_sql, r, pk)
                };
                (before, after)
            }
        }
    };
    let mut text = String::with_capacity(128);
    text.push_str(if write.has_returning {
        ", "
    } else {
        " RETURNING "
    });
    let _ = write!(
        text,
        "{before} AS __flux_b, {after} AS __flux_a, {r}.tableoid AS __flux_t"
    );
    (text, note)
}

/// Reads the row as the statement's snapshot saw it, i.e. before the statement.
fn snapshot_subquery(table_sql: &str, refname: &str, pk: &[String]) -> String {
    let cols = |prefix: &str| {
        pk.iter()
            .map(|c| format!("{prefix}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "(SELECT to_jsonb(__flux_o.*) FROM {table_sql} __flux_o WHERE ({}) = ({}))",
        cols("__flux_o"),
        cols(refname)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(sql: &str) -> (Write, usize) {
        let a = analyze(sql);
        match a.steps.as_slice() {
            [Step {
                kind: Kind::Write(w),
                insert_at,
                ..
            }] => (w.clone(), *insert_at),
            other => panic!("not one write: {other:?}"),
        }
    }

    #[test]
    fn finds_the_append_point_before_trailing_comments_and_semicolon() {
        let sql = "UPDATE users SET plan = 'pro' WHERE id = 42 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/;";
        let (w, at) = write(sql);
        assert_eq!(&sql[..at], "UPDATE users SET plan = 'pro' WHERE id = 42");
        assert_eq!(w.op, WriteOp::Update);
        assert_eq!(w.table, ["users"]);
        assert_eq!(w.assigned, ["plan"]);
        let a = analyze(sql);
        assert_eq!(
            a.steps[0].request_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn splits_multi_statement_strings_with_unicode_and_dollar_quotes() {
        let sql = "BEGIN; INSERT INTO \"Üsers\" AS u (n) VALUES ('é;x') RETURNING *;\nSELECT $$;$$; COMMIT";
        let a = analyze(sql);
        let kinds: Vec<_> = a.steps.iter().map(|s| &s.kind).collect();
        assert!(matches!(kinds[0], Kind::Begin));
        let Kind::Write(w) = kinds[1] else { panic!() };
        assert_eq!(w.table, ["Üsers"]);
        assert_eq!(w.refname, "u");
        assert!(w.has_returning);
        assert_eq!(
            &sql[..a.steps[1].insert_at],
            "BEGIN; INSERT INTO \"Üsers\" AS u (n) VALUES ('é;x') RETURNING *"
        );
        assert!(matches!(kinds[2], Kind::Other));
        assert!(matches!(kinds[3], Kind::Commit));
        assert_eq!(a.steps.len(), 4);
    }

    #[test]
    fn classifies_control_and_request_statements() {
        let a = analyze(
            "SAVEPOINT s1; ROLLBACK TO SAVEPOINT s1; RELEASE s1; SET LOCAL flux.request_id = 'r-1'; \
             RESET flux.request_id; SELECT set_config('flux.request_id', 'r-2', true); END; DISCARD ALL; \
             TRUNCATE t; WITH x AS (DELETE FROM t RETURNING 1) SELECT 1",
        );
        let kinds: Vec<_> = a.steps.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(kinds[0], Kind::Savepoint("s1".into()));
        assert_eq!(kinds[1], Kind::RollbackTo("s1".into()));
        assert_eq!(kinds[2], Kind::Release("s1".into()));
        assert_eq!(
            kinds[3],
            Kind::SetRequest(SetRequest {
                local: true,
                value: Some("r-1".into()),
                param: None,
            })
        );
        assert_eq!(
            kinds[4],
            Kind::SetRequest(SetRequest {
                local: false,
                value: None,
                param: None,
            })
        );
        assert_eq!(
            a.steps[5].set_request,
            Some(SetRequest {
                local: true,
                value: Some("r-2".into()),
                param: None,
            })
        );
        let a = analyze("SELECT set_config('flux.request_id', $2::text, true), $1");
        assert_eq!(
            a.steps[0].set_request,
            Some(SetRequest {
                local: true,
                value: None,
                param: Some(2),
            })
        );
        assert_eq!(kinds[6], Kind::Commit);
        assert_eq!(kinds[7], Kind::DiscardAll);
        assert!(matches!(
            kinds[8],
            Kind::Unimaged {
                reason: "TRUNCATE",
                ..
            }
        ));
        assert!(matches!(kinds[9], Kind::Unimaged { .. }));
    }

    #[test]
    fn appendix_forms() {
        let (w, _) = write("UPDATE public.users u SET name = 'x' FROM t WHERE u.id = t.id");
        assert_eq!(w.table, ["public", "users"]);
        let (text, note) = appendix(&w, &["id".into()], false);
        assert_eq!(note, None);
        assert_eq!(
            text,
            " RETURNING (SELECT to_jsonb(__flux_o.*) FROM public.users __flux_o WHERE (__flux_o.\"id\") = (u.\"id\")) AS __flux_b, to_jsonb(u.*) AS __flux_a, u.tableoid AS __flux_t"
        );
        let (text, _) = appendix(&w, &["id".into()], true);
        assert!(text.starts_with(" RETURNING to_jsonb(old.*) AS __flux_b, to_jsonb(new.*)"));
        let (w, _) = write("UPDATE users SET id = 2 WHERE id = 1");
        assert!(appendix(&w, &["id".into()], false).1.is_some());
        let (w, _) = write("DELETE FROM users WHERE id = 1 RETURNING id");
        let (text, _) = appendix(&w, &[], false);
        assert!(text.starts_with(", to_jsonb(users.*) AS __flux_b, NULL::jsonb"));
        let (w, _) = write("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2");
        assert_eq!(w.op, WriteOp::Upsert);
    }

    #[test]
    fn sqlcommenter_values_are_url_decoded() {
        assert_eq!(
            sqlcommenter_request_id("action='checkout',request_id='abc%2F1%27x'").as_deref(),
            Some("abc/1'x")
        );
        assert_eq!(sqlcommenter_request_id("route='/x'"), None);
        // OpenTelemetry's Python dbapi commenter leaves numbers unquoted.
        assert_eq!(
            sqlcommenter_request_id(
                "db_driver='psycopg2%3A2.9.13',dbapi_threadsafety=2,libpq_version=170011,traceparent='00-7b955f7cb81c62aba4e8984f594ed634-12ff9757afb2939b-03'"
            )
            .as_deref(),
            Some("7b955f7cb81c62aba4e8984f594ed634")
        );
        assert_eq!(
            sqlcommenter_traceparent(
                "SELECT 1 /*db_driver='psycopg2',traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01'*/"
            ),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                "00f067aa0ba902b7".to_string()
            ))
        );
        assert_eq!(
            sqlcommenter_traceparent("SELECT 1 /*traceparent='00-zz-1-01'*/"),
            None
        );
        assert_eq!(sqlcommenter_traceparent("SELECT 1"), None);
        let (body, comment) = split_trailing_comment("SELECT 1 /*request_id='a'*/ ;\n");
        assert_eq!(body, "SELECT 1 ");
        assert_eq!(comment, Some("request_id='a'"));
        assert_eq!(split_trailing_comment("SELECT 1").1, None);
    }

    #[test]
    fn garbage_never_panics() {
        for sql in [
            "",
            ";;;",
            "UPDATE",
            "INSERT INTO",
            "'unterminated",
            "/* open",
            "DELETE FROM t WHERE",
            "\u{0}\u{7f}é",
        ] {
            let _ = analyze(sql);
        }
        assert!(matches!(
            analyze("UPDATE (").steps[0].kind,
            Kind::Unimaged { .. }
        ));
    }
}
