//! One client session: startup, then two relay loops (client→server, server→client)
//! running concurrently in one task over a shared request FIFO.
//!
//! Each loop reads what the socket has, finds whole frames, updates the FIFO, and
//! forwards the bytes in one write. With capture off that is all. With capture on, the
//! client→server loop plans each `Query`/`Parse` (see [`crate::plan`]) and may replace
//! it with the rewritten text (and a `Bind` with extended result formats); the
//! server→client loop takes the appended columns off rewritten statements' results,
//! turns them into row images, and tracks transactions ([`crate::txn`]). Buffers are
//! bounded by the frame limit (large COPY data, and with capture off large rows, are
//! streamed in pieces), and a loop does not read more until its write completed, so a
//! slow client slows only its own upstream.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::capture::{CaptureEvent, SessionId, TxOutcome};
use crate::catalog::{self, Catalog, Snapshot};
use crate::frame::{FrameCursor, FrameError, Next};
use crate::message::{self, backend_tag as bt, sqlstate, tag};
use crate::pipeline::{Completion, Pipeline, Request, Rewritten, Started, Statement};
use crate::plan::{self, StepPlan};
use crate::rewrite::{self, Analysis, Kind, RoleChange};
use crate::role::{self, RoleState};
use crate::server::{Shared, ShutdownSignal};
use crate::startup::{self, AuthOutcome, Opening};
use crate::stream::{ReadHalf, Stream, WriteHalf};
use crate::txn::Tracker;
use crate::upstream::UpstreamError;

/// Bytes a relay loop asks the socket for at a time.
const READ_CHUNK: usize = 32 * 1024;

/// Why a session ended abnormally. Each variant decides what, if anything, the client
/// is told before the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client broke framing.
    #[error("invalid message from client: {0}")]
    ClientFrame(FrameError),
    /// The client broke the startup protocol.
    #[error("{0}")]
    Protocol(String),
    /// The client's socket failed.
    #[error("client connection: {0}")]
    ClientIo(io::Error),
    /// TLS with the client failed.
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(String),
    /// The upstream could not be reached.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream broke framing.
    #[error("invalid message from upstream: {0}")]
    ServerFrame(FrameError),
    /// The upstream's socket failed.
    #[error("upstream connection: {0}")]
    ServerIo(io::Error),
    /// The client chose SCRAM channel binding, which cannot pass through the proxy.
    #[error("{0}")]
    ChannelBinding(Arc<str>),
    /// Startup did not finish in time.
    #[error("startup did not complete within {0:?}")]
    StartupTimeout(Duration),
}

impl SessionError {
    /// The `ErrorResponse` the client gets for this failure, if any.
    fn client_notice(&self, upstream: &str) -> Option<Bytes> {
        let (code, msg) = match self {
            SessionError::ClientFrame(e) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message: {e}"),
            ),
            SessionError::Protocol(m) => (sqlstate::PROTOCOL_VIOLATION, m.clone()),
            SessionError::Upstream(e) => (sqlstate::CONNECTION_FAILURE, format!("flux: {e}")),
            SessionError::ServerFrame(e) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("flux: invalid message from upstream {upstream}: {e}"),
            ),
            SessionError::ServerIo(e) => (
                sqlstate::CONNECTION_FAILURE,
                format!("flux: lost connection to upstream {upstream}: {e}"),
            ),
            SessionError::ChannelBinding(hint) => {
                (sqlstate::FEATURE_NOT_SUPPORTED, hint.to_string())
            }
            SessionError::StartupTimeout(t) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("flux: startup did not complete within {t:?}"),
            ),
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => return None,
        };
        Some(message::fatal(code, &msg))
    }
}

/// How the relay ended without a session error.
enum RelayEnd {
    /// The client sent `Terminate`.
    ClientTerminated,
    /// The client closed its socket without `Terminate`.
    ClientClosed,
    /// The server closed the connection after telling the client why (FATAL error).
    ServerClosedWithError,
    /// The server closed the connection without a word.
    ServerClosed,
    /// The proxy is shutting down and the session was idle (or the grace period ran out).
    Shutdown { idle: bool },
}

/// State both relay loops touch. Both loops run in the same task, so the lock is never
/// contended; it exists to satisfy `Send`.
struct Relay {
    pipeline: Pipeline,
    /// A loop is in the middle of a write; shutting down now would cut a frame.
    writing_up: bool,
    writing_down: bool,
    /// Capture's response-side state (capture on).
    capture: Option<CaptureState>,
}

/// What the server→client loop needs to turn results into capture events.
struct CaptureState {
    tracker: Tracker,
    catalog: Arc<Catalog>,
    database: String,
}

/// What capture knows about a prepared statement or portal.
#[derive(Clone)]
struct Prepared {
    sql: Bytes,
    steps: Option<Arc<[StepPlan]>>,
    binary: bool,
}

/// SQL text and plans by prepared-statement and portal name, tracked only when capture is on.
#[derive(Default)]
struct SqlNames {
    statements: HashMap<Bytes, Prepared>,
    portals: HashMap<Bytes, Prepared>,
}

/// The client→server loop's capture state: analyses and plans by SQL text, and the
/// catalog.
struct Planner {
    names: SqlNames,
    analyses: HashMap<Bytes, Arc<Analysis>>,
    plans: HashMap<Bytes, CachedPlan>,
    catalog: Arc<Catalog>,
    target: catalog::Target,
    /// Role changes forwarded but not yet answered (see [`crate::role`]).
    pending_roles: Vec<RoleChange>,
    /// DDL or a routine was forwarded and the session has not been idle since.
    unsettled: bool,
    /// SQL-`PREPARE`d writes by name.
    prepared: HashMap<String, Option<String>>,
}

/// A plan made against one catalog snapshot as one role; reused while both hold.
/// Apps (and pgbench) send the same texts over and over, re-parsing unnamed statements.
struct CachedPlan {
    snapshot: Arc<Snapshot>,
    role: String,
    steps: Arc<[StepPlan]>,
    rewritten: Option<String>,
}

/// Analyses cached per session; cleared when full (apps reuse a small set of texts).
const ANALYSIS_CACHE: usize = 512;

impl Planner {
    /// The analysis of `sql` (its body without a trailing sqlcommenter comment), cached.
    fn analyze(&mut self, sql: &[u8]) -> Option<(Arc<Analysis>, Option<String>)> {
        let text = std::str::from_utf8(sql).ok()?;
        let (body, comment) = rewrite::split_trailing_comment(text);
        let trailing = comment.and_then(rewrite::sqlcommenter_request_id);
        if let Some(a) = self.analyses.get(body.as_bytes()) {
            return Some((a.clone(), trailing));
        }
        let analysis = Arc::new(rewrite::analyze(body));
        if self.analyses.len() >= ANALYSIS_CACHE {
            self.analyses.clear();
        }
        self.analyses
            .insert(Bytes::copy_from_slice(body.as_bytes()), analysis.clone());
        Some((analysis, trailing))
    }

    /// Plans `sql`; returns the plans and the replacement text, if rewritten.
    fn plan(
        &mut self,
        sql: &[u8],
        snapshot: Option<&Arc<Snapshot>>,
        confirmed: &RoleState,
    ) -> (Option<Arc<[StepPlan]>>, Option<String>) {
        // A cached plan holds while nothing it did not see is in play: the same snapshot
        // and role, no role change or DDL awaiting its answer.
        let settled = self.pending_roles.is_empty() && !self.unsettled;
        if let (Some(cached), Some(current), true, Some(role)) = (
            self.plans.get(sql),
            snapshot,
            settled,
            confirmed.effective(),
        ) {
            if Arc::ptr_eq(&cached.snapshot, current) && cached.role == role {
                return (Some(cached.steps.clone()), cached.rewritten.clone());
            }
        }
        let Some((analysis, trailing)) = self.analyze(sql) else {
            return (None, None);
        };
        let Ok(text) = std::str::from_utf8(sql) else {
            return (None, None);
        };
        let error = snapshot
            .is_none()
            .then(|| self.catalog.last_error())
            .flatten();
        let mut cx = plan::Context {
            snapshot: snapshot.map(|s| &**s),
            catalog_error: error.as_deref(),
            confirmed,
            pending_roles: &mut self.pending_roles,
            unsettled: &mut self.unsettled,
            prepared: &mut self.prepared,
        };
        let planned = plan::plan(text, &analysis, trailing.as_deref(), &mut cx);
        if planned.unknown_table {
            self.catalog.invalidate();
        }
        // Texts carrying a per-request tag rarely repeat; plans that depend on a missing
        // or stale catalog, or on session state, must be redone.
        if let (None, false, true, true, Some(snapshot), Some(role)) = (
            &trailing,
            planned.unknown_table,
            planned.reusable,
            settled,
            snapshot,
            confirmed.effective(),
        ) {
            if self.plans.len() >= ANALYSIS_CACHE {
                self.plans.clear();
            }
            self.plans.insert(
                Bytes::copy_from_slice(sql),
                CachedPlan {
                    snapshot: snapshot.clone(),
                    role: role.to_string(),
                    steps: planned.steps.clone(),
                    rewritten: planned.sql.clone(),
                },
            );
        }
        (Some(planned.steps), planned.sql)
    }
}

fn has_write(a: &Analysis) -> bool {
    a.steps.iter().any(|s| matches!(s.kind, Kind::Write(_)))
}

/// Runs one accepted connection to completion. Never panics on peer input; every
/// failure ends only this session.
pub(crate) async fn run(tcp: TcpStream, peer: SocketAddr, id: SessionId, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let upstream_addr = shared.config.upstream.addr();
    let startup_timeout = shared.config.startup_timeout;
    let mut client = Some(Stream::Plain(tcp));
    let result = async {
        let opened = tokio::time::timeout(
            startup_timeout,
            startup::accept(&mut client, shared.client_tls.as_ref()),
        )
        .await
        .map_err(|_| SessionError::StartupTimeout(startup_timeout))??;
        match opened {
            Opening::Closed => Ok(()),
            Opening::Cancel(packet) => {
                forward_cancel(&shared, packet).await;
                Ok(())
            }
            Opening::Session(startup) => serve(&mut client, startup, peer, id, &shared).await,
        }
    }
    .await;
    if let Err(e) = result {
        match &e {
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => {
                tracing::debug!(session = id, %peer, "session ended: {e}")
            }
            SessionError::ClientFrame(_) | SessionError::Protocol(_) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = id, %peer, "closing session: {e}")
            }
            _ => {
                shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = id, %peer, "closing session: {e}")
            }
        }
        if let (Some(client), Some(notice)) = (client.as_mut(), e.client_notice(&upstream_addr)) {
            let _ = write_and_close(client, &notice).await;
        }
    }
}

async fn write_and_close<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    let done = async {
        s.write_all(bytes).await?;
        s.flush().await?;
        s.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn forward_cancel(shared: &Shared, packet: Bytes) {
    let cfg = &shared.config;
    let result = async {
        let mut server = cfg
            .upstream
            .connect(shared.upstream_tls.as_ref(), cfg.connect_timeout)
            .await?;
        server
            .write_all(&packet)
            .await
            .map_err(SessionError::ServerIo)?;
        server.flush().await.map_err(SessionError::ServerIo)?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(cfg.connect_timeout, server.read(&mut sink)).await;
        Ok::<_, SessionError>(())
    }
    .await;
    match result {
        Ok(()) => {
            shared
                .stats
                .cancels_forwarded
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("forwarded CancelRequest upstream");
        }
        Err(e) => tracing::warn!("could not forward CancelRequest: {e}"),
    }
}

async fn serve(
    client: &mut Option<Stream>,
    mut startup: startup::StartupMessage,
    peer: SocketAddr,
    id: SessionId,
    shared: &Arc<Shared>,
) -> Result<(), SessionError> {
    let cfg = &shared.config;
    let client = client
        .as_mut()
        .ok_or_else(|| SessionError::ClientTls("connection lost".into()))?;
    // The URL gives defaults; what the client asks for wins.
    if let Some(user) = &cfg.upstream.user {
        startup.set_default("user", user);
    }
    if let Some(db) = &cfg.upstream.database {
        startup.set_default("database", db);
    }
    let user = startup.get("user").unwrap_or_default().to_string();
    let database = startup.get("database").unwrap_or(&user).to_string();

    let mut server = cfg
        .upstream
        .connect(shared.upstream_tls.as_ref(), cfg.connect_timeout)
        .await?;
    let auth = tokio::time::timeout(
        cfg.startup_timeout,
        startup::authenticate(
            client,
            &mut server,
            &startup,
            cfg.max_frame_len,
            &shared.channel_binding_hint,
        ),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout(cfg.startup_timeout))??;
    if let AuthOutcome::Ended = auth {
        let _ = server.shutdown().await;
        let _ = client.shutdown().await;
        return Ok(());
    }

    if startup.is_replication() {
        // Replication speaks CopyBoth for the life of the connection: pure pass-through.
        tracing::info!(session = id, %peer, "replication connection: relayed without capture");
        let _ = tokio::io::copy_bidirectional(client, &mut server).await;
        return Ok(());
    }

    let mut planner = None;
    let mut capture = None;
    if let Some(sink) = &shared.sink {
        let catalog = shared.catalogs.get(&database, &user);
        planner = Some(Planner {
            names: SqlNames::default(),
            analyses: HashMap::new(),
            plans: HashMap::new(),
            catalog: catalog.clone(),
            target: catalog::Target {
                upstream: shared.upstream.clone(),
                tls: shared.upstream_tls.clone(),
                timeout: cfg.connect_timeout,
                database: database.clone(),
                user: user.clone(),
            },
            pending_roles: Vec::new(),
            unsettled: false,
            prepared: HashMap::new(),
        });
        capture = Some(CaptureState {
            tracker: Tracker::new(id, &user),
            catalog,
            database: database.clone(),
        });
        sink.emit(CaptureEvent::SessionStarted {
            session: id,
            peer,
            user,
            database,
        });
    }
    let relay = Mutex::new(Relay {
        pipeline: Pipeline::new(shared.sink.is_some()),
        writing_up: false,
        writing_down: false,
        capture,
    });
    let end = {
        let (mut crd, mut cwr) = client.split();
        let (mut srd, mut swr) = server.split();
        let up = client_to_server(&mut crd, &mut swr, &relay, planner, shared);
        let down = server_to_client(&mut srd, &mut cwr, &relay, id, shared);
        let signal = shared.shutdown.register();
        let shutdown = shutdown_point(&relay, shared, &signal);
        tokio::select! {
            // Polled in order: the relay first, the (rarely ready) shutdown point last.
            biased;
            r = up => r,
            r = down => r,
            end = shutdown => Ok(end),
        }
    };
    if let Some(sink) = &shared.sink {
        let mut events = Vec::new();
        {
            let mut r = lock(&relay);
            let in_flight = r.pipeline.in_flight() > 0;
            if let Some(c) = &mut r.capture {
                c.tracker.on_lost(in_flight, &mut events);
            }
        }
        for e in events {
            sink.emit(e);
        }
        sink.emit(CaptureEvent::SessionEnded { session: id });
    }
    let desyncs = lock(&relay).pipeline.desyncs();
    if desyncs > 0 {
        tracing::debug!(session = id, desyncs, "response FIFO resynchronised");
    }
    match end? {
        RelayEnd::ClientTerminated | RelayEnd::ClientClosed => {
            let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
        }
        RelayEnd::ServerClosedWithError => {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
        }
        RelayEnd::ServerClosed => {
            return Err(SessionError::ServerIo(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        RelayEnd::Shutdown { idle } => {
            if idle {
                // At a message boundary with nothing in flight: end the backend cleanly.
                let _ = write_and_close(&mut server, &message::terminate()).await;
            }
            let notice = message::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the flux proxy is shutting down",
            );
            let _ = write_and_close(client, &notice).await;
        }
    }
    Ok(())
}

fn lock(relay: &Mutex<Relay>) -> MutexGuard<'_, Relay> {
    // A poisoned lock only means a loop panicked mid-update; the state is still usable.
    relay.lock().unwrap_or_else(|p| p.into_inner())
}

/// Client messages never decoded, so they may be streamed when large.
fn client_streamable(t: u8) -> bool {
    t == tag::COPY_DATA
}

/// Server messages never decoded by the relay, so they may be streamed when large.
fn server_streamable(t: u8) -> bool {
    t == bt::COPY_DATA || t == bt::DATA_ROW
}

/// Where complete frames sit in a chunk: `(tag, offset, size)`.
type FrameIndex = Vec<(u8, usize, usize)>;

/// Finds the complete frames (and streamed pieces) at the front of `buf`. Returns how
/// many bytes they span, which the caller forwards, and how many more bytes the next
/// frame needs.
fn scan(
    buf: &[u8],
    cursor: &mut FrameCursor,
    frames: &mut FrameIndex,
    streamable: fn(u8) -> bool,
    stop_after: Option<u8>,
) -> Result<(usize, usize), FrameError> {
    frames.clear();
    let mut end = 0;
    let want = loop {
        match cursor.next(&buf[end..], streamable)? {
            Next::Frame { tag, size } => {
                frames.push((tag, end, size));
                end += size;
                if Some(tag) == stop_after {
                    break 0;
                }
            }
            Next::Stream { n } => end += n,
            Next::NeedMore { want } => break want,
        }
    };
    Ok((end, want))
}

async fn read_more(rd: &mut ReadHalf<'_>, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    let spare = buf.capacity() - buf.len();
    if spare < READ_CHUNK.max(want) {
        buf.reserve(READ_CHUNK.max(want));
    }
    rd.read_buf(buf).await
}

async fn client_to_server(
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    relay: &Mutex<Relay>,
    mut planner: Option<Planner>,
    shared: &Shared,
) -> Result<RelayEnd, SessionError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut cursor = FrameCursor::new(shared.config.max_frame_len);
    let mut frames = FrameIndex::new();
    let mut replaced: Vec<(usize, Option<Bytes>)> = Vec::new();
    let mut out = BytesMut::new();
    let mut want = 0;
    loop {
        let n = read_more(rd, &mut buf, want)
            .await
            .map_err(SessionError::ClientIo)?;
        if n == 0 {
            if buf.is_empty() && !cursor.is_streaming() {
                return Ok(RelayEnd::ClientClosed);
            }
            return Err(SessionError::ClientFrame(FrameError::Truncated));
        }
        let (end, need) = scan(
            &buf,
            &mut cursor,
            &mut frames,
            client_streamable,
            Some(tag::TERMINATE),
        )
        .map_err(SessionError::ClientFrame)?;
        want = need;
        if end == 0 {
            continue;
        }
        let chunk = &buf[..end];
        // A write to plan needs the catalog; reading it may wait on the side connection,
        // so it happens before the relay state is locked.
        let snapshot = match &mut planner {
            Some(p) => snapshot_for(p, chunk, &frames, relay).await,
            None => None,
        };
        replaced.clear();
        {
            let mut r = lock(relay);
            let r = &mut *r;
            for (i, &(t, at, size)) in frames.iter().enumerate() {
                let frame = &chunk[at..at + size];
                match (&mut planner, &r.capture) {
                    (Some(p), Some(capture)) => {
                        if r.pipeline.in_flight() == 0 {
                            // Everything forwarded was answered: role changes are confirmed.
                            p.pending_roles.clear();
                        }
                        let roles = capture.tracker.roles();
                        let mut replacement = None;
                        r.pipeline.on_frontend(t, || {
                            let (req, new) = plan_frontend(t, frame, p, snapshot.as_ref(), roles);
                            replacement = new;
                            req
                        });
                        if replacement.is_some() {
                            replaced.push((i, replacement));
                        }
                    }
                    _ => r.pipeline.on_frontend(t, || untracked_request(t)),
                }
            }
            r.writing_up = true;
        }
        let bytes = outgoing(&mut out, chunk, &frames, &replaced);
        wr.write_all(bytes).await.map_err(SessionError::ServerIo)?;
        wr.flush().await.map_err(SessionError::ServerIo)?;
        buf.advance(end);
        out.clear();
        lock(relay).writing_up = false;
        if frames.last().is_some_and(|&(t, _, _)| t == tag::TERMINATE) {
            return Ok(RelayEnd::ClientTerminated);
        }
    }
}

/// The catalog snapshot for planning this chunk: the cached one, or a fresh read when a
/// write in the chunk needs it and the cache is missing or stale; with the privileges of
/// every role the chunk's writes may run as.
async fn snapshot_for(
    p: &mut Planner,
    chunk: &[u8],
    frames: &FrameIndex,
    relay: &Mutex<Relay>,
) -> Option<Arc<Snapshot>> {
    let roles = {
        let r = lock(relay);
        if p.unsettled && r.pipeline.is_idle() {
            // The DDL is answered and its transaction over: read the catalog again
            // (another session may have refreshed it before the DDL committed).
            p.unsettled = false;
            p.catalog.invalidate_now();
        }
        if r.pipeline.in_flight() == 0 {
            p.pending_roles.clear();
        }
        r.capture
            .as_ref()
            .and_then(|c| role::candidates(c.tracker.roles(), &p.pending_roles))
    };
    let snapshot = snapshot_of(p, chunk, frames).await?;
    for role in roles.iter().flatten() {
        // The login role's privileges come with the snapshot; others are read once per
        // snapshot, when first needed.
        if !snapshot.knows_role(role) {
            p.catalog.load_access(&p.target, &snapshot, role).await;
        }
    }
    Some(snapshot)
}

async fn snapshot_of(p: &mut Planner, chunk: &[u8], frames: &FrameIndex) -> Option<Arc<Snapshot>> {
    // The usual case: the catalog is current and the frames need not be looked at.
    if let Some(fresh) = p.catalog.fresh() {
        return Some(fresh);
    }
    let mut writes = false;
    for &(t, at, size) in frames {
        let Some(sql) = sql_of(t, &chunk[at..at + size]) else {
            continue;
        };
        if let Some((a, _)) = p.analyze(sql) {
            writes |= has_write(&a);
        }
    }
    if writes {
        p.catalog.current(&p.target).await
    } else {
        p.catalog.cached()
    }
}

/// Fills `set_config('flux.request_id', $n, …)` values from the `Bind` (text, or the
/// bytes of a binary text parameter); a portal gets its own copy of the plan.
fn bind_request_params(prepared: &mut Prepared, bind: &[u8]) {
    let Some(steps) = &prepared.steps else {
        return;
    };
    if !steps
        .iter()
        .any(|s| s.set_request.as_ref().is_some_and(|r| r.param.is_some()))
    {
        return;
    }
    let bound: Vec<StepPlan> = steps
        .iter()
        .map(|step| {
            let mut step = step.clone();
            if let Some(set) = &mut step.set_request {
                if let Some(n) = set.param {
                    set.value = message::bind_param(bind, n)
                        .ok()
                        .flatten()
                        .and_then(|v| String::from_utf8(v.to_vec()).ok());
                }
            }
            step
        })
        .collect();
    prepared.steps = Some(bound.into());
}

/// The SQL text of a `Query` or `Parse` frame, borrowed.
fn sql_of(t: u8, frame: &[u8]) -> Option<&[u8]> {
    match t {
        tag::QUERY => message::query_sql(frame).ok(),
        tag::PARSE => message::parse_message(frame).ok().map(|(_, sql)| sql),
        _ => None,
    }
}

/// The bytes to forward: the chunk as read, or, when frames were replaced, a copy in
/// `out` with each listed frame replaced (`None` drops it). Bytes outside indexed frames
/// (streamed pieces) are kept as they are.
fn outgoing<'a>(
    out: &'a mut BytesMut,
    chunk: &'a [u8],
    frames: &FrameIndex,
    replaced: &[(usize, Option<Bytes>)],
) -> &'a [u8] {
    if replaced.is_empty() {
        return chunk;
    }
    out.clear();
    let mut pos = 0;
    for (i, replacement) in replaced {
        let Some(&(_, at, size)) = frames.get(*i) else {
            continue;
        };
        out.extend_from_slice(chunk.get(pos..at).unwrap_or_default());
        if let Some(r) = replacement {
            out.extend_from_slice(r);
        }
        pos = at + size;
    }
    out.extend_from_slice(chunk.get(pos..).unwrap_or_default());
    &out[..]
}

/// The FIFO entry for a frontend message when capture is off: a match on the tag.
fn untracked_request(t: u8) -> Option<Request> {
    match t {
        tag::QUERY => Some(Request::Query(Statement::new(None, None))),
        tag::EXECUTE => Some(Request::Execute(Statement::new(None, None))),
        tag::PARSE => Some(Request::Parse),
        tag::BIND => Some(Request::Bind),
        tag::CLOSE => Some(Request::Close),
        tag::DESCRIBE => Some(Request::Describe(None)),
        tag::FUNCTION_CALL => Some(Request::FunctionCall),
        _ => None,
    }
}

/// With capture on: the FIFO entry for a frontend message, and the frame to send
/// instead when capture rewrites it.
fn plan_frontend(
    t: u8,
    frame: &[u8],
    p: &mut Planner,
    snapshot: Option<&Arc<Snapshot>>,
    roles: &RoleState,
) -> (Option<Request>, Option<Bytes>) {
    // Frames are decoded in place; only names and SQL text, which outlive the read
    // buffer, are copied.
    match t {
        tag::QUERY => {
            let sql = message::query_sql(frame).ok();
            let (steps, rewritten) = match sql {
                Some(sql) => p.plan(sql, snapshot, roles),
                None => (None, None),
            };
            let mut statement =
                Statement::new(sql.map(Bytes::copy_from_slice), Some(Started::now()));
            statement.steps = steps;
            let replacement = rewritten.map(|sql| message::query(&sql));
            (Some(Request::Query(statement)), replacement)
        }
        tag::PARSE => {
            let mut replacement = None;
            if let Ok((name, sql)) = message::parse_message(frame) {
                let (steps, rewritten) = p.plan(sql, snapshot, roles);
                replacement = rewritten.and_then(|text| message::parse_with_sql(frame, &text).ok());
                p.names.statements.insert(
                    Bytes::copy_from_slice(name),
                    Prepared {
                        sql: Bytes::copy_from_slice(sql),
                        steps,
                        binary: false,
                    },
                );
            }
            (Some(Request::Parse), replacement)
        }
        tag::BIND => {
            let mut replacement = None;
            if let Ok((portal, stmt)) = message::bind_names(frame) {
                if let Some(mut prepared) = p.names.statements.get(stmt).cloned() {
                    bind_request_params(&mut prepared, frame);
                    let captured = prepared
                        .steps
                        .as_ref()
                        .is_some_and(|s| s.iter().any(|s| s.capture.is_some()));
                    if let (true, Ok((at, codes))) = (captured, message::bind_result_formats(frame))
                    {
                        // One code applies to every column, ours included (decoded either
                        // way); per-column codes need ours added, as text.
                        prepared.binary = codes.len() == 1 && codes.first() == Some(&1);
                        if codes.len() > 1 {
                            replacement = Some(message::bind_with_extra_formats(
                                frame,
                                at,
                                &codes,
                                rewrite::CAPTURE_COLUMNS,
                            ));
                        }
                    }
                    p.names
                        .portals
                        .insert(Bytes::copy_from_slice(portal), prepared);
                }
            }
            (Some(Request::Bind), replacement)
        }
        tag::EXECUTE => {
            let prepared = message::execute_portal(frame)
                .ok()
                .and_then(|portal| p.names.portals.get(portal).cloned());
            let mut statement = Statement::new(
                prepared.as_ref().map(|x| x.sql.clone()),
                Some(Started::now()),
            );
            if let Some(x) = prepared {
                statement.steps = x.steps;
                statement.binary = x.binary;
            }
            (Some(Request::Execute(statement)), None)
        }
        tag::CLOSE => {
            if let Ok((kind, name)) = message::target(frame) {
                if kind == b'S' {
                    p.names.statements.remove(name);
                } else {
                    p.names.portals.remove(name);
                }
            }
            (Some(Request::Close), None)
        }
        tag::DESCRIBE => {
            let plan = message::target(frame).ok().and_then(|(kind, name)| {
                let prepared = if kind == b'S' {
                    p.names.statements.get(name)
                } else {
                    p.names.portals.get(name)
                }?;
                prepared.steps.as_ref()?.first()?.capture.clone()
            });
            (Some(Request::Describe(plan)), None)
        }
        tag::FUNCTION_CALL => (Some(Request::FunctionCall), None),
        _ => (None, None),
    }
}

async fn server_to_client(
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    relay: &Mutex<Relay>,
    id: SessionId,
    shared: &Shared,
) -> Result<RelayEnd, SessionError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut cursor = FrameCursor::new(shared.config.max_frame_len);
    let mut frames = FrameIndex::new();
    let mut completions = Vec::new();
    let mut events = Vec::new();
    let mut replaced: Vec<(usize, Option<Bytes>)> = Vec::new();
    let mut out = BytesMut::new();
    let mut server_said_fatal = false;
    let mut want = 0;
    // Rows of rewritten statements must arrive whole to lose their appended columns.
    let streamable = if shared.sink.is_some() {
        client_streamable
    } else {
        server_streamable
    };
    loop {
        let n = match read_more(rd, &mut buf, want).await {
            Ok(n) => n,
            Err(e) if server_said_fatal => {
                tracing::debug!(session = id, "upstream closed after a FATAL error: {e}");
                return Ok(RelayEnd::ServerClosedWithError);
            }
            Err(e) => return Err(SessionError::ServerIo(e)),
        };
        if n == 0 {
            return Ok(if server_said_fatal {
                RelayEnd::ServerClosedWithError
            } else {
                RelayEnd::ServerClosed
            });
        }
        let (end, need) = scan(&buf, &mut cursor, &mut frames, streamable, None)
            .map_err(SessionError::ServerFrame)?;
        want = need;
        if end == 0 {
            continue;
        }
        let chunk = &buf[..end];
        replaced.clear();
        {
            let mut r = lock(relay);
            let r = &mut *r;
            for (i, &(t, at, size)) in frames.iter().enumerate() {
                let frame = &chunk[at..at + size];
                if t == bt::ERROR_RESPONSE
                    && message::error_fields(frame).is_ok_and(|e| e.is_fatal())
                {
                    server_said_fatal = true;
                }
                let Some(capture) = &mut r.capture else {
                    r.pipeline.on_backend(t, frame);
                    continue;
                };
                if t == bt::ROW_DESCRIPTION || t == bt::DATA_ROW {
                    if let Some(replacement) =
                        strip_capture(t, frame, &r.pipeline, capture, &mut events)
                    {
                        replaced.push((i, replacement));
                    }
                }
                if let Some(done) = r.pipeline.on_backend(t, frame) {
                    let mut request = None;
                    if let Some(step) = done.statement.current() {
                        // Resolved before the statement's own effect (a SET) applies.
                        request = capture.tracker.request_for(step);
                        let tag = match (&done.error, &done.tag) {
                            (Some(_), _) => None,
                            (None, Some(tag)) => Some(String::from_utf8_lossy(tag)),
                            (None, None) => Some("".into()),
                        };
                        capture
                            .tracker
                            .on_completion(step, tag.as_deref(), &mut events);
                        if matches!(step.kind, Kind::Ddl | Kind::Routine { .. }) && tag.is_some() {
                            shared.catalogs.invalidate_database(&capture.database);
                        }
                    }
                    completions.push((done, request));
                }
                if t == bt::READY_FOR_QUERY {
                    capture
                        .tracker
                        .on_ready(r.pipeline.tx_status(), &mut events);
                }
            }
            r.writing_down = true;
        }
        if let Some(sink) = &shared.sink {
            let committed = events.iter().any(|e| {
                matches!(
                    e,
                    CaptureEvent::TxEnded {
                        outcome: TxOutcome::Committed | TxOutcome::Unknown,
                        ..
                    }
                )
            });
            if !events.is_empty() {
                sink.emit_all(&mut events);
            }
            if committed {
                // Strict durability: the commit's answer waits for its records.
                if let Some(durable) = sink.durable() {
                    durable.await;
                }
            }
        }
        let bytes = outgoing(&mut out, chunk, &frames, &replaced);
        wr.write_all(bytes).await.map_err(SessionError::ClientIo)?;
        wr.flush().await.map_err(SessionError::ClientIo)?;
        buf.advance(end);
        out.clear();
        lock(relay).writing_down = false;
        if let Some(sink) = &shared.sink {
            for (done, request) in completions.drain(..) {
                sink.emit(statement_event(id, done, request));
            }
        }
    }
}

/// For a `RowDescription` or `DataRow` of a statement capture rewrote: reads the images
/// into events and returns what the client gets instead (`Some(None)` drops the frame).
fn strip_capture(
    t: u8,
    frame: &[u8],
    pipeline: &Pipeline,
    capture: &mut CaptureState,
    events: &mut Vec<CaptureEvent>,
) -> Option<Option<Bytes>> {
    match (pipeline.rewritten()?, t) {
        (Rewritten::Describe(plan), bt::ROW_DESCRIPTION) => Some(Some(if plan.keep_returning {
            plan::strip_row_description(frame)?
        } else {
            message::encode(bt::NO_DATA, &[])
        })),
        (Rewritten::Rows { plan, .. }, bt::ROW_DESCRIPTION) => Some(if plan.keep_returning {
            Some(plan::strip_row_description(frame)?)
        } else {
            None
        }),
        (Rewritten::Rows { statement, plan }, bt::DATA_ROW) => {
            let (kept, images) =
                plan::split_data_row(frame, statement.binary, plan.keep_returning)?;
            // The row's tableoid names the table actually written. It is the planned one
            // unless the row went to a partition (mapped to its root) or the name was
            // resolved among same-named tables; the planned name stands when the catalog
            // does not know the oid.
            let table = match images.oid {
                Some(oid) if oid != plan.oid => capture
                    .catalog
                    .cached()
                    .and_then(|s| s.root_of(oid).map(|t| t.display_name())),
                _ => None,
            }
            .unwrap_or_else(|| plan.table.clone());
            let step = statement.current()?;
            events.push(capture.tracker.on_row(step, plan, table, images));
            Some(kept)
        }
        _ => None,
    }
}

fn statement_event(session: SessionId, done: Completion, request: Option<String>) -> CaptureEvent {
    let elapsed = done
        .statement
        .started
        .map(|s| s.at.elapsed())
        .unwrap_or_default();
    let error = done
        .error
        .as_deref()
        .and_then(|f| message::error_fields(f).ok());
    CaptureEvent::Statement {
        session,
        sql: String::from_utf8_lossy(statement_text(&done.statement)).into_owned(),
        started: done
            .statement
            .started
            .map_or_else(SystemTime::now, |s| s.wall),
        elapsed,
        tag: done.tag.map(|t| String::from_utf8_lossy(&t).into_owned()),
        sqlstate: error.as_ref().map(|e| e.code.clone()),
        error: error.map(|e| e.message),
        request,
    }
}

/// The text of the statement a completion belongs to: its own slice of a simple query
/// holding several statements, else the whole text.
fn statement_text(statement: &Statement) -> &[u8] {
    let sql = statement.sql.as_deref().unwrap_or_default();
    match (
        statement.current(),
        statement.steps.as_ref().map(|s| s.len()),
    ) {
        (Some(step), Some(n)) if n > 1 => sql.get(step.text.clone()).unwrap_or(sql),
        _ => sql,
    }
}

/// Resolves when the proxy is shutting down and this session may close: at once when
/// idle (nothing in flight, no open transaction, no write half-done), else as soon as it
/// becomes idle, or when the grace period ends.
async fn shutdown_point(
    relay: &Mutex<Relay>,
    shared: &Shared,
    signal: &ShutdownSignal<'_>,
) -> RelayEnd {
    signal.requested().await;
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
    loop {
        {
            let r = lock(relay);
            // Resolving ends the select in `serve`, which drops both relay loops
            // before they can start another write.
            if r.pipeline.is_idle() && !r.writing_up && !r.writing_down {
                return RelayEnd::Shutdown { idle: true };
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return RelayEnd::Shutdown { idle: false };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
