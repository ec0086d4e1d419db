//! Authentication passes through end to end: trust, md5 and scram-sha-256, with and
//! without TLS on each leg (psql is the client). A wrong password gets the server's own
//! error; SCRAM channel binding, which cannot pass through, fails with a way out.

use std::process::Command;

use flux_integration_tests::certs;
use flux_integration_tests::pg::{client_bin, Auth, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::proxy::TestProxy;

struct Psql {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn psql(port: u16, password: &str, extra: &[&str], sql: &str) -> Psql {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={USER} dbname={DB} {}",
        extra.join(" ")
    );
    let out = Command::new(client_bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// The server's part of a libpq error: what follows `FATAL:`.
fn fatal_part(stderr: &str) -> &str {
    stderr
        .split_once("FATAL:")
        .map(|(_, m)| m.trim())
        .unwrap_or(stderr)
}

async fn proxy_for(
    pg: &PgCluster,
    upstream_tls: bool,
    client_tls: Option<&certs::CertFiles>,
) -> TestProxy {
    let sslmode = if upstream_tls { "require" } else { "disable" };
    let url = format!(
        "postgres://{USER}@127.0.0.1:{}/{DB}?sslmode={sslmode}",
        pg.port
    );
    let tls =
        client_tls.map(|c| flux_proxy::client_tls_config(&c.cert, &c.key).expect("tls config"));
    TestProxy::start_with(url.parse().expect("url"), |cfg| cfg.client_tls = tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_method_with_every_tls_combination() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = certs::self_signed(dir.path(), "proxy");
    for auth in [Auth::Trust, Auth::Md5, Auth::Scram] {
        for upstream_tls in [false, true] {
            let pg = PgCluster::start(Options {
                auth,
                ssl: upstream_tls,
                ..Options::default()
            });
            for client_tls in [false, true] {
                let combo =
                    format!("auth={auth:?} upstream_tls={upstream_tls} client_tls={client_tls}");
                let proxy = proxy_for(&pg, upstream_tls, client_tls.then_some(&cert)).await;
                let sslmode = if client_tls {
                    "sslmode=require"
                } else {
                    "sslmode=disable"
                };
                let sql = "select current_user, (select ssl from pg_stat_ssl where pid = pg_backend_pid())";
                let r = psql(proxy.addr.port(), PASSWORD, &[sslmode], sql);
                if auth == Auth::Scram && client_tls && upstream_tls {
                    // libpq picks SCRAM-SHA-256-PLUS on a TLS connection: it cannot pass through.
                    assert!(!r.ok, "{combo}: channel binding unexpectedly worked");
                    assert!(
                        r.stderr.contains("channel_binding=disable"),
                        "{combo}: {}",
                        r.stderr
                    );
                    let r = psql(
                        proxy.addr.port(),
                        PASSWORD,
                        &[sslmode, "channel_binding=disable"],
                        sql,
                    );
                    assert!(r.ok, "{combo} with channel_binding=disable: {}", r.stderr);
                    assert_eq!(r.stdout, format!("{USER}|t"), "{combo}");
                } else {
                    assert!(r.ok, "{combo}: {}", r.stderr);
                    let ssl = if upstream_tls { "t" } else { "f" };
                    assert_eq!(r.stdout, format!("{USER}|{ssl}"), "{combo}");
                }
                // The client leg is what psql negotiated with the proxy.
                let info = psql(
                    proxy.addr.port(),
                    PASSWORD,
                    &[sslmode, "channel_binding=disable"],
                    "\\conninfo",
                );
                assert!(info.ok, "{combo}: {}", info.stderr);
                assert_eq!(
                    info.stdout.contains("SSL connection"),
                    client_tls,
                    "{combo}: {}",
                    info.stdout
                );
                proxy.assert_drains().await;
                proxy.stop().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_the_servers_own_error() {
    for auth in [Auth::Md5, Auth::Scram] {
        let pg = PgCluster::start(Options {
            auth,
            ..Options::default()
        });
        let proxy = TestProxy::start(&pg).await;
        let direct = psql(pg.port, "wrong", &["sslmode=disable"], "select 1");
        let through = psql(proxy.addr.port(), "wrong", &["sslmode=disable"], "select 1");
        assert!(!direct.ok && !through.ok);
        assert!(
            direct.stderr.contains("password authentication failed"),
            "{}",
            direct.stderr
        );
        assert_eq!(
            fatal_part(&through.stderr),
            fatal_part(&direct.stderr),
            "auth={auth:?}"
        );
        // And the right password works.
        let ok = psql(
            proxy.addr.port(),
            PASSWORD,
            &["sslmode=disable"],
            "select 1",
        );
        assert!(ok.ok, "{}", ok.stderr);
        proxy.assert_drains().await;
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_database_names_are_used_upstream() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create database other");
    pg.admin_sql("create role bob login");
    let proxy = TestProxy::start(&pg).await;
    let port = proxy.addr.port().to_string();
    let out = Command::new(client_bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "bob",
            "-d",
            "other",
        ])
        .args(["-c", "select current_user || '@' || current_database()"])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bob@other");
    proxy.stop().await;
}
