//! Running the proxy in-process for tests (with access to its counters and events).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flux_proxy::{CaptureEvent, EventSink, Proxy, ProxyConfig, Stats};
use tokio_util::sync::CancellationToken;

use crate::pg::{PgCluster, DB, PASSWORD, USER};

/// A proxy running in this process.
pub struct TestProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Events it emitted.
    pub events: Arc<Recorder>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// An event sink that keeps everything, for assertions.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<CaptureEvent>>);

impl EventSink for Recorder {
    fn emit(&self, event: CaptureEvent) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

impl Recorder {
    /// Every captured row change so far, in order.
    pub fn mutations(&self) -> Vec<flux_proxy::capture::MutationEvent> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|e| match e {
                CaptureEvent::Mutation(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// All events so far.
    pub fn all(&self) -> Vec<CaptureEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `(sql, tag or "ERROR sqlstate")` of every statement event so far.
    pub fn statements(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|e| match e {
                CaptureEvent::Statement {
                    sql, tag, sqlstate, ..
                } => Some((
                    sql.clone(),
                    tag.clone().unwrap_or_else(|| {
                        format!("ERROR {}", sqlstate.clone().unwrap_or_default())
                    }),
                )),
                _ => None,
            })
            .collect()
    }
}

impl TestProxy {
    /// Starts a proxy in front of `pg` with default settings.
    pub async fn start(pg: &PgCluster) -> TestProxy {
        Self::start_with(pg.url().parse().expect("upstream url"), |_| {}).await
    }

    /// Starts a proxy for `upstream`, letting `tweak` adjust the configuration.
    pub async fn start_with(
        upstream: flux_proxy::Upstream,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> TestProxy {
        crate::init_tracing();
        let mut config = ProxyConfig::new("127.0.0.1:0".parse().expect("addr"), upstream);
        config.connect_timeout = Duration::from_secs(5);
        config.shutdown_timeout = Duration::from_secs(2);
        tweak(&mut config);
        let events = Arc::new(Recorder::default());
        let proxy = Proxy::bind(config, Some(events.clone() as Arc<dyn EventSink>))
            .await
            .expect("bind proxy");
        let addr = proxy.local_addr().expect("local addr");
        let stats = proxy.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(proxy.run(shutdown.clone()));
        TestProxy {
            addr,
            stats,
            events,
            shutdown,
            task: Some(task),
        }
    }

    /// A connection string through the proxy as [`USER`].
    pub fn conn_str(&self) -> String {
        format!(
            "host={} port={} user={USER} password={PASSWORD} dbname={DB}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// Connects with tokio-postgres through the proxy.
    pub async fn connect(&self) -> tokio_postgres::Client {
        crate::pg::connect(&self.conn_str()).await
    }

    /// Sessions open now.
    pub fn active(&self) -> u64 {
        self.stats
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no session is open: broken sessions must not leak tasks.
    pub async fn assert_drains(&self) {
        self.assert_drains_except(0).await
    }

    /// Waits until only `open` sessions (ones the test still holds) remain.
    pub async fn assert_drains_except(&self, open: u64) {
        let stats = self.stats.clone();
        crate::eventually(
            "proxy sessions to end",
            Duration::from_secs(10),
            move || {
                stats
                    .sessions_active
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == open
            },
        )
        .await;
    }

    /// Shuts the proxy down and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("proxy stops within 10s")
                .expect("proxy task did not panic");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
