//! `flux proxy`: runs the proxy until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flux_proxy::{ProxyConfig, Upstream};
use flux_store::Durability;

/// Arguments of `flux proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to accept PostgreSQL clients on.
    #[arg(long, env = "FLUX_LISTEN", default_value = "127.0.0.1:6432")]
    listen: SocketAddr,

    /// The database, as postgres://[USER@]HOST[:PORT][/DB][?sslmode=…&sslrootcert=…].
    /// Host and port say where to connect; user and database are defaults for clients that
    /// send none (what a client asks for is used upstream). TLS to the database follows
    /// sslmode (disable, allow, prefer [default], require, verify-ca, verify-full).
    #[arg(long, env = "FLUX_UPSTREAM")]
    upstream: String,

    /// Directory for Flux's record (created if missing).
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// PEM certificate chain for TLS with clients (with --tls-key). Without it, clients
    /// asking for TLS are told the proxy does not offer it.
    #[arg(long, env = "FLUX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "FLUX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Largest protocol message accepted from a client or the server, in bytes.
    #[arg(long, env = "FLUX_MAX_FRAME_SIZE", default_value_t = flux_proxy::frame::DEFAULT_MAX_FRAME)]
    max_frame_size: usize,

    /// Limit on connecting to the upstream (e.g. 5s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// Threads serving sessions. Default: one per 4 cores, at least 1; with 1 the proxy
    /// runs a single-threaded event loop, which costs the least CPU per message.
    #[arg(long, env = "FLUX_WORKERS")]
    workers: Option<usize>,

    /// On SIGINT/SIGTERM, how long busy sessions get to reach an idle point (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,

    /// Record row changes into --data-dir (on), or relay only (off). Default: on when a
    /// data dir is given.
    #[arg(long, env = "FLUX_CAPTURE", value_enum)]
    capture: Option<Switch>,

    /// relaxed: the store fsyncs at least every 100 ms. strict: a transaction's COMMIT is
    /// answered only after its records are fsynced.
    #[arg(long, env = "FLUX_DURABILITY", value_enum, default_value = "relaxed")]
    durability: DurabilityArg,

    /// Also receive the application's OpenTelemetry traces over OTLP/HTTP on this address
    /// (`POST /v1/traces`, protobuf or JSON, gzip), e.g. 127.0.0.1:4318; point the app's
    /// OTEL_EXPORTER_OTLP_ENDPOINT at http://ADDR. Needs capture on.
    #[arg(long, env = "FLUX_OTLP")]
    otlp: Option<SocketAddr>,

    /// Also serve an HTTP/1.1 reverse proxy in front of the app on this address (point
    /// the load balancer or the app's public port at it), recording each request's input
    /// and response so `flux incident replay` can send it again. Needs --http-upstream
    /// and capture on.
    #[arg(long, env = "FLUX_HTTP_LISTEN", requires = "http_upstream")]
    http_listen: Option<SocketAddr>,

    /// The app behind --http-listen: http://HOST:PORT.
    #[arg(long, env = "FLUX_HTTP_UPSTREAM", requires = "http_listen")]
    http_upstream: Option<String>,

    /// Largest request or response body recorded per exchange (bytes, or 512K, 1MiB …);
    /// a larger request is kept truncated and marked unreplayable.
    #[arg(long, env = "FLUX_HTTP_BODY_LIMIT", default_value = "1MiB", value_parser = flux_ingest::gateway::parse_size)]
    http_body_limit: usize,

    /// A header whose value is stored as <redacted> (repeatable; e.g. authorization,
    /// cookie).
    #[arg(long = "http-redact", value_name = "HEADER")]
    http_redact: Vec<String>,

    /// A login capture uses to read `pg_catalog` for every database and session role,
    /// instead of each session's own role (which needs `--upstream`'s password or a server
    /// that trusts the proxy). Give it no privileges beyond CONNECT; privileges are still
    /// checked for each session's role. Its password: FLUX_CATALOG_URL
    /// (postgres://USER:PASSWORD@…; only user and password are used) or PGPASSWORD-style
    /// FLUX_CATALOG_PASSWORD.
    #[arg(long, value_name = "ROLE")]
    catalog_user: Option<String>,

    /// A column whose values are never stored: TABLE.COLUMN, SCHEMA.TABLE.COLUMN or
    /// '*.COLUMN' (repeatable; FLUX_REDACT takes a comma-separated list). Row images hold
    /// <redacted> instead, and a statement naming the column is stored without its
    /// literals.
    #[arg(
        long,
        env = "FLUX_REDACT",
        value_name = "TABLE.COLUMN",
        value_delimiter = ','
    )]
    redact: Vec<String>,

    /// Serve Prometheus metrics (/metrics), liveness (/healthz) and readiness (/readyz) on
    /// this address, e.g. 127.0.0.1:9187 (a bare port means loopback). Off unless given;
    /// also counts and times statements by command.
    #[arg(long, env = "FLUX_ADMIN", value_name = "ADDR", value_parser = parse_admin_addr)]
    admin: Option<SocketAddr>,

    /// When the store cannot keep what capture records (disk full, I/O errors, lagging):
    /// open keeps serving and records a gap (the default); reject refuses writes with
    /// SQLSTATE 53000 until the store recovers, for a record that must be complete.
    #[arg(
        long,
        env = "FLUX_ON_STORE_FAILURE",
        value_enum,
        default_value = "open"
    )]
    on_store_failure: OnStoreFailure,

    /// Remove requests (with all their records) that started longer ago than this, e.g.
    /// 7d or 12h; records of no request go by their own time. Checked at start and then
    /// every twentieth of it (at most every 10 minutes).
    #[arg(long, env = "FLUX_RETAIN", value_parser = humantime::parse_duration)]
    retain: Option<Duration>,

    /// Remove the oldest requests while the record's tables exceed this size (e.g. 20GiB).
    #[arg(long, env = "FLUX_RETAIN_SIZE", value_parser = flux_ingest::gateway::parse_size)]
    retain_size: Option<usize>,
}

/// How often retention runs: a twentieth of the age kept, between 1 s and 10 minutes.
fn retention_interval(age: Option<Duration>) -> Duration {
    age.map_or(Duration::from_secs(60), |a| a / 20)
        .clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// `--admin`: an address, or a port on loopback.
fn parse_admin_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not HOST:PORT or a port (e.g. 127.0.0.1:9187)"))
}

/// on/off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `--on-store-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnStoreFailure {
    Open,
    Reject,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    Relaxed,
    Strict,
}

/// Runs the proxy until a signal arrives, then closes sessions cleanly.
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let upstream: Upstream = args
        .upstream
        .parse()
        .with_context(|| "check --upstream / FLUX_UPSTREAM".to_string())?;
    let mut config = ProxyConfig::new(args.listen, upstream);
    config.max_frame_len = args.max_frame_size;
    config.connect_timeout = args.connect_timeout;
    config.shutdown_timeout = args.shutdown_timeout;
    config.catalog_login = catalog_login(args.catalog_user.as_deref())?;
    config.statement_metrics = args.admin.is_some();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.client_tls =
            Some(flux_proxy::client_tls_config(cert, key).context("loading --tls-cert/--tls-key")?);
    }
    if let Some(dir) = &args.data_dir {
        flux_store::private_dir(dir)?;
    }
    let redact = flux_recorder::Redactor::new(args.redact.iter().map(String::as_str))?;
    if !redact.is_empty() {
        tracing::info!(
            rules = args.redact.len(),
            "redacting columns before they are stored"
        );
    }
    if args.on_store_failure == OnStoreFailure::Reject
        && (args.capture == Some(Switch::Off) || args.data_dir.is_none())
    {
        anyhow::bail!("--on-store-failure=reject needs capture on (a --data-dir)");
    }
    let capture = match (args.capture, &args.data_dir) {
        (Some(Switch::Off), _) => None,
        (Some(Switch::On), None) => {
            anyhow::bail!("--capture on needs --data-dir (or FLUX_DATA_DIR) to record into")
        }
        (None, None) => {
            tracing::warn!("no --data-dir: capture is off, the proxy only relays");
            None
        }
        (_, Some(dir)) => Some(dir.clone()),
    };
    let durability = match args.durability {
        DurabilityArg::Relaxed => Durability::Relaxed,
        DurabilityArg::Strict => Durability::Strict,
    };
    let record = capture.map(|dir| flux_service::Record {
        data_dir: dir,
        durability,
        retention: (args.retain.is_some() || args.retain_size.is_some()).then(|| {
            let policy = flux_store::Policy {
                max_age: args.retain,
                max_size: args.retain_size.map(|s| s as u64),
            };
            (policy, retention_interval(args.retain))
        }),
        redact,
        reject_on_store_failure: args.on_store_failure == OnStoreFailure::Reject,
        upstream_label: Some(config.upstream.addr()),
    });
    // Services that record without a store are refused by the builder.
    let gateway = match (args.http_listen, &args.http_upstream) {
        (Some(addr), Some(upstream)) => {
            let mut gateway = flux_ingest::gateway::GatewayConfig::new(upstream)?;
            gateway.body_limit = args.http_body_limit;
            gateway.redact = args
                .http_redact
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
            Some((addr, gateway))
        }
        _ => None,
    };
    let workers = args.workers.unwrap_or_else(default_workers);
    let mut runtime = if workers <= 1 {
        // No work-stealing wakeups between threads on every message: on small hosts
        // shared with the database this measured ~20% less CPU per transaction.
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let upstream_addr = config.upstream.addr();
    let capture = record.is_some();
    let services = flux_service::Config {
        proxy: config,
        record,
        otlp: args.otlp,
        gateway,
        admin: args.admin,
    };
    runtime.block_on(async move {
        let services = flux_service::Services::start(services).await?;
        tracing::info!(
            upstream = %upstream_addr,
            workers,
            capture,
            "listening on {}",
            services.proxy
        );
        let signals = services.shutdown();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received");
            signals.cancel();
        });
        services.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `--catalog-user` and `FLUX_CATALOG_URL` / `FLUX_CATALOG_PASSWORD`.
fn catalog_login(user: Option<&str>) -> anyhow::Result<Option<flux_proxy::CatalogLogin>> {
    let url = std::env::var("FLUX_CATALOG_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let from_url = match &url {
        Some(u) => {
            let up: flux_proxy::Upstream = u
                .parse()
                .with_context(|| "check FLUX_CATALOG_URL (postgres://USER:PASSWORD@HOST/)")?;
            up.user.map(|user| (user, up.password))
        }
        None => None,
    };
    let password = std::env::var("FLUX_CATALOG_PASSWORD").ok();
    Ok(match (user, from_url) {
        (Some(user), Some((url_user, url_password))) if url_user == user => {
            Some(flux_proxy::CatalogLogin {
                user: user.to_string(),
                password: url_password.or(password),
            })
        }
        (Some(user), _) => Some(flux_proxy::CatalogLogin {
            user: user.to_string(),
            password,
        }),
        (None, Some((user, url_password))) => Some(flux_proxy::CatalogLogin {
            user,
            password: url_password.or(password),
        }),
        (None, None) => None,
    })
}

/// The proxy's work per message is small next to the database's, and it usually shares
/// a host with the database or the app: a quarter of the cores is plenty.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 4)
        .unwrap_or(1)
        .max(1)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
