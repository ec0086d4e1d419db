//! `flux state history` and `flux state blame`: a row's (or a request's) recorded
//! changes, and who wrote each column's current value.

use crate::output::out;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use chrono::{DateTime, Local, TimeZone};
use clap::{Args, Subcommand, ValueEnum};
use flux_read::blame::blame;
use flux_read::gap::{self, Reason};
use flux_store::query::MutationView;
use flux_store::{Gap, HistoryEntry, Nanos, Outcome, Store};
use serde_json::{json, Value};

use flux_recorder::nanos;

/// `flux state …`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Every recorded change of a row (or of every row a request touched), oldest first.
    History(HistoryArgs),
    /// Per column of a row: current value, and the request and time that wrote it.
    Blame(BlameArgs),
}

/// Where the record is and how to print it.
#[derive(Debug, Args)]
pub struct Common {
    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// `flux state history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Table (`users`, or `schema.table` outside `public`).
    #[arg(required_unless_present = "request")]
    table: Option<String>,

    /// Primary-key value; for a composite key, the values in key-column order: `7,42`.
    #[arg(long, requires = "table")]
    id: Option<String>,

    /// Every row this request changed, in all tables (a request id or a unique prefix of
    /// 4+ characters; `req:` optional).
    #[arg(long, conflicts_with_all = ["table", "id"])]
    request: Option<String>,

    /// Only changes within this long before now (e.g. 24h, 30m).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "between")]
    since: Option<Duration>,

    /// Only changes between two local times, e.g. 2026-03-10T14:00 2026-03-10T15:00.
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    between: Option<Vec<String>>,

    #[command(flatten)]
    common: Common,
}

/// `flux state blame`.
#[derive(Debug, Args)]
pub struct BlameArgs {
    /// Table.
    table: String,

    /// Primary-key value (composite: `7,42`).
    #[arg(long)]
    id: String,

    #[command(flatten)]
    common: Common,
}

/// Runs a `flux state` command.
pub fn run(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::History(args) => history(args),
        StateCommand::Blame(args) => blame_cmd(args),
    }
}

pub(crate) fn open(dir: &Path) -> anyhow::Result<Store> {
    if !dir.join("CURRENT").is_file() {
        bail!(
            "no Flux record in {}: point --data-dir (or FLUX_DATA_DIR) at the directory `flux proxy --data-dir` writes",
            dir.display()
        );
    }
    let store = Store::open_reader(dir)
        .with_context(|| format!("opening the record in {}", dir.display()))?;
    store.catch_up().context("reading the latest records")?;
    Ok(store)
}

/// The store's name for a table the user typed: `users` for `public.users` or `Users`
/// (unquoted SQL names fold to lower case), `Orders` for `"Orders"`.
fn table_name(t: &str) -> String {
    let folded = if t.contains('"') {
        t.replace('"', "")
    } else {
        t.to_lowercase()
    };
    flux_store::model::table_name(&folded).to_string()
}

fn key_parts(id: &str) -> Vec<String> {
    id.split(',').map(|s| s.trim().to_string()).collect()
}

fn window(args: &HistoryArgs) -> anyhow::Result<(Option<Nanos>, Option<Nanos>)> {
    if let Some(d) = args.since {
        let from = SystemTime::now()
            .checked_sub(d)
            .map(nanos)
            .unwrap_or_default();
        return Ok((Some(from), None));
    }
    if let Some([a, b]) = args.between.as_deref() {
        let w = flux_read::window::between(a, b, Local::now()).context("--between")?;
        return Ok((Some(w.from), Some(w.to)));
    }
    Ok((None, None))
}

/// Opens the record a request address points into and resolves the id: `ID` is in the
/// data dir's record, `RUN:ID` in the record of replay run `RUN`
/// (`<data-dir>/replays/RUN`, as `flux incident replay` names them).
pub(crate) fn open_request(dir: &Path, given: &str) -> anyhow::Result<(Store, String)> {
    let given = given.strip_prefix("req:").unwrap_or(given);
    let Some((run, id)) = given.split_once(':') else {
        let store = open(dir)?;
        let id = resolve_request(&store, given)?;
        return Ok((store, id));
    };
    let path = flux_replay::run::run_store(dir, run);
    if !path.is_dir() {
        bail!(
            "no replay run {run:?} in {}: flux incident replay prints its run's name (ls {} lists them)",
            dir.display(),
            dir.join("replays").display()
        );
    }
    // The original's id names its replay in the run; the replay's own id works too.
    let store = open(&path)?;
    let id = flux_read::address::replay_of(&store, id)?.unwrap_or_else(|| id.to_string());
    let id = resolve_request(&store, &id)?;
    Ok((store, id))
}

/// Resolves a request id or unique prefix ([`flux_read::address`]).
pub(crate) fn resolve_request(store: &Store, given: &str) -> anyhow::Result<String> {
    Ok(flux_read::address::resolve(store, given)?)
}

pub(crate) fn short(request: Option<&str>) -> String {
    match request {
        Some(r) => format!("req:{}", r.chars().take(8).collect::<String>()),
        None => "req:-".to_string(),
    }
}

pub(crate) fn local(at: Nanos) -> DateTime<Local> {
    Local.timestamp_nanos(at as i64)
}

pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed => "committed",
        Outcome::RolledBack => "rolled_back",
        Outcome::Unknown => "unknown",
        Outcome::Pending => "pending",
    }
}

/// What a change did, in one line: `plan: free → pro`, or the row's columns.
pub(crate) fn change(m: &MutationView) -> String {
    let obj = |v: &Option<Value>| v.as_ref().and_then(Value::as_object).cloned();
    let columns = |o: serde_json::Map<String, Value>| {
        o.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (obj(&m.before), obj(&m.after)) {
        (Some(before), Some(after)) => {
            let changed: Vec<String> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {} → {}",
                        before.get(k).map(show).unwrap_or_else(|| "null".into()),
                        show(v)
                    )
                })
                .collect();
            if changed.is_empty() {
                "(no change)".to_string()
            } else {
                changed.join(", ")
            }
        }
        (None, Some(after)) => columns(after),
        (Some(before), None) => columns(before),
        (None, None) => String::new(),
    }
}

/// A change's fate in words: `committed`, `rolled back`, `outcome unknown`, `in progress`.
pub(crate) fn fate(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed => "committed",
        Outcome::RolledBack => "rolled back",
        Outcome::Unknown => "outcome unknown",
        Outcome::Pending => "in progress",
    }
}

pub(crate) fn marker(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed => "",
        Outcome::RolledBack => " (rollback)",
        Outcome::Unknown => " (outcome unknown)",
        Outcome::Pending => " (in progress)",
    }
}

pub(crate) fn entry_json(e: &HistoryEntry) -> Value {
    let m = &e.mutation;
    json!({
        "at": local(m.at).to_rfc3339(),
        "at_ns": m.at,
        "table": m.table,
        "key": m.key,
        "op": m.op,
        "request": m.request,
        "outcome": outcome_str(e.outcome),
        "before": m.before,
        "after": m.after,
    })
}

fn gap_json(g: &Gap) -> Value {
    json!({
        "at": local(g.at).to_rfc3339(),
        "until": local(g.until).to_rfc3339(),
        "table": g.table,
        "count": g.count,
        "reason": Reason(&g.reason).to_string(),
        "kind": g.reason.kind(),
        "partial": g.reason.partial(),
        "request": g.request,
    })
}

/// Gap lines for the text layouts: gaps with the same table and reason are folded into
/// one line (a table with triggers gets a note per write), counts summed.
fn gap_lines(gaps: &[Gap]) -> Vec<String> {
    let mut folded: Vec<(&Gap, u64, usize, Nanos)> = Vec::new();
    for g in gaps {
        match folded
            .iter_mut()
            .find(|(f, ..)| f.table == g.table && f.reason == g.reason)
        {
            Some((_, count, times, last)) => {
                *count += g.count;
                *times += 1;
                *last = (*last).max(g.until);
            }
            None => folded.push((g, g.count, 1, g.until)),
        }
    }
    folded
        .into_iter()
        .map(|(g, count, times, last)| {
            let what = match count {
                0 => "writes".to_string(),
                1 => "1 write".to_string(),
                n => format!("{n} writes"),
            };
            let table = g.table.as_deref().unwrap_or("unknown tables");
            // A write imaged without its before image is recorded, but not whole.
            let (status, reason) = (gap::status(&g.reason), Reason(&g.reason));
            let when = if times > 1 {
                format!(
                    "{} times, {} – {}",
                    times,
                    local(g.at).format("%Y-%m-%d %H:%M:%S"),
                    local(last).format("%Y-%m-%d %H:%M:%S")
                )
            } else {
                local(g.at).format("%Y-%m-%d %H:%M:%S").to_string()
            };
            let request = match (times, g.request.as_deref()) {
                (1, Some(r)) => format!(", {}", short(Some(r))),
                _ => String::new(),
            };
            format!("⚠ {what} to {table} {status}: {reason} ({when}{request})")
        })
        .collect()
}

fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let (store, request) = match &args.request {
        Some(r) => {
            let (store, id) = open_request(&args.common.data_dir, r)?;
            (store, Some(id))
        }
        None => (open(&args.common.data_dir)?, None),
    };
    let (from, to) = window(&args)?;
    let mut statements = Vec::new();
    let (title, entries, gaps) = if let Some(id) = request {
        let entries = store.request_history(&id)?;
        statements = store.request_statements(&id)?;
        let gaps = store
            .gaps(0, u64::MAX, None)?
            .into_iter()
            .filter(|g| g.request.as_deref() == Some(id.as_str()))
            .collect();
        (
            format!("{}  ({})", short(Some(&id)), count(entries.len())),
            entries,
            gaps,
        )
    } else {
        let table = table_name(args.table.as_deref().unwrap_or_default());
        let Some(id) = &args.id else {
            bail!("give the row with --id (composite keys: --id 7,42 in key-column order)");
        };
        let key = key_parts(id);
        let entries = store.history(&table, &key, from, to)?;
        let gaps = store.gaps(from.unwrap_or(0), to.unwrap_or(u64::MAX), Some(&table))?;
        (
            format!("{table} id={}  ({})", key.join(","), count(entries.len())),
            entries,
            gaps,
        )
    };
    match args.common.format {
        Format::Json => {
            let mut out = json!({
                "mutations": entries.iter().map(entry_json).collect::<Vec<_>>(),
                "gaps": gaps.iter().map(gap_json).collect::<Vec<_>>(),
            });
            if args.request.is_some() {
                out["statements"] = statements
                    .iter()
                    .map(|st| {
                        json!({
                            "at": local(st.at).to_rfc3339(),
                            "duration_ms": st.duration as f64 / 1e6,
                            "sql": st.sql,
                            "tag": st.tag,
                            "sqlstate": st.sqlstate,
                            "error": st.error,
                        })
                    })
                    .collect();
            }
            out!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record([
                "at", "table", "key", "op", "request", "outcome", "before", "after",
            ])?;
            for e in &entries {
                let m = &e.mutation;
                let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
                w.write_record([
                    local(m.at).to_rfc3339(),
                    m.table.clone(),
                    m.key.as_ref().map(|k| k.join(",")).unwrap_or_default(),
                    m.op.to_string(),
                    m.request.clone().unwrap_or_default(),
                    outcome_str(e.outcome).to_string(),
                    json(&m.before),
                    json(&m.after),
                ])?;
            }
            w.flush()?;
        }
        Format::Text => {
            out!();
            out!("  {title}");
            out!();
            let rows: Vec<(String, String)> = entries
                .iter()
                .map(|e| {
                    let m = &e.mutation;
                    let mut what =
                        format!("{}  {:<6}  ", local(m.at).format("%Y-%m-%d %H:%M"), m.op);
                    if args.request.is_some() {
                        what.push_str(&format!(
                            "{} {}  ",
                            m.table,
                            m.key
                                .as_ref()
                                .map(|k| k.join(","))
                                .unwrap_or_else(|| "-".into())
                        ));
                    }
                    what.push_str(&change(m));
                    what.push_str(marker(e.outcome));
                    (what, short(m.request.as_deref()))
                })
                .collect();
            let width = rows
                .iter()
                .map(|(w, _)| w.chars().count())
                .max()
                .unwrap_or(0);
            for (what, req) in rows {
                let pad = width - what.chars().count();
                out!("  {what}{}  {req}", " ".repeat(pad));
            }
            if !gaps.is_empty() {
                out!();
                for line in gap_lines(&gaps) {
                    out!("  {line}");
                }
            }
            if !statements.is_empty() {
                out!();
                out!("  statements ({}):", statements.len());
                for st in &statements {
                    let outcome = match (&st.tag, &st.sqlstate) {
                        (Some(tag), _) => tag.clone(),
                        (None, Some(code)) => {
                            format!("✗ {code} {}", st.error.as_deref().unwrap_or_default())
                        }
                        (None, None) => "✗".to_string(),
                    };
                    out!(
                        "  {}  {:>8.1}ms  {}  → {outcome}",
                        local(st.at).format("%H:%M:%S%.3f"),
                        st.duration as f64 / 1e6,
                        one_line(&st.sql, 80)
                    );
                }
            }
            out!();
        }
    }
    Ok(())
}

pub(crate) use flux_read::cause::one_line;

fn count(n: usize) -> String {
    if n == 1 {
        "1 mutation".into()
    } else {
        format!("{n} mutations")
    }
}

fn blame_cmd(args: BlameArgs) -> anyhow::Result<()> {
    let store = open(&args.common.data_dir)?;
    let table = table_name(&args.table);
    let key = key_parts(&args.id);
    let history = store.history(&table, &key, None, None)?;
    if history.is_empty() {
        bail!(
            "no recorded changes for {table} id={}: check the table name and key (composite keys: --id 7,42)",
            key.join(",")
        );
    }
    let b = blame(&history);
    let gaps = store.gaps(0, u64::MAX, Some(&table))?;
    match args.common.format {
        Format::Json => {
            let out = json!({
                "table": table,
                "key": key,
                "exists": b.exists,
                "columns": b.columns.iter().map(|c| json!({
                    "column": c.column,
                    "value": c.value,
                    "request": c.written.as_ref().and_then(|w| w.request.clone()),
                    "at": c.written.as_ref().map(|w| local(w.at).to_rfc3339()),
                    "rolled_back": c.newest_attempt.as_ref().map(|a| json!({
                        "request": a.request,
                        "at": local(a.at).to_rfc3339(),
                        "value": a.value,
                        "outcome": outcome_str(a.outcome),
                    })),
                })).collect::<Vec<_>>(),
                "gaps": gaps.iter().map(gap_json).collect::<Vec<_>>(),
            });
            out!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record([
                "column",
                "value",
                "request",
                "at",
                "rolled_back_request",
                "rolled_back_at",
            ])?;
            for c in &b.columns {
                w.write_record([
                    c.column.clone(),
                    show(&c.value),
                    c.written
                        .as_ref()
                        .and_then(|w| w.request.clone())
                        .unwrap_or_default(),
                    c.written
                        .as_ref()
                        .map(|w| local(w.at).to_rfc3339())
                        .unwrap_or_default(),
                    c.newest_attempt
                        .as_ref()
                        .and_then(|a| a.request.clone())
                        .unwrap_or_default(),
                    c.newest_attempt
                        .as_ref()
                        .map(|a| local(a.at).to_rfc3339())
                        .unwrap_or_default(),
                ])?;
            }
            w.flush()?;
        }
        Format::Text => {
            out!();
            if !b.exists {
                out!("  {table} id={} was deleted; last values:", key.join(","));
            }
            let cw = b
                .columns
                .iter()
                .map(|c| c.column.chars().count())
                .max()
                .unwrap_or(0);
            let vw = b
                .columns
                .iter()
                .map(|c| show(&c.value).chars().count())
                .max()
                .unwrap_or(0);
            for c in &b.columns {
                let value = show(&c.value);
                let (req, at) = match &c.written {
                    Some(w) => (
                        short(w.request.as_deref()),
                        local(w.at).format("%H:%M:%S").to_string(),
                    ),
                    None => ("-".to_string(), "-".to_string()),
                };
                let mut line = format!("  {:<cw$}  {:<vw$}  {:<12}  {at}", c.column, value, req);
                if let Some(a) = &c.newest_attempt {
                    let what = match a.outcome {
                        Outcome::RolledBack => "✗ rolled back",
                        Outcome::Unknown => "? outcome unknown",
                        _ => "… in progress",
                    };
                    line.push_str(&format!(
                        "  {what}: {} → {} at {}",
                        short(a.request.as_deref()),
                        show(&a.value),
                        local(a.at).format("%H:%M:%S")
                    ));
                }
                out!("{}", line.trim_end());
            }
            if !gaps.is_empty() {
                out!();
                for line in gap_lines(&gaps) {
                    out!("  {line}");
                }
            }
            out!();
        }
    }
    Ok(())
}
