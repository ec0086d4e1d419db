//! `flux why ID`: the root cause of a failed request (the first failure in its span tree:
//! the application's exception or a statement's SQLSTATE), where in the code, the rows it
//! changed with their fate, and a suggestion from deterministic rules.

use crate::output::out;
use std::path::PathBuf;

use clap::Args;
use flux_read::cause::Shape;
use flux_store::Outcome;
use serde_json::json;

use super::state::{change, entry_json, local, one_line, open_request, Format};

/// `flux why`.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The request id (or a unique prefix of 4+ characters; `req:` optional).
    request: String,

    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,

    /// Output format (text or json).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// A change's fate as `flux why` and `flux trace diff` print it.
pub(crate) fn fate(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed => "",
        Outcome::RolledBack => "  (rolled back)",
        Outcome::Unknown => "  (outcome unknown)",
        Outcome::Pending => "  (in progress)",
    }
}

/// Runs `flux why`.
pub fn run(args: WhyArgs) -> anyhow::Result<()> {
    if args.format == Format::Csv {
        anyhow::bail!("flux why has no CSV layout: use --format text or --format json");
    }
    let (store, id) = open_request(&args.data_dir, &args.request)?;
    let why = flux_read::why::why(&store, &id)?;
    if args.format == Format::Json {
        let out = json!({
            "request": why.request,
            "summary": why.summary,
            "root_cause": why.cause.as_ref().map(|c| json!({
                "message": c.message,
                "raw": c.raw,
                "shape": c.shape,
                "peer": c.peer,
                "status": c.status,
                "span": c.span,
                "sqlstate": c.sqlstate,
                "sql": c.sql,
                "at": local(c.at).to_rfc3339(),
            })),
            "location": why.location,
            "data_changes": why.changes.iter().map(entry_json).collect::<Vec<_>>(),
            "suggestion": why.suggestion,
            "statements": why.statements,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rolled_back = why.changes.iter().any(|e| e.outcome == Outcome::RolledBack);
    let cause = match &why.cause {
        Some(c) => match &c.sql {
            Some(sql) => format!("{} in: {}", c.message, one_line(sql, 70)),
            // A failed call's one-liner names the call already.
            None if !matches!(c.shape, Shape::Exception | Shape::Database) => {
                one_line(&c.message, 120)
            }
            None => format!("{} (in {})", one_line(&c.message, 110), c.span),
        },
        None if rolled_back => "nothing failed; the transaction was rolled back".into(),
        None => "no failure recorded for this request".into(),
    };
    out!();
    out!("  {:<12} {cause}", "ROOT CAUSE");
    let location = match &why.location {
        Some(l) => match &l.function {
            Some(f) => format!("{l}  (in {f})"),
            None => l.to_string(),
        },
        None if why
            .cause
            .as_ref()
            .is_some_and(|c| matches!(c.shape, Shape::ClientError | Shape::ServerError)) =>
        {
            let handler = why
                .summary
                .as_ref()
                .and_then(|s| {
                    Some(format!(
                        " in the {} {} handler",
                        s.method.as_ref()?,
                        s.path.as_ref()?
                    ))
                })
                .unwrap_or_default();
            format!("unknown: the call{handler} failed with a status, which records no stack trace")
        }
        None if why.summary.as_ref().is_some_and(|s| s.app) => {
            "unknown (no code.filepath or application stack frame on the failing spans)".into()
        }
        None => "unknown (no application spans recorded for this request)".into(),
    };
    out!("  {:<12} {location}", "LOCATION");
    if why.changes.is_empty() {
        out!("  {:<12} none", "DATA CHANGES");
    }
    for (i, e) in why.changes.iter().enumerate() {
        let m = &e.mutation;
        let row = format!(
            "{}.{}",
            m.table,
            m.key
                .as_ref()
                .map(|k| format!("id={}", k.join(",")))
                .unwrap_or_else(|| "(no key)".into())
        );
        let label = if i == 0 { "DATA CHANGES" } else { "" };
        out!(
            "  {label:<12} {row}  {} {}{}  {}",
            m.op,
            change(m),
            fate(e.outcome),
            local(m.at).format("%H:%M:%S")
        );
    }
    if let Some(s) = why.suggestion {
        out!("  {:<12} → {s}", "SUGGESTION");
    }
    out!();
    Ok(())
}
