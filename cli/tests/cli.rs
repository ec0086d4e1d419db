//! The `flux` binary: flags, help, exit codes, readiness line, and clean shutdown on
//! SIGINT/SIGTERM with sessions closed at an idle point.

use std::process::Command;
use std::time::Duration;

use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::{signal, start_proxy, wait_exit};

mod common;

fn flux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flux"))
}

#[test]
fn version_help_and_usage_errors() {
    let out = flux().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("flux {}", env!("CARGO_PKG_VERSION"))
    );
    let out = flux().arg("--help").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("proxy"));
    let out = flux().args(["proxy", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--data-dir",
        "--tls-cert",
        "--tls-key",
        "FLUX_UPSTREAM",
    ] {
        assert!(help.contains(flag), "proxy --help lacks {flag}");
    }
    // Usage errors exit 2; a bad value is a usage error too.
    for args in [
        &["proxy"][..],
        &["frobnicate"],
        &["proxy", "--upstream", "x", "--listen", "nope"],
    ] {
        let out = flux()
            .args(args)
            .env_remove("FLUX_UPSTREAM")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A runtime failure exits 1 with a message saying what to fix.
    let out = flux()
        .args(["proxy", "--upstream", "http://nope"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_then_exits_zero_on_sigterm_closing_sessions_cleanly() {
    let pg = PgCluster::start(Options::default());
    let data = common::private_tempdir();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = start_proxy(
        flux()
            .args([
                "proxy",
                "--listen",
                &listen,
                "--upstream",
                &pg.url(),
                "--data-dir",
            ])
            .arg(data.path().join("store")),
        &listen,
    );
    let conn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
        &listen[10..]
    );
    // An idle session, watching how its connection ends.
    let (idle, idle_conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let idle_end = tokio::spawn(idle_conn);
    assert_eq!(
        idle.query_one("select 1", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        1
    );
    // A busy session, mid-statement when the signal arrives.
    let busy = flux_integration_tests::pg::connect(&conn).await;
    let busy_query = tokio::spawn(async move {
        busy.query_one("select pg_sleep(1)::text", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    signal(&child, "-TERM");
    // The busy statement finishes: shutdown waits for an idle point.
    busy_query
        .await
        .expect("task")
        .expect("in-flight statement completes during shutdown");
    // The idle session is told why it is closed.
    let end = tokio::time::timeout(Duration::from_secs(5), idle_end)
        .await
        .expect("closed")
        .expect("task");
    let err = end.expect_err("connection closed by the proxy");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57P01"),
        "{err}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(data.path().join("store").is_dir(), "--data-dir is created");
    // The backends ended cleanly (Terminate), not by a dropped socket.
    flux_integration_tests::eventually("backends to exit", Duration::from_secs(5), || {
        pg.backends() == 0
    })
    .await;
    assert!(
        !pg.log().contains("unexpected EOF on client connection"),
        "{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_from_environment_and_stops_on_sigint() {
    let pg = PgCluster::start(Options::default());
    let data = common::private_tempdir();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = start_proxy(
        flux()
            .arg("proxy")
            .env("FLUX_LISTEN", &listen)
            .env("FLUX_UPSTREAM", pg.url())
            .env("FLUX_DATA_DIR", data.path()),
        &listen,
    );
    let conn = format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
        &listen[10..]
    );
    let client = flux_integration_tests::pg::connect(&conn).await;
    assert_eq!(
        client
            .query_one("select 41 + 1", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        42
    );
    signal(&child, "-INT");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// `flux state history … | head`: when the reader goes away, the command ends quietly
/// with status 0 instead of panicking on the closed pipe.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;

    let data = common::private_tempdir();
    {
        // Enough history for one row that the output overflows a pipe's buffer.
        let store = flux_read::open_writer(data.path()).expect("store");
        let tx = flux_store::TxId {
            boot: 1,
            session: 1,
            n: 1,
        };
        let records: Vec<flux_store::Record> = (0..3000u64)
            .map(|i| {
                flux_store::Record::Mutation(flux_store::Mutation {
                    table: "users".into(),
                    key: Some(vec!["1".into()]),
                    at: 1_000_000_000 + i,
                    op: flux_store::Op::Update,
                    before: Some(format!(r#"{{"id": 1, "n": {i}}}"#)),
                    after: Some(format!(r#"{{"id": 1, "n": {}}}"#, i + 1)),
                    request: None,
                    tx,
                    tx_index: i as u32,
                })
            })
            .collect();
        store.write(&records, true).expect("write");
    }
    let mut child = flux()
        .args([
            "state",
            "history",
            "users",
            "--id",
            "1",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flux");
    let mut first = [0u8; 16];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("some output");
    // The reader is gone now (its end of the pipe dropped above).
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
}
