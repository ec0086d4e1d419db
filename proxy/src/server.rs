//! The listener: accepts connections, runs one task per session, shuts down cleanly.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::catalog::CatalogError;
use crate::capture::event::EventSink;
use crate::config::{ProxyConfig, ProxyError};
use crate::shared::{Open, Shared, Shutdown, Stats};

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

    /// Reads the catalog of the upstream's default database (`--upstream`'s database,
    /// else its user's name) as capture would for a session of `--upstream`'s user: how
    /// many relations it sees, or why it cannot (a start-up check; sessions read their
    /// own database's catalog as they come).
    pub fn probe_catalog(
        &self,
    ) -> impl std::future::Future<Output = Result<(String, String, usize), CatalogError>> + Send + 'static
    {
        let up = &self.shared.upstream;
        let user = up
            .user
            .clone()
            .or_else(|| {
                self.shared
                    .config
                    .catalog_login
                    .as_ref()
                    .map(|l| l.user.clone())
            })
            .unwrap_or_else(|| "postgres".to_string());
        let database = up.database.clone().unwrap_or_else(|| user.clone());
        let target = self.shared.catalog_target(&database, &user);
        async move {
            let n = crate::capture::catalog::probe(&target).await?;
            Ok((database, user, n))
        }
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
            let active = Open::count(&shared.stats, |s| &s.sessions_active);
            tracker.spawn(async move {
                let _active = active;
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
