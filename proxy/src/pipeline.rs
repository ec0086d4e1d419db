//! The per-connection FIFO of requests awaiting responses.
//!
//! PostgreSQL answers frontend messages strictly in order, and clients pipeline freely
//! (many `Parse/Bind/Execute` before one `Sync`). To know which statement a
//! `CommandComplete` or `ErrorResponse` belongs to, the session records every forwarded
//! message that expects an answer and pops entries as the answers come back. The rules
//! mirror the server's (`postgres.c`, protocol chapter "Extended Query" and "COPY"):
//!
//! - after an `ErrorResponse` to an extended-protocol message, the server discards every
//!   message up to the next `Sync`, so those entries are dropped too, including ones the
//!   client sends after the error was seen (`skip_until_sync`);
//! - while the server is in COPY-in mode it ignores `Sync` and `Flush`; clients such as
//!   tokio-postgres send `Bind/Execute/Sync` for a `COPY … FROM STDIN` and a second `Sync`
//!   after `CopyDone`, and only the second one is answered;
//! - `NoticeResponse`, `NotificationResponse` and `ParameterStatus` can arrive at any time
//!   and answer nothing.
//!
//! The FIFO only observes: nothing the proxy forwards depends on it being right, so a
//! confused FIFO degrades capture, never the client's session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::capture::plan::{CapturePlan, StepPlan};
use crate::message::{backend_tag as bt, tag};

/// A forwarded frontend message that the server will answer.
#[derive(Debug, Clone)]
pub enum Request {
    /// Simple-protocol `Query`; answered by results and a `ReadyForQuery`.
    Query(Statement),
    /// `Parse`; answered by `ParseComplete`.
    Parse,
    /// `Bind`; answered by `BindComplete`.
    Bind,
    /// `Describe`; answered by `[ParameterDescription] RowDescription | NoData`. Carries
    /// the capture plan when the described statement was rewritten.
    Describe(Option<Arc<CapturePlan>>),
    /// `Execute`; answered by rows and `CommandComplete | EmptyQueryResponse | PortalSuspended`.
    Execute(Statement),
    /// `Close`; answered by `CloseComplete`.
    Close,
    /// `Sync`; answered by `ReadyForQuery`.
    Sync,
    /// `FunctionCall`; answered by `FunctionCallResponse` and `ReadyForQuery`.
    FunctionCall,
    /// Marks where the client ended a COPY-in (`CopyDone`/`CopyFail`) before the server
    /// was seen entering COPY mode. Answers nothing.
    CopyEnd,
    /// A `Close`, `Parse` or `Bind` the proxy sent in place of the client's `Execute`
    /// (a refused write, [`crate::capture::refuse`]); its acknowledgement is dropped.
    Injected,
}

impl Request {
    fn is_extended(&self) -> bool {
        matches!(
            self,
            Request::Parse
                | Request::Injected
                | Request::Bind
                | Request::Describe(_)
                | Request::Execute(_)
                | Request::Close
        )
    }
}

/// When a statement was forwarded, on both clocks: the monotonic one for its duration, the
/// wall clock for the record. Read together once, so the statements of one forwarded text
/// share one start.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Monotonic.
    pub at: Instant,
    /// Wall clock.
    pub wall: std::time::SystemTime,
}

impl Started {
    /// Now.
    pub fn now() -> Self {
        Started {
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
        }
    }
}

/// What the proxy knows about a statement when it forwards it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// SQL text, when the session tracks it (capture on).
    pub sql: Option<Bytes>,
    /// When the proxy forwarded it.
    pub started: Option<Started>,
    /// The session's plan for each statement of the text (capture on).
    pub steps: Option<Arc<[StepPlan]>>,
    /// Which of `steps` the server is answering now (a simple query runs several).
    pub step: usize,
    /// Result columns come in binary format (`Bind` asked for it for all columns).
    pub binary: bool,
}

impl Statement {
    /// A statement known only by its text (or not even that).
    pub fn new(sql: Option<Bytes>, started: Option<Started>) -> Self {
        Self {
            sql,
            started,
            steps: None,
            step: 0,
            binary: false,
        }
    }

    /// The plan of the statement being answered.
    pub fn current(&self) -> Option<&StepPlan> {
        self.steps.as_ref()?.get(self.step)
    }
}

/// What the next `RowDescription` or `DataRow` belongs to, when capture rewrote it.
/// Borrowed from the FIFO: it is asked for on every row.
#[derive(Debug, Clone, Copy)]
pub enum Rewritten<'a> {
    /// A `Describe` of a rewritten statement or portal.
    Describe(&'a CapturePlan),
    /// Rows of a rewritten statement.
    Rows {
        /// The statement.
        statement: &'a Statement,
        /// Its capture plan.
        plan: &'a CapturePlan,
    },
}

/// A statement the server finished, as seen by the FIFO.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The statement as recorded when it was forwarded.
    pub statement: Statement,
    /// `CommandComplete` tag, or `None` for an error or an empty query.
    pub tag: Option<Bytes>,
    /// The error, when the statement failed.
    pub error: Option<Bytes>,
}

/// The per-connection request FIFO and the protocol state it depends on.
#[derive(Debug)]
pub struct Pipeline {
    /// Whether completions are reported (capture on); otherwise only the bookkeeping runs.
    track: bool,
    queue: VecDeque<Request>,
    skip_until_sync: bool,
    copy_in: bool,
    tx_status: u8,
    desyncs: u64,
    /// Where finished statements are counted and timed, when metrics are on.
    meter: Option<Arc<crate::shared::Stats>>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Pipeline {
    /// An empty FIFO for a session that just received its first `ReadyForQuery`.
    /// With `track`, [`on_backend`](Self::on_backend) reports completed statements.
    pub fn new(track: bool) -> Self {
        Self {
            track,
            queue: VecDeque::new(),
            skip_until_sync: false,
            copy_in: false,
            tx_status: b'I',
            desyncs: 0,
            meter: None,
        }
    }

    /// Also counts each finished statement by command and times it, into `stats`.
    pub(crate) fn metered(mut self, stats: Option<Arc<crate::shared::Stats>>) -> Self {
        self.meter = stats;
        self
    }

    /// Records a forwarded frontend message by tag, before it is written upstream.
    /// `request` is built only for tags that expect an answer.
    pub fn on_frontend(&mut self, msg_tag: u8, request: impl FnOnce() -> Option<Request>) {
        match msg_tag {
            tag::SYNC => {
                if self.copy_in {
                    return; // ignored by the server in COPY-in mode
                }
                self.skip_until_sync = false;
                self.queue.push_back(Request::Sync);
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                if self.copy_in {
                    self.copy_in = false;
                } else if !self.skip_until_sync {
                    self.queue.push_back(Request::CopyEnd);
                }
            }
            _ if self.skip_until_sync => {} // the server discards it
            _ => {
                if let Some(mut req) = request() {
                    if self.meter.is_some() {
                        if let Request::Query(s) | Request::Execute(s) = &mut req {
                            s.started.get_or_insert_with(Started::now);
                        }
                    }
                    self.queue.push_back(req);
                }
            }
        }
    }

    /// Updates the FIFO for a backend message (`frame` is the whole message, header
    /// included). When tracking, returns a completion for a message that finishes a
    /// statement (`CommandComplete`, `EmptyQueryResponse`, `ErrorResponse`).
    pub fn on_backend(&mut self, msg_tag: u8, frame: &[u8]) -> Option<Completion> {
        match msg_tag {
            bt::PARSE_COMPLETE | bt::BIND_COMPLETE | bt::CLOSE_COMPLETE | bt::NO_DATA => {
                self.pop_front();
                None
            }
            bt::ROW_DESCRIPTION => {
                if matches!(self.front(), Some(Request::Describe(_))) {
                    self.pop_front();
                }
                None
            }
            bt::COMMAND_COMPLETE | bt::EMPTY_QUERY_RESPONSE => {
                // Read once, for the meter and for the completion (when either wants it).
                let tag = (msg_tag == bt::COMMAND_COMPLETE && (self.track || self.meter.is_some()))
                    .then(|| crate::message::command_tag(frame).ok())
                    .flatten();
                if self.meter.is_some() {
                    self.observe(Some(tag.unwrap_or_default()));
                }
                let tag = tag.filter(|_| self.track).map(Bytes::copy_from_slice);
                self.complete(tag, None)
            }
            bt::PORTAL_SUSPENDED => {
                self.pop_front();
                None
            }
            bt::ERROR_RESPONSE => self.on_error(frame),
            bt::READY_FOR_QUERY => {
                self.tx_status = frame.get(crate::frame::HEADER_LEN).copied().unwrap_or(b'I');
                self.copy_in = false;
                // Resynchronise defensively: whatever precedes the entry this answers is stale.
                while let Some(req) = self.queue.pop_front() {
                    if matches!(
                        req,
                        Request::Sync | Request::Query(_) | Request::FunctionCall
                    ) {
                        return None;
                    }
                    if !matches!(req, Request::CopyEnd) {
                        self.desyncs += 1;
                    }
                }
                None
            }
            bt::COPY_IN_RESPONSE | bt::COPY_BOTH_RESPONSE => {
                self.enter_copy_in();
                None
            }
            _ => None,
        }
    }

    fn complete(&mut self, tag: Option<Bytes>, error: Option<Bytes>) -> Option<Completion> {
        if !self.track {
            if matches!(self.front(), Some(Request::Execute(_))) {
                self.queue.pop_front();
            }
            return None;
        }
        match self.front() {
            Some(Request::Execute(_)) => match self.queue.pop_front() {
                Some(Request::Execute(statement)) => Some(Completion {
                    statement,
                    tag,
                    error,
                }),
                _ => None,
            },
            // A simple query answers each of its statements before one ReadyForQuery.
            Some(Request::Query(_)) => match self.queue.front_mut() {
                Some(Request::Query(statement)) => {
                    let done = statement.clone();
                    statement.step += 1;
                    Some(Completion {
                        statement: done,
                        tag,
                        error,
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// When the response at the front belongs to a statement capture rewrote: what to
    /// do with its `RowDescription` and `DataRow`s.
    pub fn rewritten(&self) -> Option<Rewritten<'_>> {
        let front = self.queue.iter().find(|r| !matches!(r, Request::CopyEnd))?;
        match front {
            Request::Describe(Some(plan)) => Some(Rewritten::Describe(plan)),
            Request::Query(statement) | Request::Execute(statement) => {
                let plan = statement.current()?.capture.as_deref()?;
                Some(Rewritten::Rows { statement, plan })
            }
            _ => None,
        }
    }

    /// Counts the statement at the front as finished (`None`: failed).
    fn observe(&self, tag: Option<&[u8]>) {
        let (Some(stats), Some(Request::Query(s) | Request::Execute(s))) =
            (&self.meter, self.queue.front())
        else {
            return;
        };
        if let Some(started) = &s.started {
            stats.statements.observe(tag, started.at.elapsed());
        }
    }

    fn on_error(&mut self, frame: &[u8]) -> Option<Completion> {
        self.copy_in = false;
        self.observe(None);
        let extended = self.front().is_some_and(Request::is_extended);
        let error = self.track.then(|| Bytes::copy_from_slice(frame));
        let mut completion = self.complete(None, error.clone());
        if let (true, None, Some(error)) = (extended, &completion, error) {
            // A Parse or Bind failed: the statement that fails is the Execute it prepared.
            completion = self
                .queue
                .iter()
                .take_while(|r| !matches!(r, Request::Sync))
                .find_map(|r| match r {
                    Request::Execute(statement) => Some(Completion {
                        statement: statement.clone(),
                        tag: None,
                        error: Some(error.clone()),
                    }),
                    _ => None,
                });
        }
        if extended {
            // The server now skips to the next Sync; so do we.
            while let Some(req) = self.queue.front() {
                if matches!(req, Request::Sync) {
                    return completion;
                }
                self.queue.pop_front();
            }
            self.skip_until_sync = true;
        }
        completion
    }

    /// The server entered COPY-in for the request at the front: `Sync`s the client sent
    /// after it and before ending the copy are ignored by the server.
    fn enter_copy_in(&mut self) {
        self.drop_leading_markers();
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue.get(i) {
                Some(Request::CopyEnd) => {
                    self.queue.remove(i);
                    return; // the client already ended the copy
                }
                Some(Request::Sync) => {
                    self.queue.remove(i);
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    /// The `Execute` just recorded was replaced by `n` injected messages before it:
    /// their acknowledgements are expected first. Nothing when the server is skipping
    /// to `Sync` (it skips them too).
    pub(crate) fn injected_before_last(&mut self, n: u8) {
        if self.skip_until_sync || !matches!(self.queue.back(), Some(Request::Execute(_))) {
            return;
        }
        let at = self.queue.len() - 1;
        for _ in 0..n {
            self.queue.insert(at, Request::Injected);
        }
    }

    /// Whether a backend message acknowledges an injected message (and is not for the
    /// client); consumes the FIFO entry if so.
    pub(crate) fn injected_ack(&mut self, msg_tag: u8) -> bool {
        let ack = matches!(
            msg_tag,
            bt::PARSE_COMPLETE | bt::BIND_COMPLETE | bt::CLOSE_COMPLETE
        ) && matches!(self.front(), Some(Request::Injected));
        if ack {
            self.queue.pop_front();
        }
        ack
    }

    fn drop_leading_markers(&mut self) {
        while matches!(self.queue.front(), Some(Request::CopyEnd)) {
            self.queue.pop_front();
        }
    }

    fn front(&mut self) -> Option<&Request> {
        self.drop_leading_markers();
        self.queue.front()
    }

    fn pop_front(&mut self) -> Option<Request> {
        self.drop_leading_markers();
        self.queue.pop_front()
    }

    /// Nothing in flight and no transaction open: a safe point to close the session.
    pub fn is_idle(&self) -> bool {
        self.tx_status == b'I' && self.queue.iter().all(|r| matches!(r, Request::CopyEnd))
    }

    /// The transaction status from the last `ReadyForQuery` (`I`, `T` or `E`).
    pub fn tx_status(&self) -> u8 {
        self.tx_status
    }

    /// Whether any request awaits an answer (cheaper than [`Pipeline::in_flight`]).
    pub fn awaiting(&self) -> bool {
        self.queue.iter().any(|r| !matches!(r, Request::CopyEnd))
    }

    /// Requests awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.queue
            .iter()
            .filter(|r| !matches!(r, Request::CopyEnd))
            .count()
    }

    /// How often a `ReadyForQuery` found entries the FIFO expected to be answered first.
    pub fn desyncs(&self) -> u64 {
        self.desyncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Bytes {
        crate::message::encode(tag, body)
    }

    fn stmt(sql: &'static str) -> Statement {
        Statement {
            steps: None,
            step: 0,
            binary: false,
            sql: Some(Bytes::from_static(sql.as_bytes())),
            started: None,
        }
    }

    fn send(p: &mut Pipeline, t: u8, sql: &'static str) {
        p.on_frontend(t, || match t {
            tag::QUERY => Some(Request::Query(stmt(sql))),
            tag::PARSE => Some(Request::Parse),
            tag::BIND => Some(Request::Bind),
            tag::DESCRIBE => Some(Request::Describe(None)),
            tag::EXECUTE => Some(Request::Execute(stmt(sql))),
            tag::CLOSE => Some(Request::Close),
            _ => None,
        });
    }

    #[test]
    fn untracked_fifo_keeps_books_without_reporting() {
        let mut p = Pipeline::new(false);
        send(&mut p, tag::PARSE, "a");
        send(&mut p, tag::BIND, "a");
        send(&mut p, tag::EXECUTE, "a");
        send(&mut p, tag::SYNC, "");
        recv(&mut p, bt::PARSE_COMPLETE, b"");
        recv(&mut p, bt::BIND_COMPLETE, b"");
        assert!(recv(&mut p, bt::COMMAND_COMPLETE, b"SELECT 1\0").is_none());
        assert_eq!(p.in_flight(), 1);
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert!(p.is_idle());
        assert_eq!(p.desyncs(), 0);
    }

    fn recv(p: &mut Pipeline, t: u8, body: &[u8]) -> Option<String> {
        p.on_backend(t, &frame(t, body)).map(|c| {
            let sql = String::from_utf8_lossy(c.statement.sql.as_deref().unwrap_or_default())
                .into_owned();
            match (c.tag, c.error) {
                (Some(tag), _) => format!("{sql}={}", String::from_utf8_lossy(&tag)),
                (None, Some(_)) => format!("{sql}=ERROR"),
                (None, None) => format!("{sql}=EMPTY"),
            }
        })
    }

    #[test]
    fn pipelined_executes_complete_in_order() {
        let mut p = Pipeline::new(true);
        for sql in ["a", "b", "c"] {
            send(&mut p, tag::PARSE, sql);
            send(&mut p, tag::BIND, sql);
            send(&mut p, tag::EXECUTE, sql);
        }
        send(&mut p, tag::SYNC, "");
        let mut done = vec![];
        for _ in 0..3 {
            recv(&mut p, bt::PARSE_COMPLETE, b"");
            recv(&mut p, bt::BIND_COMPLETE, b"");
            done.extend(recv(&mut p, bt::COMMAND_COMPLETE, b"SELECT 1\0"));
        }
        assert_eq!(done, ["a=SELECT 1", "b=SELECT 1", "c=SELECT 1"]);
        assert!(!p.is_idle());
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert!(p.is_idle());
        assert_eq!(p.desyncs(), 0);
    }

    #[test]
    fn error_skips_to_sync_including_later_messages() {
        let mut p = Pipeline::new(true);
        send(&mut p, tag::PARSE, "bad");
        send(&mut p, tag::BIND, "bad");
        send(&mut p, tag::EXECUTE, "bad");
        // The error arrives before the client sent the rest of its batch.
        recv(&mut p, bt::ERROR_RESPONSE, b"SERROR\0C42601\0\0");
        send(&mut p, tag::BIND, "x");
        send(&mut p, tag::EXECUTE, "x");
        send(&mut p, tag::SYNC, "");
        send(&mut p, tag::QUERY, "next");
        assert_eq!(p.in_flight(), 2);
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert_eq!(
            recv(&mut p, bt::COMMAND_COMPLETE, b"SELECT 1\0").as_deref(),
            Some("next=SELECT 1")
        );
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert!(p.is_idle());
        assert_eq!(p.desyncs(), 0);
    }

    #[test]
    fn copy_in_ignores_syncs_sent_during_copy() {
        // tokio-postgres: Bind, Execute, Sync, CopyData…, CopyDone, Sync.
        let mut p = Pipeline::new(true);
        send(&mut p, tag::BIND, "");
        send(&mut p, tag::EXECUTE, "copy");
        send(&mut p, tag::SYNC, "");
        recv(&mut p, bt::BIND_COMPLETE, b"");
        recv(&mut p, bt::COPY_IN_RESPONSE, b"\0\0\0");
        send(&mut p, tag::COPY_DATA, "");
        send(&mut p, tag::COPY_DONE, "");
        send(&mut p, tag::SYNC, "");
        assert_eq!(
            recv(&mut p, bt::COMMAND_COMPLETE, b"COPY 2\0").as_deref(),
            Some("copy=COPY 2")
        );
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert!(p.is_idle());
        assert_eq!(p.desyncs(), 0);
    }

    #[test]
    fn copy_ended_by_client_before_server_entered_copy_mode() {
        let mut p = Pipeline::new(true);
        send(&mut p, tag::BIND, "");
        send(&mut p, tag::EXECUTE, "copy");
        send(&mut p, tag::SYNC, "");
        send(&mut p, tag::COPY_DONE, "");
        send(&mut p, tag::SYNC, "");
        recv(&mut p, bt::BIND_COMPLETE, b"");
        recv(&mut p, bt::COPY_IN_RESPONSE, b"\0\0\0");
        recv(&mut p, bt::COMMAND_COMPLETE, b"COPY 0\0");
        recv(&mut p, bt::READY_FOR_QUERY, b"I");
        assert!(p.is_idle());
        assert_eq!(p.desyncs(), 0);
    }

    #[test]
    fn simple_multi_statement_query_reports_each_statement() {
        let mut p = Pipeline::new(true);
        send(&mut p, tag::QUERY, "select 1; select 1/0");
        assert!(recv(&mut p, bt::ROW_DESCRIPTION, b"").is_none());
        assert!(recv(&mut p, bt::COMMAND_COMPLETE, b"SELECT 1\0").is_some());
        assert!(recv(&mut p, bt::ERROR_RESPONSE, b"SERROR\0\0").is_some());
        recv(&mut p, bt::READY_FOR_QUERY, b"T");
        assert_eq!(p.tx_status(), b'T');
        assert!(!p.is_idle());
    }

    #[test]
    fn describe_and_flush_without_sync() {
        // asyncpg: Parse, Describe, Flush — and waits.
        let mut p = Pipeline::new(true);
        send(&mut p, tag::PARSE, "");
        send(&mut p, tag::DESCRIBE, "");
        send(&mut p, tag::FLUSH, "");
        recv(&mut p, bt::PARSE_COMPLETE, b"");
        recv(&mut p, b't', b"\0\0");
        recv(&mut p, bt::ROW_DESCRIPTION, b"\0\0");
        assert_eq!(p.in_flight(), 0);
    }
}
