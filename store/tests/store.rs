//! The store against a real RocksDB in a temp dir: layout, outcomes, readers of a live
//! store, reopening, the writer's durability modes.

use std::sync::Arc;

use flux_store::{
    Durability, Gap, Mutation, Op, Outcome, Record, StatementRecord, Store, StoreError, TxEvent,
    TxId, TxRecord, Writer, WriterConfig,
};

fn tx(n: u64) -> TxId {
    TxId {
        boot: 7,
        session: 1,
        n,
    }
}

// Mirrors the Mutation fields one to one so each test row reads as a table line.
#[allow(clippy::too_many_arguments)]
fn mutation(
    table: &str,
    key: &[&str],
    at: u64,
    op: Op,
    after: Option<&str>,
    request: Option<&str>,
    t: TxId,
    i: u32,
) -> Record {
    Record::Mutation(Mutation {
        table: table.into(),
        key: Some(key.iter().map(|s| s.to_string()).collect()),
        at,
        op,
        before: None,
        after: after.map(str::to_string),
        request: request.map(str::to_string),
        tx: t,
        tx_index: i,
    })
}

fn event(t: TxId, at: u64, event: TxEvent) -> Record {
    Record::Tx(TxRecord { tx: t, at, event })
}

#[test]
fn history_resolves_outcomes_per_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = flux_read::open_writer(dir.path()).expect("open");
    store
        .write(
            &[
                mutation(
                    "public.users",
                    &["42"],
                    10,
                    Op::Insert,
                    Some(r#"{"id":42,"plan":"free"}"#),
                    Some("req-a"),
                    tx(1),
                    0,
                ),
                event(tx(1), 11, TxEvent::Committed),
                // Another row, and a key that shares a prefix with 42: neither may leak in.
                mutation(
                    "public.users",
                    &["4"],
                    12,
                    Op::Insert,
                    Some(r#"{"id":4}"#),
                    Some("req-a"),
                    tx(2),
                    0,
                ),
                mutation(
                    "public.users",
                    &["420"],
                    12,
                    Op::Insert,
                    Some(r#"{"id":420}"#),
                    Some("req-a"),
                    tx(2),
                    1,
                ),
                event(tx(2), 13, TxEvent::Committed),
                // A savepoint rollback undoes the middle change only.
                mutation(
                    "public.users",
                    &["42"],
                    20,
                    Op::Update,
                    Some(r#"{"id":42,"plan":"pro"}"#),
                    Some("req-b"),
                    tx(3),
                    0,
                ),
                mutation(
                    "public.users",
                    &["42"],
                    21,
                    Op::Update,
                    Some(r#"{"id":42,"plan":"team"}"#),
                    Some("req-b"),
                    tx(3),
                    1,
                ),
                event(tx(3), 22, TxEvent::RolledBackTo { from: 1, to: 2 }),
                event(tx(3), 23, TxEvent::Committed),
                // Rolled back, and one still open.
                mutation(
                    "public.users",
                    &["42"],
                    30,
                    Op::Update,
                    Some(r#"{"id":42,"plan":null}"#),
                    Some("req-c"),
                    tx(4),
                    0,
                ),
                event(tx(4), 31, TxEvent::RolledBack),
                mutation(
                    "public.users",
                    &["42"],
                    40,
                    Op::Update,
                    Some(r#"{"id":42,"plan":"x"}"#),
                    None,
                    tx(5),
                    0,
                ),
            ],
            true,
        )
        .expect("write");
    let h = store
        .history("public.users", &["42".into()], None, None)
        .expect("history");
    let got: Vec<(u64, Outcome)> = h.iter().map(|e| (e.mutation.at, e.outcome)).collect();
    use Outcome::*;
    assert_eq!(
        got,
        [
            (10, Committed),
            (20, Committed),
            (21, RolledBack),
            (30, RolledBack),
            (40, Pending)
        ]
    );
    // Time window [20, 31).
    let w = store
        .history("public.users", &["42".into()], Some(20), Some(31))
        .expect("window");
    assert_eq!(
        w.iter().map(|e| e.mutation.at).collect::<Vec<_>>(),
        [20, 21, 30]
    );
    // Blame: plan was last committed by req-b; the newer attempt rolled back.
    let b = flux_read::blame::blame(&h);
    let plan = b.columns.iter().find(|c| c.column == "plan").expect("plan");
    assert_eq!(plan.value, "pro");
    assert_eq!(
        plan.written.as_ref().and_then(|w| w.request.as_deref()),
        Some("req-b")
    );
    let attempt = plan.newest_attempt.as_ref().expect("attempt");
    assert_eq!(
        attempt.outcome, Pending,
        "the newest attempt is the still-open transaction"
    );
    // By request, and request-id prefixes.
    let a = store.request_history("req-a").expect("by request");
    assert_eq!(a.len(), 3);
    assert_eq!(
        store.requests_with_prefix("req-", 10).expect("prefix"),
        ["req-a", "req-b", "req-c"]
    );
    assert_eq!(
        store.requests_with_prefix("req-b", 10).expect("prefix"),
        ["req-b"]
    );
    assert!(store
        .requests_with_prefix("nope", 10)
        .expect("prefix")
        .is_empty());
    // A request that only ran statements (say, one that failed before writing) is found
    // too, and its statements come back in order.
    let statement = |sql: &str, tag: Option<&str>| {
        Record::Statement(StatementRecord {
            request: "req-d".into(),
            at: 30,
            duration: 1_000,
            sql: sql.into(),
            tag: tag.map(str::to_string),
            sqlstate: tag.is_none().then(|| "22012".to_string()),
            error: tag.is_none().then(|| "division by zero".to_string()),
            parent_span: None,
            verb: sql.split_whitespace().next().map(str::to_ascii_lowercase),
            tables: Vec::new(),
            rows: tag.and_then(flux_store::model::tag_rows),
        })
    };
    store
        .write(
            &[
                statement("select 1", Some("SELECT 1")),
                statement("select 1/0", None),
            ],
            false,
        )
        .expect("write statements");
    assert_eq!(
        store.requests_with_prefix("req-", 10).expect("prefix"),
        ["req-a", "req-b", "req-c", "req-d"]
    );
    let st = store.request_statements("req-d").expect("statements");
    assert_eq!(st.len(), 2);
    assert_eq!(st[1].sqlstate.as_deref(), Some("22012"));
    assert!(store.request_statements("req-a").expect("none").is_empty());
}

#[test]
fn composite_keys_keyless_tables_and_gaps() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = flux_read::open_writer(dir.path()).expect("open");
    let keyless = Record::Mutation(Mutation {
        table: "public.events".into(),
        key: None,
        at: 5,
        op: Op::Insert,
        before: None,
        after: Some(r#"{"kind":"signup"}"#.into()),
        request: Some("req-k".into()),
        tx: tx(9),
        tx_index: 0,
    });
    store
        .write(
            &[
                mutation(
                    "public.memberships",
                    &["7", "42"],
                    1,
                    Op::Insert,
                    Some("{}"),
                    Some("req-k"),
                    tx(9),
                    1,
                ),
                mutation(
                    "public.memberships",
                    &["7", "43"],
                    2,
                    Op::Insert,
                    Some("{}"),
                    Some("req-k"),
                    tx(9),
                    2,
                ),
                keyless,
                Record::Gap(Gap {
                    at: 6,
                    until: 6,
                    table: Some("public.users".into()),
                    count: 1,
                    reason: flux_store::GapReason::Statement("TRUNCATE".into()),
                    request: Some("req-k".into()),
                }),
                Record::Gap(Gap {
                    at: 8,
                    until: 9,
                    table: Some("public.orders".into()),
                    count: 3,
                    reason: flux_store::GapReason::Statement("COPY FROM".into()),
                    request: None,
                }),
            ],
            false,
        )
        .expect("write");
    let h = store
        .history("public.memberships", &["7".into(), "42".into()], None, None)
        .expect("history");
    assert_eq!(h.len(), 1);
    assert_eq!(store.request_history("req-k").expect("by request").len(), 3);
    let gaps = store.gaps(0, 100, Some("public.users")).expect("gaps");
    assert_eq!(
        gaps.iter().map(|g| g.reason.clone()).collect::<Vec<_>>(),
        [flux_store::GapReason::Statement("TRUNCATE".into())]
    );
    assert_eq!(store.gaps(0, 100, None).expect("gaps").len(), 2);
    assert_eq!(store.gaps(7, 100, None).expect("gaps").len(), 1);
}

#[test]
fn a_reader_follows_a_live_writer_and_reopening_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));
    let writer = Writer::start(store.clone(), WriterConfig::default());
    let handle = writer.handle();
    handle
        .try_write(vec![mutation(
            "t",
            &["1"],
            1,
            Op::Insert,
            Some("{}"),
            Some("r1"),
            tx(1),
            0,
        )])
        .expect("queued");
    // A durable write is acknowledged after it is written.
    let ack = handle
        .write_durable(vec![event(tx(1), 2, TxEvent::Committed)])
        .expect("queued");
    ack.blocking_recv().expect("answered").expect("written");
    // A reader opened while the writer runs sees it, and more after catching up.
    let reader = Store::open_reader(dir.path()).expect("reader");
    let h = reader
        .history("t", &["1".into()], None, None)
        .expect("history");
    assert_eq!(
        h.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [Outcome::Committed]
    );
    let ack = handle
        .write_durable(vec![mutation(
            "t",
            &["1"],
            3,
            Op::Update,
            Some("{}"),
            Some("r2"),
            tx(2),
            0,
        )])
        .expect("queued");
    ack.blocking_recv().expect("answered").expect("written");
    reader.catch_up().expect("catch up");
    assert_eq!(
        reader
            .history("t", &["1".into()], None, None)
            .expect("history")
            .len(),
        2
    );
    // Opening the same dir as a second writer is refused (RocksDB's lock).
    assert!(matches!(
        flux_read::open_writer(dir.path()),
        Err(StoreError::Rocks { .. })
    ));
    writer.stop();
    drop(reader);
    drop(store);
    // Reopen: sequence numbers continue, nothing is overwritten.
    let store = flux_read::open_writer(dir.path()).expect("reopen");
    store
        .write(
            &[mutation(
                "t",
                &["1"],
                3,
                Op::Update,
                Some("{}"),
                Some("r3"),
                tx(3),
                0,
            )],
            true,
        )
        .expect("write");
    let h = store
        .history("t", &["1".into()], None, None)
        .expect("history");
    assert_eq!(
        h.len(),
        3,
        "a record at the same timestamp written after reopening is kept"
    );
}

#[test]
fn strict_mode_acknowledges_after_sync_and_a_stopped_writer_rejects() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(flux_read::open_writer(dir.path()).expect("open"));
    let writer = Writer::start(
        store.clone(),
        WriterConfig {
            durability: Durability::Strict,
            ..WriterConfig::default()
        },
    );
    let handle = writer.handle();
    let acks: Vec<_> = (0..50)
        .map(|i| {
            handle
                .write_durable(vec![mutation(
                    "t",
                    &[&i.to_string()],
                    i,
                    Op::Insert,
                    Some("{}"),
                    None,
                    tx(i),
                    0,
                )])
                .expect("queued")
        })
        .collect();
    for ack in acks {
        ack.blocking_recv().expect("answered").expect("durable");
    }
    assert_eq!(
        handle
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed),
        50
    );
    writer.stop();
    let err = handle
        .try_write(vec![event(tx(1), 1, TxEvent::Committed)])
        .expect_err("stopped");
    assert!(matches!(err, flux_store::WriteRejected::Stopped(ref r) if r.len() == 1));
}

#[test]
fn a_store_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(flux_read::open_writer(dir.path()).expect("create"));
    // Rewrite the version with RocksDB directly, as a future flux would.
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs = rocksdb::DB::list_cf(&opts, dir.path()).expect("list");
        let db = rocksdb::DB::open_cf(&opts, dir.path(), &cfs).expect("raw open");
        let meta = db.cf_handle("meta").expect("meta");
        db.put_cf(meta, b"schema_version", 99u64.to_be_bytes())
            .expect("put");
    }
    match flux_read::open_writer(dir.path()) {
        Err(StoreError::Schema { found: 99, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a store of another version"),
    }
}

#[test]
fn a_version_2_store_is_upgraded_by_its_writer_and_explained_to_readers() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(flux_read::open_writer(dir.path()).expect("create"));
    // Make it a version-2 store: no `exchanges` family, version 2.
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs = rocksdb::DB::list_cf(&opts, dir.path()).expect("list");
        let mut db = rocksdb::DB::open_cf(&opts, dir.path(), &cfs).expect("raw open");
        db.drop_cf("exchanges").expect("drop family");
        let meta = db.cf_handle("meta").expect("meta");
        db.put_cf(meta, b"schema_version", 2u64.to_be_bytes())
            .expect("put");
    }
    match Store::open_reader(dir.path()) {
        Err(e @ StoreError::Schema { found: 2, .. }) => {
            assert!(e.to_string().contains("upgraded in place"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a reader opened a store missing a family"),
    }
    let store = flux_read::open_writer(dir.path()).expect("the writer upgrades it");
    let x = flux_store::Exchange {
        request: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        at: 1,
        duration: 2,
        method: "POST".into(),
        target: "/checkout?x=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"amount": 5}"#.to_vec(),
        body_complete: true,
        status: Some(500),
        response_headers: Vec::new(),
        response_body: b"oops".to_vec(),
        response_complete: true,
        error: None,
    };
    store
        .write(&[Record::Exchange(x.clone())], true)
        .expect("write");
    drop(store);
    let reader = Store::open_reader(dir.path()).expect("reader after upgrade");
    assert_eq!(reader.exchange(&x.request).expect("read"), Some(x));
    assert_eq!(reader.exchange("nope").expect("read"), None);
}

fn app_span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    name: &str,
    start: u64,
    end: u64,
) -> Record {
    Record::Span(flux_store::Span {
        trace: trace.into(),
        id: id.into(),
        parent: parent.map(str::to_string),
        name: name.into(),
        kind: if parent.is_none() {
            flux_store::SpanKind::Server
        } else {
            flux_store::SpanKind::Internal
        },
        start,
        end,
        error: None,
        attributes: if parent.is_none() {
            vec![
                ("http.method".into(), "GET".into()),
                ("http.target".into(), "/x?y=1".into()),
                ("http.status_code".into(), "200".into()),
            ]
        } else {
            vec![]
        },
        events: vec![],
        service: Some("svc".into()),
        source: flux_store::SpanSource::App,
    })
}

/// Spans arriving over several writes, children first and the root last, keep one summary
/// per request and one time-index entry at the root's start; statements become proxy spans.
#[test]
fn request_summaries_follow_spans_in_any_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = flux_read::open_writer(dir.path()).expect("open");
    let t = "0af7651916cd43dd8448eb211c80319c";
    store
        .write(&[app_span(t, "b", Some("a"), "handler", 500, 900)], false)
        .expect("write");
    // Only a child so far: listed at the child's start, with no method yet.
    let early = store.requests_between(0, u64::MAX, 10).expect("list");
    assert_eq!(early.len(), 1);
    assert_eq!((early[0].start, early[0].method.as_deref()), (500, None));
    store
        .write(
            &[Record::Statement(StatementRecord {
                request: t.into(),
                at: 600,
                duration: 50,
                sql: "UPDATE users SET plan = 'pro' WHERE id = 1".into(),
                tag: Some("UPDATE 1".into()),
                sqlstate: None,
                error: None,
                parent_span: Some("b".into()),
                verb: Some("update".into()),
                tables: vec!["users".into()],
                rows: Some(1),
            })],
            false,
        )
        .expect("write");
    store
        .write(&[app_span(t, "a", None, "GET /x", 100, 1000)], false)
        .expect("write");
    // The retry of the first export changes nothing.
    store
        .write(&[app_span(t, "b", Some("a"), "handler", 500, 900)], false)
        .expect("write");
    let all = store.requests_between(0, u64::MAX, 10).expect("list");
    assert_eq!(all.len(), 1, "one entry per request: {all:?}");
    let r = &all[0];
    assert_eq!(r.start, 100);
    assert_eq!(r.duration, 900);
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.path.as_deref(), Some("/x"));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.spans, 3);
    assert_eq!(store.latest_requests(5).expect("latest").len(), 1);
    let tree = flux_read::trace(&store, t).expect("trace");
    let walk: Vec<(String, usize)> = tree
        .walk()
        .into_iter()
        .map(|(i, d)| (tree.nodes[i].span.name.clone(), d))
        .collect();
    assert_eq!(
        walk,
        vec![
            ("GET /x".to_string(), 0),
            ("handler".to_string(), 1),
            ("db.update(users)".to_string(), 2)
        ]
    );
    assert_eq!(
        store.requests_with_prefix("0af7", 10).expect("prefix"),
        vec![t.to_string()]
    );
    assert!(store
        .requests_between(101, u64::MAX, 10)
        .expect("list")
        .is_empty());
}
