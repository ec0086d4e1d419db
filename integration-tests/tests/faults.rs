//! Bad input and failures: garbage bytes, bad lengths, oversized frames, clients that
//! vanish mid-query or mid-COPY, an upstream that is down or dies. Each ends only the
//! affected session, with a clear error where the client can still hear it, and leaves
//! no session task behind.

use std::time::{Duration, Instant};

use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, USER};
use flux_integration_tests::proxy::TestProxy;
use flux_integration_tests::wire::{error_field, fe, is_fatal, Msg, RawConn};

async fn expect_fatal(c: &mut RawConn, code: &str) -> Msg {
    let m = tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("an answer, not a hang")
        .expect("an error before the close");
    assert_eq!(m.tag(), b'E', "{m:?}");
    assert!(is_fatal(&m), "{m:?}");
    assert_eq!(error_field(&m, b'C').as_deref(), Some(code), "{m:?}");
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "connection closed after FATAL"
    );
    m
}

async fn still_works(proxy: &TestProxy) {
    let client = proxy.connect().await;
    let v: i32 = client
        .query_one("select 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_startup() {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;
    let bystander = proxy.connect().await;
    // An HTTP request where a startup packet belongs: the length reads as ~1.2 GB.
    let mut c = RawConn::open(proxy.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    expect_fatal(&mut c, "08P01").await;
    // A zero length, a negative one, and one just under the minimum.
    for len in [0i32, -1, 7] {
        let mut c = RawConn::open(proxy.addr).await;
        c.send(&len.to_be_bytes()).await;
        c.send(&[0u8; 4]).await;
        expect_fatal(&mut c, "08P01").await;
    }
    // An unknown protocol version.
    let mut c = RawConn::open(proxy.addr).await;
    c.send(&[0, 0, 0, 8, 0, 2, 0, 0]).await;
    let m = expect_fatal(&mut c, "08P01").await;
    assert!(error_field(&m, b'M')
        .unwrap_or_default()
        .contains("protocol"));
    // Random bytes, then silence: closed by the error, not by a timeout.
    let mut c = RawConn::open(proxy.addr).await;
    c.send(&[0xde, 0xad, 0xbe, 0xef, 0x13, 0x37]).await;
    expect_fatal(&mut c, "08P01").await;
    // Connect and close without a byte.
    drop(RawConn::open(proxy.addr).await);
    let v: i32 = bystander
        .query_one("select 2", &[])
        .await
        .expect("bystander")
        .get(0);
    assert_eq!(v, 2);
    drop(bystander);
    proxy.assert_drains().await;
    still_works(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lengths_after_startup() {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start_with(pg.url().parse().expect("url"), |c| {
        c.max_frame_len = 1 << 20
    })
    .await;
    let bystander = proxy.connect().await;
    let baseline = pg.backends();
    for (name, header) in [
        ("zero", [b'Q', 0, 0, 0, 0]),
        ("three", [b'Q', 0, 0, 0, 3]),
        ("negative", [b'Q', 0xff, 0xff, 0xff, 0xfb]),
        ("over the limit", [b'Q', 0, 0x20, 0, 0]),
    ] {
        let mut c = RawConn::connect(proxy.addr, USER, DB).await;
        c.send(&header).await;
        let m = expect_fatal(&mut c, "08P01").await;
        assert!(
            error_field(&m, b'M')
                .unwrap_or_default()
                .contains("invalid frontend message"),
            "{name}: {m:?}"
        );
    }
    // An unknown message type with a valid length is the server's to judge.
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&[0xfe, 0, 0, 0, 4]).await;
    let m = expect_fatal(&mut c, "08P01").await;
    assert!(
        error_field(&m, b'M')
            .unwrap_or_default()
            .contains("invalid frontend message type"),
        "{m:?}"
    );
    let v: i32 = bystander
        .query_one("select 3", &[])
        .await
        .expect("bystander")
        .get(0);
    assert_eq!(v, 3);
    proxy.assert_drains_except(1).await;
    flux_integration_tests::eventually("backends to exit", Duration::from_secs(10), || {
        pg.backends() <= baseline
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_query_mid_message_and_mid_copy() {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;
    let admin = proxy.connect().await;
    admin
        .batch_execute("create table t(a int)")
        .await
        .expect("create");
    let baseline = pg.backends();

    // Mid-query: the backend is busy when the client goes.
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::query("select pg_sleep(1)")).await;
    drop(c);
    // Mid-message: half a Query frame.
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    let q = fe::query("select 1");
    c.send(&q[..q.len() / 2]).await;
    drop(c);
    // Mid-COPY: some rows sent, no CopyDone.
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    c.send(&fe::query("copy t from stdin")).await;
    let g = c.recv().await.expect("CopyInResponse");
    assert_eq!(g.tag(), b'G');
    c.send(&fe::copy_data(b"1\n2\n3\n")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);

    proxy.assert_drains_except(1).await;
    flux_integration_tests::eventually("backends to exit", Duration::from_secs(10), || {
        pg.backends() <= baseline
    })
    .await;
    let n: i64 = admin
        .query_one("select count(*) from t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "an abandoned COPY commits nothing");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_not_listening_gets_a_fatal_error_naming_it() {
    let port = free_port();
    let url = format!("postgres://{USER}@127.0.0.1:{port}/{DB}");
    let proxy = TestProxy::start_with(url.parse().expect("url"), |_| {}).await;
    let started = Instant::now();
    let err = tokio_postgres::connect(&proxy.conn_str(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("connection fails");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let db = err
        .as_db_error()
        .expect("a server error, not a hang or a reset");
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.code().code(), "08006");
    assert!(
        db.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        db.message()
    );
    proxy.assert_drains().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dies_mid_session_and_comes_back() {
    let mut pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;

    // One broken backend does not disturb another session.
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let a_pid: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    b.query_one("select pg_terminate_backend($1)", &[&a_pid])
        .await
        .expect("terminate");
    let err = a
        .query_one("select 1", &[])
        .await
        .expect_err("a's backend is gone");
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    let v: i32 = b
        .query_one("select 5", &[])
        .await
        .expect("b still works")
        .get(0);
    assert_eq!(v, 5);

    // The whole server dies without goodbye.
    let mut raw = RawConn::connect(proxy.addr, USER, DB).await;
    pg.stop_immediate();
    raw.send(&fe::query("select 1")).await;
    let msgs = raw.until_ready(1).await;
    let err = msgs
        .iter()
        .find(|m| m.tag() == b'E')
        .expect("the client hears of it");
    assert!(is_fatal(err), "{err:?}");
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    let err = b
        .query_one("select 1", &[])
        .await
        .expect_err("server is down");
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    drop((a, b));
    proxy.assert_drains().await;

    // While it is down, new clients get a clear error; once it is back, they work.
    let err = tokio_postgres::connect(&proxy.conn_str(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("down");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("08006"),
        "{err}"
    );
    pg.start_server();
    still_works(&proxy).await;
    proxy.assert_drains().await;
    proxy.stop().await;
}
