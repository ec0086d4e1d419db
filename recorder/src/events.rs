//! The proxy's capture events into the store's writer.
//!
//! Fail-open (DESIGN §3): `emit` never blocks. When the writer's queue is full or the
//! writer has stopped, the records are counted per table and, as soon as the writer
//! accepts again, one gap record per table says how many writes were lost and when.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::nanos;

use flux_proxy::capture::{CaptureEvent, Durable, MutationEvent, Op as ProxyOp, TxOutcome};
use flux_proxy::EventSink;
use flux_store::model;
use flux_store::{
    Durability, Gap, GapReason, Mutation, Nanos, Op, Record, Source, StatementRecord, TxEvent,
    TxId, TxRecord, WriterHandle,
};

/// Queued bytes past which a session waits for the writer before reading more from the
/// server (a bulk write's images stream at the store's pace), and the longest wait.
const BACKPRESSURE_BYTES: u64 = 4 << 20;
const BACKPRESSURE_WAIT: Duration = Duration::from_secs(2);

/// How long a strict commit waits for its records before the proxy answers anyway
/// (fail-open: a wedged store must not wedge the database's clients).
const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Records were lost between `since` and `until`: counted by table (where the record
/// names one) and kind.
#[derive(Default)]
struct Lost {
    since: Nanos,
    until: Nanos,
    by_table: BTreeMap<(Option<String>, model::Lost), u64>,
}

/// What kind of record was lost; each says what the history misses without it.
/// What kind of record a dropped one was, and its table when it has one.
fn lost_kind(r: &Record) -> (Option<String>, model::Lost) {
    match r {
        Record::Mutation(m) => (Some(m.table.clone()), model::Lost::Mutations),
        Record::Tx(_) => (None, model::Lost::Outcomes),
        Record::Gap(g) => (g.table.clone(), model::Lost::Gaps),
        Record::Statement(_) => (None, model::Lost::Statements),
        Record::Span(_) => (None, model::Lost::Spans),
        Record::Exchange(_) => (None, model::Lost::Exchanges),
        Record::Source(_) => (None, model::Lost::Sources),
        Record::Replayed(_) => (None, model::Lost::Replays),
    }
}

/// Counts of what capture handed to the store, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Row images (mutations) recorded.
    pub rows: AtomicU64,
    /// Records (of every kind) lost to a lagging or failed store since start.
    pub dropped: AtomicU64,
    /// Gaps by [`flux_proxy::capture::GapReason::kind`] (and `store_lagging` for records
    /// a lagging or failed store cost). Gaps are rare: a lock is fine.
    pub gaps: Mutex<BTreeMap<&'static str, u64>>,
}

impl CaptureStats {
    fn gap(&self, kind: &'static str, n: u64) {
        *self
            .gaps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += n;
    }
}

/// The store-backed [`EventSink`].
pub struct StoreSink {
    writer: WriterHandle,
    boot: Nanos,
    durability: Durability,
    lost: Mutex<Option<Lost>>,
    /// `lost` holds records not yet written as gaps (checked on every send without the lock).
    lagging: AtomicBool,
    /// What was recorded and lost, for metrics.
    pub stats: std::sync::Arc<CaptureStats>,
    /// The upstream's address, recorded with each database sessions use (replay refuses
    /// those as scratch databases).
    upstream: Option<String>,
    databases: Mutex<Vec<String>>,
    /// The writer stopped draining while a session waited on it: fail open.
    stalled: std::sync::Arc<AtomicBool>,
    /// `--redact` columns.
    redact: crate::Redactor,
    /// `--on-store-failure=reject`: writes are refused while the store cannot keep them.
    reject: bool,
}

impl StoreSink {
    /// A sink feeding `writer`; `boot` distinguishes this process's transaction ids.
    pub fn new(writer: WriterHandle, durability: Durability) -> Self {
        Self {
            writer,
            boot: nanos(SystemTime::now()),
            durability,
            lost: Mutex::new(None),
            lagging: AtomicBool::new(false),
            stats: Default::default(),
            upstream: None,
            databases: Mutex::new(Vec::new()),
            stalled: std::sync::Arc::new(AtomicBool::new(false)),
            redact: crate::Redactor::default(),
            reject: false,
        }
    }

    /// Refuses writes while the store cannot keep what they would record
    /// (`--on-store-failure=reject`), instead of failing open.
    pub fn rejecting(mut self) -> Self {
        self.reject = true;
        self
    }

    /// Takes `redact`'s columns out of every image and statement before it is stored.
    pub fn with_redaction(mut self, redact: crate::Redactor) -> Self {
        self.redact = redact;
        self
    }

    /// Records `addr` (the upstream's `host:port`) with each database a session connects
    /// to, once per database.
    pub fn with_upstream(mut self, addr: String) -> Self {
        self.upstream = Some(addr);
        self
    }

    fn tx(&self, session: u64, n: u64) -> TxId {
        TxId {
            boot: self.boot,
            session,
            n,
        }
    }

    fn record(&self, event: CaptureEvent) -> Option<Record> {
        Some(match event {
            CaptureEvent::Mutation(m) => {
                self.stats.rows.fetch_add(1, Ordering::Relaxed);
                Record::Mutation(self.mutation(m))
            }
            CaptureEvent::TxEnded {
                session,
                tx,
                at,
                outcome,
            } => Record::Tx(TxRecord {
                tx: self.tx(session, tx),
                at: nanos(at),
                event: match outcome {
                    TxOutcome::Committed => TxEvent::Committed,
                    TxOutcome::RolledBack => TxEvent::RolledBack,
                    TxOutcome::Unknown => TxEvent::Unknown,
                },
            }),
            CaptureEvent::RolledBackTo {
                session,
                tx,
                at,
                from,
                to,
            } => Record::Tx(TxRecord {
                tx: self.tx(session, tx),
                at: nanos(at),
                event: TxEvent::RolledBackTo { from, to },
            }),
            CaptureEvent::Gap {
                at,
                table,
                count,
                reason,
                request,
                ..
            } => {
                self.stats.gap(reason.kind(), 1);
                Record::Gap(Gap {
                    at: nanos(at),
                    until: nanos(at),
                    table,
                    count,
                    reason,
                    request,
                })
            }
            CaptureEvent::Statement {
                sql,
                started,
                elapsed,
                tag,
                sqlstate,
                error,
                request: Some(request),
                verb,
                tables,
                rows,
                ..
            } => Record::Statement(StatementRecord {
                parent_span: flux_proxy::capture::request_id::sqlcommenter_traceparent(&sql)
                    .filter(|(trace, _)| *trace == request)
                    .map(|(_, span)| span),
                request,
                at: nanos(started),
                duration: elapsed.as_nanos() as u64,
                sql: self.redact.sql(sql),
                tag,
                sqlstate,
                error,
                verb,
                tables,
                rows,
            }),
            CaptureEvent::SessionStarted { database, .. } => {
                let upstream = self.upstream.as_ref()?;
                let mut seen = self.databases.lock().unwrap_or_else(|p| p.into_inner());
                if seen.contains(&database) {
                    return None;
                }
                seen.push(database.clone());
                Record::Source(Source {
                    addr: upstream.clone(),
                    database,
                })
            }
            // Untagged statements cannot be asked about by request: not stored.
            _ => return None,
        })
    }

    fn mutation(&self, m: MutationEvent) -> Mutation {
        let (before, after) = if self.redact.is_empty() {
            (m.before, m.after)
        } else {
            (
                m.before.map(|i| self.redact.image(&m.table, i)),
                m.after.map(|i| self.redact.image(&m.table, i)),
            )
        };
        Mutation {
            table: m.table,
            key: m.key,
            at: nanos(m.at),
            op: match m.op {
                ProxyOp::Insert => Op::Insert,
                ProxyOp::Update => Op::Update,
                ProxyOp::Delete => Op::Delete,
            },
            before,
            after,
            request: m.request,
            tx: self.tx(m.session, m.tx),
            tx_index: m.tx_index,
        }
    }

    fn count_lost(&self, records: &[Record]) {
        let now = nanos(SystemTime::now());
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let first = lost.is_none();
        self.lagging.store(true, Ordering::Relaxed);
        let l = lost.get_or_insert_with(|| Lost {
            since: now,
            ..Default::default()
        });
        l.until = now;
        for r in records {
            *l.by_table.entry(lost_kind(r)).or_default() += 1;
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.gap("store_lagging", records.len() as u64);
        if first {
            tracing::warn!("the store is not keeping up: capture records are being dropped (gaps will say where)");
        }
    }

    /// Writes the pending gap records, if any; keeps them when the writer still refuses.
    fn flush_lost(&self) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = lost.take() else {
            self.lagging.store(false, Ordering::Relaxed);
            return;
        };
        let gaps: Vec<Record> = l
            .by_table
            .iter()
            .map(|((table, kind), count)| {
                Record::Gap(Gap {
                    at: l.since,
                    until: l.until,
                    table: table.clone(),
                    count: *count,
                    reason: GapReason::Lost(*kind),
                    request: None,
                })
            })
            .collect();
        if gaps.is_empty() {
            self.lagging.store(false, Ordering::Relaxed);
            return;
        }
        match self.writer.try_write(gaps) {
            Ok(()) => {
                self.lagging.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "capture resumed; {} lost writes recorded as gaps",
                    l.by_table.values().sum::<u64>()
                );
            }
            Err(_) => *lost = Some(l),
        }
    }
}

impl StoreSink {
    fn send(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if self.lagging.load(Ordering::Relaxed) {
            self.flush_lost();
        }
        if let Err(rejected) = self.writer.try_write(records) {
            let records = match rejected {
                flux_store::WriteRejected::Full(r) | flux_store::WriteRejected::Stopped(r) => r,
            };
            self.count_lost(&records);
        }
    }
}

impl flux_ingest::gateway::ExchangeSink for StoreSink {
    fn record(&self, exchange: flux_store::Exchange, span: flux_store::Span) {
        // Fail-open like capture: a full queue costs the record (counted, and a gap),
        // never the request.
        self.send(vec![Record::Span(span), Record::Exchange(exchange)]);
    }
}

impl EventSink for StoreSink {
    fn emit(&self, event: CaptureEvent) {
        self.send(self.record(event).into_iter().collect());
    }

    fn emit_all(&self, events: &mut Vec<CaptureEvent>) {
        let records = events.drain(..).filter_map(|e| self.record(e)).collect();
        self.send(records);
    }

    fn untagged_statements(&self) -> bool {
        // `record` keeps only statements a request id tags.
        false
    }

    fn backpressure(&self) -> Option<flux_proxy::capture::Durable> {
        let queued = self.writer.queued_bytes();
        if queued <= BACKPRESSURE_BYTES {
            self.stalled.store(false, Ordering::Relaxed);
            return None;
        }
        // A store that stopped draining is not waited on again (fail-open): the queue's
        // byte limit then turns further records into counted losses and a gap.
        if self.stalled.load(Ordering::Relaxed) {
            return None;
        }
        let writer = self.writer.clone();
        let stalled = self.stalled.clone();
        Some(Box::pin(async move {
            if !writer
                .wait_below(BACKPRESSURE_BYTES / 2, BACKPRESSURE_WAIT)
                .await
            {
                stalled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "the store is not keeping up: capture stops waiting for it and records what it cannot keep as gaps"
                );
            }
        }))
    }

    fn may_refuse(&self) -> bool {
        self.reject
    }

    fn refusal(&self) -> Option<String> {
        if !self.reject {
            return None;
        }
        if let Some(why) = self.writer.stats().failure() {
            Some(why.into())
        } else if self.lagging.load(Ordering::Relaxed) || self.stalled.load(Ordering::Relaxed) {
            Some("the store is not keeping up".into())
        } else {
            None
        }
    }

    fn durable(&self) -> Option<Durable> {
        if self.durability != Durability::Strict {
            return None;
        }
        let ack = self.writer.write_durable(Vec::new());
        Some(Box::pin(async move {
            let Ok(ack) = ack else {
                tracing::warn!("strict durability: the store writer refused the barrier");
                return;
            };
            match tokio::time::timeout(DURABLE_WAIT, ack).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!("strict durability: store sync failed: {e}"),
                Ok(Err(_)) => tracing::error!("strict durability: the store writer stopped"),
                Err(_) => tracing::error!(
                    "strict durability: records not synced within {DURABLE_WAIT:?}; answering anyway"
                ),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use flux_proxy::capture::MutationEvent;
    use flux_store::{Writer, WriterConfig};

    fn mutation(n: u64) -> CaptureEvent {
        CaptureEvent::Mutation(MutationEvent {
            session: 1,
            tx: n,
            tx_index: 0,
            at: SystemTime::now(),
            table: "users".into(),
            key: Some(vec![n.to_string()]),
            op: ProxyOp::Insert,
            before: None,
            after: Some(format!(r#"{{"id": {n}}}"#)),
            request: None,
        })
    }

    #[test]
    fn a_stopped_writer_never_blocks_the_proxy_and_losses_become_gaps() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));
        let writer = Writer::start(store.clone(), WriterConfig::default());
        let handle = writer.handle();
        writer.stop();
        let sink = StoreSink::new(handle, Durability::Strict);
        for n in 0..100 {
            sink.emit(mutation(n));
        }
        assert_eq!(sink.stats.dropped.load(Ordering::Relaxed), 100);
        // Strict mode's barrier resolves at once instead of hanging.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let waited = std::time::Instant::now();
        if let Some(d) = sink.durable() {
            rt.block_on(d);
        }
        assert!(waited.elapsed() < DURABLE_WAIT);
        let lost = sink.lost.lock().expect("lock");
        let l = lost.as_ref().expect("losses tracked");
        assert_eq!(
            l.by_table
                .get(&(Some("users".to_string()), model::Lost::Mutations)),
            Some(&100)
        );
    }

    #[test]
    fn a_lost_transaction_end_is_a_gap_too() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));
        let writer = Writer::start(store.clone(), WriterConfig::default());
        let sink = StoreSink::new(writer.handle(), Durability::Relaxed);
        sink.emit(mutation(1));
        let end = CaptureEvent::TxEnded {
            session: 1,
            tx: 1,
            at: SystemTime::now(),
            outcome: TxOutcome::Committed,
        };
        sink.count_lost(&[sink.record(end).expect("record")]);
        sink.emit(mutation(2));
        writer.stop();
        assert_eq!(sink.stats.dropped.load(Ordering::Relaxed), 1);
        let gaps = store.gaps(0, u64::MAX, Some("users")).expect("gaps");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].reason, GapReason::Lost(model::Lost::Outcomes));
        assert_eq!(
            gaps[0].table, None,
            "an outcome names no table: shown for every one"
        );
    }

    #[test]
    fn losses_are_written_as_gaps_once_the_writer_accepts() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));
        let writer = Writer::start(store.clone(), WriterConfig::default());
        let sink = StoreSink::new(writer.handle(), Durability::Relaxed);
        sink.count_lost(&[sink.record(mutation(1)).expect("record")]);
        sink.emit(mutation(2));
        writer.stop();
        let gaps = store.gaps(0, u64::MAX, Some("users")).expect("gaps");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].count, 1);
        assert_eq!(gaps[0].reason, GapReason::Lost(model::Lost::Mutations));
        assert_eq!(
            store
                .history("users", &["2".into()], None, None)
                .expect("h")
                .len(),
            1
        );
    }
}
