//! `flux bug bisect`: the commit that broke a recorded request. The work is
//! `flux_replay::bisect`; this parses, wires and renders.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use flux_replay::bisect::{self, CommitVerdict, Event, Outcome, Request, Role, Tested};

use super::incident::runtime;
use crate::output::out;

/// `flux bug`.
#[derive(Debug, Subcommand)]
pub enum BugCommand {
    /// Find the commit that broke a recorded request: git bisect in a temporary worktree,
    /// each commit judged by replaying the request against it.
    Bisect(Box<BisectArgs>),
    /// The judge `git bisect run` calls for each commit (internal).
    #[command(hide = true)]
    BisectStep,
}

/// `flux bug bisect`.
#[derive(Debug, Args)]
pub struct BisectArgs {
    /// The failing request (id or unique prefix).
    #[arg(long)]
    request: String,

    /// A commit where the request passes (default: the `service.version` of the last
    /// passing request of the same route, else the first commit in the 14 days before).
    #[arg(long, conflicts_with = "since")]
    good: Option<String>,

    /// A commit where it fails (default: HEAD).
    #[arg(long, conflicts_with = "until")]
    bad: Option<String>,

    /// The good end is the first commit since this date (git's date formats).
    #[arg(long)]
    since: Option<String>,

    /// The bad end is the last commit on HEAD before this date.
    #[arg(long)]
    until: Option<String>,

    /// When a commit counts as bad: `status >= 500`, `span.NAME.duration > MS`,
    /// `span.NAME.error`, `spans-differ` (the span tree unlike the good end's, sibling
    /// order and framework middleware aside). Default: a failing status, an error on the
    /// request, or committed writes unlike the good end's.
    #[arg(long, value_name = "EXPR")]
    fail_if: Option<String>,

    #[command(flatten)]
    setup: super::incident::Setup,
}

/// Runs `flux bug …`: exit 0 when a first bad commit is found, 1 when none is, 2 for
/// usage, configuration or range errors.
pub fn run(command: BugCommand) -> ExitCode {
    let result = match command {
        BugCommand::Bisect(args) => run_bisect(*args),
        BugCommand::BisectStep => step(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn step() -> anyhow::Result<ExitCode> {
    let code = runtime()?.block_on(async {
        tokio::select! {
            code = bisect::step() => code,
            // Dropping the step stops the app it started; git stops the bisect.
            _ = tokio::signal::ctrl_c() => 130,
        }
    });
    Ok(ExitCode::from(code))
}

fn run_bisect(args: BisectArgs) -> anyhow::Result<ExitCode> {
    let text = args.setup.format == super::incident::ReplayFormat::Text;
    let req = Request {
        config: args.setup.config,
        cwd: std::env::current_dir().context("reading the current directory")?,
        data_dir: args.setup.data_dir.clone(),
        request: args.request.clone(),
        good: args.good,
        bad: args.bad,
        since: args.since,
        until: args.until,
        fail_if: args.fail_if,
        database: args.setup.database,
        max_delay: args.setup.max_delay,
        exe: std::env::current_exe().context("finding the flux executable")?,
        require_isolation: args.setup.require_isolation,
        strict: args.setup.strict,
    };
    flux_replay::criterion::criterion(req.fail_if.as_deref())?;
    let mut on_event = |e: Event| {
        if !text {
            return;
        }
        match e {
            Event::Range {
                commits,
                good,
                bad,
                containment,
            } => {
                out!();
                out!(
                    "  Bisecting {commits} commit{} ({}..{})…",
                    if commits == 1 { "" } else { "s" },
                    good.date,
                    bad.date
                );
                for line in super::incident::side_effects(&containment) {
                    out!("  {line}");
                }
                out!();
            }
            Event::Tested(t) => out!("{}", tested_line(&t)),
        }
    };
    let outcome = runtime()?.block_on(async {
        tokio::select! {
            r = bisect::bisect(req, &mut on_event) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(outcome) = outcome else {
        eprintln!("interrupted: the worktree and its bisect state were removed");
        return Ok(ExitCode::from(130));
    };
    let outcome = outcome?;
    if text {
        render(&outcome, &args.request);
    } else {
        out!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(if outcome.first_bad.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn tested_line(t: &Tested) -> String {
    let verdict = match t.verdict {
        CommitVerdict::Passes => "✔ passes".to_string(),
        CommitVerdict::Fails => "✗ fails".to_string(),
        CommitVerdict::Skipped => format!(
            "~ skipped ({})",
            t.reason
                .as_deref()
                .map(|r| r.split(" (").next().unwrap_or(r))
                .unwrap_or("")
        ),
    };
    let role = match t.role {
        Some(Role::GoodEnd) => "   (good end)",
        Some(Role::BadEnd) => "   (bad end)",
        None => "",
    };
    let why = match (t.verdict, &t.reason) {
        (CommitVerdict::Fails, Some(r)) if t.unlike_bad_end => {
            format!("   {r}   (not the bad end's failure)")
        }
        (CommitVerdict::Fails, Some(r)) => format!("   {r}"),
        _ => String::new(),
    };
    format!("  Testing {}…  {verdict}{role}{why}", t.short)
}

fn render(o: &Outcome, given: &str) {
    out!();
    match &o.first_bad {
        Some(c) => {
            out!("  FIRST BAD COMMIT");
            out!("  {}  {:?}", c.short, c.subject);
            out!("  {} by {}", c.date, c.author);
            if let (Some(good), Some(bad)) = (&o.good_run, &o.bad_run) {
                let id = given.strip_prefix("req:").unwrap_or(given);
                out!();
                out!("  → Compare before/after:");
                out!("     flux trace diff {good}:{id} {bad}:{id}");
            }
        }
        None if !o.candidates.is_empty() => {
            out!("  No single first bad commit: skipped commits leave it among");
            for c in &o.candidates {
                out!("    {c}");
            }
        }
        None => out!("  No first bad commit found."),
    }
    out!();
    let sum = |f: fn(&Tested) -> u64| o.tested.iter().map(f).sum::<u64>() as f64 / 1000.0;
    let (build, start, request) = (
        sum(|t| t.build_ms),
        sum(|t| t.app_start_ms),
        sum(|t| t.request_ms),
    );
    let total = o.elapsed_ms as f64 / 1000.0;
    out!(
        "  {} commits tested in {total:.1} s: builds {build:.1} s, app start-up {start:.1} s, the request {request:.1} s, Flux {:.1} s",
        o.tested.len(),
        (total - build - start - request).max(0.0)
    );
    out!();
}
