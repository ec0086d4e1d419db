//! Equivalence: a corpus of exchanges sent directly to one server and through the proxy
//! to an identical one must produce identical backend message streams.
//!
//! The two servers are clones of one stopped data directory, so catalogs and OIDs match
//! and even table OIDs in `RowDescription` can be compared. The only fields masked are
//! process-specific: `BackendKeyData` (pid and secret) and the sender pid at the start
//! of a `NotificationResponse`.

use bytes::Bytes;
use flux_integration_tests::pg::{Options, PgCluster, DB, USER};
use flux_integration_tests::proxy::TestProxy;
use flux_integration_tests::wire::{fe, Msg, RawConn};

/// One exchange: what to send (in one write), and how many ReadyForQuery end it.
struct Exchange {
    name: &'static str,
    send: Vec<Bytes>,
    ready: usize,
}

fn q(name: &'static str, sql: &str) -> Exchange {
    Exchange {
        name,
        send: vec![fe::query(sql)],
        ready: 1,
    }
}

fn x(name: &'static str, send: Vec<Bytes>, ready: usize) -> Exchange {
    Exchange { name, send, ready }
}

fn corpus() -> Vec<Exchange> {
    let big_param = "y".repeat(1_200_000);
    let i8 = 7i64.to_be_bytes();
    vec![
        q("ddl", "create table items(id serial primary key, name text not null unique, tags text[], doc jsonb, price numeric(10,2), made date, blob bytea)"),
        q("insert returning", "insert into items(name, tags, doc, price, made, blob) values \
            ('a', '{x,y}', '{\"k\": [1, null, \"s\"]}', 9.99, '2026-03-10', '\\x00ff'), \
            ('b', null, null, null, null, null), \
            ('c', '{}', '[]', 0, '1999-12-31', '') returning *"),
        q("select with nulls, arrays, json", "select id, name, tags, doc, doc->'k', price, made, blob, tags[1] from items order by id"),
        q("update", "update items set price = price * 2 where price is not null returning id, price"),
        q("delete", "delete from items where name = 'b'"),
        q("unique violation", "insert into items(name) values ('a')"),
        q("division by zero", "select 1 / (select count(*) - count(*) from items)"),
        q("syntax error", "selec wrong"),
        q("undefined table", "select * from nope"),
        q("several statements", "select 1; select 'two'; insert into items(name) values ('d'); select count(*) from items"),
        q("error inside multi-statement", "select 1; select 1/0; select 3"),
        q("empty query", ""),
        q("notice", "do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$"),
        q("parameter status", "set application_name = 'equivalence'; set datestyle = 'SQL, DMY'"),
        q("transaction with savepoint", "begin; insert into items(name) values ('e'); savepoint s; insert into items(name) values ('a'); rollback to s; commit"),
        x("failed transaction", vec![fe::query("begin"), fe::query("select 1/0"), fe::query("select 1"), fe::query("commit")], 4),
        q("large row over 1 MB", "select repeat('x', 1500000) as big, 1 as after"),
        q("100k rows", "select g, md5(g::text), g % 7 = 0 from generate_series(1, 100000) g"),
        q("copy out", "copy (select * from items order by id) to stdout"),
        x(
            "copy in",
            vec![fe::query("copy items(name, price) from stdin"), fe::copy_data(b"f\t1.5\ng\t\\N\n"), fe::copy_done()],
            1,
        ),
        x(
            "copy in with bad data",
            vec![fe::query("copy items(name, price) from stdin"), fe::copy_data(b"h\tnotanumber\n"), fe::copy_done()],
            1,
        ),
        x(
            "extended: named statement, describe, binary results",
            vec![
                fe::parse("s1", "select id, name, price from items where id > $1::int8 order by id"),
                fe::describe(b'S', "s1"),
                fe::bind_binary("", "s1", &[&i8[..]], true),
                fe::describe(b'P', ""),
                fe::execute("", 0),
                fe::bind("", "s1", &[Some(b"0")], false),
                fe::execute("", 0),
                fe::sync(),
            ],
            1,
        ),
        x(
            "extended: row limit and portal suspended",
            vec![
                fe::query("begin"),
                fe::bind("cur", "s1", &[Some(b"0")], false),
                fe::execute("cur", 2),
                fe::execute("cur", 2),
                fe::execute("cur", 100),
                fe::close(b'P', "cur"),
                fe::sync(),
                fe::query("commit"),
            ],
            3,
        ),
        x(
            "extended: error mid-pipeline",
            vec![
                fe::parse("", "select 1"),
                fe::bind("", "", &[], false),
                fe::execute("", 0),
                fe::parse("", "select * from nope"),
                fe::bind("", "", &[], false),
                fe::execute("", 0),
                fe::sync(),
                fe::parse("", "select $1::text"),
                fe::bind("", "", &[None], false),
                fe::execute("", 0),
                fe::sync(),
            ],
            2,
        ),
        x(
            "extended: large parameter over 1 MB",
            vec![
                fe::parse("", "select length($1::text), md5($1::text)"),
                fe::bind("", "", &[Some(big_param.as_bytes())], false),
                fe::execute("", 0),
                fe::sync(),
            ],
            1,
        ),
        x(
            "extended: flush then sync",
            vec![fe::parse("s2", "select now() is not null"), fe::describe(b'S', "s2"), fe::flush(), fe::close(b'S', "s2"), fe::sync()],
            1,
        ),
        q("listen/notify", "listen chan; notify chan, 'payload'; unlisten chan"),
        q("drop", "drop table items"),
    ]
}

/// Masks process-specific fields; drops `BackendKeyData`.
fn normalise(msgs: Vec<Msg>) -> Vec<Msg> {
    msgs.into_iter()
        .filter(|m| m.tag() != b'K')
        .map(|m| {
            if m.tag() == b'A' && m.0.len() >= 9 {
                let mut v = m.0.to_vec();
                v[5..9].copy_from_slice(&[0; 4]);
                Msg(Bytes::from(v))
            } else {
                m
            }
        })
        .collect()
}

async fn run_corpus(addr: std::net::SocketAddr) -> Vec<(String, Vec<Msg>)> {
    let mut c = RawConn::connect(addr, USER, DB).await;
    let mut out = vec![(
        "startup".to_string(),
        normalise(std::mem::take(&mut c.startup)),
    )];
    for ex in corpus() {
        c.send(&fe::batch(&ex.send)).await;
        let msgs = c.until_ready(ex.ready).await;
        out.push((ex.name.to_string(), normalise(msgs)));
    }
    c.send(&fe::terminate()).await;
    assert!(c.closed_within(std::time::Duration::from_secs(5)).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_stream_is_byte_identical_to_direct() {
    let mut direct = PgCluster::start(Options::default());
    direct.stop();
    let mut through = direct.clone_stopped();
    direct.start_server();
    through.start_server();
    let proxy = TestProxy::start(&through).await;

    let expected = run_corpus(([127, 0, 0, 1], direct.port).into()).await;
    let actual = run_corpus(proxy.addr).await;

    assert_eq!(expected.len(), actual.len());
    let mut total = 0;
    for ((name, want), (_, got)) in expected.iter().zip(&actual) {
        assert!(!want.is_empty(), "{name}: no answer");
        if want != got {
            let first = want
                .iter()
                .zip(got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            panic!(
                "{name}: streams differ at message {first} (direct {} messages, proxy {}):\n direct: {:?}\n  proxy: {:?}",
                want.len(),
                got.len(),
                want.get(first),
                got.get(first)
            );
        }
        total += want.iter().map(|m| m.0.len()).sum::<usize>();
    }
    // The corpus really exercised the big cases.
    assert!(total > 5_000_000, "compared only {total} bytes");
    proxy.assert_drains().await;
    proxy.stop().await;
}
