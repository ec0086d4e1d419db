//! The replay driver (`flux incident replay`, DESIGN §7): select the recorded requests,
//! restore the rows they wrote on the scratch database, start a replay-mode proxy, its
//! OTLP receiver, a gateway and the outbound stub, start the app against them, send each
//! recorded input again with a fresh trace id, and judge each answer against the
//! original. Everything started here is stopped when [`replay`] returns or its future is
//! dropped (an error, Ctrl-C).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flux_store::{Exchange, Nanos, Outcome as Fate, Store, StoreError};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError};
use crate::config::Config;
use crate::dns::SharedNames;
use crate::isolation::{self, Containment, IsolationError, Sandbox};
use crate::judge::{self, Ignore, Outcome, Verdict, Write};
use crate::noise::Catalog;
use crate::outbound::{Outbound, OutboundError};
use crate::restore::{self, RestoreError};
use crate::stub::{Matcher, Refusal};
use flux_read::window::Window;

/// Which recorded requests to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Requests that arrived in this window.
    pub window: Option<Window>,
    /// These requests (ids or unique prefixes), in addition.
    pub requests: Vec<String>,
    /// Only `METHOD /path` (the recorded target's path, or the app's route).
    pub route: Option<(String, String)>,
    /// Only requests whose original failed.
    pub failed_only: bool,
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// `flux.toml`.
    pub config: Config,
    /// The recording proxy's data dir.
    pub data_dir: PathBuf,
    /// What to replay.
    pub selection: Selection,
    /// Where the app runs from (default: `flux.toml`'s directory; bisect: its worktree).
    pub app_dir: Option<PathBuf>,
    /// The run's name (default: the short hash of a clean git checkout, else `r1`, `r2`…).
    pub run: Option<String>,
    /// Requests sent at once (1: strictly in recorded order).
    pub concurrency: usize,
    /// Cap on a stubbed call's recorded delay, and on how long a recorded timeout is held.
    pub max_delay: Duration,
    /// How long the app gets to become ready.
    pub ready_timeout: Duration,
    /// Refuse to run without a network namespace for the app (`--require-isolation`).
    pub require_isolation: bool,
    /// Compare everything: no value is noise (`--strict`).
    pub strict: bool,
}

impl Options {
    /// Defaults for everything but the configuration, data dir and selection.
    pub fn new(config: Config, data_dir: PathBuf, selection: Selection) -> Self {
        Self {
            config,
            data_dir,
            selection,
            app_dir: None,
            run: None,
            concurrency: 1,
            max_delay: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(60),
            require_isolation: false,
            strict: false,
        }
    }
}

/// Why a replay could not run. Every one is the user's to fix (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the record.
    #[error("reading the record in {path}: {source}")]
    Store {
        /// The data dir.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The run's own store.
    #[error("creating the replay's store in {path}: {source}")]
    RunStore {
        /// The run's directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// An id that names no request, or several.
    #[error(transparent)]
    Request(#[from] flux_read::address::AddressError),
    /// Nothing selected has a recorded input.
    #[error("{0}")]
    Nothing(String),
    /// The scratch database is the recorded one.
    #[error("[replay] database {url} is the database `flux proxy` records in front of ({addr}, database {database}): replay writes to it, so give a scratch copy instead (e.g. `createdb -T {database} {database}_scratch`, or a restored backup)")]
    Refused {
        /// The configured URL, password removed.
        url: String,
        /// The recorded upstream.
        addr: String,
        /// The database.
        database: String,
    },
    /// `[replay] database` is not a URL Flux reads.
    #[error("[replay] database {url}: {reason}")]
    Database {
        /// The configured URL, password removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting to the scratch database.
    #[error("connecting to the scratch database {url}: {source}")]
    Connect {
        /// The configured URL, password removed.
        url: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// Restoring rows.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Starting the app.
    #[error(transparent)]
    App(#[from] AppError),
    /// The outbound stub.
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    /// `--require-isolation`, and no network namespace could be made; or setting one up
    /// failed.
    #[error("side effects cannot be contained: {0}")]
    Isolation(#[from] IsolationError),
    /// Binding a port, creating a directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the driver reports while it runs (for a progress line).
#[derive(Debug, Clone)]
pub enum Progress {
    /// Requests selected; restoring and starting the app.
    Selected {
        /// How many will be replayed.
        requests: usize,
        /// How the app's side effects are kept in.
        containment: Containment,
    },
    /// The app is ready.
    Ready,
    /// One more request answered.
    Sent {
        /// Answered so far.
        done: usize,
        /// Of.
        of: usize,
    },
    /// Waiting for the replays' spans.
    Collecting,
}

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

/// A recorded request chosen for replay.
struct Chosen {
    id: String,
    exchange: Exchange,
    original: Outcome,
    /// Whether the original's record has the app's own spans (then the replay's should).
    app_spans: bool,
    matcher: Matcher,
}

/// Replays `options.selection`, reporting progress to `progress`.
pub async fn replay(
    options: Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, ReplayError> {
    let began = Instant::now();
    let config = &options.config;
    let store = Store::open_reader(&options.data_dir).map_err(|source| ReplayError::Store {
        path: options.data_dir.clone(),
        source,
    })?;
    let (chosen, skipped, start) = select(&store, &options)?;
    let (sandbox, containment) = match Sandbox::create() {
        Ok(s) => (Some(s), Containment::Namespace),
        Err(e) if options.require_isolation => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "no network namespace for the app: side effects are NOT contained");
            (None, Containment::Environment { why: e.to_string() })
        }
    };
    progress(Progress::Selected {
        requests: chosen.len(),
        containment: containment.clone(),
    });

    // The scratch database: never the recorded one; rows back to their state at `start`.
    let scratch = &config.replay.database;
    let shown = hide_password(scratch);
    let pg: tokio_postgres::Config = scratch.parse().map_err(|e| ReplayError::Database {
        url: shown.clone(),
        reason: format!("{e}"),
    })?;
    refuse_recorded(&store, &pg, &shown)?;
    let ids: Vec<String> = chosen.iter().map(|c| c.id.clone()).collect();
    let plan = restore::plan(&store, &ids, start).map_err(RestoreError::Store)?;
    let (mut client, connection) =
        pg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| ReplayError::Connect {
                url: shown.clone(),
                source,
            })?;
    let conn = tokio::spawn(connection);
    let applied = restore::apply(&mut client, &plan).await?;
    let catalog = if options.strict {
        Catalog::default()
    } else {
        Catalog::read(&client).await
    };
    drop(client);
    conn.abort();

    // The run's store and the services the app talks to.
    let app_dir = options
        .app_dir
        .clone()
        .unwrap_or_else(|| config.dir().to_path_buf());
    let replays = options.data_dir.join("replays");
    let run = match &options.run {
        Some(r) => r.clone(),
        None => run_name(&app_dir, &replays),
    };
    let run_dir = replays.join(&run);
    if run_dir.exists() {
        // The same commit replayed again: its newest replay replaces the older one.
        std::fs::remove_dir_all(&run_dir).map_err(|source| ReplayError::Io {
            what: format!("replacing the earlier replay {}", run_dir.display()),
            source,
        })?;
    }
    std::fs::create_dir_all(&run_dir).map_err(|source| ReplayError::Io {
        what: format!("creating {}", run_dir.display()),
        source,
    })?;
    let mut services = Services::start(&run_dir, scratch).await?;
    let names: SharedNames = Arc::default();
    let outbound = match &sandbox {
        Some(sb) => Outbound::start_in(&run_dir, sb, names.clone()).await?,
        None => Outbound::start(&run_dir).await?,
    };
    outbound.pass_through(services.otlp);
    let port = app::free_port().map_err(|source| ReplayError::Io {
        what: "picking a port for the app".into(),
        source,
    })?;
    if let Some(sb) = &sandbox {
        sb.prepare(
            &[services.proxy, services.otlp],
            port,
            names,
            &services.shutdown,
        )?;
    }

    let mut env = vec![
        ("DATABASE_URL".to_string(), services.database_url.clone()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://{}", services.otlp),
        ),
        ("FLUX_REPLAY".to_string(), "1".to_string()),
    ];
    // Spans arrive sooner (the replay waits for them); the app's own setting wins.
    if !config.app.env.contains_key("OTEL_BSP_SCHEDULE_DELAY") {
        env.insert(
            0,
            ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
        );
    }
    if sandbox.is_none() {
        env.extend(isolation::proxy_environment(
            outbound.addr,
            services.otlp,
            config.app.env.get("JAVA_TOOL_OPTIONS").map(String::as_str),
        ));
    }
    let ca = outbound.ca_file.display().to_string();
    for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
        env.push((var.to_string(), ca.clone()));
    }
    let app_log = run_dir.join("app.log");
    let app_began = Instant::now();
    let app = app::start(
        config,
        &app_dir,
        &env,
        &app_log,
        options.ready_timeout,
        port,
        sandbox.as_ref(),
    )
    .await?;
    let app_start_ms = app_began.elapsed().as_millis() as u64;
    progress(Progress::Ready);

    let gateway = services.gateway(&app.url).await?;
    let sent = send_all(&chosen, gateway, &outbound, &options, progress).await;
    progress(Progress::Collecting);
    wait_for_records(&services.store, &chosen, &sent).await;
    outbound.settle().await;
    let outside = outbound.refused_outside();
    app.stop(Duration::from_secs(5)).await;

    // Noise: the catalog's columns, and columns the original's or the replay's
    // statements assign volatile expressions.
    let ignore = Ignore::new(config.replay.ignore.iter().map(String::as_str));
    let mut columns = Vec::new();
    let ignore = if options.strict {
        ignore
    } else {
        columns = catalog.columns.clone();
        let originals = chosen.iter().map(|c| (&store, c.id.as_str()));
        let replays = sent
            .iter()
            .map(|s| (services.store.as_ref(), s.trace.as_str()));
        for (record, request) in originals.chain(replays) {
            for statement in record.request_statements(request).unwrap_or_default() {
                columns.extend(catalog.assigned(&statement.sql));
            }
        }
        ignore.with_noise(columns.iter().map(String::as_str))
    };
    let mut results = Vec::with_capacity(chosen.len());
    for (c, s) in chosen.iter().zip(&sent) {
        let now =
            outcome_of(&services.store, &s.trace, s.status, s.body.as_ref()).map_err(|source| {
                ReplayError::RunStore {
                    path: run_dir.clone(),
                    source,
                }
            })?;
        let error = match &s.failure {
            Some(f) => Some(f.clone()),
            None => now.error.clone(),
        };
        let now = Outcome {
            error: error.clone().map(|e| one_line(&e)),
            window: Some((s.at, s.at + s.elapsed.as_nanos() as u64)),
            ..now
        };
        let (verdict, noise) = judge::judge(&c.original, &now, &ignore);
        // Made during the request, or after it answered and before the next was sent.
        let after = outside
            .iter()
            .filter(|(last, _)| last.as_deref() == Some(s.trace.as_str()))
            .map(|(_, r)| (r, " after the request answered"));
        let refused = s
            .refused
            .iter()
            .map(|r| (r, ""))
            .chain(after)
            .map(
                |(r, when)| match refusing_span(&services.store, &s.trace, r) {
                    Some(span) => format!("{r}{when} (span {span})"),
                    None => format!("{r}{when}"),
                },
            )
            .collect();
        results.push(Replayed {
            request: c.id.clone(),
            replay: s.trace.clone(),
            method: c.exchange.method.clone(),
            target: c.exchange.target.clone(),
            status: s.status,
            original_status: c.exchange.status,
            duration_ms: s.elapsed.as_millis() as u64,
            verdict: verdict.into(),
            misses: s.misses.clone(),
            refused,
            bodiless: s.bodiless.clone(),
            noise,
            now,
            error,
        });
    }
    // Which replay re-sent which recorded request, in the run's record (so `RUN:ID`
    // finds a replay by the original's id).
    let pairs: Vec<flux_store::Record> = results
        .iter()
        .map(|r| {
            flux_store::Record::Replayed(flux_store::model::Replayed {
                original: r.request.clone(),
                replay: r.replay.clone(),
            })
        })
        .collect();
    let written = services.store.write(&pairs, true);
    services.stop().await;
    written.map_err(|source| ReplayError::RunStore {
        path: run_dir.join("store"),
        source,
    })?;
    Ok(Report {
        run,
        store: run_dir,
        from: options.selection.window.map(|w| w.from),
        to: options.selection.window.map(|w| w.to),
        results,
        skipped,
        restored: Restored {
            restored: applied.restored,
            removed: applied.removed,
            not_restored: plan.not_restored,
            triggers_off: applied.triggers_off,
        },
        app_start_ms,
        elapsed_ms: began.elapsed().as_millis() as u64,
        app_log,
        containment,
        refused: outside
            .into_iter()
            .filter(|(last, _)| last.is_none())
            .map(|(_, r)| r.to_string())
            .collect(),
        noise_columns: columns,
    })
}

/// The requests to replay (recorded order), the ones left out, and the restore's point
/// in time.
fn select(
    store: &Store,
    options: &Options,
) -> Result<(Vec<Chosen>, Vec<Skipped>, Nanos), ReplayError> {
    let read = |source| ReplayError::Store {
        path: options.data_dir.clone(),
        source,
    };
    let sel = &options.selection;
    let mut ids: Vec<String> = Vec::new();
    if let Some(w) = sel.window {
        for r in store
            .requests_between(w.from, w.to, usize::MAX)
            .map_err(read)?
        {
            ids.push(r.id);
        }
    }
    for given in &sel.requests {
        ids.push(resolve_request(store, given)?);
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));

    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for id in ids {
        let summary = store.request(&id).map_err(read)?;
        let what = summary
            .as_ref()
            .map(|s| {
                format!(
                    "{} {}",
                    s.method.as_deref().unwrap_or(""),
                    s.path.as_deref().unwrap_or(&s.name)
                )
                .trim()
                .to_string()
            })
            .unwrap_or_default();
        let Some(exchange) = store.exchange(&id).map_err(read)? else {
            skipped.push(Skipped {
                request: id,
                what,
                reason: "no recorded input (it did not come through flux proxy --http-listen)"
                    .into(),
            });
            continue;
        };
        let path = exchange.target.split('?').next().unwrap_or("");
        if let Some((method, route)) = &sel.route {
            let route_matches = path == route
                || summary
                    .as_ref()
                    .and_then(|s| s.path.as_deref())
                    .is_some_and(|p| p == route);
            if !exchange.method.eq_ignore_ascii_case(method) || !route_matches {
                continue;
            }
        }
        let what = format!("{} {}", exchange.method, path);
        if !exchange.replayable() {
            skipped.push(Skipped {
                request: id,
                what,
                reason: "its body was over --http-body-limit or did not arrive whole".into(),
            });
            continue;
        }
        let body = exchange
            .response_complete
            .then_some(&exchange.response_body);
        let original = outcome_of(store, &id, exchange.status, body).map_err(read)?;
        let original = Outcome {
            error: original.error.map(|e| one_line(&e)),
            window: Some((exchange.at, exchange.at + exchange.duration)),
            ..original
        };
        if sel.failed_only && original.passing() {
            continue;
        }
        let spans = store.trace_spans(&id).map_err(read)?;
        chosen.push(Chosen {
            app_spans: summary.as_ref().is_some_and(|s| s.app && s.spans > 1),
            matcher: Matcher::new(&spans, options.config.stubs.clone(), options.max_delay),
            id,
            exchange,
            original,
        });
    }
    chosen.sort_by_key(|c| c.exchange.at);
    if chosen.is_empty() {
        let why = if skipped.is_empty() {
            "no recorded request matches (flux tail --since … lists what was recorded)".to_string()
        } else {
            format!(
                "none of the {} selected requests can be replayed: {}",
                skipped.len(),
                skipped
                    .first()
                    .map(|s| s.reason.as_str())
                    .unwrap_or_default()
            )
        };
        return Err(ReplayError::Nothing(why));
    }
    let start = match sel.window {
        Some(w) => w.from,
        None => chosen.iter().map(|c| c.exchange.at).min().unwrap_or(0),
    };
    Ok((chosen, skipped, start))
}

/// The recorded request an id or unique prefix (`req:` optional) names.
pub fn resolve_request(store: &Store, given: &str) -> Result<String, ReplayError> {
    Ok(flux_read::address::resolve(store, given)?)
}

/// What a request did, from a store: the status, the root cause when it failed, its
/// committed writes, and its JSON response.
fn outcome_of(
    store: &Store,
    id: &str,
    status: Option<u16>,
    body: Option<&Vec<u8>>,
) -> Result<Outcome, StoreError> {
    let why = flux_read::why::why(store, id)?;
    let failed = flux_read::failure::answer_failed(status) || why.root_failed;
    // A handled failure inside a passing request (a retried call) is not the request's.
    let error = failed
        .then(|| why.cause.as_ref().map(|c| c.message.clone()))
        .flatten();
    let writes = why
        .changes
        .iter()
        .filter(|h| h.outcome == Fate::Committed)
        .map(|h| Write {
            table: h.mutation.table.clone(),
            op: h.mutation.op.to_string(),
            row: h
                .mutation
                .after
                .clone()
                .or_else(|| h.mutation.before.clone())
                .unwrap_or(Value::Null),
        })
        .collect();
    let response = body.and_then(|b| serde_json::from_slice(b).ok());
    Ok(Outcome {
        status,
        error,
        writes,
        response,
        window: None,
    })
}

/// Causes in a report are one line of at most this many characters.
const CAUSE_WIDTH: usize = 160;

fn one_line(s: &str) -> String {
    flux_read::cause::one_line(s, CAUSE_WIDTH)
}

/// Refuses a scratch database that is one the recording proxy relayed sessions to.
fn refuse_recorded(
    store: &Store,
    scratch: &tokio_postgres::Config,
    shown: &str,
) -> Result<(), ReplayError> {
    let sources = store.sources().map_err(|source| ReplayError::Store {
        path: store.path().to_path_buf(),
        source,
    })?;
    if sources.is_empty() {
        tracing::warn!("the record does not say which database the proxy was in front of (recorded by an older flux): make sure [replay] database is a scratch copy");
    }
    let database = scratch
        .get_dbname()
        .or(scratch.get_user())
        .unwrap_or("postgres");
    let ports = scratch.get_ports();
    let mut addrs: Vec<String> = Vec::new();
    let mut sockets: Vec<SocketAddr> = Vec::new();
    for (i, host) in scratch.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        match host {
            tokio_postgres::config::Host::Tcp(h) => {
                sockets.extend(resolve(h, port));
                addrs.push(format!("{h}:{port}"));
            }
            tokio_postgres::config::Host::Unix(dir) => {
                addrs.push(dir.join(format!(".s.PGSQL.{port}")).display().to_string());
            }
        }
    }
    for src in sources {
        if src.database != database {
            continue;
        }
        let same = addrs.contains(&src.addr) || {
            let (h, p) = split_host_port(&src.addr);
            resolve(h, p)
                .iter()
                .any(|a| sockets.iter().any(|b| same_server(a, b)))
        };
        if same {
            return Err(ReplayError::Refused {
                url: shown.to_string(),
                addr: src.addr,
                database: src.database,
            });
        }
    }
    Ok(())
}

fn split_host_port(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().unwrap_or(5432),
        ),
        None => (addr, 5432),
    }
}

fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// Same address, or both loopback (or unspecified) on the same port: one server.
fn same_server(a: &SocketAddr, b: &SocketAddr) -> bool {
    let local = |s: &SocketAddr| s.ip().is_loopback() || s.ip().is_unspecified();
    a == b || (a.port() == b.port() && local(a) && local(b))
}

/// `user:secret@` → `user@`, for messages.
pub fn hide_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The scratch URL with its host and port replaced by `addr` and its query dropped (the
/// replay proxy speaks plain TCP on loopback; it uses the scratch URL's TLS settings).
fn via_proxy(url: &str, addr: SocketAddr) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let _ = u.set_ip_host(addr.ip());
    let _ = u.set_port(Some(addr.port()));
    u.set_query(None);
    u.to_string()
}

/// The span of the replay `trace` that made a refused connection: a span naming its port
/// (`server.port`, `net.peer.port`), preferring one that also names its host.
fn refusing_span(store: &Store, trace: &str, refused: &Refusal) -> Option<String> {
    let port = refused.port.to_string();
    let tree = flux_read::trace(store, trace).ok()?;
    let candidates: Vec<&flux_read::tree::Node> = tree
        .nodes
        .iter()
        .filter(|n| n.span.attr_any(&["server.port", "net.peer.port"]) == Some(port.as_str()))
        .collect();
    candidates
        .iter()
        .find(|n| {
            n.span.attr_any(&["server.address", "net.peer.name"]) == Some(refused.host.as_str())
        })
        .or(candidates.first())
        .map(|n| n.span.name.clone())
}

/// Where run `run`'s record is, under the recording's data dir.
pub fn run_store(data_dir: &Path, run: &str) -> PathBuf {
    data_dir.join("replays").join(run).join("store")
}

/// The run's name: the short hash of a clean git checkout, else the next free `rN`.
pub fn run_name(dir: &Path, replays: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let (Some(status), Some(hash)) = (
        git(&["status", "--porcelain"]),
        git(&["rev-parse", "--short", "HEAD"]),
    ) {
        if status.is_empty() && !hash.is_empty() {
            return hash;
        }
    }
    (1..)
        .map(|n| format!("r{n}"))
        .find(|r| !replays.join(r).exists())
        .unwrap_or_else(|| "r0".into())
}

/// The replay-mode proxy, its OTLP receiver and the gateway, recording into the run's
/// store; stopped by [`Services::stop`] or, failing that, when dropped.
struct Services {
    inner: flux_service::Services,
    store: Arc<Store>,
    otlp: SocketAddr,
    /// The replay proxy's address.
    proxy: SocketAddr,
    database_url: String,
    shutdown: CancellationToken,
}

impl Services {
    /// The replay proxy, its recorder and OTLP receiver, started by the builder
    /// `flux proxy` uses (so a replay is recorded as production is), on local ports.
    async fn start(run_dir: &Path, scratch: &str) -> Result<Services, ReplayError> {
        let store_dir = run_dir.join("store");
        let upstream: flux_proxy::Upstream =
            scratch.parse().map_err(|e| ReplayError::Database {
                url: hide_password(scratch),
                reason: format!("{e}"),
            })?;
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = flux_service::Config {
            proxy: flux_proxy::ProxyConfig::new(local, upstream),
            record: Some(flux_service::Record {
                data_dir: store_dir.clone(),
                durability: flux_store::Durability::Relaxed,
                retention: None,
                redact: flux_recorder::Redactor::default(),
                reject_on_store_failure: false,
                upstream_label: None,
            }),
            otlp: Some(local),
            gateway: None,
            admin: None,
        };
        let inner = flux_service::Services::start(config)
            .await
            .map_err(|e| match e {
                flux_service::ServiceError::Store { path, source } => {
                    ReplayError::RunStore { path, source }
                }
                other => ReplayError::Io {
                    what: "starting the replay's proxy and OTLP receiver".into(),
                    source: std::io::Error::other(other),
                },
            })?;
        let (Some(store), Some(otlp)) = (inner.store().cloned(), inner.otlp) else {
            return Err(ReplayError::Io {
                what: "starting the replay's recorder".into(),
                source: std::io::Error::other("no store or OTLP receiver"),
            });
        };
        Ok(Services {
            store,
            otlp,
            proxy: inner.proxy,
            database_url: via_proxy(scratch, inner.proxy),
            shutdown: inner.shutdown(),
            inner,
        })
    }

    /// A gateway in front of the app, recording the replayed exchanges like production's.
    async fn gateway(&mut self, app_url: &str) -> Result<SocketAddr, ReplayError> {
        let config =
            flux_ingest::gateway::GatewayConfig::new(app_url).map_err(|e| ReplayError::Io {
                what: "starting the replay's gateway (check [app] url)".into(),
                source: std::io::Error::other(e),
            })?;
        self.inner
            .add_gateway(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .map_err(|e| ReplayError::Io {
                what: "binding the replay's gateway".into(),
                source: std::io::Error::other(e),
            })
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

/// One request as sent.
struct Sent {
    trace: String,
    /// When it was sent (ns since the epoch).
    at: Nanos,
    status: Option<u16>,
    body: Option<Vec<u8>>,
    /// Why there is no answer (the app closed the connection, the wait ran out).
    failure: Option<String>,
    elapsed: Duration,
    misses: Vec<String>,
    refused: Vec<Refusal>,
    bodiless: Vec<String>,
}

/// Sends every chosen input to the gateway, `concurrency` at a time, in recorded order.
async fn send_all(
    chosen: &[Chosen],
    gateway: SocketAddr,
    outbound: &Outbound,
    options: &Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Vec<Sent> {
    use futures_util::stream::{self, StreamExt};
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // A request whose app never answers must not stall the replay forever.
    let limit = options.max_delay * 2 + Duration::from_secs(30);
    let of = chosen.len();
    let mut done = 0;
    let mut sent: Vec<Option<Sent>> = (0..of).map(|_| None).collect();
    let mut answers = stream::iter(chosen.iter().enumerate())
        .map(|(i, c)| {
            let client = client.clone();
            let trace = flux_ingest::gateway::random_hex(16);
            outbound.set(&trace, c.matcher.clone());
            async move {
                let at = flux_store::nanos(std::time::SystemTime::now());
                let began = Instant::now();
                let result =
                    tokio::time::timeout(limit, send_one(&client, gateway, &c.exchange, &trace))
                        .await;
                let (status, body, failure) = match result {
                    Ok(Ok((status, body))) => (Some(status), Some(body), None),
                    Ok(Err(e)) => (None, None, Some(format!("no answer from the app: {e}"))),
                    Err(_) => (
                        None,
                        None,
                        Some(format!("no answer from the app within {limit:?}")),
                    ),
                };
                (i, trace, at, status, body, failure, began.elapsed())
            }
        })
        .buffered(options.concurrency.max(1));
    while let Some((i, trace, at, status, body, failure, elapsed)) = answers.next().await {
        let (misses, refused, bodiless) = outbound
            .take(&trace)
            .map(|m| (m.misses, m.refused, m.bodiless))
            .unwrap_or_default();
        if let Some(slot) = sent.get_mut(i) {
            *slot = Some(Sent {
                trace,
                at,
                status,
                body,
                failure,
                elapsed,
                misses,
                refused,
                bodiless,
            });
        }
        done += 1;
        progress(Progress::Sent { done, of });
    }
    sent.into_iter().flatten().collect()
}

/// Sends one recorded input with a fresh `traceparent`; the status and the whole body.
async fn send_one(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    exchange: &Exchange,
    trace: &str,
) -> Result<(u16, Vec<u8>), String> {
    let uri = format!("http://{gateway}{}", exchange.target);
    let mut req = http::Request::builder()
        .method(exchange.method.as_str())
        .uri(uri);
    for (name, value) in &exchange.headers {
        let lower = name.to_ascii_lowercase();
        // A fresh trace; a redacted value is not the caller's; the body is whole now.
        if matches!(
            lower.as_str(),
            "traceparent" | "tracestate" | "content-length" | "transfer-encoding" | "expect"
        ) || value == "<redacted>"
        {
            continue;
        }
        req = req.header(name.as_str(), value.as_str());
    }
    let span = flux_ingest::gateway::random_hex(8);
    req = req.header("traceparent", format!("00-{trace}-{span}-01"));
    let req = req
        .body(Full::new(Bytes::from(exchange.body.clone())))
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// Waits until each replayed request's record has arrived in the run's store: the
/// gateway's exchange, and the app's spans when the original had them; then until no new
/// span has arrived for a moment (the SDK exports in batches). At most 10 s.
async fn wait_for_records(store: &Store, chosen: &[Chosen], sent: &[Sent]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let quiet = Duration::from_millis(400);
    // Per request: its exchange seen (read once, never again), and its span count.
    let mut exchanged = vec![false; sent.len()];
    let mut spans_seen = vec![0u32; sent.len()];
    let mut changed = Instant::now();
    loop {
        let mut complete = true;
        let mut any_change = false;
        for (i, (c, s)) in chosen.iter().zip(sent).enumerate() {
            if let Some(seen) = exchanged.get_mut(i).filter(|seen| !**seen) {
                *seen = matches!(store.exchange(&s.trace), Ok(Some(_)));
            }
            let summary = store.request(&s.trace).ok().flatten();
            let spans = summary.as_ref().map_or(0, |r| r.spans);
            let app = summary.as_ref().is_some_and(|r| r.app && r.spans > 1);
            if !exchanged.get(i).copied().unwrap_or(false) || (c.app_spans && !app) {
                complete = false;
            }
            if let Some(before) = spans_seen.get_mut(i) {
                if *before != spans {
                    *before = spans;
                    any_change = true;
                }
            }
        }
        if any_change {
            changed = Instant::now();
        }
        if (complete && changed.elapsed() >= quiet) || Instant::now() >= deadline {
            if !complete {
                tracing::warn!("some replayed requests' spans did not arrive within 10 s; they are judged on what arrived");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_proxy_takes_the_host() {
        let url = "postgres://app:s3cret@db.internal:5433/shop_scratch?sslmode=require";
        assert_eq!(
            hide_password(url),
            "postgres://app@db.internal:5433/shop_scratch?sslmode=require"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 7001));
        assert_eq!(
            via_proxy(url, addr),
            "postgres://app:s3cret@127.0.0.1:7001/shop_scratch"
        );
        assert_eq!(
            via_proxy("postgresql://localhost/x", addr),
            "postgresql://127.0.0.1:7001/x"
        );
    }

    #[test]
    fn loopback_addresses_on_one_port_are_one_server() {
        let a: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let b: SocketAddr = "[::1]:5432".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:5433".parse().unwrap();
        let d: SocketAddr = "10.0.0.5:5432".parse().unwrap();
        assert!(same_server(&a, &b));
        assert!(!same_server(&a, &c));
        assert!(!same_server(&a, &d));
        assert_eq!(split_host_port("[::1]:6000"), ("::1", 6000));
        assert_eq!(split_host_port("db:5432"), ("db", 5432));
    }

    #[test]
    fn long_causes_become_one_line() {
        assert_eq!(one_line("a\n  b"), "a b");
        let long = "x".repeat(300);
        assert_eq!(one_line(&long).chars().count(), 160);
    }

    #[test]
    fn runs_outside_git_are_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let replays = dir.path().join("replays");
        assert_eq!(run_name(dir.path(), &replays), "r1");
        std::fs::create_dir_all(replays.join("r1")).unwrap();
        assert_eq!(run_name(dir.path(), &replays), "r2");
    }
}
