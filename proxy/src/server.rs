//! The listener: accepts connections, runs one task per session, shuts down cleanly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::EventSink;
use crate::upstream::{Upstream, UpstreamError};

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// The database.
    pub upstream: Upstream,
    /// TLS for clients (`SSLRequest` answered `S`); `None` answers `N`.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message accepted from either side.
    pub max_frame_len: usize,
    /// Limit on reaching the upstream (TCP connect, then TLS).
    pub connect_timeout: Duration,
    /// Limit on a client's startup and authentication, like `authentication_timeout`.
    pub startup_timeout: Duration,
    /// On shutdown, how long busy sessions get to become idle before they are cut.
    pub shutdown_timeout: Duration,
}

impl ProxyConfig {
    /// A configuration with the defaults for everything but the two addresses.
    pub fn new(listen: SocketAddr, upstream: Upstream) -> Self {
        Self {
            listen,
            upstream,
            client_tls: None,
            max_frame_len: crate::frame::DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Loads a PEM certificate chain and private key into a TLS server configuration.
pub fn client_tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &Path, e: &dyn std::fmt::Display| {
        ProxyError::Tls(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, &e))?;
    if certs.is_empty() {
        return Err(tls_err(cert, &"no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| tls_err(cert, &e))?;
    Ok(Arc::new(config))
}

/// Failures starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The upstream settings are unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Counters, readable while the proxy runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions open now (client connections being served, including startup).
    pub sessions_active: AtomicU64,
    /// Connections accepted since start.
    pub sessions_total: AtomicU64,
    /// Sessions closed for a client protocol violation.
    pub protocol_errors: AtomicU64,
    /// Sessions closed because the upstream failed or could not be reached.
    pub upstream_errors: AtomicU64,
    /// `CancelRequest`s forwarded upstream.
    pub cancels_forwarded: AtomicU64,
}

/// State shared by all sessions.
pub(crate) struct Shared {
    pub config: ProxyConfig,
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    pub sink: Option<Arc<dyn EventSink>>,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
    pub channel_binding_hint: Arc<str>,
    /// Primary keys and access per database and role, for capture.
    pub catalogs: Arc<crate::catalog::Catalogs>,
    /// The upstream, shared with catalog connections.
    pub upstream: Arc<crate::upstream::Upstream>,
}

/// Tells sessions to close at their next idle point.
///
/// Every session polls its signal on each wakeup, so polling must cost no more than an
/// atomic load and a waker registration; a shared `CancellationToken` takes a mutex
/// shared by all sessions on every poll. Sessions register here on start; the registry's
/// lock is taken only when a session starts or ends, and once at shutdown.
#[derive(Default)]
pub(crate) struct Shutdown {
    started: AtomicBool,
    sessions: Mutex<HashMap<u64, Arc<SignalState>>>,
    next: AtomicU64,
}

#[derive(Default)]
struct SignalState {
    requested: AtomicBool,
    waker: AtomicWaker,
}

/// One session's view of [`Shutdown`]; deregisters on drop.
pub(crate) struct ShutdownSignal<'a> {
    owner: &'a Shutdown,
    id: u64,
    state: Arc<SignalState>,
}

impl Shutdown {
    pub(crate) fn register(&self) -> ShutdownSignal<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(SignalState::default());
        self.lock().insert(id, state.clone());
        // A session registering after shutdown began must still see it.
        if self.started.load(Ordering::Acquire) {
            state.requested.store(true, Ordering::Release);
        }
        ShutdownSignal {
            owner: self,
            id,
            state,
        }
    }

    fn trigger(&self) {
        self.started.store(true, Ordering::Release);
        for state in self.lock().values() {
            state.requested.store(true, Ordering::Release);
            state.waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SignalState>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ShutdownSignal<'_> {
    /// Resolves once shutdown has been requested.
    pub(crate) fn requested(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.state.waker.register(cx.waker());
            if self.state.requested.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

impl Drop for ShutdownSignal<'_> {
    fn drop(&mut self) {
        self.owner.lock().remove(&self.id);
    }
}

/// A bound proxy, ready to run.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the listen address and prepares TLS. `sink` receives capture events.
    pub async fn bind(
        config: ProxyConfig,
        sink: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, ProxyError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let upstream_tls = config.upstream.tls_config()?;
        let channel_binding_hint = format!(
            "flux: SCRAM channel binding (SCRAM-SHA-256-PLUS) cannot pass through flux, because the \
             client binds to flux's TLS certificate and {} checks its own; connect with \
             channel_binding=disable, or run flux as a local sidecar without client TLS (no --tls-cert)",
            config.upstream.addr()
        )
        .into();
        let shared = Arc::new(Shared {
            client_tls: config
                .client_tls
                .clone()
                .map(tokio_rustls::TlsAcceptor::from),
            upstream_tls,
            sink,
            stats: Arc::default(),
            shutdown: Shutdown::default(),
            channel_binding_hint,
            catalogs: Arc::default(),
            upstream: Arc::new(config.upstream.clone()),
            config,
        });
        Ok(Self { listener, shared })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` fires, then stops accepting, lets sessions close at their
    /// next idle point (at most `shutdown_timeout`), and returns when all have ended.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let mut next_id = 1u64;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let id = next_id;
            next_id += 1;
            let shared = self.shared.clone();
            shared.stats.sessions_total.fetch_add(1, Ordering::Relaxed);
            shared.stats.sessions_active.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(async move {
                let _active = ActiveGuard(shared.stats.clone());
                crate::session::run(tcp, peer, id, shared).await;
            });
        }
        drop(self.listener);
        let open = self.shared.stats.sessions_active.load(Ordering::Relaxed);
        tracing::info!(
            open,
            "shutting down: closing sessions at their next idle point"
        );
        self.shared.shutdown.trigger();
        tracker.close();
        tracker.wait().await;
    }
}

/// Decrements the active-session gauge however the session task ends (even by panic).
struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.sessions_active.fetch_sub(1, Ordering::Relaxed);
    }
}
