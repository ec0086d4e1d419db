//! Real clients through the proxy: psql scripts (incl. `\copy`) and pgbench in simple,
//! extended and prepared mode.

use std::process::Command;

use flux_integration_tests::pg::{client_bin, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::proxy::TestProxy;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("run client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn psql(port: u16) -> Command {
    let mut c = Command::new(client_bin("psql"));
    c.args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        USER,
        "-d",
        DB,
        "-p",
    ])
    .arg(port.to_string());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_matches_direct() {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("in.csv");
    let rows: String = (1..=5000)
        .map(|i| format!("{i},name {i},{}\n", i % 3 == 0))
        .collect();
    std::fs::write(&csv, rows).expect("csv");
    let out_through = dir.path().join("through.csv");
    let out_direct = dir.path().join("direct.csv");
    let script = |table: &str, out: &std::path::Path| {
        format!(
            "create table {table}(id int primary key, name text, flag bool);\n\
             \\copy {table} from '{}' with (format csv)\n\
             begin;\n\
             update {table} set name = upper(name) where flag;\n\
             savepoint s;\n\
             delete from {table} where id > 4000;\n\
             rollback to savepoint s;\n\
             commit;\n\
             \\copy (select * from {table} order by id) to '{}' with (format csv)\n\
             select count(*), sum(id), count(*) filter (where flag) from {table};\n\
             \\echo done\n",
            csv.display(),
            out.display()
        )
    };
    let through_script = dir.path().join("through.sql");
    let direct_script = dir.path().join("direct.sql");
    std::fs::write(&through_script, script("t1", &out_through)).expect("script");
    std::fs::write(&direct_script, script("t2", &out_direct)).expect("script");

    let (ok, through_out, err) = run(psql(proxy.addr.port()).arg("-f").arg(&through_script));
    assert!(ok, "psql through flux failed: {err}");
    let (ok, direct_out, err) = run(psql(pg.port).arg("-f").arg(&direct_script));
    assert!(ok, "psql direct failed: {err}");
    assert_eq!(through_out, direct_out);
    assert!(
        through_out.contains("5000 | 12502500 |  1666"),
        "{through_out}"
    );
    assert!(through_out.contains("COPY 5000"), "{through_out}");
    let a = std::fs::read(&out_through).expect("out");
    let b = std::fs::read(&out_direct).expect("out");
    assert_eq!(a.len(), b.len());
    assert_eq!(a, b);
    proxy.assert_drains().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_every_query_mode() {
    let pg = PgCluster::start(Options::default());
    let proxy = TestProxy::start(&pg).await;
    let port = proxy.addr.port().to_string();
    let pgbench = || {
        let mut c = Command::new(client_bin("pgbench"));
        c.args(["-h", "127.0.0.1", "-p", &port, "-U", USER]);
        c
    };
    let (ok, _, err) = run(pgbench().args(["-i", "-s", "1", "-q", DB]));
    assert!(ok, "pgbench -i through flux: {err}");
    for mode in ["simple", "extended", "prepared"] {
        let (ok, out, err) =
            run(pgbench().args(["-M", mode, "-c", "4", "-j", "2", "-t", "200", DB]));
        assert!(ok, "pgbench -M {mode}: {err}");
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "{mode}: {out}"
        );
        // Every transaction landed: TPC-B appends one history row each (pgbench empties
        // the table at the start of a run).
        assert_eq!(
            pg.admin_sql("select count(*) from pgbench_history"),
            "800",
            "{mode}"
        );
        let (ok, out, err) =
            run(pgbench().args(["-M", mode, "-S", "-c", "4", "-j", "2", "-t", "200", DB]));
        assert!(
            ok && out.contains("800/800"),
            "pgbench -S -M {mode}: {err}{out}"
        );
    }
    proxy.assert_drains().await;
    proxy.stop().await;
}
