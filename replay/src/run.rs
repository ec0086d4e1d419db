//! The replay driver (`flux incident replay`, DESIGN §7): select the recorded requests,
//! restore the rows they wrote on the scratch database, start a replay-mode proxy, its
//! OTLP receiver, a gateway and the outbound stub, start the app against them, send each
//! recorded input again with a fresh trace id, and judge each answer against the
//! original. Everything started here is stopped when [`replay`] returns or its future is
//! dropped (an error, Ctrl-C).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flux_store::{Store, StoreError};

use crate::app::{self, AppError};
use crate::config::Config;
use crate::dns::SharedNames;
use crate::isolation::{self, Containment, IsolationError, Sandbox};
use crate::judge::{self, Ignore, Outcome};
use crate::noise::Catalog;
use crate::outbound::{Outbound, OutboundError};
use crate::restore::{self, RestoreError};
use crate::stub::Refusal;

pub use crate::report::{Replayed, Report, Restored, Skipped, VerdictView};
pub use crate::scratch::hide_password;
use crate::scratch::{refuse_recorded, via_proxy};
use crate::select::{one_line, outcome_of, select};
pub use crate::select::{resolve_request, Selection};
use crate::send::{send_all, wait_for_records};

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
            &[services.inner.proxy, services.otlp],
            port,
            names,
            &services.inner.shutdown(),
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
    database_url: String,
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
        let (Some(store), Some(otlp)) = (inner.store(), inner.otlp) else {
            return Err(ReplayError::Io {
                what: "starting the replay's recorder".into(),
                source: std::io::Error::other("no store or OTLP receiver"),
            });
        };
        Ok(Services {
            store,
            otlp,
            database_url: via_proxy(scratch, inner.proxy),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::{same_server, split_host_port};

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
