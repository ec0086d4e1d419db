//! Capture end to end: the `flux` binary in front of a real PostgreSQL (the version
//! `FLUX_PG_BIN` points at: PostgreSQL 15's snapshot-subquery path, or 18's `old`/`new`),
//! real clients writing through it, and the `flux state` commands (or the store itself)
//! reading what was recorded.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::{signal, start_proxy, wait_exit};
use serde_json::Value;

mod common;

use common::flux;

struct Running {
    child: Child,
    port: u16,
}

impl Running {
    fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
            self.port
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy(pg: &PgCluster, data: &Path, extra: &[&str]) -> Running {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = flux();
    cmd.args([
        "proxy",
        "--listen",
        &listen,
        "--upstream",
        &pg.url(),
        "--data-dir",
    ])
    .arg(data)
    .args(extra)
    .env("FLUX_LOG", "info");
    Running {
        child: start_proxy(&mut cmd, &listen),
        port,
    }
}

/// Runs `flux state …` and parses its JSON output.
fn state_json(data: &Path, args: &[&str]) -> Value {
    let args: Vec<&str> = std::iter::once("state")
        .chain(args.iter().copied())
        .collect();
    common::flux_json(data, &args)
}

fn state_text(data: &Path, args: &[&str]) -> String {
    let out = flux()
        .arg("state")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run flux state");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const REQ_A: &str = "4f9a3b2c0d1e4f5a8b9c0d1e2f3a4b5c";
const REQ_B: &str = "a3c91ef0-b-request";
const REQ_C: &str = "c0ffee00-c-request";
const REQ_D: &str = "550e8400-e29b-41d4-a716-446655440000";

/// The seed's row story: inserted by one request, its name set by a second, its plan
/// set to `pro` by a third, and a fourth request's plan change rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_row_story_history_and_blame() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(
        "create table users(id int primary key, email text, name text, plan text not null default 'free')",
    );
    let data = common::private_tempdir();
    let flux = proxy(&pg, data.path(), &[]);
    let mut c = flux_integration_tests::pg::connect(&flux.conn_str()).await;

    // A: sqlcommenter traceparent on a simple-protocol insert.
    c.batch_execute(&format!(
        "insert into users(id, email) values (42, 'a@b.com') /*traceparent='00-{REQ_A}-00f067aa0ba902b7-01'*/"
    ))
    .await
    .expect("insert");
    // B: SET LOCAL inside an explicit transaction (extended-protocol update).
    let tx = c.transaction().await.expect("begin");
    tx.batch_execute(&format!("set local flux.request_id = '{REQ_B}'"))
        .await
        .expect("set local");
    tx.execute(
        "update users set name = $1 where id = $2",
        &[&"Alice Smith", &42i32],
    )
    .await
    .expect("update");
    tx.commit().await.expect("commit");
    // C: set_config(…, $1, true) with the id as a bind parameter, then a prepared update.
    let tx = c.transaction().await.expect("begin");
    tx.execute("select set_config('flux.request_id', $1, true)", &[&REQ_C])
        .await
        .expect("set_config");
    tx.execute(
        "update users set plan = $1 where id = $2",
        &[&"pro", &42i32],
    )
    .await
    .expect("update");
    tx.commit().await.expect("commit");
    // D: a sqlcommenter request_id; the transaction then fails and rolls back.
    let tx = c.transaction().await.expect("begin");
    tx.execute(
        &format!("update users set plan = 'enterprise' where id = 42 /*request_id='{REQ_D}'*/"),
        &[],
    )
    .await
    .expect("update");
    let failed = tx.batch_execute("select 1/0").await;
    assert!(failed.is_err());
    tx.rollback().await.expect("rollback");
    // An untagged write to another row must not leak into this row's history.
    c.batch_execute("insert into users(id, email) values (4, 'x@y.z'), (420, 'z@y.x')")
        .await
        .expect("insert");
    drop(c);
    settle().await;

    let history = state_json(data.path(), &["history", "users", "--id", "42"]);
    let m = history["mutations"].as_array().expect("mutations");
    let got: Vec<(String, String, String)> = m
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default().to_string(),
                e["request"].as_str().unwrap_or("-").to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want = [
        ("INSERT", REQ_A, "committed"),
        ("UPDATE", REQ_B, "committed"),
        ("UPDATE", REQ_C, "committed"),
        ("UPDATE", REQ_D, "rolled_back"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(got, want, "{history:#}");
    assert_eq!(m[1]["before"]["name"], Value::Null);
    assert_eq!(m[1]["after"]["name"], "Alice Smith");
    assert_eq!(m[2]["before"]["plan"], "free");
    assert_eq!(m[3]["after"]["plan"], "enterprise");

    let blame = state_json(data.path(), &["blame", "users", "--id", "42"]);
    let col = |name: &str| {
        blame["columns"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["column"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no column {name} in {blame:#}"))
    };
    assert_eq!(col("email")["request"], REQ_A);
    assert_eq!(col("name")["value"], "Alice Smith");
    assert_eq!(col("name")["request"], REQ_B);
    assert_eq!(col("plan")["value"], "pro");
    assert_eq!(col("plan")["request"], REQ_C);
    assert_eq!(col("plan")["rolled_back"]["request"], REQ_D);
    assert_eq!(col("email")["rolled_back"], Value::Null);

    // The text layouts of the seed.
    let text = state_text(data.path(), &["history", "users", "--id", "42"]);
    assert!(text.contains("users id=42  (4 mutations)"), "{text}");
    assert!(text.contains("plan: free → pro"), "{text}");
    assert!(text.contains("(rollback)"), "{text}");
    assert!(text.contains("req:550e8400"), "{text}");
    let text = state_text(data.path(), &["blame", "users", "--id", "42"]);
    let plan = text
        .lines()
        .find(|l| l.trim_start().starts_with("plan"))
        .unwrap_or_default();
    assert!(
        plan.contains("req:c0ffee00") && plan.contains("✗ rolled back"),
        "{text}"
    );

    // Everything request D did, by a unique prefix.
    let by_request = state_json(data.path(), &["history", "--request", "req:550e"]);
    let m = by_request["mutations"].as_array().expect("mutations");
    assert_eq!(m.len(), 1, "{by_request:#}");
    assert_eq!(m[0]["outcome"], "rolled_back");
    // --between a window that ends before anything happened is empty.
    let none = state_json(
        data.path(),
        &[
            "history",
            "users",
            "--id",
            "42",
            "--between",
            "2001-01-01T00:00",
            "2001-01-02T00:00",
        ],
    );
    assert_eq!(none["mutations"].as_array().map(Vec::len), Some(0));
}

/// Composite keys, tables without a primary key, and writes the proxy cannot image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_keyless_tables_and_gaps() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(
        "create table memberships(org int, member int, role text, primary key (org, member)); \
         create table events(kind text, n int)",
    );
    let data = common::private_tempdir();
    let flux = proxy(&pg, data.path(), &[]);
    let c = flux_integration_tests::pg::connect(&flux.conn_str()).await;
    c.batch_execute(
        "set flux.request_id = 'sess-req-1'; \
         insert into memberships values (7, 42, 'member'); \
         update memberships set role = 'admin' where org = 7 and member = 42; \
         insert into events values ('signup', 1); \
         truncate events; \
         reset flux.request_id; \
         delete from memberships where org = 7",
    )
    .await
    .expect("writes");
    settle().await;
    let h = state_json(data.path(), &["history", "memberships", "--id", "7,42"]);
    let m = h["mutations"].as_array().expect("mutations");
    let ops: Vec<&str> = m.iter().filter_map(|e| e["op"].as_str()).collect();
    assert_eq!(ops, ["INSERT", "UPDATE", "DELETE"], "{h:#}");
    assert_eq!(m[0]["request"], "sess-req-1");
    assert_eq!(m[2]["request"], Value::Null);
    assert_eq!(m[1]["before"]["role"], "member");
    // The keyless table's insert is found by its request; the TRUNCATE is a gap.
    let r = state_json(data.path(), &["history", "--request", "sess-req-1"]);
    let tables: Vec<&str> = r["mutations"]
        .as_array()
        .expect("mutations")
        .iter()
        .filter_map(|e| e["table"].as_str())
        .collect();
    assert_eq!(tables, ["memberships", "memberships", "events"], "{r:#}");
    // The statements the request ran are recorded too.
    let sqls: Vec<(&str, &str)> = r["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|st| {
            (
                st["sql"].as_str().unwrap_or_default(),
                st["tag"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(
        sqls.iter()
            .any(|(sql, tag)| *sql == "truncate events" && *tag == "TRUNCATE TABLE"),
        "{r:#}"
    );
    let gaps = r["gaps"].as_array().expect("gaps");
    assert!(
        gaps.iter()
            .any(|g| g["table"] == "events" && g["reason"] == "TRUNCATE"),
        "{r:#}"
    );

    // Rows changed by a cascading foreign key are invisible to RETURNING: the child
    // table's history says so.
    c.batch_execute(
        "create table orgs(id int primary key); \
         create table teams(id int primary key, org int references orgs on delete cascade)",
    )
    .await
    .expect("cascade setup");
    // A separate string: the one holding the DDL was planned before the tables existed.
    c.batch_execute("insert into orgs values (1); insert into teams values (10, 1)")
        .await
        .expect("cascade rows");
    c.batch_execute("delete from orgs where id = 1")
        .await
        .expect("cascading delete");
    settle().await;
    let h = state_json(data.path(), &["history", "teams", "--id", "10"]);
    assert_eq!(h["mutations"].as_array().map(Vec::len), Some(1), "{h:#}");
    assert!(
        h["gaps"]
            .as_array()
            .expect("gaps")
            .iter()
            .any(|g| g["table"] == "teams"
                && g["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("foreign key to orgs")),
        "{h:#}"
    );
    let text = state_text(data.path(), &["history", "teams", "--id", "10"]);
    assert!(text.contains("⚠ writes to teams not captured"), "{text}");

    // An UPDATE that moves a row's key: PostgreSQL 18's `old` has the exact before image;
    // before 18 the snapshot subquery cannot find it, and a gap says so.
    c.batch_execute(
        "insert into memberships values (1, 1, 'x'); \
         update memberships set member = 2 where org = 1 and member = 1",
    )
    .await
    .expect("key move");
    settle().await;
    let version: i32 = pg
        .connect()
        .await
        .query_one("select current_setting('server_version_num')::int", &[])
        .await
        .expect("version")
        .get(0);
    let h = state_json(data.path(), &["history", "memberships", "--id", "1,2"]);
    let moved = &h["mutations"][0];
    assert_eq!(moved["op"], "UPDATE", "{h:#}");
    let pk_gap = h["gaps"].as_array().expect("gaps").iter().any(|g| {
        g["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("primary-key")
    });
    if version >= 180000 {
        assert_eq!(moved["before"]["member"], 1, "{h:#}");
        assert!(!pk_gap, "{h:#}");
    } else {
        assert_eq!(moved["before"], Value::Null, "{h:#}");
        assert!(pk_gap, "{h:#}");
    }
}

/// 8 connections, 2,000 random inserts/updates/deletes over 100 rows in explicit and
/// implicit transactions, some rolled back: folding each row's committed history must
/// give the table's final contents, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_committed_history_folds_to_final_table() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create table acct(id int primary key, v int not null, note text)");
    let data = common::private_tempdir();
    let flux = proxy(&pg, data.path(), &[]);
    let conn_str = Arc::new(flux.conn_str());
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let conn_str = conn_str.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = flux_integration_tests::pg::connect(&conn_str).await;
            let mut rng = Rng(worker * 7919 + 17);
            let mut ops = 0;
            while ops < 250 {
                let explicit = rng.next().is_multiple_of(2);
                let n = if explicit { 1 + rng.next() % 4 } else { 1 };
                let plan: Vec<(&str, i32, i32)> = (0..n)
                    .map(|_| {
                        let id = (rng.next() % 100) as i32 + 1;
                        let v = (rng.next() % 1000) as i32;
                        let sql = match rng.next() % 5 {
                            0 => "insert into acct values ($1, $2, 'i')",
                            1 => "insert into acct values ($1, $2, 'u') on conflict (id) do update set v = excluded.v, note = 'u'",
                            2 | 3 => "update acct set v = v + $2, note = 'p' where id = $1",
                            _ => "delete from acct where id = $1 and $2 >= 0",
                        };
                        (sql, id, v)
                    })
                    .collect();
                ops += plan.len();
                if !explicit {
                    for (sql, id, v) in &plan {
                        let _ = c.execute(*sql, &[id, v]).await; // a unique violation is fine
                    }
                    continue;
                }
                let tx = c.transaction().await.expect("begin");
                let mut failed = false;
                for (sql, id, v) in &plan {
                    if tx.execute(*sql, &[id, v]).await.is_err() {
                        failed = true; // unique violation or deadlock: the transaction is done
                        break;
                    }
                }
                if failed || rng.next().is_multiple_of(5) {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let direct = pg.connect().await;
    let rows = direct
        .query("select id, to_jsonb(a)::text from acct a", &[])
        .await
        .expect("final contents");
    let mut actual = std::collections::BTreeMap::new();
    for r in rows {
        let id: i32 = r.get(0);
        let image: String = r.get(1);
        actual.insert(id, serde_json::from_str::<Value>(&image).expect("json"));
    }
    settle().await;
    let store = flux_store::Store::open_reader(data.path()).expect("reader");
    store.catch_up().expect("catch up");
    let mut checked = 0;
    let mut rolled_back = 0;
    for id in 1..=100 {
        let history = store
            .history("acct", &[id.to_string()], None, None)
            .expect("history");
        let mut state: Option<Value> = None;
        for e in &history {
            match e.outcome {
                flux_store::Outcome::Committed => state = e.mutation.after.clone(),
                flux_store::Outcome::RolledBack => rolled_back += 1,
                other => panic!("row {id}: outcome {other:?} after all clients finished"),
            }
        }
        assert_eq!(
            state.as_ref(),
            actual.get(&id),
            "row {id}: history {history:#?}"
        );
        checked += history.len();
    }
    assert!(checked > 1000, "only {checked} mutations recorded");
    assert!(rolled_back > 0, "the workload rolled nothing back");
}

/// `kill -9` under write load with `--durability strict`: after a restart, every
/// transaction whose COMMIT a client saw acknowledged is in the record as committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_strict_mode_loses_no_acknowledged_commit() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create table orders(id bigint primary key, total int)");
    let data = common::private_tempdir();
    let mut flux = proxy(&pg, data.path(), &["--durability", "strict"]);
    let conn_str = Arc::new(flux.conn_str());
    let acked = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let mut tasks = Vec::new();
    for worker in 0..4i64 {
        let (conn_str, acked) = (conn_str.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = flux_integration_tests::pg::connect(&conn_str).await;
            for i in 0.. {
                let id = worker * 1_000_000 + i;
                let ok = if i % 2 == 0 {
                    c.execute("insert into orders values ($1, 1)", &[&id])
                        .await
                        .is_ok()
                } else {
                    match c.transaction().await {
                        Ok(tx) => {
                            tx.execute("insert into orders values ($1, 2)", &[&id])
                                .await
                                .is_ok()
                                && tx.commit().await.is_ok()
                        }
                        Err(_) => false,
                    }
                };
                if !ok {
                    return; // the proxy is gone
                }
                acked.lock().expect("acked").push(id);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&flux.child, "-KILL");
    let _ = wait_exit(&mut flux.child, Duration::from_secs(10));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 50,
        "only {} commits before the kill",
        acked.len()
    );

    // Restart on the same data dir (it must reopen after a crash), then check.
    let _again = proxy(&pg, data.path(), &["--durability", "strict"]);
    let store = flux_store::Store::open_reader(data.path()).expect("reader");
    store.catch_up().expect("catch up");
    for id in &acked {
        let h = store
            .history("orders", &[id.to_string()], None, None)
            .expect("history");
        assert!(
            h.iter()
                .any(|e| e.outcome == flux_store::Outcome::Committed),
            "acknowledged order {id} missing or not committed in the record: {h:#?}"
        );
    }
}

/// Lets the relaxed writer drain its queue before the record is read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// `flux why` for a request that failed in the database: the failing statement and its
/// SQLSTATE, the rows it changed (rolled back), and the rule's suggestion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_failing_statement_and_its_rolled_back_changes() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create table users(id int primary key, plan text)");
    let data = common::private_tempdir();
    let daemon = proxy(&pg, data.path(), &[]);
    let mut c = flux_integration_tests::pg::connect(&daemon.conn_str()).await;
    c.batch_execute("insert into users values (1, 'free'), (2, 'free')")
        .await
        .expect("seed");
    let tx = c.transaction().await.expect("begin");
    tx.batch_execute("set local flux.request_id = 'dup-0001-request'")
        .await
        .expect("tag");
    tx.execute("update users set plan = 'pro' where id = 1", &[])
        .await
        .expect("update");
    let dup = tx.execute("insert into users values (2, 'x')", &[]).await;
    assert!(dup.is_err());
    drop(tx); // rolls back
    c.batch_execute("select 1").await.expect("still usable");
    settle().await;

    let out = flux()
        .args(["why", "dup-0001", "--format", "json", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run flux why");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let why: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(why["request"], "dup-0001-request");
    assert_eq!(why["root_cause"]["sqlstate"], "23505", "{why:#}");
    assert!(why["root_cause"]["sql"]
        .as_str()
        .is_some_and(|s| s.contains("insert into users")));
    let changes = why["data_changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{why:#}");
    assert_eq!(changes[0]["outcome"], "rolled_back");
    assert_eq!(changes[0]["after"]["plan"], "pro");
    assert!(why["suggestion"]
        .as_str()
        .is_some_and(|s| s.contains("idempotent")));
    let text = flux()
        .args(["why", "req:dup-0001", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run flux why");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("ROOT CAUSE") && text.contains("SQLSTATE 23505"),
        "{text}"
    );
    assert!(
        text.contains("users.id=1  UPDATE plan: free → pro  (rolled back)"),
        "{text}"
    );
    assert!(text.contains("SUGGESTION"), "{text}");
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `--redact`: the named columns' values never reach the store — not in images, not in a
/// tagged statement's text, not in the raw files — while other columns stay; the data dir
/// is created for its owner only, and a world-readable one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_columns_never_reach_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(
        "CREATE TABLE accounts (id int PRIMARY KEY, email text, password_hash text, ssn text)",
    );
    let tmp = common::private_tempdir();
    let data = tmp.path().join("new/flux-data");
    let p = proxy(
        &pg,
        &data,
        &["--redact", "accounts.password_hash", "--redact", "*.ssn"],
    );
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "created for its owner only");
    let (client, conn) = tokio_postgres::connect(&p.conn_str(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO accounts VALUES (1, 'a@b.c', 'hash-s3cr3t', '078-05-1120') /*request_id='r-redact'*/",
        )
        .await
        .expect("insert");
    client
        .batch_execute(
            "UPDATE accounts SET password_hash = 'hash-n3w' WHERE id = 1 /*request_id='r-redact'*/",
        )
        .await
        .expect("update");
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let history = loop {
        let h = state_json(&data, &["history", "accounts", "--id", "1"]);
        if h["mutations"].as_array().is_some_and(|m| m.len() == 2) {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = history.to_string();
    assert!(text.contains("a@b.c"), "other columns stay: {text}");
    assert!(text.contains("<redacted>"), "{text}");
    for secret in ["s3cr3t", "n3w", "078-05-1120"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let by_request = state_json(&data, &["history", "--request", "r-redact"]);
    let statements = by_request["statements"].to_string();
    assert!(statements.contains("'<redacted>'"), "{statements}");
    assert!(!statements.contains("s3cr3t"), "{statements}");
    drop(p);
    // Not in any of the store's files either (WAL and tables).
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                for secret in [&b"s3cr3t"[..], b"078-05-1120"] {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret),
                        "{} holds a redacted value",
                        path.display()
                    );
                }
            }
        }
    }

    // A data dir every user may read is refused, saying how to fix it.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = flux()
        .args(["proxy", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream", &pg.url(), "--data-dir"])
        .arg(&open)
        .output()
        .expect("flux proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("chmod 700"), "{err}");
    // A rule that names no column is a usage error.
    let out = flux()
        .args(["proxy", "--upstream", &pg.url(), "--redact", "accounts"])
        .output()
        .expect("flux proxy");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redact"));
}

/// A SCRAM-only server and an app role whose password the proxy does not have: capture
/// cannot read the catalog as the session's role, says so loudly at start-up, and records
/// the app's writes as gaps; with `--catalog-user` (a login with no privileges beyond
/// CONNECT), it reads the catalog for every role and captures the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_login_lets_capture_read_scram_servers() {
    use flux_integration_tests::pg::Auth;
    let pg = PgCluster::start(Options {
        auth: Auth::Scram,
        ..Options::default()
    });
    pg.admin_sql(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);
         CREATE ROLE app LOGIN PASSWORD 'app-pw';
         GRANT SELECT, INSERT ON orders TO app;
         CREATE ROLE billing LOGIN PASSWORD 'billing-pw';
         GRANT SELECT, INSERT ON orders TO billing;
         CREATE ROLE loader LOGIN PASSWORD 'loader-pw';
         GRANT INSERT ON orders TO loader;
         CREATE ROLE flux_catalog LOGIN PASSWORD 'cat-pw';",
    );
    // Starts flux with its log in a file; returns the child, its port and the log path.
    let start = |name: &str, data: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let port = free_port();
        let log = data.with_extension(format!("{name}.log"));
        let mut child = flux()
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &pg.url(), "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("flux proxy");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("catalog") && text.contains("listening on") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("flux exited ({status}): {text}");
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        (Running { child, port }, log)
    };
    let write = |port: u16, id: i32, user: &'static str| async move {
        let conn = format!("host=127.0.0.1 port={port} user={user} password={user}-pw dbname={DB}");
        let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect as an application role");
        tokio::spawn(c);
        client
            .batch_execute(&format!("INSERT INTO orders VALUES ({id}, 10)"))
            .await
            .expect("insert");
    };
    let tmp = common::private_tempdir();

    // Without a catalog login: said at start-up, and the write is a gap.
    let bare = tmp.path().join("bare");
    let (p, log) = start("bare", &bare, &[], &[]);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("CAPTURE CANNOT READ THE CATALOG"), "{text}");
    assert!(text.contains("--catalog-user"), "{text}");
    write(p.port, 1, "app").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = state_json(&bare, &["history", "orders", "--id", "1"]);
        if h["gaps"].as_array().is_some_and(|g| !g.is_empty()) {
            assert_eq!(h["mutations"].as_array().map(Vec::len), Some(0), "{h}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(p);

    // With one: read for the app's role too, and the row is captured.
    let with = tmp.path().join("with");
    let (p, log) = start(
        "with",
        &with,
        &["--catalog-user", "flux_catalog"],
        &[("FLUX_CATALOG_PASSWORD", "cat-pw")],
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("capture reads the catalog"), "{text}");
    // Two application roles, both captured; a third that may insert but not read gets
    // a gap: privileges are still the session role's.
    write(p.port, 2, "app").await;
    write(p.port, 3, "billing").await;
    write(p.port, 4, "loader").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for id in ["2", "3"] {
        loop {
            let h = state_json(&with, &["history", "orders", "--id", id]);
            if h["mutations"].as_array().is_some_and(|m| m.len() == 1) {
                assert!(h.to_string().contains("\"total\":10"), "{h}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{h}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    loop {
        let h = state_json(&with, &["history", "orders", "--id", "4"]);
        if h["gaps"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g.to_string().contains("loader")))
        {
            assert_eq!(h["mutations"].as_array().map(Vec::len), Some(0), "{h}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
