//! `flux-service`: one builder that starts Flux's services from a [`Config`] — the proxy,
//! the recorder (store, writer thread, retention), the OTLP receiver, the HTTP gateway
//! and the admin endpoint — and stops them in order. `flux proxy` and replay both use
//! it, so a replay records exactly as production does.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flux_ingest::gateway::GatewayConfig;
use flux_proxy::{EventSink, Proxy, ProxyConfig};
use flux_recorder::{Redactor, SpanWriter, StoreSink};
use flux_store::{Durability, Policy, Store, StoreError, Writer, WriterConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What to start.
#[derive(Debug)]
pub struct Config {
    /// The proxy (listen address, upstream, TLS, limits).
    pub proxy: ProxyConfig,
    /// Record into a store; `None`: the proxy only relays.
    pub record: Option<Record>,
    /// Receive OTLP/HTTP spans here (needs `record`).
    pub otlp: Option<SocketAddr>,
    /// Record HTTP requests through a gateway here (needs `record`).
    pub gateway: Option<(SocketAddr, GatewayConfig)>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub admin: Option<SocketAddr>,
}

/// How to record.
#[derive(Debug, Clone)]
pub struct Record {
    /// The data dir.
    pub data_dir: PathBuf,
    /// When a commit's records must be on disk.
    pub durability: Durability,
    /// Dropping the oldest requests, and how often to look.
    pub retention: Option<(Policy, Duration)>,
    /// Columns never stored.
    pub redact: Redactor,
    /// Refuse writes while the store cannot keep them (`--on-store-failure=reject`).
    pub reject_on_store_failure: bool,
    /// The upstream as recorded with each source database (replay refuses it).
    pub upstream_label: Option<String>,
}

/// Why the services could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store.
    #[error("opening the store in {path} (is another flux proxy using it?): {source}")]
    Store {
        /// The data dir.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A listener or a thread.
    #[error("{what}: {source}")]
    Io {
        /// What was being started.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy.
    #[error("starting the proxy: {0}")]
    Proxy(String),
    /// A service that records was asked for without a store.
    #[error("{0} needs capture on (a --data-dir to record into)")]
    NeedsRecord(&'static str),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// A listener on `addr` for `what`, and the address it got.
async fn bind(
    addr: SocketAddr,
    what: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServiceError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io(format!("binding {what} on {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(io(format!("reading the address of {what}")))?;
    Ok((listener, local))
}

/// The recorder's parts, when recording. The store is reached through the writer's slot,
/// never held: after a failed write (a full disk) the writer reopens the store once nobody
/// else holds it.
struct Recorder {
    data_dir: PathBuf,
    writer: Writer,
    sink: Arc<StoreSink>,
    spans: Arc<SpanWriter>,
    retention: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// Running services.
pub struct Services {
    /// Where the proxy listens.
    pub proxy: SocketAddr,
    /// Where the OTLP receiver listens.
    pub otlp: Option<SocketAddr>,
    /// Where the gateway listens.
    pub gateway: Option<SocketAddr>,
    /// Where the admin endpoint listens.
    pub admin: Option<SocketAddr>,
    recorder: Option<Recorder>,
    shutdown: CancellationToken,
    proxy_task: Option<JoinHandle<()>>,
    tasks: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("proxy", &self.proxy)
            .field("otlp", &self.otlp)
            .field("gateway", &self.gateway)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Opens the store and starts everything `config` asks for. The OTLP receiver and the
    /// gateway are up before the proxy accepts sessions.
    pub async fn start(config: Config) -> Result<Services, ServiceError> {
        let recorder = match &config.record {
            Some(record) => Some(recorder(record)?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let mut sources = flux_admin::Sources::default();
        let mut tasks = Vec::new();
        let mut services = Services {
            proxy: config.proxy.listen,
            otlp: None,
            gateway: None,
            admin: None,
            recorder,
            shutdown: shutdown.clone(),
            proxy_task: None,
            tasks: Vec::new(),
        };
        if let Some(r) = &services.recorder {
            sources.capture = Some(r.sink.stats.clone());
            sources.writer = Some(r.writer.handle().stats().clone());
            sources.store_dir = Some(r.data_dir.clone());
        }
        if let Some(addr) = config.otlp {
            let spans = match &services.recorder {
                Some(r) => r.spans.clone(),
                None => return Err(ServiceError::NeedsRecord("--otlp")),
            };
            let (listener, local) = bind(addr, "the OTLP receiver").await?;
            tracing::info!("receiving OTLP/HTTP traces on http://{local}/v1/traces");
            let stats = Arc::new(flux_ingest::http::OtlpStats::default());
            sources.otlp = Some(stats.clone());
            let stop = shutdown.clone();
            tasks.push((
                "the OTLP receiver",
                tokio::spawn(flux_ingest::http::serve(
                    listener,
                    spans,
                    stats,
                    async move { stop.cancelled().await },
                )),
            ));
            services.otlp = Some(local);
        }
        services.tasks = tasks;
        if let Some((addr, gateway)) = config.gateway {
            services.add_gateway(addr, gateway).await?;
        }
        let upstream = Arc::new(config.proxy.upstream.clone());
        let sink: Option<Arc<dyn EventSink>> = services
            .recorder
            .as_ref()
            .map(|r| r.sink.clone() as Arc<dyn EventSink>);
        let capture = sink.is_some();
        let proxy = Proxy::bind(config.proxy, sink)
            .await
            .map_err(|e| ServiceError::Proxy(e.to_string()))?;
        services.proxy = proxy
            .local_addr()
            .map_err(io("reading the proxy's address"))?;
        sources.proxy = Some(proxy.stats());
        if let Some(addr) = config.admin {
            let (listener, local) = bind(addr, "the admin endpoint").await?;
            tracing::info!("serving metrics on http://{local}/metrics (and /healthz, /readyz)");
            let readiness = flux_admin::Readiness {
                upstream,
                writer: sources.writer.clone(),
            };
            let stop = shutdown.clone();
            services.tasks.push((
                "the admin endpoint",
                tokio::spawn(flux_admin::serve(
                    listener,
                    sources,
                    readiness,
                    async move { stop.cancelled().await },
                )),
            ));
            services.admin = Some(local);
        }
        if capture {
            // Said now, not at the first write: capture that cannot read the catalog
            // records every write as a gap.
            let probe = proxy.probe_catalog();
            tokio::spawn(async move {
                match probe.await {
                    Ok((database, user, n)) => tracing::info!(
                        database,
                        user,
                        relations = n,
                        "capture reads the catalog"
                    ),
                    Err(e) => tracing::error!(
                        "CAPTURE CANNOT READ THE CATALOG ({e}): writes will be recorded as gaps, not rows. \
                         Give capture a login with --catalog-user ROLE and FLUX_CATALOG_PASSWORD (or FLUX_CATALOG_URL), \
                         or the role's password in --upstream, or let the server trust the proxy's host"
                    ),
                }
            });
        }
        let stop = shutdown.clone();
        services.proxy_task = Some(tokio::spawn(async move { proxy.run(stop).await }));
        Ok(services)
    }

    /// Starts a gateway in front of an app (replay adds it once the app is up).
    pub async fn add_gateway(
        &mut self,
        addr: SocketAddr,
        config: GatewayConfig,
    ) -> Result<SocketAddr, ServiceError> {
        let sink = match &self.recorder {
            Some(r) => r.sink.clone(),
            None => return Err(ServiceError::NeedsRecord("--http-listen")),
        };
        let (listener, local) = bind(addr, "the HTTP gateway").await?;
        tracing::info!(upstream = %config.upstream, "recording HTTP requests on http://{local}");
        let stop = self.shutdown.clone();
        self.tasks.push((
            "the HTTP gateway",
            tokio::spawn(async move {
                flux_ingest::gateway::serve(listener, config, sink, stop).await;
                Ok(())
            }),
        ));
        self.gateway = Some(local);
        Ok(local)
    }

    /// The store being recorded into (`None` while the writer reopens it). Hold it only
    /// briefly: a held store cannot be reopened after a failed write.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.recorder.as_ref()?.writer.handle().slot().get()
    }

    /// Cancelling it stops every service (as [`stop`](Self::stop) does).
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops everything: the proxy drains its sessions (up to its shutdown timeout), the
    /// servers end, then retention and the writer, which flushes and syncs.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Waits until [`shutdown`](Self::shutdown) is cancelled and everything has stopped.
    pub async fn wait(mut self) {
        self.shutdown.cancelled().await;
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(proxy) = self.proxy_task.take() {
            if let Err(e) = proxy.await {
                tracing::error!(error = %e, "the proxy panicked");
            }
        }
        for (what, task) in self.tasks.drain(..) {
            match task.await {
                Ok(Err(e)) => tracing::error!(error = %e, "{what} failed"),
                Err(e) => tracing::error!(error = %e, "{what} panicked"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(r) = self.recorder.take() {
            // Joins threads: off the async workers.
            let joined = tokio::task::spawn_blocking(move || {
                if let Some((stop, thread)) = r.retention {
                    drop(stop);
                    let _ = thread.join();
                }
                r.writer.stop();
            })
            .await;
            if let Err(e) = joined {
                tracing::error!(error = %e, "stopping the store writer panicked");
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn recorder(record: &Record) -> Result<Recorder, ServiceError> {
    let store = Arc::new(flux_read::open_writer(&record.data_dir).map_err(|source| {
        ServiceError::Store {
            path: record.data_dir.clone(),
            source,
        }
    })?);
    let writer = Writer::start(
        store,
        WriterConfig {
            durability: record.durability,
            ..WriterConfig::default()
        },
    );
    let retention = match &record.retention {
        Some((policy, every)) => {
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = flux_store::retention::spawn(writer.handle().slot(), *policy, *every, rx)
                .map_err(io("starting the retention thread"))?;
            tracing::info!(?policy, ?every, "retention on");
            Some((tx, thread))
        }
        None => None,
    };
    let mut sink =
        StoreSink::new(writer.handle(), record.durability).with_redaction(record.redact.clone());
    if let Some(label) = &record.upstream_label {
        sink = sink.with_upstream(label.clone());
    }
    if record.reject_on_store_failure {
        tracing::info!(
            "writes are refused while the store cannot keep them (--on-store-failure=reject)"
        );
        sink = sink.rejecting();
    }
    let spans = Arc::new(SpanWriter::new(writer.handle()).with_redaction(record.redact.clone()));
    Ok(Recorder {
        data_dir: record.data_dir.clone(),
        sink: Arc::new(sink),
        spans,
        writer,
        retention,
    })
}
