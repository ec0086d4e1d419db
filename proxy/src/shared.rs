//! What every session of one proxy shares: configuration, TLS, the capture sink and
//! catalogs, counters, and the shutdown signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;

use crate::capture::catalog::Catalogs;
use crate::capture::event::EventSink;
use crate::config::ProxyConfig;
use crate::upstream::Upstream;

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
    /// Upstream connections open now.
    pub upstream_active: AtomicU64,
    /// Upstream connections opened since start.
    pub upstream_total: AtomicU64,
    /// Bytes read from clients and forwarded upstream (as sent, before any rewrite).
    pub client_bytes: AtomicU64,
    /// Bytes read from the server and forwarded to clients.
    pub server_bytes: AtomicU64,
    /// Statements by command and their latency, kept only when asked for
    /// ([`ProxyConfig::statement_metrics`]): timing each one costs a clock read.
    pub statements: StatementStats,
}

/// Counts one open thing (a session, an upstream connection) in a [`Stats`] gauge for as
/// long as it lives, however its task ends (even by panic).
pub(crate) struct Open {
    stats: Arc<Stats>,
    gauge: fn(&Stats) -> &AtomicU64,
}

impl Open {
    /// Increments `gauge` now; decrements it on drop.
    pub(crate) fn count(stats: &Arc<Stats>, gauge: fn(&Stats) -> &AtomicU64) -> Open {
        gauge(stats).fetch_add(1, Ordering::Relaxed);
        Open {
            stats: stats.clone(),
            gauge,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the statement latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The commands statements are counted by (the first word of `CommandComplete`'s tag;
/// anything else is `other`, a failed statement `error`).
pub const COMMANDS: [&str; 14] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "BEGIN", "COMMIT", "ROLLBACK", "SET",
    "FETCH", "other", "error", "empty",
];

/// Statement counters and a lock-free latency histogram (from the statement being
/// forwarded to its `CommandComplete` or error, as the proxy sees it).
#[derive(Debug, Default)]
pub struct StatementStats {
    /// Per [`COMMANDS`] entry.
    pub by_command: [AtomicU64; COMMANDS.len()],
    /// Observations at or below each [`LATENCY_BUCKETS`] bound (not cumulative).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bound.
    pub overflow: AtomicU64,
    /// Sum of observed latencies, in nanoseconds.
    pub sum_nanos: AtomicU64,
}

impl StatementStats {
    /// Counts a finished statement: `tag` is its `CommandComplete` tag, `None` for an
    /// error (`Some(b"")` for an empty query).
    pub fn observe(&self, tag: Option<&[u8]>, elapsed: std::time::Duration) {
        let word = tag.map(|t| t.split(|&b| b == b' ').next().unwrap_or_default());
        let i = match word {
            None => COMMANDS.len() - 2,
            Some([]) => COMMANDS.len() - 1,
            Some(w) => COMMANDS[..COMMANDS.len() - 3]
                .iter()
                .position(|c| c.as_bytes() == w)
                .unwrap_or(COMMANDS.len() - 3),
        };
        if let Some(c) = self.by_command.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            Some(b) => self.buckets[b].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
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
    pub catalogs: Arc<Catalogs>,
    /// The upstream, shared with catalog connections.
    pub upstream: Arc<Upstream>,
}

impl Shared {
    /// Where and as whom capture reads `database`'s catalog for sessions of `user`.
    pub fn catalog_target(&self, database: &str, user: &str) -> crate::capture::catalog::Target {
        crate::capture::catalog::Target {
            upstream: self.upstream.clone(),
            tls: self.upstream_tls.clone(),
            timeout: self.config.connect_timeout,
            database: database.to_string(),
            user: user.to_string(),
            login: self.config.catalog_login.clone(),
        }
    }
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

    pub(crate) fn trigger(&self) {
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
