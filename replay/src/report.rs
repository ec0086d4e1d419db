//! What a replay run reports: each request as replayed and judged, what was left out,
//! what the restore did.

use std::path::PathBuf;

use flux_store::Nanos;
use serde::Serialize;

use crate::isolation::Containment;
use crate::judge::{Outcome, Verdict};

/// One replayed request.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The original request id.
    pub request: String,
    /// The replay's request id (its trace id), in the run's store.
    pub replay: String,
    /// Method.
    pub method: String,
    /// Target (path and query).
    pub target: String,
    /// Status now (`None`: no answer).
    pub status: Option<u16>,
    /// The original's status.
    pub original_status: Option<u16>,
    /// How long the app took now, ms.
    pub duration_ms: u64,
    /// The judgement.
    pub verdict: VerdictView,
    /// Outbound calls the stub had no answer for.
    pub misses: Vec<String>,
    /// Connections the sandbox refused (not HTTP), with the span that made them when the
    /// replay's record shows one.
    pub refused: Vec<String>,
    /// Stubbed calls answered from a span, without a body (a client that parses the
    /// answer sees an empty one): `METHOD host/path`.
    pub bodiless: Vec<String>,
    /// Differing values let pass as noise (generated ids, clocks; 0 with `--strict`).
    pub noise: usize,
    /// What the replay did (status, error, committed writes, response), for bisect's
    /// judge.
    #[serde(skip)]
    pub now: Outcome,
    /// The replay's root cause, whole (the verdict's is one line).
    pub error: Option<String>,
}

/// A verdict, for rendering and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum VerdictView {
    /// Passing.
    Passing {
        /// The original's failure, when it failed.
        was: Option<String>,
        /// The first difference from a passing original.
        differs: Option<String>,
    },
    /// Failed before and now.
    StillFailing {
        /// One-line root cause.
        cause: String,
    },
    /// Passed before, fails now.
    NowFailing {
        /// One-line root cause.
        cause: String,
    },
}

impl From<Verdict> for VerdictView {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Passing { was, differs } => VerdictView::Passing { was, differs },
            Verdict::StillFailing(cause) => VerdictView::StillFailing { cause },
            Verdict::NowFailing(cause) => VerdictView::NowFailing { cause },
        }
    }
}

impl VerdictView {
    /// Whether this counts as failing.
    pub fn failing(&self) -> bool {
        !matches!(self, VerdictView::Passing { .. })
    }
}

/// A request in the selection that was not replayed.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its id.
    pub request: String,
    /// What it was, as far as the record says.
    pub what: String,
    /// Why it was not replayed.
    pub reason: String,
}

/// The restore, as done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restored {
    /// Rows put back to their state at the start.
    pub restored: usize,
    /// Rows removed (they did not exist at the start).
    pub removed: usize,
    /// Tables whose rows could not be restored (no primary key recorded).
    pub not_restored: Vec<String>,
    /// Whether triggers and foreign keys were off during the restore.
    pub triggers_off: bool,
}

/// A finished replay.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's name (`RUN:ID` addresses its records).
    pub run: String,
    /// The run's store.
    pub store: PathBuf,
    /// The window, when one was given (ns since the epoch).
    pub from: Option<Nanos>,
    /// Its end.
    pub to: Option<Nanos>,
    /// Replayed requests, in recorded order.
    pub results: Vec<Replayed>,
    /// Selected but not replayed.
    pub skipped: Vec<Skipped>,
    /// The scratch restore.
    pub restored: Restored,
    /// The app's start-up time, ms.
    pub app_start_ms: u64,
    /// The whole replay, ms.
    pub elapsed_ms: u64,
    /// Where the app's output went.
    pub app_log: PathBuf,
    /// How the app's side effects were kept in.
    pub containment: Containment,
    /// Connections refused before any request was answered (the app starting up).
    pub refused: Vec<String>,
    /// The noise columns the comparison left out (`table.column` patterns; empty with
    /// `--strict`).
    pub noise_columns: Vec<String>,
}

impl Report {
    /// Replayed requests that pass now.
    pub fn passing(&self) -> usize {
        self.results.iter().filter(|r| !r.verdict.failing()).count()
    }

    /// Failed before and now.
    pub fn still_failing(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.verdict, VerdictView::StillFailing { .. }))
            .count()
    }

    /// Passed before, fail now.
    pub fn now_failing(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.verdict, VerdictView::NowFailing { .. }))
            .count()
    }

    /// Whether anything fails (exit status 1).
    pub fn failing(&self) -> bool {
        self.results.iter().any(|r| r.verdict.failing())
    }
}
