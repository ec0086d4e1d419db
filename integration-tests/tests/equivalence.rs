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
use flux_proxy::capture::Op;

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
        // The DML corpus: every write form capture rewrites, with and without the app's own
        // RETURNING, in simple strings of several statements and in the extended protocol.
        q("dml: multi-row insert and insert select", "insert into items(name) values ('m1'), ('m2'); \
            insert into items(name, price) select 'sel' || g, g from generate_series(1, 3) g"),
        q("dml: upsert do update returning *", "insert into items(name, price) values ('a', 1), ('new', 2) \
            on conflict (name) do update set price = excluded.price returning *"),
        q("dml: upsert do nothing", "insert into items(name) values ('a') on conflict do nothing"),
        q("dml: update from, delete using", "create table prices(name text primary key, p numeric); \
            insert into prices values ('a', 5), ('c', 7); \
            update items i set price = p.p from prices p where p.name = i.name; \
            delete from items i using prices p where p.name = i.name and p.p > 6 returning i.name, p.p; \
            drop table prices"),
        q("dml: tagged, in a transaction, with a trailing comment", "begin; set local flux.request_id = 'r-local'; \
            update items set price = 1 where name = 'a'; \
            update items set price = 2 where name = 'a' /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/; commit;"),
        q("dml: update of nothing, delete returning *", "update items set price = 0 where false; delete from items where name = 'm1' returning *"),
        q("dml: write that fails", "update items set name = 'a' where name = 'new'"),
        x(
            "dml extended: statement reused, binary and per-column formats, describe",
            vec![
                fe::parse("u1", "update items set price = price + $1::numeric where name = $2 returning id, name"),
                fe::describe(b'S', "u1"),
                fe::bind_formats("", "u1", &["1", "a"], &[1]),
                fe::describe(b'P', ""),
                fe::execute("", 0),
                fe::bind_formats("", "u1", &["1", "new"], &[1, 0]),
                fe::execute("", 0),
                fe::bind_formats("", "u1", &["1", "m2"], &[]),
                fe::execute("", 0),
                fe::parse("i1", "insert into items(name) values ($1)"),
                fe::describe(b'S', "i1"),
                fe::bind_formats("", "i1", &["x1"], &[]),
                fe::execute("", 0),
                fe::bind_formats("", "i1", &["x2"], &[1]),
                fe::execute("", 0),
                fe::sync(),
            ],
            1,
        ),
        x(
            "dml extended: row limit on a returning update, then rollback",
            vec![
                fe::query("begin"),
                fe::parse("", "update items set price = 3 returning name"),
                fe::bind_formats("cur", "", &[], &[]),
                fe::execute("cur", 1),
                fe::execute("cur", 0),
                fe::sync(),
                fe::query("rollback"),
            ],
            3,
        ),
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
    // ...and capture really rewrote the writes: images came back for each form.
    let mutations = proxy.events.mutations();
    let count = |table: &str, op: Op| {
        mutations
            .iter()
            .filter(|m| m.table == table && m.op == op)
            .count()
    };
    assert!(count("items", Op::Insert) >= 10, "{mutations:#?}");
    assert!(count("items", Op::Update) >= 8, "{mutations:#?}");
    assert!(count("items", Op::Delete) >= 2, "{mutations:#?}");
    let upsert = mutations
        .iter()
        .find(|m| {
            m.op == Op::Update
                && m.after
                    .as_deref()
                    .is_some_and(|a| a.replace(' ', "").contains("\"price\":1"))
                && m.before.is_some()
        })
        .expect("the upsert's update with its before image");
    assert_eq!(upsert.key.as_deref(), Some(&["1".to_string()][..]));
    let tagged: Vec<_> = mutations
        .iter()
        .filter_map(|m| m.request.as_deref())
        .collect();
    assert!(tagged.contains(&"r-local"), "{tagged:?}");
    assert!(
        tagged.contains(&"4bf92f3577b34da6a3ce929d0e0e4736"),
        "{tagged:?}"
    );
    proxy.assert_drains().await;
    proxy.stop().await;
}
