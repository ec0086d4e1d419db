//! Capture's memory stays bounded whatever one statement writes: a two-million-row
//! `INSERT … SELECT` of 200-byte rows through `flux proxy` with capture on keeps the
//! proxy's peak resident memory (VmHWM) under 100 MB — the images stream to the store at
//! its pace instead of piling up in queues — and every row is in the record.

use std::time::{Duration, Instant};

mod common;

use common::{flux, flux_json, Running};
use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;

const ROWS: u64 = 2_000_000;

/// `VmHWM` or `VmRSS` of a process, in kB.
fn memory_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_million_row_write_keeps_the_proxy_under_100_mb() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL)");
    let data = common::private_tempdir();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = flux();
    cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
        .arg("--data-dir")
        .arg(data.path());
    let proxy = Running(start_proxy(&mut cmd, &listen));
    let pid = proxy.0.id();
    let before = memory_kb(pid, "VmRSS:");

    let conn = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB}");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect through the proxy");
    tokio::spawn(connection);
    let started = Instant::now();
    let n = client
        .execute(
            &format!(
                "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, {ROWS}) g"
            ),
            &[],
        )
        .await
        .expect("the insert");
    assert_eq!(n, ROWS);
    let took = started.elapsed();

    // Every row reaches the record (the writer may still be draining).
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in ["1", "1000000", "2000000"] {
        loop {
            let h = flux_json(data.path(), &["state", "history", "big", "--id", id]);
            if h["mutations"].as_array().is_some_and(|a| a.len() == 1) {
                break;
            }
            assert!(Instant::now() < deadline, "row {id} never recorded: {h}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let peak = memory_kb(pid, "VmHWM:");
    let after = memory_kb(pid, "VmRSS:");
    eprintln!(
        "{ROWS} captured rows in {took:?}: proxy RSS {} MB before, peak {} MB, {} MB after",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(
        peak < 100 * 1024,
        "peak RSS {} MB (before {} MB)",
        peak / 1024,
        before / 1024
    );
    // Nothing was dropped on the way: no gap says writes to `big` were lost.
    let h = flux_json(data.path(), &["state", "history", "big", "--id", "1500000"]);
    assert_eq!(h["mutations"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["gaps"].as_array().map(Vec::len), Some(0), "{h}");
}
