//! Column redaction (`flux proxy --redact users.password_hash --redact '*.ssn'`): the
//! answer to "Flux stores PII". Before anything is stored, the named columns' values in
//! every before and after image become `"<redacted>"`, and a statement whose text names a
//! redacted column keeps its shape but loses every literal (`'<redacted>'`), since a
//! client that interpolates its parameters puts the values in the text. Statements'
//! bound parameters are never stored.

use serde_json::Value;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// What replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// The columns to redact.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// `(table, column)`, lower case; no table: every table.
    rules: Vec<(Option<String>, String)>,
}

/// A `--redact` rule that is not `table.column`, `schema.table.column` or `*.column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--redact {0:?}: expected TABLE.COLUMN, SCHEMA.TABLE.COLUMN or '*.COLUMN'")]
pub struct RuleError(pub String);

impl Redactor {
    /// From rules like `users.password_hash`, `billing.cards.number`, `*.ssn`.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Redactor, RuleError> {
        let mut out = Vec::new();
        for rule in rules {
            let r = rule.trim().to_ascii_lowercase();
            let (table, column) = r.rsplit_once('.').ok_or_else(|| RuleError(rule.into()))?;
            if column.is_empty() || table.is_empty() {
                return Err(RuleError(rule.into()));
            }
            let table = match table {
                "*" => None,
                // The store names tables in `public` without the schema.
                t => Some(flux_store::model::table_name(t).to_string()),
            };
            out.push((table, column.to_string()));
        }
        Ok(Redactor { rules: out })
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `column` of `table` is redacted (rules are lower case; no allocation per
    /// column of every row).
    fn applies(&self, table: &str, column: &str) -> bool {
        self.rules.iter().any(|(t, c)| {
            c.eq_ignore_ascii_case(column)
                && t.as_deref().is_none_or(|t| t.eq_ignore_ascii_case(table))
        })
    }

    fn table_has_rules(&self, table: &str) -> bool {
        self.rules
            .iter()
            .any(|(t, _)| t.as_deref().is_none_or(|t| t.eq_ignore_ascii_case(table)))
    }

    /// A row image (a JSON object) of `table` with the redacted columns' values replaced.
    /// An image that is not a JSON object is replaced whole: nothing unredacted is kept.
    pub fn image(&self, table: &str, image: String) -> String {
        if !self.table_has_rules(table) {
            return image;
        }
        match serde_json::from_str::<Value>(&image) {
            Ok(Value::Object(mut row)) => {
                let mut changed = false;
                for (column, value) in row.iter_mut() {
                    if self.applies(table, column) && !value.is_null() {
                        *value = Value::String(REDACTED.into());
                        changed = true;
                    }
                }
                if changed {
                    Value::Object(row).to_string()
                } else {
                    image
                }
            }
            _ => Value::String(REDACTED.into()).to_string(),
        }
    }

    /// A statement's text, with every literal replaced when it may carry a redacted value:
    /// it names a redacted column or a table with redacted columns, or (with a `*.column`
    /// rule) it inserts positionally into any table.
    pub fn sql(&self, sql: String) -> String {
        if self.is_empty() {
            return sql;
        }
        let lower = sql.to_ascii_lowercase();
        let mentions = |word: &str| {
            lower.match_indices(word).any(|(i, _)| {
                let before = lower.get(..i).and_then(|s| s.chars().next_back());
                let after = lower.get(i + word.len()..).and_then(|s| s.chars().next());
                let part =
                    |ch: Option<char>| ch.is_some_and(|ch| ch.is_alphanumeric() || ch == '_');
                !part(before) && !part(after)
            })
        };
        let risky = self.rules.iter().any(|(table, column)| {
            mentions(column)
                || match table {
                    Some(t) => mentions(t.rsplit('.').next().unwrap_or(t)),
                    None => mentions("insert") || mentions("copy"),
                }
        });
        if !risky {
            return sql;
        }
        let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, &sql).tokenize() else {
            return format!("<statement naming a redacted column; {REDACTED}>");
        };
        tokens
            .into_iter()
            .map(|t| match t {
                Token::SingleQuotedString(_)
                | Token::EscapedStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::DollarQuotedString(_)
                | Token::HexStringLiteral(_)
                | Token::Number(..) => format!("'{REDACTED}'"),
                // Printed as written (the token's Display adds a line break).
                Token::Whitespace(Whitespace::SingleLineComment { comment, prefix }) => {
                    format!("{prefix}{comment}")
                }
                other => other.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_table_column_or_any_table() {
        assert!(Redactor::new(["users"]).is_err());
        assert!(Redactor::new([".x"]).is_err());
        assert!(Redactor::new(["users."]).is_err());
        let r = Redactor::new([
            "public.Users.Password_Hash",
            "*.ssn",
            "billing.cards.number",
        ])
        .expect("rules");
        assert!(r.applies("users", "password_hash"));
        assert!(!r.applies("admins", "password_hash"));
        assert!(r.applies("anything", "SSN"));
        assert!(r.applies("billing.cards", "number"));
        assert!(!r.applies("cards", "number"));
    }

    #[test]
    fn images_lose_the_redacted_values_only() {
        let r = Redactor::new(["users.password_hash", "*.ssn"]).expect("rules");
        let image = r.image(
            "users",
            r#"{"id":1,"password_hash":"$2b$x","ssn":"123","name":"A","note":null}"#.into(),
        );
        let v: Value = serde_json::from_str(&image).expect("json");
        assert_eq!(v["password_hash"], REDACTED);
        assert_eq!(v["ssn"], REDACTED);
        assert_eq!(v["name"], "A");
        assert_eq!(v["id"], 1);
        // A NULL says nothing and stays NULL.
        let image = r.image("users", r#"{"id":1,"password_hash":null}"#.into());
        assert_eq!(image, r#"{"id":1,"password_hash":null}"#);
        // Other tables without a matching column are left byte-for-byte.
        let other = r#"{"id": 1, "password_hash": "kept"}"#;
        assert_eq!(r.image("admins", other.into()), other);
        // Not an object: nothing of it is kept.
        assert_eq!(r.image("users", "oops".into()), format!("\"{REDACTED}\""));
    }

    #[test]
    fn statements_naming_a_redacted_column_lose_their_literals() {
        let r = Redactor::new(["users.password_hash"]).expect("rules");
        assert_eq!(
            r.sql("UPDATE users SET password_hash = 'secret', n = 2 WHERE id = 7".into()),
            "UPDATE users SET password_hash = '<redacted>', n = '<redacted>' WHERE id = '<redacted>'"
        );
        assert_eq!(
            r.sql("INSERT INTO users VALUES (1, $$x$$) -- password_hash\n".into()),
            "INSERT INTO users VALUES ('<redacted>', '<redacted>') -- password_hash\n"
        );
        assert_eq!(
            r.sql("INSERT INTO users VALUES (1, 'positional')".into()),
            "INSERT INTO users VALUES ('<redacted>', '<redacted>')"
        );
        let plain = "UPDATE admins SET password_hash_version = 'v2'";
        assert_eq!(r.sql(plain.into()), plain);
        let any = Redactor::new(["*.ssn"]).expect("rules");
        assert_eq!(
            any.sql("insert into people values ('x')".into()),
            "insert into people values ('<redacted>')"
        );
        assert_eq!(any.sql("select 'x'".into()), "select 'x'");
        assert_eq!(
            r.sql("SELECT 'unterminated, password_hash".into()),
            format!("<statement naming a redacted column; {REDACTED}>")
        );
    }
}
