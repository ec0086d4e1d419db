//! `--on-store-failure=reject` with a store that really fails: the data dir on a small
//! tmpfs that is filled up. While the store cannot write, writes through the proxy are
//! refused (SQLSTATE 53000, in both protocols, aborting an open transaction as any error
//! would) and reads pass; `/readyz` says the store fails; once space is freed the writer
//! reopens the store, writes are accepted again and recorded.
//!
//! Mounting a tmpfs needs root (the CI machines and `./dev test` run as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{flux, flux_json, Running};
use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it up, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xA5u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 4096];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

fn refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code().code() == "53000" && d.message().contains("write refused"))
}

/// About 512 kB of incompressible text per row: the store's WAL fills quickly.
const BIG_ROW: &str =
    "INSERT INTO blobs SELECT $1, string_agg(md5(random()::text), '') FROM generate_series(1, 16000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_refuses_writes_while_the_store_fails_and_accepts_them_after() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("CREATE TABLE blobs (id int PRIMARY KEY, payload text)");
    let tmp = common::private_tempdir();
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "48m");
    let data = mnt.0.join("data");
    let port = free_port();
    let admin = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = flux();
    cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--on-store-failure",
            "reject",
            "--admin",
            &admin.to_string(),
        ]);
    let proxy = Running(start_proxy(&mut cmd, &listen));

    let conn = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB}");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect through the proxy");
    tokio::spawn(connection);
    client
        .execute("INSERT INTO blobs VALUES (1, 'before')", &[])
        .await
        .expect("a write while the store is healthy");

    fill(&mnt.0.join("filler"));
    let mut refused_at = None;
    for id in 2..200i32 {
        match client.execute(BIG_ROW, &[&id]).await {
            Ok(_) => {}
            Err(e) if refused(&e) => {
                refused_at = Some(id);
                break;
            }
            Err(e) => panic!("row {id}: {e:?}"),
        }
    }
    let refused_at = refused_at.expect("no write was refused with the store's disk full");

    // Still failing: the extended and the simple protocol are refused alike, reads pass.
    let e = client
        .execute("INSERT INTO blobs VALUES (100000, 'x')", &[])
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e:?}");
    let e = client
        .simple_query("INSERT INTO blobs VALUES (100001, 'x'); SELECT 1")
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e:?}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM blobs", &[])
        .await
        .expect("reads pass")
        .get(0);
    assert!(n >= 1);
    // A refusal aborts the transaction, as the server's own errors do.
    client.batch_execute("BEGIN").await.expect("begin");
    let e = client
        .execute("UPDATE blobs SET payload = 'y' WHERE id = 1", &[])
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e:?}");
    let e = client
        .query_one("SELECT 1", &[])
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("25P02"),
        "{e:?}"
    );
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let (status, ready) = common::http(admin, "GET", "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("FAIL store"), "{ready}");

    // Space comes back: the writer reopens the store and writes are accepted again.
    std::fs::remove_file(mnt.0.join("filler")).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .execute("INSERT INTO blobs VALUES (500000, 'after')", &[])
            .await
        {
            Ok(_) => break,
            Err(e) if refused(&e) => {
                assert!(Instant::now() < deadline, "writes still refused: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = flux_json(&data, &["state", "history", "blobs", "--id", "500000"]);
        if h["mutations"].as_array().is_some_and(|m| m.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the accepted write was not recorded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(common::http(admin, "GET", "/readyz", None).0, 200);
    // Nothing refused reached the table.
    let direct = pg.connect().await;
    let n: i64 = direct
        .query_one(
            "SELECT count(*) FROM blobs WHERE id >= $1 AND id < 500000 OR payload = 'y'",
            &[&refused_at],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    drop(proxy);
}
