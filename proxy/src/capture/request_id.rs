//! Which request a statement belongs to: sqlcommenter comments (`traceparent`,
//! `request_id`), `SET flux.request_id`, and `set_config('flux.request_id', …)` calls.

use sqlparser::ast::{self, ObjectName};
use sqlparser::tokenizer::Token;

use crate::capture::names::name_parts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetConfigValue {
    Literal(String),
    /// A bind parameter, 1-based.
    Param(usize),
    /// Anything else (an expression, a column): the value is not known here.
    Computed,
}

/// The GUC an app sets to tag its statements with a request id.
pub const REQUEST_ID_SETTING: &str = "flux.request_id";

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

pub(crate) fn is_request_setting(name: &ObjectName) -> bool {
    name_parts(name).join(".") == REQUEST_ID_SETTING
}

pub(crate) fn literal_string(e: &ast::Expr) -> Option<String> {
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

/// A `set_config('<setting>', <value>, <is_local>)` call found among a statement's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetConfigCall {
    pub(crate) local: bool,
    pub(crate) value: SetConfigValue,
}

impl SetConfigCall {
    /// As a request-id change (a computed value is not one the proxy can know).
    pub(crate) fn request(self) -> Option<SetRequest> {
        let (value, param) = match self.value {
            SetConfigValue::Literal(v) => (Some(v), None),
            SetConfigValue::Param(n) => (None, Some(n)),
            SetConfigValue::Computed => return None,
        };
        Some(SetRequest {
            local: self.local,
            value,
            param,
        })
    }
}

/// Finds `set_config('<setting>', <value>, <is_local>)` among a statement's significant
/// tokens.
pub(crate) fn set_config_call(real: &[&Token], setting: &str) -> Option<SetConfigCall> {
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
        if !f.value.eq_ignore_ascii_case("set_config") || !name.eq_ignore_ascii_case(setting) {
            return None;
        }
        let (value, next) = match real.get(i + 4)? {
            Token::SingleQuotedString(v) => (SetConfigValue::Literal(v.clone()), i + 5),
            Token::Placeholder(p) => match p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                Some(n) => (SetConfigValue::Param(n), i + 5),
                None => (SetConfigValue::Computed, i + 5),
            },
            _ => (SetConfigValue::Computed, i + 5),
        };
        let j = skip_cast(next);
        let local = match (real.get(j), real.get(j + 1)) {
            (Some(Token::Comma), Some(Token::Word(local))) => {
                local.value.eq_ignore_ascii_case("true")
            }
            // A computed value or flag: what it sets is unknown, local or not.
            _ => {
                return Some(SetConfigCall {
                    local: false,
                    value: SetConfigValue::Computed,
                })
            }
        };
        Some(SetConfigCall { local, value })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
