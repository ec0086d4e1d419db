//! Protocol features through the proxy, against a real PostgreSQL: simple and extended
//! query, pipelining, Flush, Describe, Close, binary formats, row limits, COPY,
//! LISTEN/NOTIFY, notices, ParameterStatus, cancel, errors mid-pipeline, SSLRequest.

use std::time::{Duration, Instant};

use flux_integration_tests::pg::{Options, PgCluster, DB, USER};
use flux_integration_tests::proxy::TestProxy;
use flux_integration_tests::wire::{error_field, fe, Msg, RawConn};
use futures_util::{SinkExt, StreamExt, TryStreamExt};

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag() as char).collect()
}

async fn setup() -> (PgCluster, TestProxy) {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;
    (pg, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::query(
        "select 1 as a; select 'x'::text, null; create temp table t(a int); select * from missing",
    ))
    .await;
    let msgs = c.until_ready(1).await;
    assert_eq!(tags(&msgs), "TDCTDCCEZ");
    assert_eq!(error_field(&msgs[7], b'C').as_deref(), Some("42P01"));
    let statements = proxy.events.statements();
    let results: Vec<&str> = statements.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        results,
        ["SELECT 1", "SELECT 1", "CREATE TABLE", "ERROR 42P01"]
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_pipelined_statements_before_one_sync() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.push(fe::parse("", &format!("select {i} as n")));
        batch.push(fe::bind("", "", &[], false));
        batch.push(fe::execute("", 0));
    }
    batch.push(fe::sync());
    c.send(&fe::batch(&batch)).await;
    let msgs = c.until_ready(1).await;
    assert_eq!(tags(&msgs), format!("{}Z", "12DC".repeat(300)));
    let statements = proxy.events.statements();
    assert_eq!(statements.len(), 300);
    for (i, (sql, result)) in statements.iter().enumerate() {
        assert_eq!(sql, &format!("select {i} as n"));
        assert_eq!(result, "SELECT 1");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_portals_describe_close_and_flush() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    // asyncpg's pattern: Parse, Describe, Flush, then wait without a Sync.
    c.send(&fe::batch(&[
        fe::parse("s1", "select $1::int + 1 as n, 'v'::text as t"),
        fe::describe(b'S', "s1"),
        fe::flush(),
    ]))
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), c.recv())
                .await
                .expect("answer to Flush")
                .expect("open"),
        );
    }
    assert_eq!(tags(&got), "1tT");
    // Reuse the named statement through named portals, many times.
    let mut batch = Vec::new();
    for i in 0..50 {
        let portal = format!("p{i}");
        let v = i.to_string();
        batch.push(fe::bind(&portal, "s1", &[Some(v.as_bytes())], false));
        batch.push(fe::describe(b'P', &portal));
        batch.push(fe::execute(&portal, 0));
        batch.push(fe::close(b'P', &portal));
    }
    batch.push(fe::close(b'S', "s1"));
    batch.push(fe::sync());
    c.send(&fe::batch(&batch)).await;
    let msgs = c.until_ready(1).await;
    assert_eq!(tags(&msgs), format!("{}3Z", "2TDC3".repeat(50)));
    // Rows carry the computed value: the 10th Execute returns 10 + 1.
    let rows: Vec<&Msg> = msgs.iter().filter(|m| m.tag() == b'D').collect();
    assert!(rows[10].body().windows(2).any(|w| w == b"11"));
    // Describe of a closed statement fails; the FIFO skips to Sync.
    c.send(&fe::batch(&[
        fe::describe(b'S', "s1"),
        fe::sync(),
        fe::query("select 42"),
    ]))
    .await;
    let msgs = c.until_ready(2).await;
    assert_eq!(tags(&msgs), "EZTDCZ");
    assert_eq!(error_field(&msgs[0], b'C').as_deref(), Some("26000"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_with_row_limit_suspends_portal() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::query("begin")).await;
    c.until_ready(1).await;
    let mut batch = vec![
        fe::parse("", "select g from generate_series(1, 10) g"),
        fe::bind("cur", "", &[], false),
    ];
    for _ in 0..4 {
        batch.push(fe::execute("cur", 3));
    }
    batch.push(fe::sync());
    c.send(&fe::batch(&batch)).await;
    let msgs = c.until_ready(1).await;
    assert_eq!(tags(&msgs), "12DDDsDDDsDDDsDCZ");
    assert_eq!(msgs.last().map(|m| m.body().to_vec()), Some(b"T".to_vec()));
    c.send(&fe::query("commit")).await;
    assert_eq!(tags(&c.until_ready(1).await), "CZ");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_skips_until_sync() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::batch(&[
        fe::parse("", "select 1"),
        fe::bind("", "", &[], false),
        fe::execute("", 0),
        fe::parse("", "select 1/0"),
        fe::bind("", "", &[], false),
        fe::execute("", 0),
        fe::parse("", "select 3"),
        fe::bind("", "", &[], false),
        fe::execute("", 0),
        fe::sync(),
        fe::parse("", "select 4"),
        fe::bind("", "", &[], false),
        fe::execute("", 0),
        fe::sync(),
    ]))
    .await;
    let msgs = c.until_ready(2).await;
    // `1/0` is folded when the statement is planned, so Bind fails.
    assert_eq!(tags(&msgs), "12DC1EZ12DCZ");
    assert_eq!(error_field(&msgs[5], b'C').as_deref(), Some("22012"));
    let statements = proxy.events.statements();
    let sqls: Vec<(&str, &str)> = statements
        .iter()
        .map(|(s, r)| (s.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        sqls,
        [
            ("select 1", "SELECT 1"),
            ("select 1/0", "ERROR 22012"),
            ("select 4", "SELECT 1")
        ]
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_parameters_and_results_with_tokio_postgres() {
    let (_pg, proxy) = setup().await;
    let client = proxy.connect().await;
    // tokio-postgres sends parameters in binary and asks for binary results.
    let row = client
        .query_one(
            "select $1::int8 + 1, $2::float8 * 2, $3::bytea, $4::text[], $5::jsonb",
            &[
                &41i64,
                &1.25f64,
                &vec![0u8, 1, 255],
                &vec!["a".to_string(), "b".to_string()],
                &"{\"k\": [1, null]}".to_string(),
            ],
        )
        .await
        .map_err(|e| e.to_string());
    // jsonb from a String param is a type error in tokio-postgres; check the rest separately.
    assert!(row.is_err());
    let row = client
        .query_one(
            "select $1::int8 + 1, $2::float8 * 2, $3::bytea, $4::text[], null::int4",
            &[
                &41i64,
                &1.25f64,
                &vec![0u8, 1, 255],
                &vec!["a".to_string(), "b".to_string()],
            ],
        )
        .await
        .expect("binary round trip");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, f64>(1), 2.5);
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0, 1, 255]);
    assert_eq!(row.get::<_, Vec<String>>(3), vec!["a", "b"]);
    assert_eq!(row.get::<_, Option<i32>>(4), None);
    // Prepared statement reused across transactions.
    let stmt = client
        .prepare("select $1::int4 * 2")
        .await
        .expect("prepare");
    for i in 0..20 {
        client.batch_execute("begin").await.expect("begin");
        let v: i32 = client.query_one(&stmt, &[&i]).await.expect("query").get(0);
        assert_eq!(v, i * 2);
        client.batch_execute("commit").await.expect("commit");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_tokio_postgres() {
    let (_pg, proxy) = setup().await;
    let client = proxy.connect().await;
    client
        .batch_execute("create table c(a int, b text)")
        .await
        .expect("create");
    let sink = client.copy_in("copy c from stdin").await.expect("copy in");
    futures_util::pin_mut!(sink);
    // Many chunks, some over the streaming threshold, so data flows piece by piece.
    let mut expected = 0;
    for chunk in 0..20 {
        let mut data = String::new();
        for i in 0..20_000 {
            data.push_str(&format!("{}\trow {chunk}-{i}\n", chunk * 20_000 + i));
            expected += 1;
        }
        sink.send(bytes::Bytes::from(data))
            .await
            .expect("copy data");
    }
    let n = sink.finish().await.expect("copy done");
    assert_eq!(n, expected);
    // The session is usable afterwards (the FIFO survived the extra Sync).
    let count: i64 = client
        .query_one("select count(*) from c", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, expected as i64);
    let stream = client.copy_out("copy c to stdout").await.expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    let lines = chunks
        .iter()
        .map(|c| c.iter().filter(|&&b| b == b'\n').count())
        .sum::<usize>();
    assert_eq!(lines as u64, expected);
    // A failing COPY (bad data) reports the server's error and leaves the session usable.
    let sink = client.copy_in("copy c from stdin").await.expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .ok();
    let err = sink.finish().await.expect_err("bad copy data fails");
    assert_eq!(err.code().map(|c| c.code()), Some("22P02"));
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .expect("after")
            .get::<_, i32>(0),
        7
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_notice_and_parameter_status() {
    let (_pg, proxy) = setup().await;
    let (listener, mut conn) = tokio_postgres::connect(&proxy.conn_str(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    listener
        .batch_execute("listen flux_chan")
        .await
        .expect("listen");
    let notifier = proxy.connect().await;
    notifier
        .batch_execute("notify flux_chan, 'hello through flux'")
        .await
        .expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Some(tokio_postgres::AsyncMessage::Notification(n)) => return n,
                Some(_) => continue,
                None => panic!("connection ended"),
            }
        }
    })
    .await
    .expect("notification arrives");
    assert_eq!(
        (got.channel(), got.payload()),
        ("flux_chan", "hello through flux")
    );
    listener
        .batch_execute("do $$ begin raise notice 'a notice from plpgsql'; end $$")
        .await
        .expect("do");
    let notice = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(tokio_postgres::AsyncMessage::Notice(n)) = rx.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("notice arrives");
    assert_eq!(notice.message(), "a notice from plpgsql");

    // ParameterStatus arrives when a reported setting changes.
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::query("set application_name = 'flux-test'"))
        .await;
    let msgs = c.until_ready(1).await;
    assert_eq!(tags(&msgs), "CSZ");
    assert!(msgs[1].body().starts_with(b"application_name\0flux-test\0"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_long_query_within_a_second() {
    let (_pg, proxy) = setup().await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let result = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("query ends")
        .expect("task");
    let err = result.expect_err("query was cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        cancelled_at.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Counted once the server has closed the cancel connection, which may trail the error.
    let stats = proxy.stats.clone();
    flux_integration_tests::eventually(
        "the cancel to be counted",
        Duration::from_secs(5),
        move || {
            stats
                .cancels_forwarded
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_refused_without_a_certificate() {
    let (_pg, proxy) = setup().await;
    let mut c = RawConn::open(proxy.addr).await;
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut answer)
        .await
        .expect("answer");
    assert_eq!(&answer, b"N");
    // GSSENCRequest too, then a normal startup on the same connection.
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut answer)
        .await
        .expect("answer");
    assert_eq!(&answer, b"N");
    c.send(&flux_integration_tests::wire::startup_message(USER, DB))
        .await;
    let msgs = c.until_ready(1).await;
    assert_eq!(msgs.last().map(Msg::tag), Some(b'Z'));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_negotiation_passes_through() {
    let (_pg, proxy) = setup().await;
    // A 3.2 StartupMessage; a server that speaks only 3.0 answers with
    // NegotiateProtocolVersion ('v') and carries on in 3.0.
    let mut body = Vec::new();
    body.extend_from_slice(&0x0003_0002u32.to_be_bytes());
    for part in ["user", USER, "database", DB, ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    let mut direct = RawConn::open(("127.0.0.1", _pg.port)).await;
    direct.send(&packet).await;
    let want = direct.until_ready(1).await;
    let mut c = RawConn::open(proxy.addr).await;
    c.send(&packet).await;
    let got = c.until_ready(1).await;
    let kinds = |m: &[Msg]| {
        m.iter()
            .map(|m| m.tag())
            .filter(|&t| t != b'K' && t != b'S')
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&got), kinds(&want));
    let version = _pg
        .admin_sql("show server_version_num")
        .parse::<u32>()
        .unwrap_or(0);
    if version < 180000 {
        assert_eq!(got.first().map(Msg::tag), Some(b'v'), "{got:?}");
    }
    assert_eq!(got.last().map(Msg::tag), Some(b'Z'));
    c.send(&fe::query("select 1")).await;
    assert_eq!(tags(&c.until_ready(1).await), "TDCZ");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_over_a_unix_socket() {
    let pg = PgCluster::start(Options::default());
    let url = format!(
        "postgres:///{DB}?host={}&port={}",
        pg.socket_dir().display(),
        pg.port
    );
    let proxy = TestProxy::start_with(url.parse().expect("url"), |_| {}).await;
    let client = proxy.connect().await;
    // On a Unix-socket connection the server has no inet address.
    let row = client
        .query_one("select inet_server_addr() is null, current_user::text", &[])
        .await
        .expect("query through the socket");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), USER);
    // Cancel is forwarded over the socket too.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let err = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("cancelled in time")
        .expect("task")
        .expect_err("cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    proxy.stop().await;
}
