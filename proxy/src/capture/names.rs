//! SQL names as PostgreSQL reads them: identifiers folded unless quoted, qualified names
//! as their parts, and quoting for the text capture appends.

use sqlparser::ast::{self, ObjectName, ObjectNamePart};

pub(crate) fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

pub(crate) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            other => other.to_string(),
        })
        .collect()
}

pub(crate) fn last_part_sql(name: &ObjectName) -> String {
    name.0.last().map(|p| p.to_string()).unwrap_or_default()
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
