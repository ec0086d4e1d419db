//! `flux incident replay`: sends recorded requests to the current code on a scratch
//! database and says which pass now. The work is `flux_replay::run`; this parses, wires
//! and renders.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{Local, NaiveDate, TimeZone};
use clap::{Args, Subcommand};
use flux_replay::config;
use flux_replay::isolation::{Containment, BYPASSING_CLIENTS};
use flux_replay::run::{self, Options, Progress, Report, Selection, VerdictView};
use indicatif::{ProgressBar, ProgressStyle};

use super::state::short;
use crate::output::out;
use crate::render::duration;

/// `flux incident`.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Replay recorded requests (a time window, or --request IDs) against the current
    /// code on a scratch database, with outbound calls stubbed from the recording, and
    /// judge each against the original.
    Replay(ReplayArgs),
}

/// `flux incident replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The window, local time: 14:00..14:05 (today, or --date), 2026-03-10T14:00..2026-03-10T14:05,
    /// -30m.. (until now), ..now (everything recorded).
    #[arg(required_unless_present = "requests", allow_hyphen_values = true)]
    window: Option<String>,

    /// A request to replay (id or unique prefix; repeatable), with or without a window.
    #[arg(long = "request", value_name = "ID")]
    requests: Vec<String>,

    /// Only requests of this route: 'POST /checkout' (the recorded path or the app's route).
    #[arg(long)]
    route: Option<String>,

    /// Only requests that failed when recorded.
    #[arg(long)]
    failed_only: bool,

    /// The day bare times of day fall on (YYYY-MM-DD; default today).
    #[arg(long)]
    date: Option<NaiveDate>,

    #[command(flatten)]
    setup: Setup,

    /// Requests sent at once (1: one after the other, in recorded order).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,

    /// How long the app gets to become ready.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

/// What replay and bisect share: the configuration, the record, the scratch database.
#[derive(Debug, Args)]
pub struct Setup {
    /// flux.toml (default: the nearest in this directory or its parents).
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The scratch database, instead of flux.toml's [replay] database.
    #[arg(long, env = "FLUX_REPLAY_DATABASE")]
    pub database: Option<String>,

    /// Cap on a stubbed call's recorded delay, and on how long a recorded timeout is held.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_delay: Duration,

    /// Output format: text (default) or json.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReplayFormat,

    /// Refuse to run unless the app can run in its own network namespace, where no
    /// outbound connection can reach a live service (needs root or CAP_SYS_ADMIN +
    /// CAP_NET_ADMIN, and the ip and nft commands).
    #[arg(long)]
    pub require_isolation: bool,

    /// Compare every value: nothing counts as noise (sequence and volatile-default
    /// columns, columns set from now()/gen_random_uuid(), generated ids and timestamps in
    /// responses). [replay] ignore still applies.
    #[arg(long)]
    pub strict: bool,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    Text,
    Json,
}

/// Runs `flux incident …`: exit 0 when nothing fails, 1 when something does, 2 when the
/// replay could not run (usage, configuration, the scratch database, the app).
pub fn run(command: IncidentCommand) -> ExitCode {
    let IncidentCommand::Replay(args) = command;
    match replay(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.setup.config {
        Some(p) => p.clone(),
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            config::find(&cwd)?
        }
    };
    let mut config = config::load(&path)?;
    if let Some(db) = &args.setup.database {
        config.replay.database = db.clone();
    }
    let window = args
        .window
        .as_deref()
        .map(|w| flux_read::window::parse(w, args.date, Local::now()))
        .transpose()?;
    let route = args
        .route
        .as_deref()
        .map(|r| {
            r.trim()
                .split_once(' ')
                .map(|(m, p)| (m.trim().to_ascii_uppercase(), p.trim().to_string()))
                .with_context(|| format!("--route {r:?}: expected 'METHOD /path'"))
        })
        .transpose()?;
    if !args.setup.data_dir.join("CURRENT").is_file() {
        anyhow::bail!(
            "no Flux record in {}: point --data-dir (or FLUX_DATA_DIR) at the directory `flux proxy --data-dir` writes",
            args.setup.data_dir.display()
        );
    }
    let selection = Selection {
        window,
        requests: args
            .requests
            .iter()
            .map(|r| r.strip_prefix("req:").unwrap_or(r).to_string())
            .collect(),
        route,
        failed_only: args.failed_only,
    };
    let mut options = Options::new(config, args.setup.data_dir.clone(), selection);
    options.concurrency = args.concurrency.max(1);
    options.max_delay = args.setup.max_delay;
    options.ready_timeout = args.ready_timeout;
    options.require_isolation = args.setup.require_isolation;
    options.strict = args.setup.strict;
    let scratch = run::hide_password(&options.config.replay.database);
    let text = args.setup.format == ReplayFormat::Text;

    let runtime = runtime()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let window_text = window.map(|w| {
        format!(
            " from {}–{}",
            Local.timestamp_nanos(w.from as i64).format("%H:%M:%S"),
            Local.timestamp_nanos(w.to as i64).format("%H:%M:%S")
        )
    });
    let mut on_progress = |p: Progress| match p {
        Progress::Selected {
            requests,
            containment,
        } => {
            if text {
                bar.suspend(|| {
                    out!();
                    out!(
                        "  Replaying {requests} request{}{}…",
                        if requests == 1 { "" } else { "s" },
                        window_text.as_deref().unwrap_or("")
                    );
                    out!();
                    for line in side_effects(&containment) {
                        out!("  {line}");
                    }
                    out!("  Database writes: on ({scratch}) · mutation log: on");
                    out!();
                });
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message("restoring rows and starting the app…");
        }
        Progress::Ready => bar.set_message("the app is ready; replaying…"),
        Progress::Sent { done, of } => bar.set_message(format!("replayed {done}/{of}…")),
        Progress::Collecting => bar.set_message("collecting the replays' spans…"),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run::replay(options, &mut on_progress) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    bar.finish_and_clear();
    // Dropping the replay (above) stopped the app's process group and Flux's services.
    let report = match outcome {
        Some(r) => r?,
        None => {
            eprintln!("interrupted: the app and the replay's services were stopped");
            return Ok(ExitCode::from(130));
        }
    };
    if text {
        render(&report);
    } else {
        let mut value = serde_json::to_value(&report)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("replayed".into(), report.results.len().into());
            obj.insert("passing".into(), report.passing().into());
            obj.insert("still_failing".into(), report.still_failing().into());
            obj.insert("now_failing".into(), report.now_failing().into());
            obj.insert("resolved".into(), (!report.failing()).into());
        }
        out!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(if report.failing() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The header's lines on side effects: what contained them, or, loudly, that nothing did.
pub(crate) fn side_effects(containment: &Containment) -> Vec<String> {
    match containment {
        Containment::Namespace => vec![
            "Side-effects: contained · the app runs in its own network namespace: every outbound connection goes to the stub (HTTP answered from the recording, anything else refused), DNS answered by Flux · FLUX_REPLAY=1".into(),
        ],
        Containment::Environment { why } => vec![
            "Side-effects: NOT CONTAINED · outbound HTTP is stubbed only for clients that honour HTTP(S)_PROXY, NODE_USE_ENV_PROXY or Java's proxy properties · FLUX_REPLAY=1".into(),
            format!("  !! these may reach live services: {BYPASSING_CLIENTS}"),
            format!("  !! no network namespace: {why} (--require-isolation refuses to run like this)"),
        ],
    }
}

/// Replay and bisect run the replay proxy, gateway and stub in-process next to the app:
/// two workers.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn render(report: &Report) {
    let width = report
        .results
        .iter()
        .map(|r| r.method.len() + 1 + r.target.chars().count())
        .max()
        .unwrap_or(0)
        .min(48);
    for r in &report.results {
        let mark = if r.verdict.failing() { "✗" } else { "✔" };
        let what = format!("{} {}", r.method, r.target);
        let status = r
            .status
            .map_or_else(|| "---".to_string(), |s| s.to_string());
        let was = match &r.verdict {
            VerdictView::Passing { was: Some(w), .. } => format!("   ← was {w}"),
            _ => String::new(),
        };
        out!(
            "  {mark}  {}  {what:<width$}  {status}  {}{was}",
            short(Some(&r.request)),
            duration(r.duration_ms * 1_000_000)
        );
        match &r.verdict {
            VerdictView::StillFailing { cause } => out!("     └─ Still failing: {cause}"),
            VerdictView::NowFailing { cause } => out!("     └─ Now failing: {cause}"),
            VerdictView::Passing {
                differs: Some(d), ..
            } => out!("     ≠ {d}"),
            VerdictView::Passing { .. } => {}
        }
        for miss in &r.misses {
            out!("     ↳ no recording or [stubs] fixture for {miss} (answered 502)");
        }
        for refused in &r.refused {
            out!("     ⊘ refused {refused}");
        }
        if r.verdict.failing() && !r.bodiless.is_empty() {
            out!(
                "     ↳ answered from a span, which keeps no body: {}; if the app parses that answer, give it one in flux.toml's [stubs]",
                r.bodiless.join(", ")
            );
        }
    }
    for refused in &report.refused {
        out!("  ⊘ refused while the app started: {refused}");
    }
    for s in &report.skipped {
        out!(
            "  ·  {}  {:<width$}  skipped: {}",
            short(Some(&s.request)),
            s.what,
            s.reason
        );
    }
    out!();
    let mut summary = format!(
        "  {} replayed · {} passing",
        report.results.len(),
        report.passing()
    );
    if report.still_failing() > 0 || report.now_failing() == 0 {
        summary.push_str(&format!(" · {} still failing", report.still_failing()));
    }
    if report.now_failing() > 0 {
        summary.push_str(&format!(" · {} now failing", report.now_failing()));
    }
    if !report.skipped.is_empty() {
        summary.push_str(&format!(" · {} skipped", report.skipped.len()));
    }
    let noise: usize = report.results.iter().map(|r| r.noise).sum();
    if noise > 0 {
        summary.push_str(&format!(
            " · {noise} value{} treated as noise (clocks, generated ids; --strict compares them)",
            if noise == 1 { "" } else { "s" }
        ));
    }
    out!("{summary}");
    if !report.failing() {
        out!("  ✔ incident resolved");
    }
    out!();
    let restored = &report.restored;
    out!(
        "  Scratch database: {} row{} restored to the window's start, {} removed{}",
        restored.restored,
        if restored.restored == 1 { "" } else { "s" },
        restored.removed,
        if restored.not_restored.is_empty() {
            String::new()
        } else {
            format!(
                "; not restored (no primary key): {}",
                restored.not_restored.join(", ")
            )
        }
    );
    out!(
        "  Run {}: app ready in {}, replay took {} · app output: {}",
        report.run,
        duration(report.app_start_ms * 1_000_000),
        duration(report.elapsed_ms * 1_000_000),
        report.app_log.display()
    );
    // The most telling pair: a failure, else a fixed failure, else a difference.
    let pick = report
        .results
        .iter()
        .find(|r| r.verdict.failing())
        .or_else(|| {
            report
                .results
                .iter()
                .find(|r| matches!(r.verdict, VerdictView::Passing { was: Some(_), .. }))
        })
        .or_else(|| {
            report.results.iter().find(|r| {
                matches!(
                    r.verdict,
                    VerdictView::Passing {
                        differs: Some(_),
                        ..
                    }
                )
            })
        })
        .or_else(|| report.results.first());
    if let Some(r) = pick {
        let a: String = r.request.chars().take(8).collect();
        out!("  → Compare: flux trace diff {a} {}:{a}", report.run);
    }
}
