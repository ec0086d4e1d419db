//! One client session: startup, then two relay loops (client→server, server→client)
//! running concurrently in one task over a shared request FIFO.
//!
//! Each loop reads what the socket has, finds whole frames, updates the FIFO, and
//! forwards the bytes in one write. Nothing is rewritten yet; the loops hand every
//! complete frame to the FIFO first, so capture can later decode or replace frames at
//! that point. Buffers are bounded by the frame limit (large COPY data and rows are
//! streamed in pieces), and a loop does not read more until its write completed, so a
//! slow client slows only its own upstream.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::capture::{CaptureEvent, SessionId};
use crate::frame::{FrameCursor, FrameError, Next};
use crate::message::{self, backend_tag as bt, sqlstate, tag};
use crate::pipeline::{Completion, Pipeline, Request, Statement};
use crate::server::{Shared, ShutdownSignal};
use crate::startup::{self, AuthOutcome, Opening};
use crate::stream::{ReadHalf, Stream, WriteHalf};
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
}

/// SQL text by prepared-statement and portal name, tracked only when capture is on.
#[derive(Default)]
struct SqlNames {
    statements: HashMap<Bytes, Bytes>,
    portals: HashMap<Bytes, Bytes>,
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

    if let Some(sink) = &shared.sink {
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
    });
    let end = {
        let (mut crd, mut cwr) = client.split();
        let (mut srd, mut swr) = server.split();
        let up = client_to_server(&mut crd, &mut swr, &relay, shared);
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
    shared: &Shared,
) -> Result<RelayEnd, SessionError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut cursor = FrameCursor::new(shared.config.max_frame_len);
    let mut frames = FrameIndex::new();
    let mut names = shared.sink.is_some().then(SqlNames::default);
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
        {
            let mut r = lock(relay);
            for &(t, at, size) in &frames {
                // SQL text outlives the read buffer (named statements), so it is copied,
                // and only when capture tracks it.
                let frame = || Bytes::copy_from_slice(&chunk[at..at + size]);
                r.pipeline
                    .on_frontend(t, || request_for(t, frame, names.as_mut()));
            }
            r.writing_up = true;
        }
        wr.write_all(chunk).await.map_err(SessionError::ServerIo)?;
        wr.flush().await.map_err(SessionError::ServerIo)?;
        buf.advance(end);
        lock(relay).writing_up = false;
        if frames.last().is_some_and(|&(t, _, _)| t == tag::TERMINATE) {
            return Ok(RelayEnd::ClientTerminated);
        }
    }
}

/// The FIFO entry for a frontend message (`None` for messages that expect no answer).
/// Frames are decoded only when `names` is tracked (capture on); otherwise this is a
/// match on the tag and nothing more.
fn request_for(
    t: u8,
    frame: impl FnOnce() -> Bytes,
    names: Option<&mut SqlNames>,
) -> Option<Request> {
    let Some(names) = names else {
        let untracked = || Statement {
            sql: None,
            started: None,
        };
        return match t {
            tag::QUERY => Some(Request::Query(untracked())),
            tag::EXECUTE => Some(Request::Execute(untracked())),
            tag::PARSE => Some(Request::Parse),
            tag::BIND => Some(Request::Bind),
            tag::CLOSE => Some(Request::Close),
            tag::DESCRIBE => Some(Request::Describe),
            tag::FUNCTION_CALL => Some(Request::FunctionCall),
            _ => None,
        };
    };
    let tracked = |sql: Option<Bytes>| Statement {
        started: Some(Instant::now()),
        sql,
    };
    match t {
        tag::QUERY => Some(Request::Query(tracked(message::query_sql(&frame()).ok()))),
        tag::PARSE => {
            if let Ok((name, sql)) = message::parse_message(&frame()) {
                names.statements.insert(name, sql);
            }
            Some(Request::Parse)
        }
        tag::BIND => {
            if let Ok((portal, stmt)) = message::bind_names(&frame()) {
                if let Some(sql) = names.statements.get(&stmt).cloned() {
                    names.portals.insert(portal, sql);
                }
            }
            Some(Request::Bind)
        }
        tag::EXECUTE => {
            let sql = message::execute_portal(&frame())
                .ok()
                .and_then(|portal| names.portals.get(&portal).cloned());
            Some(Request::Execute(tracked(sql)))
        }
        tag::CLOSE => {
            if let Ok((kind, name)) = message::target(&frame()) {
                if kind == b'S' {
                    names.statements.remove(&name);
                } else {
                    names.portals.remove(&name);
                }
            }
            Some(Request::Close)
        }
        tag::DESCRIBE => Some(Request::Describe),
        tag::FUNCTION_CALL => Some(Request::FunctionCall),
        _ => None,
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
    let mut server_said_fatal = false;
    let mut want = 0;
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
        let (end, need) = scan(&buf, &mut cursor, &mut frames, server_streamable, None)
            .map_err(SessionError::ServerFrame)?;
        want = need;
        if end == 0 {
            continue;
        }
        let chunk = &buf[..end];
        {
            let mut r = lock(relay);
            for &(t, at, size) in &frames {
                let frame = &chunk[at..at + size];
                if t == bt::ERROR_RESPONSE
                    && message::error_fields(frame).is_ok_and(|e| e.is_fatal())
                {
                    server_said_fatal = true;
                }
                if let Some(done) = r.pipeline.on_backend(t, frame) {
                    completions.push(done);
                }
            }
            r.writing_down = true;
        }
        wr.write_all(chunk).await.map_err(SessionError::ClientIo)?;
        wr.flush().await.map_err(SessionError::ClientIo)?;
        buf.advance(end);
        lock(relay).writing_down = false;
        if let Some(sink) = &shared.sink {
            for done in completions.drain(..) {
                sink.emit(statement_event(id, done));
            }
        }
    }
}

fn statement_event(session: SessionId, done: Completion) -> CaptureEvent {
    let elapsed = done
        .statement
        .started
        .map(|s| s.elapsed())
        .unwrap_or_default();
    let error = done
        .error
        .as_deref()
        .and_then(|f| message::error_fields(f).ok());
    CaptureEvent::Statement {
        session,
        sql: String::from_utf8_lossy(done.statement.sql.as_deref().unwrap_or_default())
            .into_owned(),
        started: SystemTime::now() - elapsed,
        elapsed,
        tag: done.tag.map(|t| String::from_utf8_lossy(&t).into_owned()),
        sqlstate: error.as_ref().map(|e| e.code.clone()),
        error: error.map(|e| e.message),
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
