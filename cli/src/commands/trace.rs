//! `flux trace ID` (a request's span tree with durations, the failing span marked, its
//! statements inline) and `flux trace diff A B` (two requests aligned span by span).

use crate::output::out;
use crate::render::duration;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use flux_read::diff::{diff, DiffRow, SpanFacts, Verdict};
use flux_read::failure::{failure_message, is_failed};
use flux_read::Tree;
use flux_store::{HistoryEntry, SpanSource, Store};
use serde_json::{json, Value};

use super::state::{change, entry_json, local, open_request, short, Format};

/// `flux trace`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TraceArgs {
    /// The request id (or a unique prefix of 4+ characters; `req:` optional).
    #[arg(required = true)]
    request: Option<String>,

    #[command(subcommand)]
    command: Option<TraceCommand>,

    #[command(flatten)]
    common: Common,
}

/// `flux trace diff`.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Two requests' spans aligned by their path in the tree, with a verdict per span, and
    /// their data changes where they differ.
    Diff {
        /// The first request (before).
        a: String,
        /// The second request (after).
        b: String,
        #[command(flatten)]
        common: Common,
    },
    /// Step through a request span by span in the terminal: each span's input, output and
    /// time, its attributes, and the rows its statements changed (↓ next, ↑ prev, e
    /// expand, q quit).
    Debug {
        /// The request id (or a unique prefix; `RUN:ID` for a replay's).
        request: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Where the record is and how to print.
#[derive(Debug, Args)]
pub struct Common {
    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Output format: text (default) or json.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

impl Common {
    fn resolve(&self, outer: &Common) -> anyhow::Result<(PathBuf, Format)> {
        let dir = self.data_dir.clone().or_else(|| outer.data_dir.clone());
        let Some(dir) = dir else {
            anyhow::bail!("--data-dir (or FLUX_DATA_DIR) is required");
        };
        let format = self.format.or(outer.format).unwrap_or(Format::Text);
        if format == Format::Csv {
            anyhow::bail!("flux trace has no CSV layout: use --format text or --format json");
        }
        Ok((dir, format))
    }
}

/// Runs `flux trace` or `flux trace diff`.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    match (&args.command, &args.request) {
        (Some(TraceCommand::Diff { a, b, common }), _) => {
            let (dir, format) = common.resolve(&args.common)?;
            run_diff(&dir, a, b, format)
        }
        (Some(TraceCommand::Debug { request, common }), _) => {
            let (dir, _) = common.resolve(&args.common)?;
            super::debug::run(&dir, request)
        }
        (None, Some(request)) => {
            let (dir, format) = args.common.resolve(&args.common)?;
            run_trace(&dir, request, format)
        }
        (None, None) => anyhow::bail!("give a request id: flux trace ID"),
    }
}

/// Tree-drawing prefixes (`├─ `, `│  └─ `) for rows given in depth-first order by depth.
pub(crate) fn tree_prefixes(depths: &[usize]) -> Vec<String> {
    // A row is the last of its siblings when no later row at its depth comes before a
    // shallower one.
    let last: Vec<bool> = (0..depths.len())
        .map(|i| {
            let d = depths[i];
            !depths[i + 1..]
                .iter()
                .take_while(|&&e| e >= d)
                .any(|&e| e == d)
        })
        .collect();
    let mut open: Vec<bool> = Vec::new(); // per level: does a later sibling follow?
    depths
        .iter()
        .zip(&last)
        .map(|(&d, &is_last)| {
            open.truncate(d);
            let mut p = String::new();
            if d > 0 {
                for &more in open.iter().skip(1) {
                    p.push_str(if more { "│  " } else { "   " });
                }
                p.push_str(if is_last { "└─ " } else { "├─ " });
            }
            open.resize(d, false);
            open.push(!is_last);
            p
        })
        .collect()
}

/// Attributes (a span's or an event's) as a JSON object.
fn attributes_json(attributes: &[(String, String)]) -> Value {
    attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn span_json(tree: &Tree, i: usize, depth: usize) -> Value {
    let s = &tree.nodes[i].span;
    json!({
        "id": s.id,
        "parent": s.parent,
        "name": s.name,
        "depth": depth,
        "source": s.source,
        "kind": s.kind,
        "start": local(s.start).to_rfc3339(),
        "start_ns": s.start,
        "duration_ms": s.duration() as f64 / 1e6,
        "error": is_failed(s).then(|| failure_message(s)),
        "service": s.service,
        "attributes": attributes_json(&s.attributes),
        "events": s.events.iter().map(|e| json!({
            "name": e.name,
            "at_ns": e.at,
            "attributes": attributes_json(&e.attributes),
        })).collect::<Vec<_>>(),
    })
}

/// The request `given` names (`ID` or `RUN:ID`), its record and its span tree.
fn load(dir: &Path, given: &str) -> anyhow::Result<(Store, String, Tree)> {
    let (store, id) = open_request(dir, given)?;
    let tree = flux_read::trace(&store, &id)?;
    Ok((store, id, tree))
}

fn run_trace(dir: &Path, given: &str, format: Format) -> anyhow::Result<()> {
    let (store, id, tree) = load(dir, given)?;
    let store = &store;
    // Spans the route's passing requests run after the point where this one failed.
    let skipped = flux_read::skipped::skipped(store, &id, &tree)?;
    if format == Format::Json {
        let out = json!({
            "request": id,
            "summary": store.request(&id)?,
            "spans": tree.walk().into_iter().map(|(i, d)| span_json(&tree, i, d)).collect::<Vec<_>>(),
            "skipped": skipped.iter().map(|s| json!({
                "name": s.name,
                "path": s.path,
                "parent": tree.nodes[s.parent].span.id,
                "seen_in": s.seen_in,
            })).collect::<Vec<_>>(),
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    out!();
    if tree.nodes.is_empty() {
        out!("  no spans recorded for {}", short(Some(&id)));
        out!();
        return Ok(());
    }
    let rows = rows_with_skipped(&tree, &skipped);
    let depths: Vec<usize> = rows.iter().map(|&(_, d)| d).collect();
    let prefixes = tree_prefixes(&depths);
    let name = |row: &Row| match row {
        Row::Span(i) => tree.nodes[*i].span.name.as_str(),
        Row::Skipped(k) => skipped[*k].name.as_str(),
    };
    let label = |row: &Row, p: &str| format!("{p}{}", name(row));
    let width = rows
        .iter()
        .zip(&prefixes)
        .map(|((r, _), p)| label(r, p).chars().count())
        .max()
        .unwrap_or(0)
        .min(64);
    let cause = tree.root_cause();
    for ((row, _), p) in rows.iter().zip(&prefixes) {
        let i = match row {
            Row::Span(i) => *i,
            Row::Skipped(_) => {
                out!(
                    "  {:<width$} {:>7}  — skipped (upstream error)",
                    truncate(&label(row, p), width),
                    ""
                );
                continue;
            }
        };
        let s = &tree.nodes[i].span;
        let mut line = format!(
            "  {:<width$} {:>7}",
            truncate(&label(row, p), width),
            duration(s.duration())
        );
        if s.source == SpanSource::Proxy {
            if let Some(rows) = s.attr("db.rows") {
                line.push_str(&format!(
                    "  {rows} row{}",
                    if rows == "1" { "" } else { "s" }
                ));
            }
        }
        if Some(i) == cause {
            // The readable one-liner, and what was recorded when it says more.
            let reading = flux_read::cause::read(&tree, i);
            line.push_str(&format!("  ← {}", reading.text));
            if reading.raw != reading.text && reading.raw != "error" {
                line.push_str(&format!("  ({})", one_line_raw(&reading.raw)));
            }
        } else if is_failed(s) {
            line.push_str("  ✗");
        }
        out!("{line}");
    }
    out!();
    Ok(())
}

/// A row of `flux trace`: a span of the request, or one it skipped.
enum Row {
    Span(usize),
    Skipped(usize),
}

/// The tree's spans depth first, each skipped span after its would-be siblings.
fn rows_with_skipped(tree: &Tree, skipped: &[flux_read::skipped::Skipped]) -> Vec<(Row, usize)> {
    let walk = tree.walk();
    let mut out = Vec::with_capacity(walk.len() + skipped.len());
    // Close each finished subtree: append the skipped children of the spans it ends.
    let mut open: Vec<(usize, usize)> = Vec::new(); // (node, depth)
    let flush = |open: &mut Vec<(usize, usize)>, depth: usize, out: &mut Vec<(Row, usize)>| {
        while open.last().is_some_and(|&(_, d)| d >= depth) {
            let Some((node, d)) = open.pop() else { break };
            for (k, s) in skipped.iter().enumerate() {
                if s.parent == node {
                    out.push((Row::Skipped(k), d + 1));
                }
            }
        }
    };
    for (i, d) in walk {
        flush(&mut open, d, &mut out);
        out.push((Row::Span(i), d));
        open.push((i, d));
    }
    flush(&mut open, 0, &mut out);
    out
}

/// A recorded error on one line, shortened.
fn one_line_raw(s: &str) -> String {
    flux_read::cause::one_line(s, 100)
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Same => "— same",
        Verdict::Faster => "— faster",
        Verdict::Slower => "— slower",
        Verdict::Changed => "✗ changed",
        Verdict::Missing => "✗ missing",
        Verdict::New => "✗ new",
    }
}

fn side(f: &Option<SpanFacts>) -> String {
    match f {
        None => "—".to_string(),
        Some(f) => match &f.error {
            Some(e) if flux_read::failure::is_timeout(e) => "→ timeout".to_string(),
            Some(_) => format!("{} ✗", duration(f.duration)),
            None => duration(f.duration),
        },
    }
}

/// A change's identity and effect, to compare two requests' data changes.
fn change_line(e: &HistoryEntry) -> String {
    let m = &e.mutation;
    let key = m
        .key
        .as_ref()
        .map(|k| k.join(","))
        .unwrap_or_else(|| "-".into());
    let fate = super::why::fate(e.outcome);
    format!("{}.id={key} {} {}{fate}", m.table, m.op, change(m))
}

/// Changes only one side made (compared by table, key, op, effect and fate; the ids and
/// times naturally differ).
fn changes_differ(a: &[HistoryEntry], b: &[HistoryEntry]) -> (Vec<String>, Vec<String>) {
    let la: Vec<String> = a.iter().map(change_line).collect();
    let lb: Vec<String> = b.iter().map(change_line).collect();
    let only_a = la.iter().filter(|l| !lb.contains(l)).cloned().collect();
    let only_b = lb.iter().filter(|l| !la.contains(l)).cloned().collect();
    (only_a, only_b)
}

fn run_diff(dir: &Path, a: &str, b: &str, format: Format) -> anyhow::Result<()> {
    let (sa, ida, ta) = load(dir, a)?;
    let (sb, idb, tb) = load(dir, b)?;
    let rows: Vec<DiffRow> = diff(&ta, &tb);
    let ca = sa.request_history(&ida)?;
    let cb = sb.request_history(&idb)?;
    let (only_a, only_b) = changes_differ(&ca, &cb);
    if format == Format::Json {
        let out = json!({
            "before": ida,
            "after": idb,
            "columns": [labels(a, b).0, labels(a, b).1],
            "spans": rows,
            "data_changes": {
                "before": ca.iter().map(entry_json).collect::<Vec<_>>(),
                "after": cb.iter().map(entry_json).collect::<Vec<_>>(),
                "only_before": only_a,
                "only_after": only_b,
            },
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let depths: Vec<usize> = rows.iter().map(|r| r.depth).collect();
    let names: Vec<String> = rows
        .iter()
        .zip(tree_prefixes(&depths))
        .map(|(r, lead)| format!("{lead}{}", r.name))
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let (la, lb) = labels(a, b);
    out!();
    out!(
        "  {:<width$}  {:<14} {:<14}    {} → {}",
        "SPAN",
        la,
        lb,
        short(Some(&ida)),
        short(Some(&idb))
    );
    out!("  {}", "─".repeat(width + 44));
    for (r, name) in rows.iter().zip(&names) {
        out!(
            "  {:<width$}  {:<14} {:<14} {}",
            truncate(name, width),
            side(&r.before),
            side(&r.after),
            verdict_text(r.verdict)
        );
    }
    if !only_a.is_empty() || !only_b.is_empty() {
        out!();
        out!("  DATA CHANGES that differ");
        for l in &only_a {
            out!("  - {} {l}", short(Some(&ida)));
        }
        for l in &only_b {
            out!("  + {} {l}", short(Some(&idb)));
        }
    }
    out!();
    Ok(())
}

/// Column names for `trace diff A B`: `BEFORE`/`AFTER` within one record; with a run
/// (`RUN:ID`), `COMMIT abc1234` for a bisect's runs (named by commit), `RUN r1` for a
/// replay's, `RECORDED` for the recording itself.
fn labels(a: &str, b: &str) -> (String, String) {
    let run = |g: &str| {
        g.strip_prefix("req:")
            .unwrap_or(g)
            .split_once(':')
            .map(|(r, _)| r.to_string())
    };
    let name = |r: Option<String>| match r {
        None => "RECORDED".to_string(),
        Some(r) if r.len() >= 7 && r.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("COMMIT {r}")
        }
        Some(r) => format!("RUN {r}"),
    };
    match (run(a), run(b)) {
        (None, None) => ("BEFORE".into(), "AFTER".into()),
        (x, y) => (name(x), name(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_columns_name_commits_and_runs() {
        assert_eq!(
            labels("550e8400", "4f9a3b2c"),
            ("BEFORE".into(), "AFTER".into())
        );
        assert_eq!(
            labels("abc1234:550e8400", "def4567:550e8400"),
            ("COMMIT abc1234".into(), "COMMIT def4567".into())
        );
        assert_eq!(
            labels("550e8400", "r1:550e8400"),
            ("RECORDED".into(), "RUN r1".into())
        );
    }

    #[test]
    fn prefixes_draw_the_tree() {
        let got = tree_prefixes(&[0, 1, 2, 2, 1, 2, 0]);
        assert_eq!(got, ["", "├─ ", "│  ├─ ", "│  └─ ", "└─ ", "   └─ ", ""]);
    }
}
