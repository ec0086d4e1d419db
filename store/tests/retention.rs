//! Retention against a real RocksDB: requests older than the cutoff leave every family
//! whole (never a part of one), records of no request go by their own time, newer ones
//! stay untouched, and a writer writing all along is never held up more than 50 ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flux_store::{
    Exchange, Gap, Mutation, Op, Policy, Record, Span, SpanKind, SpanSource, StatementRecord,
    Store, TxEvent, TxId, TxRecord,
};

const HOUR: u64 = 3_600_000_000_000;
const DAY: u64 = 24 * HOUR;
const NOW: u64 = 1_800_000_000_000_000_000;
const CUTOFF: u64 = NOW - 7 * DAY;
const OLD: usize = 1_500;
const NEW: usize = 300;

fn tx(session: u64, n: u64) -> TxId {
    TxId {
        boot: 1,
        session,
        n,
    }
}

fn span(trace: &str, id: &str, parent: Option<&str>, start: u64) -> Record {
    Record::Span(Span {
        trace: trace.into(),
        id: id.into(),
        parent: parent.map(Into::into),
        name: if parent.is_none() {
            "POST /checkout"
        } else {
            "charge"
        }
        .into(),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Internal
        },
        start,
        end: start + 5_000_000,
        error: None,
        attributes: vec![("http.request.method".into(), "POST".into())],
        events: vec![],
        service: Some("shop".into()),
        source: SpanSource::App,
    })
}

fn row(table: &str, id: String, at: u64, request: Option<&str>, t: TxId) -> Record {
    Record::Mutation(Mutation {
        table: table.into(),
        key: Some(vec![id.clone()]),
        at,
        op: Op::Update,
        before: Some(format!(r#"{{"id":{id},"n":0}}"#)),
        after: Some(format!(r#"{{"id":{id},"n":1}}"#)),
        request: request.map(Into::into),
        tx: t,
        tx_index: 0,
    })
}

/// A request as the proxy and the app record it: two spans, a statement, a row change,
/// its transaction's commit, and the gateway's exchange. `writes_at` is when its
/// statement ran (later than `start` for a request that straddles the cutoff).
fn request(id: &str, n: u64, start: u64, writes_at: u64) -> Vec<Record> {
    let t = tx(1, n);
    vec![
        span(id, &format!("{n:016x}"), None, start),
        span(
            id,
            &format!("{:016x}", (n + 1) << 32),
            Some(&format!("{n:016x}")),
            start + 1,
        ),
        Record::Statement(StatementRecord {
            request: id.into(),
            at: writes_at,
            duration: 1_000_000,
            sql: "UPDATE accounts SET n = 1 WHERE id = $1".into(),
            tag: Some("UPDATE 1".into()),
            sqlstate: None,
            error: None,
            parent_span: None,
            verb: Some("update".into()),
            tables: vec!["accounts".into()],
            rows: Some(1),
        }),
        row("public.accounts", n.to_string(), writes_at, Some(id), t),
        Record::Tx(TxRecord {
            tx: t,
            at: writes_at + 1,
            event: TxEvent::Committed,
        }),
        Record::Exchange(Exchange {
            request: id.into(),
            at: start,
            duration: 5_000_000,
            method: "POST".into(),
            target: "/checkout".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            body_complete: true,
            status: Some(200),
            response_headers: vec![],
            response_body: b"{}".to_vec(),
            response_complete: true,
            error: None,
        }),
    ]
}

fn old_id(i: usize) -> String {
    format!("{:032x}", 0xa000_0000u64 + i as u64)
}

fn new_id(i: usize) -> String {
    format!("{:032x}", 0xb000_0000u64 + i as u64)
}

/// What the store holds of one request.
fn held(store: &Store, id: &str) -> (bool, usize, usize, usize, bool) {
    (
        store.request(id).expect("request").is_some(),
        store.trace_spans(id).expect("spans").len(),
        store.request_statements(id).expect("statements").len(),
        store.request_mutations(id).expect("mutations").len(),
        store.exchange(id).expect("exchange").is_some(),
    )
}

#[test]
fn expired_requests_leave_every_family_whole_without_holding_up_the_writer() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));

    let mut records = Vec::new();
    for i in 0..OLD {
        let start = NOW - 10 * DAY + i as u64 * 1_000_000;
        records.extend(request(&old_id(i), i as u64 * 2, start, start + 2_000_000));
    }
    // Started before the cutoff, wrote after it: still expired, whole.
    let straddler = "c".repeat(32);
    records.extend(request(&straddler, 900_000, CUTOFF - 1_000, CUTOFF + HOUR));
    for i in 0..NEW {
        let start = NOW - HOUR + i as u64 * 1_000_000;
        records.extend(request(
            &new_id(i),
            1_000_000 + i as u64 * 2,
            start,
            start + 2_000_000,
        ));
    }
    // Rows, outcomes and gaps no request tagged, on either side of the cutoff.
    let t_old = tx(2, 1);
    let t_new = tx(2, 2);
    records.push(row("public.audit", "1".into(), CUTOFF - DAY, None, t_old));
    records.push(Record::Tx(TxRecord {
        tx: t_old,
        at: CUTOFF - DAY,
        event: TxEvent::Committed,
    }));
    records.push(row("public.audit", "1".into(), CUTOFF + DAY, None, t_new));
    records.push(Record::Tx(TxRecord {
        tx: t_new,
        at: CUTOFF + DAY,
        event: TxEvent::Committed,
    }));
    for at in [CUTOFF - DAY, CUTOFF + DAY] {
        records.push(Record::Gap(Gap {
            at,
            until: at,
            table: Some("public.accounts".into()),
            count: 1,
            reason: flux_store::GapReason::Statement("TRUNCATE".into()),
            request: None,
        }));
    }
    for chunk in records.chunks(2_000) {
        store.write(chunk, false).expect("write");
    }
    store.flush().expect("flush");
    let whole = (true, 3, 1, 1, true);
    assert_eq!(held(&store, &old_id(0)), whole);
    assert_eq!(held(&store, &straddler), whole);

    // A writer keeps writing new requests while retention runs; each write is timed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("{:032x}", 0xd000_0000u64 + n);
                let start = NOW - HOUR / 2 + n;
                let batch = request(&id, 5_000_000 + n * 2, start, start + 1);
                let began = Instant::now();
                store.write(&batch, false).expect("live write");
                slowest = slowest.max(began.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (n, slowest)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let began = Instant::now();
    let policy = Policy {
        max_age: Some(Duration::from_nanos(7 * DAY)),
        max_size: None,
    };
    let expired = store
        .apply(&policy, std::time::UNIX_EPOCH + Duration::from_nanos(NOW))
        .expect("retention pass");
    let pass = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (writes, slowest) = writer.join().expect("writer");
    eprintln!(
        "retention removed {} requests ({} rows) in {pass:?}; {writes} live writes meanwhile, the slowest {slowest:?}",
        expired.requests, expired.rows
    );
    assert_eq!(expired.requests, OLD as u64 + 1);
    assert_eq!(expired.rows, OLD as u64 + 1);
    assert!(writes > 0);
    assert!(
        slowest < Duration::from_millis(50),
        "a live write waited {slowest:?} while retention ran"
    );

    // Every expired request is gone from every family; none is partly there.
    for id in (0..OLD).map(old_id).chain([straddler.clone()]) {
        assert_eq!(held(&store, &id), (false, 0, 0, 0, false), "request {id}");
    }
    // Every kept request is whole.
    for id in (0..NEW).map(new_id) {
        assert_eq!(held(&store, &id), whole, "request {id}");
    }
    assert_eq!(
        store.gaps(0, u64::MAX, None).expect("gaps").len(),
        1,
        "the old gap is gone, the new one stays"
    );

    // Untagged rows and outcomes older than the cutoff go when RocksDB compacts.
    store.compact();
    let audit = store
        .row_mutations("public.audit", &["1".into()], None, None)
        .expect("history");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].at, CUTOFF + DAY);
    assert!(store.tx_events(&t_old).expect("tx").is_empty());
    assert_eq!(store.tx_events(&t_new).expect("tx").len(), 1);
    // No family holds a record older than the cutoff.
    for f in store.family_stats().expect("stats") {
        if let Some(oldest) = f.oldest {
            assert!(
                oldest >= CUTOFF,
                "{} still holds a record from {oldest}",
                f.family
            );
        }
    }
}

#[test]
fn a_size_limit_drops_the_oldest_requests_until_the_tables_fit() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = flux_read::open_writer(dir.path()).expect("open");
    let n = 2_000;
    let mut records = Vec::new();
    for i in 0..n {
        let start = NOW - DAY + i as u64 * 1_000_000_000;
        records.extend(request(&old_id(i), i as u64 * 2, start, start + 1));
    }
    for chunk in records.chunks(2_000) {
        store.write(chunk, false).expect("write");
    }
    store.flush().expect("flush");
    store.compact();
    let full = store.table_bytes();
    let limit = full / 2;
    let expired = store
        .apply(
            &Policy {
                max_age: None,
                max_size: Some(limit),
            },
            std::time::UNIX_EPOCH + Duration::from_nanos(NOW),
        )
        .expect("retention pass");
    let now = store.table_bytes();
    eprintln!(
        "{full} bytes, limit {limit}: removed {} requests, {now} bytes left",
        expired.requests
    );
    assert!(now <= limit, "{now} bytes left over a limit of {limit}");
    assert!(expired.requests > 0 && (expired.requests as usize) < n);
    // The oldest went, the newest stayed, each whole.
    assert_eq!(held(&store, &old_id(0)), (false, 0, 0, 0, false));
    assert_eq!(held(&store, &old_id(n - 1)), (true, 3, 1, 1, true));
    let first_kept = expired.requests as usize;
    assert_eq!(held(&store, &old_id(first_kept)), (true, 3, 1, 1, true));
    assert!(!held(&store, &old_id(first_kept - 1)).0);
}
