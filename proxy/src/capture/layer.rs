//! Capture's side of the relay's seams ([`crate::relay::ClientSide`],
//! [`crate::relay::ServerSide`]).
//!
//! On the way up, [`Planner`] plans each `Query`/`Parse` against the catalog and the
//! session's roles ([`super::plan`]) and may replace it with the rewritten text (and a
//! `Bind` with extended result formats). On the way down, [`Reader`] takes the appended
//! columns off rewritten statements' results, turns them into row images, tracks
//! transactions, roles and request ids ([`super::txn`]), and hands the events to the
//! sink. The two share [`SessionCapture`] under the relay's lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::analysis::{self, Analysis, Kind};
use super::catalog::{self, Catalog, Snapshot};
use super::event::{CaptureEvent, EventSink, SessionId, TxOutcome};
use super::plan::{self, StepPlan};
use super::refuse;
use super::request_id;
use super::role::RoleChange;
use super::role::{self, RoleState};
use super::txn::Tracker;
use crate::message::{self, backend_tag as bt, tag};
use crate::pipeline::{Completion, Pipeline, Request, Rewritten, Started, Statement};
use crate::relay::{ClientSide, FrameIndex, Relay, ServerSide};
use crate::shared::Shared;

/// What both directions of one session's capture share.
pub(crate) struct SessionCapture {
    tracker: Tracker,
    catalog: Arc<Catalog>,
    database: String,
}

/// The seams and shared state for one session with capture on.
pub(crate) fn start(
    id: SessionId,
    shared: &Arc<Shared>,
    sink: Arc<dyn EventSink>,
    database: &str,
    user: &str,
) -> (Planner, Reader, SessionCapture) {
    let catalog = shared.catalogs.get(database, user);
    let planner = Planner {
        names: SqlNames::default(),
        analyses: HashMap::new(),
        plans: HashMap::new(),
        catalog: catalog.clone(),
        target: shared.catalog_target(database, user),
        pending_roles: Vec::new(),
        unsettled: false,
        prepared: HashMap::new(),
        snapshot: None,
        may_refuse: sink.may_refuse(),
        sink: sink.clone(),
        refused_execute: false,
    };
    let reader = Reader {
        id,
        shared: shared.clone(),
        untagged: sink.untagged_statements(),
        sink,
        events: Vec::new(),
        completions: Vec::new(),
    };
    let state = SessionCapture {
        tracker: Tracker::new(id, user),
        catalog,
        database: database.to_string(),
    };
    (planner, reader, state)
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
pub(crate) struct Planner {
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
    /// The snapshot [`ClientSide::prepare`] read for the chunk being planned.
    snapshot: Option<Arc<Snapshot>>,
    /// Asked whether writes must be refused (`--on-store-failure=reject`), when it may.
    sink: Arc<dyn EventSink>,
    may_refuse: bool,
    /// The frame just planned was an `Execute` replaced by a refusal.
    refused_execute: bool,
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
        let (body, comment) = request_id::split_trailing_comment(text);
        let trailing = comment.and_then(request_id::sqlcommenter_request_id);
        if let Some(a) = self.analyses.get(body.as_bytes()) {
            return Some((a.clone(), trailing));
        }
        let analysis = Arc::new(analysis::analyze(body));
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
            catalog_error: error.as_ref(),
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

impl ClientSide for Planner {
    type Shared = SessionCapture;
    const TRACKS_STATEMENTS: bool = true;

    async fn prepare(
        &mut self,
        chunk: &[u8],
        frames: &FrameIndex,
        relay: &Mutex<Relay<SessionCapture>>,
    ) {
        // A write to plan needs the catalog; reading it may wait on the side connection,
        // so it happens before the relay state is locked.
        self.snapshot = snapshot_for(self, chunk, frames, relay).await;
    }

    fn frame(&mut self, t: u8, frame: &[u8], relay: &mut Relay<SessionCapture>) -> Option<Bytes> {
        if !self.pending_roles.is_empty() && !relay.pipeline.awaiting() {
            // Everything forwarded was answered: role changes are confirmed.
            self.pending_roles.clear();
        }
        let roles = relay.shared.tracker.roles();
        // Lent to the planner for this frame (no reference count traffic per frame).
        let snapshot = self.snapshot.take();
        let mut replacement = None;
        relay.pipeline.on_frontend(t, || {
            let (req, new) = plan_frontend(t, frame, self, snapshot.as_ref(), roles);
            replacement = new;
            req
        });
        self.snapshot = snapshot;
        if std::mem::take(&mut self.refused_execute) {
            relay.pipeline.injected_before_last(refuse::ACKS);
        }
        replacement
    }
}

/// The server→client side: images off the results, transactions, events to the sink.
pub(crate) struct Reader {
    id: SessionId,
    shared: Arc<Shared>,
    sink: Arc<dyn EventSink>,
    events: Vec<CaptureEvent>,
    /// Statements completed in the chunk being relayed, with their request ids; reported
    /// once the chunk is written.
    completions: Vec<(Completion, Option<String>)>,
    /// The sink wants statements no request tags (asked once, not per statement).
    untagged: bool,
}

impl ServerSide for Reader {
    type Shared = SessionCapture;

    fn streamable(&self, t: u8) -> bool {
        // Rows of rewritten statements must arrive whole to lose their appended columns.
        t == bt::COPY_DATA
    }

    fn frame(
        &mut self,
        t: u8,
        frame: &[u8],
        relay: &mut Relay<SessionCapture>,
    ) -> Option<Option<Bytes>> {
        if relay.pipeline.injected_ack(t) {
            return Some(None);
        }
        let mut replacement = None;
        if t == bt::ROW_DESCRIPTION || t == bt::DATA_ROW {
            replacement = strip_capture(
                t,
                frame,
                &relay.pipeline,
                &mut relay.shared,
                &mut self.events,
            );
        }
        let capture = &mut relay.shared;
        if let Some(done) = relay.pipeline.on_backend(t, frame) {
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
                    .on_completion(step, tag.as_deref(), &mut self.events);
                if matches!(step.kind, Kind::Ddl | Kind::Routine { .. }) && tag.is_some() {
                    self.shared.catalogs.invalidate_database(&capture.database);
                }
            }
            // A statement no request claims is of no use to a sink that keeps only
            // requests' statements: not even its text is copied then.
            if request.is_some() || self.untagged {
                self.completions.push((done, request));
            }
        }
        if t == bt::READY_FOR_QUERY {
            capture
                .tracker
                .on_ready(relay.pipeline.tx_status(), &mut self.events);
        }
        replacement
    }

    fn before_write(&mut self) -> impl Future<Output = ()> + Send + '_ {
        let committed = self.events.iter().any(|e| {
            matches!(
                e,
                CaptureEvent::TxEnded {
                    outcome: TxOutcome::Committed | TxOutcome::Unknown,
                    ..
                }
            )
        });
        if !self.events.is_empty() {
            self.sink.emit_all(&mut self.events);
        }
        // Strict durability: the commit's answer waits for its records.
        let durable = committed.then(|| self.sink.durable()).flatten();
        let pressure = self.sink.backpressure();
        async move {
            if let Some(durable) = durable {
                durable.await;
            }
            if let Some(pressure) = pressure {
                pressure.await;
            }
        }
    }

    fn after_write(&mut self) {
        for (done, request) in self.completions.drain(..) {
            self.sink.emit(statement_event(self.id, done, request));
        }
    }

    fn finish(&mut self, relay: &mut Relay<SessionCapture>) {
        let in_flight = relay.pipeline.in_flight() > 0;
        relay.shared.tracker.on_lost(in_flight, &mut self.events);
        for e in self.events.drain(..) {
            self.sink.emit(e);
        }
        self.sink
            .emit(CaptureEvent::SessionEnded { session: self.id });
    }
}

/// The catalog snapshot for planning this chunk: the cached one, or a fresh read when a
/// write in the chunk needs it and the cache is missing or stale; with the privileges of
/// every role the chunk's writes may run as.
async fn snapshot_for(
    p: &mut Planner,
    chunk: &[u8],
    frames: &FrameIndex,
    relay: &Mutex<Relay<SessionCapture>>,
) -> Option<Arc<Snapshot>> {
    // Roles other than the login role whose privileges the writes may need; none in the
    // usual case (no role change), which costs no allocation.
    let roles = {
        let r = relay.lock().unwrap_or_else(|p| p.into_inner());
        if p.unsettled && r.pipeline.is_idle() {
            // The DDL is answered and its transaction over: read the catalog again
            // (another session may have refreshed it before the DDL committed).
            p.unsettled = false;
            p.catalog.invalidate_now();
        }
        if !p.pending_roles.is_empty() && !r.pipeline.awaiting() {
            p.pending_roles.clear();
        }
        let confirmed = r.shared.tracker.roles();
        if p.pending_roles.is_empty() && confirmed.effective() == Some(confirmed.login()) {
            None
        } else {
            role::candidates(confirmed, &p.pending_roles)
        }
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

/// Why a statement with these steps must be refused: it writes, and the sink cannot keep
/// what it would record (`--on-store-failure=reject`).
fn refusal(p: &Planner, steps: Option<&[StepPlan]>) -> Option<String> {
    if !p.may_refuse {
        return None;
    }
    let writes = steps?
        .iter()
        .any(|s| matches!(s.kind, Kind::Write(_)) || s.capture.is_some() || s.gap.is_some());
    if writes {
        p.sink.refusal()
    } else {
        None
    }
}

/// The SQL text of a `Query` or `Parse` frame, borrowed.
fn sql_of(t: u8, frame: &[u8]) -> Option<&[u8]> {
    match t {
        tag::QUERY => message::query_sql(frame).ok(),
        tag::PARSE => message::parse_message(frame).ok().map(|(_, sql)| sql),
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
            let replacement = match refusal(p, steps.as_deref()) {
                Some(why) => Some(refuse::query(&why)),
                None => rewritten.map(|sql| message::query(&sql)),
            };
            let mut statement =
                Statement::new(sql.map(Bytes::copy_from_slice), Some(Started::now()));
            statement.steps = steps;
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
                                super::returning::CAPTURE_COLUMNS,
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
            let mut replacement = None;
            if let Some(x) = prepared {
                if let Some(why) = refusal(p, x.steps.as_deref()) {
                    replacement = Some(refuse::execute(&why));
                    p.refused_execute = true;
                }
                statement.steps = x.steps;
                statement.binary = x.binary;
            }
            (Some(Request::Execute(statement)), replacement)
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

/// For a `RowDescription` or `DataRow` of a statement capture rewrote: reads the images
/// into events and returns what the client gets instead (`Some(None)` drops the frame).
fn strip_capture(
    t: u8,
    frame: &[u8],
    pipeline: &Pipeline,
    capture: &mut SessionCapture,
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
    let tag = done.tag.map(|t| String::from_utf8_lossy(&t).into_owned());
    let step = done.statement.current();
    CaptureEvent::Statement {
        session,
        sql: String::from_utf8_lossy(statement_text(&done.statement)).into_owned(),
        started: done
            .statement
            .started
            .map_or_else(SystemTime::now, |s| s.wall),
        elapsed,
        rows: tag.as_deref().and_then(flux_record::tag_rows),
        tag,
        sqlstate: error.as_ref().map(|e| e.code.clone()),
        error: error.map(|e| e.message),
        request,
        verb: step.and_then(|s| s.verb.clone()),
        tables: step.map(|s| s.tables.clone()).unwrap_or_default(),
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
