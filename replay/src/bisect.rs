//! `flux bug bisect` (DESIGN §7, Bisect): finds the commit that broke a recorded request.
//! In a temporary `git worktree` (the user's checkout, index, stash and branches are never
//! touched), both ends are checked first, then `git bisect start BAD GOOD` and `git bisect
//! run` with Flux as the judge: each commit is built (`[app] build`), its app started, the
//! request's rows restored and the request replayed (the replay engine in [`crate::run`],
//! each run stored under the commit's short hash), and judged: exit 0 (good), 1 (bad),
//! 125 (skip: the build or the app's start failed).
//!
//! The default judge is what the request did, not how it was instrumented: its status,
//! its root span's error, and its committed writes (table, operation, compared columns,
//! noise excluded) against the good end's. The span tree is an opt-in criterion
//! (`--fail-if spans-differ`), compared without sibling order and without spans that
//! have no application meaning (framework middleware and routers): a commit that adds a
//! middleware is not a bad commit.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flux_store::{Nanos, Store};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError};
use crate::criterion::{criterion, judge, Criterion, Observed};
use crate::git::{self, Commit, GitError, Worktree};
use crate::isolation::{Containment, Sandbox};
use crate::judge::Ignore;
use crate::run::{self, Options, ReplayError, Selection, VerdictView};

/// Why a bisect could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    /// `--fail-if`.
    #[error(transparent)]
    Criterion(#[from] crate::criterion::CriterionError),
    /// `flux.toml`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// git.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A replay could not run (the scratch database, the record).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The range, the request or `--fail-if`.
    #[error("{0}")]
    Usage(String),
    /// Files of the bisect's own (state, log, temp dirs).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BisectError {
    let what = what.into();
    move |source| BisectError::Io { what, source }
}

/// How a tested commit was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitVerdict {
    /// The request passes at this commit.
    Passes,
    /// It fails.
    Fails,
    /// It could not be tested (the build failed, the app did not start).
    Skipped,
}

impl CommitVerdict {
    /// What `git bisect run` is answered: 0 good, 1 bad, 125 skip.
    pub fn exit_code(self) -> u8 {
        match self {
            CommitVerdict::Passes => 0,
            CommitVerdict::Fails => 1,
            CommitVerdict::Skipped => 125,
        }
    }
}

/// An end of the range the user gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The commit that passed.
    #[serde(rename = "good end")]
    GoodEnd,
    /// The commit that fails.
    #[serde(rename = "bad end")]
    BadEnd,
}

/// A tested commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tested {
    /// The commit.
    pub commit: String,
    /// Its short hash (also its replay run's name).
    pub short: String,
    /// How it was judged.
    pub verdict: CommitVerdict,
    /// Why it fails or was skipped.
    pub reason: Option<String>,
    /// One of the ends the user gave, or none for bisect's own picks.
    pub role: Option<Role>,
    /// What the replay showed (absent when skipped).
    #[serde(skip)]
    pub observed: Option<Observed>,
    /// `[app] build`'s time, ms.
    pub build_ms: u64,
    /// The app's start-up, ms.
    pub app_start_ms: u64,
    /// The app answering the request, ms.
    pub request_ms: u64,
    /// Testing this commit, all told, ms.
    pub total_ms: u64,
    /// It fails, but not as the bad end does (a different reason).
    #[serde(default)]
    pub unlike_bad_end: bool,
    /// Stubbed calls answered from a span without a body (`METHOD host/path`): a
    /// failure after one may be the app parsing an empty answer.
    #[serde(default)]
    pub bodiless: Vec<String>,
}

/// What the judge of one commit needs; written to a file for `git bisect run`'s child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepState {
    /// `flux.toml` (the user's, used for every commit).
    pub config: PathBuf,
    /// Overrides `[replay] database`.
    pub database: Option<String>,
    /// The recording's data dir.
    pub data_dir: PathBuf,
    /// The request.
    pub request: String,
    /// The app's directory relative to the repository's top.
    pub app_dir: PathBuf,
    /// How to judge.
    pub criterion: Criterion,
    /// The stub's delay cap, ms.
    pub max_delay_ms: u64,
    /// Where each tested commit is appended (JSON lines).
    pub log: PathBuf,
    /// Refuse to replay without a network namespace.
    #[serde(default)]
    pub require_isolation: bool,
    /// Compare every value (`--strict`).
    #[serde(default)]
    pub strict: bool,
}

/// The environment variable naming the step state file.
pub const STATE_ENV: &str = "FLUX_BISECT_STATE";

/// Tests the commit checked out in `worktree`: build, replay the request, judge.
/// `Err` only for what must stop the bisect (the scratch database, the record).
pub async fn test_commit(state: &StepState, worktree: &Path) -> Result<Tested, BisectError> {
    let began = std::time::Instant::now();
    let hash = git::head(worktree)?;
    let c = git::commit(worktree, &hash)?;
    let mut config = config::load(&state.config)?;
    if let Some(db) = &state.database {
        config.replay.database = db.clone();
    }
    let app_dir = worktree.join(&state.app_dir);
    let mut build_ms = 0;
    let tested =
        |verdict: CommitVerdict, reason: Option<String>, observed, times: (u64, u64, u64)| Tested {
            commit: c.hash.clone(),
            short: c.short.clone(),
            verdict,
            reason,
            role: None,
            observed,
            build_ms: times.0,
            app_start_ms: times.1,
            request_ms: times.2,
            total_ms: began.elapsed().as_millis() as u64,
            unlike_bad_end: false,
            bodiless: Vec::new(),
        };
    if let Some(build) = &config.app.build {
        let building = std::time::Instant::now();
        let log = state.log.with_extension(format!("build-{}.log", c.short));
        let out = std::fs::File::create(&log).map_err(io("creating the build log"))?;
        let err = out.try_clone().map_err(io("creating the build log"))?;
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(build)
            .current_dir(&app_dir)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(io("running [app] build"))?;
        build_ms = building.elapsed().as_millis() as u64;
        if !status.success() {
            return Ok(tested(
                CommitVerdict::Skipped,
                Some(format!("build failed ({status}; {})", log.display())),
                None,
                (build_ms, 0, 0),
            ));
        }
    }
    let mut options = Options::new(
        config,
        state.data_dir.clone(),
        Selection {
            requests: vec![state.request.clone()],
            ..Selection::default()
        },
    );
    options.app_dir = Some(app_dir);
    options.run = Some(c.short.clone());
    options.max_delay = Duration::from_millis(state.max_delay_ms);
    options.require_isolation = state.require_isolation;
    options.strict = state.strict;
    let user_ignore = options.config.replay.ignore.clone();
    let report = match run::replay(options, &mut |_| {}).await {
        Ok(r) => r,
        Err(ReplayError::App(e)) => {
            return Ok(tested(
                CommitVerdict::Skipped,
                Some(format!(
                    "the app did not start: {}",
                    first_line(&e.to_string())
                )),
                None,
                (build_ms, 0, 0),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let Some(r) = report.results.first() else {
        return Err(BisectError::Usage(
            "the request was not replayed (see flux incident replay --request)".into(),
        ));
    };
    let store = Store::open_reader(&run::run_store(&state.data_dir, &c.short)).map_err(|e| {
        BisectError::Replay(ReplayError::RunStore {
            path: report.store.clone(),
            source: e,
        })
    })?;
    let tree = flux_read::trace(&store, &r.replay).map_err(|e| {
        BisectError::Replay(ReplayError::RunStore {
            path: report.store.clone(),
            source: e,
        })
    })?;
    // A commit passes when the request succeeds (a 4xx where the good end answered 2xx
    // is a regression even though the request did not fail).
    let passing = !r.verdict.failing() && r.status.is_some_and(flux_read::failure::success_status);
    let cause = match &r.verdict {
        VerdictView::StillFailing { cause } | VerdictView::NowFailing { cause } => {
            Some(cause.clone())
        }
        VerdictView::Passing { .. } => None,
    };
    let seen = Observed::new(&tree, r.status, passing, cause, r.now.writes.clone());
    let ignore = Ignore::new(user_ignore.iter().map(String::as_str))
        .with_noise(report.noise_columns.iter().map(String::as_str));
    let times = (build_ms, report.app_start_ms, r.duration_ms);
    let mut t = match judge(&state.criterion, &seen, &ignore) {
        Ok(()) => tested(CommitVerdict::Passes, None, Some(seen), times),
        Err(why) => tested(CommitVerdict::Fails, Some(why), Some(seen), times),
    };
    t.bodiless = r.bodiless.clone();
    Ok(t)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The judge `git bisect run` calls (`flux bug bisect-step`): tests the checked-out
/// commit, appends it to the log, and answers git: 0 good, 1 bad, 125 skip, 255 to stop.
pub async fn step() -> u8 {
    let state = match std::env::var_os(STATE_ENV)
        .ok_or_else(|| format!("{STATE_ENV} is not set: this is run by flux bug bisect"))
        .and_then(|p| std::fs::read(&p).map_err(|e| e.to_string()))
        .and_then(|b| serde_json::from_slice::<StepState>(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 255;
        }
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let result = test_commit(&state, &cwd).await;
    let (line, code) = match result {
        Ok(t) => (
            serde_json::to_string(&t).unwrap_or_default(),
            t.verdict.exit_code(),
        ),
        Err(e) => (
            serde_json::json!({ "error": e.to_string() }).to_string(),
            255,
        ),
    };
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&state.log)
        .and_then(|mut f| writeln!(f, "{line}"));
    if appended.is_err() {
        return 255;
    }
    code
}

/// The range and how to judge, as the user gave them.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// flux.toml.
    pub config: Option<PathBuf>,
    /// Where to look for flux.toml when `config` is not given.
    pub cwd: PathBuf,
    /// The recording's data dir.
    pub data_dir: PathBuf,
    /// The request id (or prefix).
    pub request: String,
    /// `--good`.
    pub good: Option<String>,
    /// `--bad`.
    pub bad: Option<String>,
    /// `--since` (git date).
    pub since: Option<String>,
    /// `--until` (git date).
    pub until: Option<String>,
    /// `--fail-if`.
    pub fail_if: Option<String>,
    /// `--database`.
    pub database: Option<String>,
    /// The stub's delay cap.
    pub max_delay: Duration,
    /// The `flux` executable git runs as the judge.
    pub exe: PathBuf,
    /// `--require-isolation`.
    pub require_isolation: bool,
    /// `--strict`.
    pub strict: bool,
}

/// What happened as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// The range: how many commits, the good and bad ends.
    Range {
        /// Commits in `good..bad`.
        commits: usize,
        /// The good end.
        good: Commit,
        /// The bad end.
        bad: Commit,
        /// How each commit's app is kept from live services.
        containment: Containment,
    },
    /// A commit was tested.
    Tested(Tested),
}

/// A finished bisect.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The request.
    pub request: String,
    /// The good end.
    pub good: Commit,
    /// The bad end.
    pub bad: Commit,
    /// Every tested commit in test order.
    pub tested: Vec<Tested>,
    /// The first bad commit, when git isolated one.
    pub first_bad: Option<Commit>,
    /// The candidates, when skipped commits left it ambiguous.
    pub candidates: Vec<String>,
    /// The run of the nearest passing commit (for `trace diff`).
    pub good_run: Option<String>,
    /// The run of the first bad commit.
    pub bad_run: Option<String>,
    /// The whole bisect, ms.
    pub elapsed_ms: u64,
    /// How each commit's app was kept from live services.
    pub containment: Containment,
}

/// Runs a bisect; `events` sees each step as it finishes.
pub async fn bisect(
    req: Request,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<Outcome, BisectError> {
    let began = std::time::Instant::now();
    let config_path = match &req.config {
        Some(p) => p.clone(),
        None => config::find(&req.cwd)?,
    };
    let config_path = std::fs::canonicalize(&config_path)
        .map_err(io(format!("reading {}", config_path.display())))?;
    let config = config::load(&config_path)?;
    let repo = git::toplevel(config.dir()).map_err(|_| {
        BisectError::Usage(format!(
            "{} is not in a git repository: bisect needs the app's history",
            config.dir().display()
        ))
    })?;
    let app_dir = config
        .dir()
        .strip_prefix(&repo)
        .map(Path::to_path_buf)
        .unwrap_or_default();

    let store = Store::open_reader(&req.data_dir).map_err(|source| ReplayError::Store {
        path: req.data_dir.clone(),
        source,
    })?;
    let request = run::resolve_request(&store, &req.request)?;
    let exchange = store
        .exchange(&request)
        .map_err(|source| ReplayError::Store {
            path: req.data_dir.clone(),
            source,
        })?
        .ok_or_else(|| {
            BisectError::Usage(format!(
                "request {request} has no recorded input (it did not come through flux proxy --http-listen): it cannot be replayed"
            ))
        })?;

    // The range.
    let bad = match (&req.bad, &req.until) {
        (Some(rev), _) => git::resolve(&repo, rev)?,
        (None, Some(until)) => git::last_before(&repo, "HEAD", until)?.ok_or_else(|| {
            BisectError::Usage(format!("no commit on HEAD before --until {until}"))
        })?,
        (None, None) => git::resolve(&repo, "HEAD")?,
    };
    let good = match (&req.good, &req.since) {
        (Some(rev), _) => git::resolve(&repo, rev)?,
        (None, Some(since)) => git::first_after(&repo, &bad, since)?.ok_or_else(|| {
            BisectError::Usage(format!("no commit since --since {since} on {bad}"))
        })?,
        (None, None) => default_good(&store, &repo, &bad, &exchange)?,
    };
    if good == bad || !git::is_ancestor(&repo, &good, &bad)? {
        return Err(BisectError::Usage(format!(
            "the good end {} is not an ancestor of the bad end {}: give --good/--since and --bad/--until so that good comes first",
            short(&good),
            short(&bad)
        )));
    }
    let good_c = git::commit(&repo, &good)?;
    let bad_c = git::commit(&repo, &bad)?;
    // Each commit's replay makes its own namespace; whether one can be made is the same
    // for all of them, so it is known (and, with --require-isolation, demanded) up front.
    let containment = match Sandbox::create() {
        Ok(_) => Containment::Namespace,
        Err(e) if req.require_isolation => {
            return Err(BisectError::Replay(ReplayError::Isolation(e)))
        }
        Err(e) => Containment::Environment { why: e.to_string() },
    };
    events(Event::Range {
        commits: git::count(&repo, &good, &bad)?,
        good: good_c.clone(),
        bad: bad_c.clone(),
        containment: containment.clone(),
    });

    let criterion = criterion(req.fail_if.as_deref())?;
    let temp = tempfile::Builder::new()
        .prefix("flux-bisect-")
        .tempdir()
        .map_err(io("creating the bisect's temporary directory"))?;
    let log = temp.path().join("tested.jsonl");
    let mut state = StepState {
        config: config_path,
        database: req.database.clone(),
        data_dir: req.data_dir.clone(),
        request: request.clone(),
        app_dir,
        criterion,
        max_delay_ms: req.max_delay.as_millis() as u64,
        log: log.clone(),
        require_isolation: req.require_isolation,
        strict: req.strict,
    };
    let tree = Worktree::add(&repo, &temp.path().join("tree"), &good)?;
    let mut tested = Vec::new();

    // Both ends first: bisecting noise helps no one.
    let mut good_t = test_commit(&state, &tree.path).await?;
    good_t.role = Some(Role::GoodEnd);
    events(Event::Tested(good_t.clone()));
    if good_t.verdict != CommitVerdict::Passes {
        // A failure after a call answered without a body is most likely the app
        // parsing that empty answer: an older commit would fail the same way.
        let advice = match good_t.bodiless.first() {
            Some(call) if good_t.verdict == CommitVerdict::Fails => format!(
                "the stub answered {call} from its span, which keeps no body, and the app may have failed parsing the empty answer: give that call a body in flux.toml's [stubs] (\"{call}\" = {{ status = 200, body = '…' }})"
            ),
            _ => "give an older --good or --since".to_string(),
        };
        return Err(BisectError::Usage(format!(
            "the good end {} {} ({}): {advice}",
            good_c.short,
            if good_t.verdict == CommitVerdict::Fails {
                "fails too"
            } else {
                "could not be tested"
            },
            good_t.reason.clone().unwrap_or_default()
        )));
    }
    if let Some(seen) = &good_t.observed {
        match &mut state.criterion {
            Criterion::Writes(expected) => *expected = Some(seen.writes.clone()),
            Criterion::Spans(expected) => *expected = Some(seen.signature.clone()),
            Criterion::FailIf(_) => {}
        }
    }
    tested.push(good_t);
    tree.checkout(&bad)?;
    let mut bad_t = test_commit(&state, &tree.path).await?;
    bad_t.role = Some(Role::BadEnd);
    events(Event::Tested(bad_t.clone()));
    if bad_t.verdict != CommitVerdict::Fails {
        return Err(BisectError::Usage(format!(
            "the bad end {} {}: nothing to bisect (is the request failing at {}? give --bad or --fail-if)",
            bad_c.short,
            if bad_t.verdict == CommitVerdict::Passes { "passes" } else { "could not be tested" },
            bad_c.short
        )));
    }
    let bad_reason = bad_t.reason.clone();
    tested.push(bad_t);

    // git's bisect, Flux judging each commit it picks.
    let state_file = temp.path().join("state.json");
    std::fs::write(
        &state_file,
        serde_json::to_vec(&state)
            .map_err(|e| io("writing the bisect state")(std::io::Error::other(e)))?,
    )
    .map_err(io("writing the bisect state"))?;
    git::git(&tree.path, &["bisect", "start", &bad, &good])?;
    let exe = req.exe.display().to_string();
    let mut child = tokio::process::Command::new("git")
        .arg("-C")
        .arg(&tree.path)
        .args(["bisect", "run", &exe, "bug", "bisect-step"])
        .env(STATE_ENV, &state_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group: stopping the bisect interrupts git and the step it runs (which
        // stops its app) together.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(io("running git bisect run"))?;
    let mut interrupt = Interrupt(crate::app::ProcessGroup::led_by(&child));
    let out_task = tokio::spawn(read_all(child.stdout.take()));
    let err_task = tokio::spawn(read_all(child.stderr.take()));
    let mut seen_lines = 0;
    let mut step_error = None;
    let mut follow = |tested: &mut Vec<Tested>, step_error: &mut Option<String>| {
        let Ok(f) = std::fs::File::open(&log) else {
            return;
        };
        for line in std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .skip(seen_lines)
        {
            seen_lines += 1;
            if let Ok(mut t) = serde_json::from_str::<Tested>(&line) {
                t.unlike_bad_end = t.verdict == CommitVerdict::Fails && t.reason != bad_reason;
                events(Event::Tested(t.clone()));
                tested.push(t);
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                *step_error = v["error"].as_str().map(str::to_string);
            }
        }
    };
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(io("waiting for git bisect run"))?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => follow(&mut tested, &mut step_error),
        }
    };
    // Finished on its own: nothing to interrupt (its process group id may be reused).
    interrupt.0.forget();
    follow(&mut tested, &mut step_error);
    let out = out_task.await.unwrap_or_default();
    let err = err_task.await.unwrap_or_default();
    if let Some(e) = step_error {
        return Err(BisectError::Usage(format!("testing a commit failed: {e}")));
    }
    // What git concluded, from its refs: its messages are for people.
    let (first_bad, candidates) = match git::bisect_result(&tree.path)? {
        Some(git::Bisected::First(hash)) => (Some(hash), Vec::new()),
        Some(git::Bisected::AnyOf(hashes)) => (None, hashes),
        Some(git::Bisected::Unfinished) | None => (None, Vec::new()),
    };
    // Its output was read only so the pipe never fills.
    drop(out);
    if first_bad.is_none() && candidates.is_empty() && !status.success() {
        return Err(BisectError::Usage(format!(
            "git bisect run failed ({status}): {}",
            err.trim().lines().last().unwrap_or("")
        )));
    }
    let first_bad = first_bad.map(|h| git::commit(&repo, &h)).transpose()?;
    let bad_run = first_bad.as_ref().map(|c| c.short.clone());
    // The passing commit nearest the first bad one: its parent when tested, else the
    // newest tested ancestor that passed.
    let good_run = first_bad.as_ref().and_then(|fb| {
        let passes: Vec<&Tested> = tested
            .iter()
            .filter(|t| t.verdict == CommitVerdict::Passes)
            .collect();
        passes
            .iter()
            .filter(|t| git::is_ancestor(&repo, &t.commit, &fb.hash).unwrap_or(false))
            .max_by_key(|t| git::count(&repo, &good, &t.commit).unwrap_or(0))
            .map(|t| t.short.clone())
    });
    drop(tree);
    Ok(Outcome {
        request,
        good: good_c,
        bad: bad_c,
        tested,
        first_bad,
        candidates,
        good_run,
        bad_run,
        elapsed_ms: began.elapsed().as_millis() as u64,
        containment,
    })
}

/// Everything a child's pipe says, until it closes.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut text).await;
    }
    text
}

/// Interrupts `git bisect run`'s process group when the bisect ends early (Ctrl-C, an
/// error): the step running then stops its app and exits, and git gives up.
struct Interrupt(crate::app::ProcessGroup);

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.0.signal(rustix::process::Signal::INT);
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(7).collect()
}

/// The default good end: the commit named by `service.version` on the last passing
/// request of the same route before this one, when it resolves to an ancestor of `bad`;
/// else the first commit in the 14 days before the request.
pub fn default_good(
    store: &Store,
    repo: &Path,
    bad: &str,
    exchange: &flux_store::Exchange,
) -> Result<String, BisectError> {
    const DAY: Nanos = 86_400 * 1_000_000_000;
    let read = |source| ReplayError::Store {
        path: store.path().to_path_buf(),
        source,
    };
    let since = exchange.at.saturating_sub(14 * DAY);
    let path = exchange.target.split('?').next().unwrap_or("");
    let earlier = store
        .requests_between(since, exchange.at, usize::MAX)
        .map_err(read)?;
    for summary in earlier.iter().rev().filter(|s| s.id != exchange.request) {
        let Some(x) = store.exchange(&summary.id).map_err(read)? else {
            continue;
        };
        let same_route = x.method == exchange.method && x.target.split('?').next() == Some(path);
        let passed = x.status.is_some_and(flux_read::failure::success_status)
            && !flux_read::failure::request_failed(summary);
        if !same_route || !passed {
            continue;
        }
        let version = store
            .trace_spans(&summary.id)
            .map_err(read)?
            .iter()
            .find_map(|s| s.attr("service.version").map(str::to_string));
        if let Some(v) = version {
            if let Ok(hash) = git::resolve(repo, &v) {
                if hash != bad && git::is_ancestor(repo, &hash, bad).unwrap_or(false) {
                    return Ok(hash);
                }
            }
        }
        break;
    }
    let secs = since / 1_000_000_000;
    git::first_after(repo, bad, &format!("@{secs}"))?.ok_or_else(|| {
        BisectError::Usage(
            "no commit in the 14 days before the request: give --good or --since".into(),
        )
    })
}
