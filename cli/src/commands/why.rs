//! `flux why ID`: the root cause of a failed request, its data changes and their fate, and
//! a suggestion — from what the proxy recorded (application spans come with OTLP ingest).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::state::{
    change, entry_json, local, marker, one_line, open, resolve_request, short, Format,
};

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

/// Runs `flux why`.
pub fn run(args: WhyArgs) -> anyhow::Result<()> {
    let store = open(&args.data_dir)?;
    let id = resolve_request(&store, &args.request)?;
    let why = store.why(&id)?;
    let rolled_back = why
        .changes
        .iter()
        .any(|e| e.outcome == flux_store::Outcome::RolledBack);
    if args.format == Format::Csv {
        anyhow::bail!("flux why has no CSV layout: use --format text or --format json");
    }
    if args.format == Format::Json {
        let out = json!({
            "request": why.request,
            "root_cause": why.failed.as_ref().map(|f| json!({
                "message": f.error,
                "sqlstate": f.sqlstate,
                "sql": f.sql,
                "at": local(f.at).to_rfc3339(),
            })),
            "location": null,
            "data_changes": why.changes.iter().map(entry_json).collect::<Vec<_>>(),
            "suggestion": why.suggestion,
            "statements": why.statements,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let cause = match &why.failed {
        Some(f) => format!(
            "{} (SQLSTATE {}) in: {}",
            f.error.as_deref().unwrap_or("error"),
            f.sqlstate.as_deref().unwrap_or("?"),
            one_line(&f.sql, 70)
        ),
        None if rolled_back => "no statement failed; the transaction was rolled back".into(),
        None => "no failure recorded for this request".into(),
    };
    println!();
    println!("  {:<12} {cause}", "ROOT CAUSE");
    println!(
        "  {:<12} unknown (no application spans recorded for {})",
        "LOCATION",
        short(Some(&id))
    );
    if why.changes.is_empty() {
        println!("  {:<12} none", "DATA CHANGES");
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
        println!(
            "  {label:<12} {row}  {} {}{}  {}",
            m.op,
            change(m),
            marker(e.outcome),
            local(m.at).format("%H:%M:%S")
        );
    }
    if let Some(s) = why.suggestion {
        println!("  {:<12} → {s}", "SUGGESTION");
    }
    println!();
    Ok(())
}
