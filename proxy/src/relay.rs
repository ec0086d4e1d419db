//! The relay: after startup, two loops (client→server, server→client) run concurrently in
//! one task over a shared response FIFO ([`Pipeline`]).
//!
//! Each loop reads what its socket has, finds whole frames, shows each frame to its side's
//! seam, and forwards the chunk in one write (with any frame the seam replaced). The seams
//! are [`ClientSide`] and [`ServerSide`]: [`PassThrough`] (`--capture off`) only keeps the
//! FIFO's books; capture ([`crate::capture::layer`]) plans and rewrites writes on the way
//! up and reads row images off the results on the way down. Buffers are bounded by the
//! frame limit (COPY data, and rows a seam need not see whole, are streamed in pieces),
//! and a loop does not read more until its write completed, so a slow client slows only
//! its own upstream.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::SessionError;
use crate::frame::{FrameCursor, FrameError, Next};
use crate::message::{self, backend_tag as bt, tag};
use crate::pipeline::{Pipeline, Request, Statement};
use crate::shared::{Shared, ShutdownSignal};
use crate::stream::{ReadHalf, Stream, WriteHalf};

/// Bytes a relay loop asks the socket for at a time.
const READ_CHUNK: usize = 32 * 1024;

/// How the relay ended without a session error.
pub(crate) enum RelayEnd {
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
pub(crate) struct Relay<S> {
    /// The response FIFO.
    pub pipeline: Pipeline,
    /// A loop is in the middle of a write; shutting down now would cut a frame.
    writing_up: bool,
    writing_down: bool,
    /// What the two seams share (capture: the session's transactions and roles).
    pub shared: S,
}

/// Where complete frames sit in a chunk: `(tag, offset, size)`.
pub(crate) type FrameIndex = Vec<(u8, usize, usize)>;

/// The client→server seam: sees every whole frame the client sends, in order.
pub(crate) trait ClientSide: Send {
    /// What this side shares with its [`ServerSide`], under the relay's lock.
    type Shared: Send;

    /// Whether the FIFO keeps each statement's text and timing for this seam (capture
    /// reports statements; the pass-through only needs the FIFO's books).
    const TRACKS_STATEMENTS: bool;

    /// Once per chunk, before the relay state is locked; may wait (capture reads the
    /// catalog here).
    fn prepare<'a>(
        &'a mut self,
        chunk: &'a [u8],
        frames: &'a FrameIndex,
        relay: &'a Mutex<Relay<Self::Shared>>,
    ) -> impl Future<Output = ()> + Send + 'a;

    /// One frame: records in `relay.pipeline` what it expects back, and returns the frame
    /// to send instead, if any.
    fn frame(&mut self, t: u8, frame: &[u8], relay: &mut Relay<Self::Shared>) -> Option<Bytes>;
}

/// The server→client seam: sees every whole frame the server sends, in order.
pub(crate) trait ServerSide: Send {
    /// What this side shares with its [`ClientSide`].
    type Shared: Send;

    /// Whether a message of this type may be forwarded in pieces (never seen whole).
    fn streamable(&self, t: u8) -> bool;

    /// One frame: passes it to `relay.pipeline` (which matches it to its request), and
    /// returns what the client gets instead, if anything changes (`Some(None)`: nothing).
    fn frame(
        &mut self,
        t: u8,
        frame: &[u8],
        relay: &mut Relay<Self::Shared>,
    ) -> Option<Option<Bytes>>;

    /// After a chunk's frames, before its bytes are written to the client (capture hands
    /// its events over here, and strict durability holds a commit's answer).
    fn before_write(&mut self) -> impl Future<Output = ()> + Send + '_;

    /// After a chunk was written to the client.
    fn after_write(&mut self);

    /// The relay ended (however); `relay` as it was left.
    fn finish(&mut self, relay: &mut Relay<Self::Shared>);
}

/// The seams with capture off: the FIFO's books and nothing else.
pub(crate) struct PassThrough;

impl ClientSide for PassThrough {
    type Shared = ();
    const TRACKS_STATEMENTS: bool = false;

    fn prepare<'a>(
        &'a mut self,
        _chunk: &'a [u8],
        _frames: &'a FrameIndex,
        _relay: &'a Mutex<Relay<()>>,
    ) -> impl Future<Output = ()> + Send + 'a {
        std::future::ready(())
    }

    fn frame(&mut self, t: u8, _frame: &[u8], relay: &mut Relay<()>) -> Option<Bytes> {
        relay.pipeline.on_frontend(t, || untracked_request(t));
        None
    }
}

impl ServerSide for PassThrough {
    type Shared = ();

    fn streamable(&self, t: u8) -> bool {
        // Never decoded by the relay.
        t == bt::COPY_DATA || t == bt::DATA_ROW
    }

    fn frame(&mut self, t: u8, frame: &[u8], relay: &mut Relay<()>) -> Option<Option<Bytes>> {
        relay.pipeline.on_backend(t, frame);
        None
    }

    fn before_write(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    fn after_write(&mut self) {}

    fn finish(&mut self, _relay: &mut Relay<()>) {}
}

/// The FIFO entry for a frontend message when nothing is decoded: a match on the tag.
pub(crate) fn untracked_request(t: u8) -> Option<Request> {
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

/// Relays between `client` and `server` through the two seams until one side ends or the
/// proxy shuts down. Returns how it ended and how often the FIFO resynchronised.
pub(crate) async fn run<C, S>(
    client: &mut Stream,
    server: &mut Stream,
    mut up: C,
    mut down: S,
    state: C::Shared,
    shared: &Shared,
) -> (Result<RelayEnd, SessionError>, u64)
where
    C: ClientSide,
    S: ServerSide<Shared = C::Shared>,
{
    let relay = Mutex::new(Relay {
        pipeline: Pipeline::new(C::TRACKS_STATEMENTS).metered(
            shared
                .config
                .statement_metrics
                .then(|| shared.stats.clone()),
        ),
        writing_up: false,
        writing_down: false,
        shared: state,
    });
    let end = {
        let (mut crd, mut cwr) = client.split();
        let (mut srd, mut swr) = server.split();
        let up = client_to_server(&mut crd, &mut swr, &relay, &mut up, shared);
        let down = server_to_client(&mut srd, &mut cwr, &relay, &mut down, shared);
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
    let mut r = lock(&relay);
    down.finish(&mut r);
    (end, r.pipeline.desyncs())
}

fn lock<S>(relay: &Mutex<Relay<S>>) -> MutexGuard<'_, Relay<S>> {
    // A poisoned lock only means a loop panicked mid-update; the state is still usable.
    relay.lock().unwrap_or_else(|p| p.into_inner())
}

/// Client messages never decoded, so they may be streamed when large.
fn client_streamable(t: u8) -> bool {
    t == tag::COPY_DATA
}

/// Finds the complete frames (and streamed pieces) at the front of `buf`. Returns how
/// many bytes they span, which the caller forwards, and how many more bytes the next
/// frame needs.
fn scan(
    buf: &[u8],
    cursor: &mut FrameCursor,
    frames: &mut FrameIndex,
    streamable: &dyn Fn(u8) -> bool,
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

/// One direction's buffers: what was read, where its complete frames are, what replaces
/// some of them, and how many bytes the next frame still needs.
struct Leg {
    buf: BytesMut,
    cursor: FrameCursor,
    frames: FrameIndex,
    replaced: Vec<(usize, Option<Bytes>)>,
    out: BytesMut,
    want: usize,
}

impl Leg {
    fn new(max_frame_len: usize) -> Self {
        Leg {
            buf: BytesMut::with_capacity(READ_CHUNK),
            cursor: FrameCursor::new(max_frame_len),
            frames: FrameIndex::new(),
            replaced: Vec::new(),
            out: BytesMut::new(),
            want: 0,
        }
    }

    /// Reads more; 0 at the end of the stream.
    async fn read(&mut self, rd: &mut ReadHalf<'_>) -> io::Result<usize> {
        read_more(rd, &mut self.buf, self.want).await
    }

    /// Indexes the complete frames at the front of the buffer; how many bytes they span
    /// (0: none yet). Clears the previous chunk's replacements.
    fn scan(
        &mut self,
        streamable: &dyn Fn(u8) -> bool,
        stop_after: Option<u8>,
    ) -> Result<usize, FrameError> {
        let (end, want) = scan(
            &self.buf,
            &mut self.cursor,
            &mut self.frames,
            streamable,
            stop_after,
        )?;
        self.want = want;
        self.replaced.clear();
        Ok(end)
    }

    /// Writes the first `end` bytes (with the replaced frames) in one write, flushes,
    /// counts them (as read) in `relayed`, and drops them from the buffer.
    async fn forward(
        &mut self,
        wr: &mut WriteHalf<'_>,
        end: usize,
        relayed: &AtomicU64,
    ) -> io::Result<()> {
        let bytes = outgoing(
            &mut self.out,
            &self.buf[..end],
            &self.frames,
            &self.replaced,
        );
        wr.write_all(bytes).await?;
        wr.flush().await?;
        self.out.clear();
        self.buf.advance(end);
        relayed.fetch_add(end as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn client_to_server<C: ClientSide>(
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    relay: &Mutex<Relay<C::Shared>>,
    side: &mut C,
    shared: &Shared,
) -> Result<RelayEnd, SessionError> {
    let mut leg = Leg::new(shared.config.max_frame_len);
    loop {
        let n = leg.read(rd).await.map_err(SessionError::ClientIo)?;
        if n == 0 {
            if leg.buf.is_empty() && !leg.cursor.is_streaming() {
                return Ok(RelayEnd::ClientClosed);
            }
            return Err(SessionError::ClientFrame(FrameError::Truncated));
        }
        let end = leg
            .scan(&client_streamable, Some(tag::TERMINATE))
            .map_err(SessionError::ClientFrame)?;
        if end == 0 {
            continue;
        }
        let chunk = &leg.buf[..end];
        side.prepare(chunk, &leg.frames, relay).await;
        {
            let mut r = lock(relay);
            for (i, &(t, at, size)) in leg.frames.iter().enumerate() {
                if let Some(replacement) = side.frame(t, &chunk[at..at + size], &mut r) {
                    leg.replaced.push((i, Some(replacement)));
                }
            }
            r.writing_up = true;
        }
        let terminated = leg
            .frames
            .last()
            .is_some_and(|&(t, _, _)| t == tag::TERMINATE);
        leg.forward(wr, end, &shared.stats.client_bytes)
            .await
            .map_err(SessionError::ServerIo)?;
        lock(relay).writing_up = false;
        if terminated {
            return Ok(RelayEnd::ClientTerminated);
        }
    }
}

async fn server_to_client<S: ServerSide>(
    rd: &mut ReadHalf<'_>,
    wr: &mut WriteHalf<'_>,
    relay: &Mutex<Relay<S::Shared>>,
    side: &mut S,
    shared: &Shared,
) -> Result<RelayEnd, SessionError> {
    let mut leg = Leg::new(shared.config.max_frame_len);
    let mut server_said_fatal = false;
    loop {
        let n = match leg.read(rd).await {
            Ok(n) => n,
            Err(e) if server_said_fatal => {
                tracing::debug!("upstream closed after a FATAL error: {e}");
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
        let streamable = |t: u8| side.streamable(t);
        let end = leg
            .scan(&streamable, None)
            .map_err(SessionError::ServerFrame)?;
        if end == 0 {
            continue;
        }
        let chunk = &leg.buf[..end];
        {
            let mut r = lock(relay);
            for (i, &(t, at, size)) in leg.frames.iter().enumerate() {
                let frame = &chunk[at..at + size];
                if t == bt::ERROR_RESPONSE
                    && message::error_fields(frame).is_ok_and(|e| e.is_fatal())
                {
                    server_said_fatal = true;
                }
                if let Some(replacement) = side.frame(t, frame, &mut r) {
                    leg.replaced.push((i, replacement));
                }
            }
            r.writing_down = true;
        }
        side.before_write().await;
        leg.forward(wr, end, &shared.stats.server_bytes)
            .await
            .map_err(SessionError::ClientIo)?;
        lock(relay).writing_down = false;
        side.after_write();
    }
}

/// Resolves when the proxy is shutting down and this session may close: at once when
/// idle (nothing in flight, no open transaction, no write half-done), else as soon as it
/// becomes idle, or when the grace period ends.
async fn shutdown_point<S>(
    relay: &Mutex<Relay<S>>,
    shared: &Shared,
    signal: &ShutdownSignal<'_>,
) -> RelayEnd {
    signal.requested().await;
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
    loop {
        {
            let r = lock(relay);
            // Resolving ends the select in `run`, which drops both relay loops
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
