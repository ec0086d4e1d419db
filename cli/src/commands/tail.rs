//! `flux tail`: requests as they are recorded (`METHOD PATH STATUS DURATION req:ID`, the
//! root cause on a `└─` line), followed live until interrupted, or listed once with
//! `--no-follow`.

use crate::output::out;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use clap::Args;
use flux_read::summary::settled;
use flux_store::{RequestSummary, Store};
use serde_json::json;

use super::state::{local, one_line, open, short, Format};
use crate::render::duration;
use flux_recorder::nanos;

/// `flux tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start this long ago (e.g. 1h, 15m) and print each request's time; without it, the
    /// last --limit requests (10 when following).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,

    /// Keep only requests matching: status=500, status>=500 (also >, <, <=, !=),
    /// method=POST, path=/checkout (a trailing * matches a prefix). Repeatable; all must
    /// match.
    #[arg(long, value_name = "FIELD OP VALUE")]
    filter: Vec<String>,

    /// Only failed requests (status 5xx, or an error recorded).
    #[arg(long)]
    errors_only: bool,

    /// Only requests with a span of this name (a function or operation, e.g. stripe.charge).
    #[arg(long = "fn", value_name = "NAME")]
    function: Option<String>,

    /// At most this many requests (when not following: the newest N in the window).
    #[arg(long)]
    limit: Option<usize>,

    /// Print what is recorded and exit, instead of following new requests.
    #[arg(long)]
    no_follow: bool,

    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,

    /// Output format: text, or json (an array with --no-follow, one object per line when
    /// following).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// One `--filter` condition.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Status(Cmp, u16),
    Method(String),
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn parse_filter(s: &str) -> anyhow::Result<Filter> {
    let ops = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        ("!=", Cmp::Ne),
        ("=", Cmp::Eq),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
    ];
    let Some((at, op, cmp)) = ops
        .iter()
        .filter_map(|(op, cmp)| s.find(op).map(|i| (i, *op, *cmp)))
        .min_by_key(|(i, op, _)| (*i, usize::MAX - op.len()))
    else {
        bail!("--filter {s:?}: expected FIELD=VALUE, e.g. status=500, status>=500, method=POST, path=/checkout");
    };
    let (field, value) = (s[..at].trim(), s[at + op.len()..].trim());
    match field {
        "status" => {
            let n: u16 = value
                .parse()
                .map_err(|_| anyhow::anyhow!("--filter {s:?}: status must be a number"))?;
            Ok(Filter::Status(cmp, n))
        }
        "method" if cmp == Cmp::Eq => Ok(Filter::Method(value.to_ascii_uppercase())),
        "path" if cmp == Cmp::Eq => Ok(Filter::Path(value.to_string())),
        "method" | "path" => bail!("--filter {s:?}: {field} supports only ="),
        other => bail!("--filter {s:?}: unknown field {other:?} (status, method, path)"),
    }
}

impl Filter {
    fn matches(&self, r: &RequestSummary) -> bool {
        match self {
            Filter::Status(cmp, n) => r.status.is_some_and(|s| match cmp {
                Cmp::Eq => s == *n,
                Cmp::Ne => s != *n,
                Cmp::Lt => s < *n,
                Cmp::Le => s <= *n,
                Cmp::Gt => s > *n,
                Cmp::Ge => s >= *n,
            }),
            Filter::Method(m) => r
                .method
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(m)),
            Filter::Path(p) => r
                .path
                .as_deref()
                .is_some_and(|x| match p.strip_suffix('*') {
                    Some(prefix) => x.starts_with(prefix),
                    None => x == p,
                }),
        }
    }
}

fn failed(r: &RequestSummary) -> bool {
    flux_read::failure::request_failed(r)
}

struct Selection {
    filters: Vec<Filter>,
    errors_only: bool,
    function: Option<String>,
}

impl Selection {
    fn keep(&self, store: &Store, r: &RequestSummary) -> anyhow::Result<bool> {
        if self.errors_only && !failed(r) {
            return Ok(false);
        }
        if !self.filters.iter().all(|f| f.matches(r)) {
            return Ok(false);
        }
        if let Some(name) = &self.function {
            let spans = store.trace_spans(&r.id)?;
            let hit = spans.iter().any(|s| {
                s.name == *name
                    || s.attr_any(&["code.function", "code.function.name"]) == Some(name.as_str())
            });
            return Ok(hit);
        }
        Ok(true)
    }
}

/// Runs `flux tail`.
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let selection = Selection {
        filters: args
            .filter
            .iter()
            .map(|f| parse_filter(f))
            .collect::<anyhow::Result<_>>()?,
        errors_only: args.errors_only,
        function: args.function.clone(),
    };
    if args.format == Format::Csv {
        bail!("flux tail has no CSV layout: use --format text or --format json");
    }
    let store = open(&args.data_dir)?;
    let now = nanos(SystemTime::now());
    let from = args.since.map(|d| now.saturating_sub(d.as_nanos() as u64));
    let limit = args
        .limit
        .unwrap_or(if args.no_follow { usize::MAX } else { 10 });
    // Everything already recorded in the window, newest `limit` kept.
    let recorded = match from {
        Some(from) => store.requests_between(from, u64::MAX, usize::MAX)?,
        None if args.limit.is_none() && args.no_follow => {
            store.requests_between(0, u64::MAX, usize::MAX)?
        }
        None => store.latest_requests(limit.saturating_mul(20).max(200))?,
    };
    let mut kept = Vec::new();
    for r in recorded {
        if selection.keep(&store, &r)? {
            kept.push(r);
        }
    }
    let skip = kept.len().saturating_sub(limit);
    let kept: Vec<RequestSummary> = kept.into_iter().skip(skip).collect();
    let with_time = args.since.is_some();
    if args.no_follow {
        if args.format == Format::Json {
            let all: Vec<_> = kept.iter().map(summary_json).collect();
            out!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            kept.iter().for_each(|r| print_text(r, with_time));
        }
        return Ok(());
    }
    follow(&store, &selection, kept, args.format, with_time, now)
}

/// Polls the store for requests that settle after `now`, printing each once.
fn follow(
    store: &Store,
    selection: &Selection,
    shown: Vec<RequestSummary>,
    format: Format,
    with_time: bool,
    now: u64,
) -> anyhow::Result<()> {
    // A request is listed once its root span arrived, or after it has been quiet for
    // SETTLE (DB-only requests); an app's exporter batches for a few seconds.
    const SETTLE: u64 = 2_000_000_000;
    const LOOKBACK: u64 = 60_000_000_000;
    let print = |r: &RequestSummary| -> anyhow::Result<()> {
        if format == Format::Json {
            out!("{}", serde_json::to_string(&summary_json(r))?);
        } else {
            print_text(r, with_time);
        }
        Ok(())
    };
    let mut seen: HashSet<String> = HashSet::new();
    for r in &shown {
        print(r)?;
        seen.insert(r.id.clone());
    }
    let mut cursor = now.saturating_sub(LOOKBACK);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        store.catch_up()?;
        let now = nanos(SystemTime::now());
        let mut oldest_unsettled = None;
        for r in store.requests_between(cursor, u64::MAX, 10_000)? {
            if seen.contains(&r.id) {
                continue;
            }
            if !settled(&r, now, SETTLE) {
                oldest_unsettled.get_or_insert(r.start);
                continue;
            }
            seen.insert(r.id.clone());
            if selection.keep(store, &r)? {
                print(&r)?;
            }
        }
        // Requests start at most LOOKBACK before they are recorded; keep the cursor
        // there so late roots still show, and forget ids that fell out of it.
        cursor = oldest_unsettled
            .unwrap_or(now)
            .saturating_sub(LOOKBACK)
            .max(cursor);
        if seen.len() > 100_000 {
            seen.clear();
        }
    }
}

fn summary_json(r: &RequestSummary) -> serde_json::Value {
    json!({
        "request": r.id,
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "start": local(r.start).to_rfc3339(),
        "start_ns": r.start,
        "duration_ms": r.duration as f64 / 1e6,
        "error": r.error,
        "service": r.service,
        "name": r.name,
        "spans": r.spans,
        "db_only": !r.app,
    })
}

fn print_text(r: &RequestSummary, with_time: bool) {
    let time = if with_time {
        format!("{}  ", local(r.start).format("%H:%M:%S"))
    } else {
        String::new()
    };
    let (method, path) = match (&r.method, &r.path) {
        (Some(m), Some(p)) => (m.clone(), p.clone()),
        (Some(m), None) => (m.clone(), r.name.clone()),
        (None, _) if !r.app => ("DB".to_string(), r.name.clone()),
        (None, _) => ("-".to_string(), r.name.clone()),
    };
    let status = r
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    out!(
        "  {time}{method:<6} {path:<24} {status:>3}  {:>6}  {}",
        duration(r.duration),
        short(Some(&r.id))
    );
    if let Some(e) = &r.error {
        out!("  {}   └─ {}", " ".repeat(time.len()), one_line(e, 99));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(method: &str, path: &str, status: u16) -> RequestSummary {
        RequestSummary {
            id: "abcd".into(),
            method: Some(method.into()),
            path: Some(path.into()),
            status: Some(status),
            start: 0,
            duration: 0,
            error: None,
            service: None,
            name: String::new(),
            spans: 1,
            app: true,
        }
    }

    #[test]
    fn filters_parse_and_match() {
        let r = summary("POST", "/checkout", 500);
        for (f, expect) in [
            ("status=500", true),
            ("status>=500", true),
            ("status>500", false),
            ("status<500", false),
            ("status!=500", false),
            ("status<=500", true),
            ("method=post", true),
            ("path=/checkout", true),
            ("path=/check*", true),
            ("path=/users", false),
        ] {
            assert_eq!(parse_filter(f).unwrap().matches(&r), expect, "{f}");
        }
        for bad in ["status=abc", "color=red", "method>POST", "nothing"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
