//! Statement analysis: what each statement of a SQL string is, for capture.
//!
//! [`analyze`] splits a SQL string (a simple query may hold several statements) with
//! `sqlparser`'s tokenizer, parses each statement, and says what it is: a write the proxy
//! can image, a transaction-control statement, a request-id `SET`, or something to pass by
//! ([`crate::capture::classify`]), and the role changes it makes. What is appended to a
//! write is [`crate::capture::returning`]'s.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

pub use crate::capture::event::GapReason;
use crate::capture::request_id::{
    set_config_call, sqlcommenter_request_id, SetConfigValue, SetRequest, REQUEST_ID_SETTING,
};
pub use crate::capture::role::RoleChange;

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
    /// How the statement changes the session's role, if it does.
    pub role: Option<RoleChange>,
    /// `sqlparser` understood the statement.
    pub parsed: bool,
    /// Its command (first keyword, lower case): `insert`, `select`, `begin`.
    pub verb: Option<String>,
    /// The tables it acts on ([`crate::capture::shape::tables`]).
    pub tables: Vec<String>,
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
        reason: GapReason,
    },
    /// DDL: the catalog the rewrite depends on may have changed.
    Ddl,
    /// `DO` or `CALL`: may write (invisibly to `RETURNING`) and change the catalog.
    Routine {
        /// It may write rows (a `CALL`, or a `DO` body naming a data-modifying command).
        writes: bool,
    },
    /// `PREPARE name AS …`; `write` names the table when the statement is a write.
    Prepare {
        /// The prepared statement's name.
        name: String,
        /// The table it writes, when it is a write (`Some(None)`: a write to an unknown table).
        write: Option<Option<String>>,
    },
    /// `EXECUTE name`.
    Execute(String),
    /// `DEALLOCATE name` (`None`: `ALL`).
    Deallocate(Option<String>),
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
                    role: None,
                    parsed: false,
                    verb: None,
                    tables: Vec::new(),
                }],
            }
        }
    };
    let offsets = LineOffsets::new(sql);
    let mut steps = Vec::new();
    for (range, end) in statements(&tokens) {
        let segment = tokens.get(range).unwrap_or_default();
        let significant = segment.iter().rposition(|t| !is_trivia(&t.token));
        let Some(last) = significant else {
            continue; // empty statement
        };
        // Append right after the last real token: the start of whatever follows it.
        let insert_at = match segment.get(last + 1).or_else(|| tokens.get(end)) {
            Some(next) => offsets.byte(next.span.start).unwrap_or(sql.len()),
            None => sql.len(),
        };
        let request_id = segment.iter().find_map(|t| match &t.token {
            Token::Whitespace(Whitespace::MultiLineComment(c)) => sqlcommenter_request_id(c),
            _ => None,
        });
        // The statement's significant tokens, collected once for every keyword check.
        let real: Vec<&Token> = segment
            .iter()
            .map(|t| &t.token)
            .filter(|t| !is_trivia(t))
            .collect();
        let set_request = set_config_call(&real, REQUEST_ID_SETTING).and_then(|c| c.request());
        let start = segment
            .iter()
            .find(|t| !is_trivia(&t.token))
            .and_then(|t| offsets.byte(t.span.start))
            .unwrap_or(0)
            .min(insert_at);
        let text = sql.get(start..insert_at).unwrap_or_default();
        let words = Words::of(&real);
        let parsed = Parser::new(&dialect)
            .with_tokens_with_locations(segment.to_vec())
            .parse_statement();
        let kind = match (words.catalog_statement(text), &parsed) {
            // By keyword first: sqlparser does not know every DDL form (CREATE RULE), and
            // DML nested in one (a rule's actions, a function body) must stay untouched.
            (Some(kind), _) => kind,
            (None, Ok(statement)) => crate::capture::classify::classify(statement),
            (None, Err(_)) => unparsed(text),
        };
        steps.push(Step {
            insert_at,
            start,
            kind,
            request_id,
            set_request,
            role: role_change(&real, &words, text),
            parsed: parsed.is_ok(),
            verb: Some(words.first().to_string()).filter(|v| !v.is_empty()),
            tables: parsed
                .as_ref()
                .map(crate::capture::shape::tables)
                .unwrap_or_default(),
        });
    }
    Analysis { steps }
}

/// Splits a token stream into statements the way the server's grammar does: at `;`, but
/// not inside parentheses (`CREATE RULE … DO INSTEAD (DELETE …; DELETE …)`) nor inside a
/// `BEGIN ATOMIC … END` function body. Yields each statement's token range and the index
/// of the token that ended it.
fn statements(tokens: &[TokenWithSpan]) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut parens = 0usize;
    // Open BEGIN ATOMIC / CASE blocks inside an atomic body; each END closes one.
    let mut atomic = 0usize;
    let mut previous_word: Option<String> = None;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => parens += 1,
            Token::RParen => parens = parens.saturating_sub(1),
            Token::SemiColon if parens == 0 && atomic == 0 => {
                out.push((start..i, i));
                start = i + 1;
            }
            Token::Word(w) => {
                let word = w.value.to_ascii_lowercase();
                if w.quote_style.is_none() {
                    match word.as_str() {
                        "atomic" if previous_word.as_deref() == Some("begin") => atomic += 1,
                        "case" if atomic > 0 => atomic += 1,
                        "end" if atomic > 0 => atomic -= 1,
                        _ => {}
                    }
                }
                previous_word = Some(word);
            }
            tok if is_trivia(tok) => {}
            _ => previous_word = None,
        }
    }
    out.push((start..tokens.len(), tokens.len()));
    out
}

/// The first unquoted words of a statement, lower-cased (for keyword checks that must not
/// depend on the parser knowing the statement). Only the first few are ever looked at.
struct Words(Vec<String>);

/// How many leading words [`Words`] keeps (`SET LOCAL SESSION AUTHORIZATION` is the longest
/// prefix a check reads).
const LEADING_WORDS: usize = 4;

impl Words {
    fn of(real: &[&Token]) -> Self {
        Words(
            real.iter()
                .take(LEADING_WORDS)
                .map(|t| match t {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
                    _ => String::new(),
                })
                .collect(),
        )
    }

    fn first(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    fn at(&self, i: usize) -> &str {
        self.0.get(i).map_or("", String::as_str)
    }

    /// Statements recognised by their first keyword: DDL (which may change what capture
    /// reads from `pg_catalog`) and routines (`DO`, `CALL`), whose inner writes are
    /// invisible to `RETURNING`.
    fn catalog_statement(&self, text: &str) -> Option<Kind> {
        match self.first() {
            "create" | "alter" | "drop" | "grant" | "revoke" | "reassign" | "import"
            | "comment" | "security" | "refresh" | "cluster" | "reindex" => Some(Kind::Ddl),
            "do" | "call" => Some(Kind::Routine {
                writes: self.first() == "call" || mentions_dml(text),
            }),
            _ => None,
        }
    }
}

/// Whether a routine's text (a `DO` body) mentions a data-modifying command.
fn mentions_dml(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| {
            matches!(
                w,
                "insert" | "update" | "delete" | "merge" | "copy" | "truncate"
            )
        })
}

/// What a statement that was not understood is taken for: a write (a gap) by its first word.
fn unparsed(text: &str) -> Kind {
    let first = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match first.as_str() {
        "insert" | "update" | "delete" | "merge" | "with" | "copy" | "truncate" | "explain"
        | "execute" => Kind::Unimaged {
            table: None,
            reason: GapReason::NotUnderstood,
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

/// How a statement changes the session's role, from its tokens: `SET [SESSION | LOCAL]
/// ROLE …`, `SET … SESSION AUTHORIZATION …`, the generic `SET role = …` /
/// `SET session_authorization TO …`, `RESET ROLE`, `RESET SESSION AUTHORIZATION`,
/// `DISCARD ALL`, and `set_config('role' | 'session_authorization', …)` anywhere in a
/// statement. A `DO` body that mentions roles, or a value only known at run time, is
/// [`RoleChange::Unknown`].
fn role_change(real: &[&Token], words: &Words, text: &str) -> Option<RoleChange> {
    // The value token after the setting name (skipping `TO` / `=`).
    let value_after = |i: usize| -> Option<Option<String>> {
        let mut j = i;
        if matches!(real.get(j), Some(Token::Eq))
            || matches!(real.get(j), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("to"))
        {
            j += 1;
        }
        match real.get(j)? {
            Token::SingleQuotedString(v) => Some(Some(v.clone())),
            Token::Word(w) if w.quote_style.is_some() => Some(Some(w.value.clone())),
            Token::Word(w) => {
                let v = w.value.to_ascii_lowercase();
                Some((v != "none" && v != "default").then_some(v))
            }
            _ => None,
        }
    };
    match words.first() {
        "set" => {
            let mut i = 1;
            let mut local = false;
            match words.at(1) {
                "local" => {
                    local = true;
                    i = 2;
                }
                "session" if words.at(2) != "authorization" => i = 2,
                _ => {}
            }
            match (words.at(i), words.at(i + 1)) {
                ("role", _) => match value_after(i + 1) {
                    Some(to) => Some(RoleChange::Role { local, to }),
                    None => Some(RoleChange::Unknown),
                },
                ("session", "authorization") => match value_after(i + 2) {
                    Some(to) => Some(RoleChange::SessionAuthorization { local, to }),
                    None => Some(RoleChange::Unknown),
                },
                ("session_authorization", _) => match value_after(i + 1) {
                    Some(to) => Some(RoleChange::SessionAuthorization { local, to }),
                    None => Some(RoleChange::Unknown),
                },
                _ => None,
            }
        }
        "reset" => match (words.at(1), words.at(2)) {
            ("role", _) => Some(RoleChange::Role {
                local: false,
                to: None,
            }),
            ("session", "authorization") | ("session_authorization", _) => {
                Some(RoleChange::SessionAuthorization {
                    local: false,
                    to: None,
                })
            }
            _ => None,
        },
        "discard" if words.at(1) == "all" => Some(RoleChange::Discard),
        "do" => {
            let lower = text.to_ascii_lowercase();
            (lower.contains("role")
                || lower.contains("session_authorization")
                || lower.contains("authorization"))
            .then_some(RoleChange::Unknown)
        }
        _ => {
            for (setting, is_role) in [("role", true), ("session_authorization", false)] {
                if let Some(call) = set_config_call(real, setting) {
                    let to = match call.value {
                        SetConfigValue::Literal(v) => {
                            let lower = v.to_ascii_lowercase();
                            (lower != "none" && !v.is_empty()).then_some(v)
                        }
                        _ => return Some(RoleChange::Unknown),
                    };
                    return Some(if is_role {
                        RoleChange::Role {
                            local: call.local,
                            to,
                        }
                    } else {
                        RoleChange::SessionAuthorization {
                            local: call.local,
                            to,
                        }
                    });
                }
            }
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The one write `sql` holds, and where its `RETURNING` goes.
    pub(crate) fn write(sql: &str) -> (Write, usize) {
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
                reason: GapReason::Statement(ref s),
                ..
            } if s == "TRUNCATE"
        ));
        assert!(matches!(kinds[9], Kind::Unimaged { .. }));
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

    fn kinds(sql: &str) -> Vec<Kind> {
        analyze(sql).steps.into_iter().map(|s| s.kind).collect()
    }

    fn roles(sql: &str) -> Vec<Option<RoleChange>> {
        analyze(sql).steps.into_iter().map(|s| s.role).collect()
    }

    #[test]
    fn semicolons_inside_parentheses_and_atomic_bodies_do_not_split() {
        let rule = "CREATE RULE r AS ON DELETE TO t DO INSTEAD (DELETE FROM a; DELETE FROM b)";
        assert_eq!(kinds(rule), [Kind::Ddl]);
        let a = analyze(&format!("{rule}; INSERT INTO t VALUES (1)"));
        assert_eq!(a.steps.len(), 2);
        assert!(matches!(a.steps[1].kind, Kind::Write(_)));
        let f = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 INSERT INTO t VALUES (1); SELECT CASE WHEN true THEN 1 END; END; \
                 UPDATE t SET a = 1";
        let k = kinds(f);
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(k[0], Kind::Ddl);
        assert!(matches!(k[1], Kind::Write(_)));
    }

    #[test]
    fn dml_inside_other_statements_is_never_a_write() {
        for sql in [
            "CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO log VALUES (new.a)",
            "CREATE FUNCTION f() RETURNS void AS $$ INSERT INTO t VALUES (1) $$ LANGUAGE sql",
            "CREATE TABLE t2 AS SELECT * FROM t",
            "ALTER TABLE t ADD COLUMN b int",
            "GRANT INSERT ON t TO r1",
        ] {
            assert_eq!(kinds(sql), [Kind::Ddl], "{sql}");
        }
        assert_eq!(
            kinds("DO $$ BEGIN UPDATE t SET a = 1; END $$"),
            [Kind::Routine { writes: true }]
        );
        assert_eq!(
            kinds("DO $$ BEGIN RAISE NOTICE 'x'; END $$"),
            [Kind::Routine { writes: false }]
        );
        assert_eq!(kinds("CALL p(1)"), [Kind::Routine { writes: true }]);
        assert_eq!(
            kinds("PREPARE p(int) AS INSERT INTO s.t VALUES ($1)"),
            [Kind::Prepare {
                name: "p".into(),
                write: Some(Some("s.t".into()))
            }]
        );
        assert_eq!(
            kinds("PREPARE q AS SELECT 1"),
            [Kind::Prepare {
                name: "q".into(),
                write: None
            }]
        );
        assert_eq!(kinds("EXECUTE p(1)"), [Kind::Execute("p".into())]);
        assert_eq!(kinds("DEALLOCATE ALL"), [Kind::Deallocate(None)]);
        assert!(matches!(
            kinds("EXPLAIN (ANALYZE, COSTS OFF) DELETE FROM t").as_slice(),
            [Kind::Unimaged { .. }]
        ));
        assert_eq!(kinds("EXPLAIN DELETE FROM t"), [Kind::Other]);
    }

    #[test]
    fn role_changes_in_every_form() {
        let role = |local, to: Option<&str>| {
            Some(RoleChange::Role {
                local,
                to: to.map(str::to_string),
            })
        };
        let auth = |local, to: Option<&str>| {
            Some(RoleChange::SessionAuthorization {
                local,
                to: to.map(str::to_string),
            })
        };
        assert_eq!(roles("SET ROLE r1"), [role(false, Some("r1"))]);
        assert_eq!(
            roles("set local role \"Mixed\""),
            [role(true, Some("Mixed"))]
        );
        assert_eq!(roles("SET SESSION ROLE 'R2'"), [role(false, Some("R2"))]);
        assert_eq!(roles("SET ROLE NONE"), [role(false, None)]);
        assert_eq!(roles("SET role = r3"), [role(false, Some("r3"))]);
        assert_eq!(roles("SET role TO DEFAULT"), [role(false, None)]);
        assert_eq!(roles("RESET ROLE"), [role(false, None)]);
        assert_eq!(
            roles("SET SESSION AUTHORIZATION alice"),
            [auth(false, Some("alice"))]
        );
        assert_eq!(
            roles("SET SESSION SESSION AUTHORIZATION DEFAULT"),
            [auth(false, None)]
        );
        assert_eq!(
            roles("SET LOCAL session_authorization TO 'bob'"),
            [auth(true, Some("bob"))]
        );
        assert_eq!(roles("RESET SESSION AUTHORIZATION"), [auth(false, None)]);
        assert_eq!(roles("DISCARD ALL"), [Some(RoleChange::Discard)]);
        assert_eq!(
            roles("SELECT set_config('role', 'r4', true)"),
            [role(true, Some("r4"))]
        );
        assert_eq!(
            roles("SELECT set_config('role', $1, false)"),
            [Some(RoleChange::Unknown)]
        );
        assert_eq!(
            roles("DO $$ BEGIN EXECUTE 'SET ROLE x'; END $$"),
            [Some(RoleChange::Unknown)]
        );
        assert_eq!(roles("SET search_path = a"), [None]);
        assert_eq!(roles("RESET ALL"), [None], "role is not reset by RESET ALL");
    }
}
