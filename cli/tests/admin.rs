//! `flux proxy --admin`: Prometheus metrics scraped while pgbench runs through the proxy
//! with capture on, checked against what pgbench sent; liveness; readiness following the
//! upstream; OTLP counters following accepted and refused exports.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{flux, http, Running};
use flux_integration_tests::pg::{client_bin, free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http(port, "GET", "/metrics", None);
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in the metrics: {m:#?}"))
}

fn statements(m: &BTreeMap<String, f64>, command: &str) -> f64 {
    get(
        m,
        &format!("flux_proxy_statements_total{{command=\"{command}\"}}"),
    )
}

/// An OTLP/JSON export of a two-span request from November 2023.
const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174","name":"work","kind":1,"startTimeUnixNano":"1700000000010000000","endTimeUnixNano":"1700000000090000000"}]}]}]}"#;

/// `flux proxy` recording into `data` with OTLP on, and `extra` flags: the running
/// proxy, its PostgreSQL port and its OTLP port.
fn proxy(pg: &PgCluster, data: &std::path::Path, extra: &[&str]) -> (Running, u16, u16) {
    let (port, otlp) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = flux();
    cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
        .arg("--data-dir")
        .arg(data)
        .args(["--otlp", &format!("127.0.0.1:{otlp}")])
        .args(extra);
    (Running(start_proxy(&mut cmd, &listen)), port, otlp)
}

const CLIENTS: u32 = 4;
const TRANSACTIONS: u32 = 100;

#[test]
fn metrics_follow_the_load_and_readiness_follows_the_upstream() {
    let mut pg = PgCluster::start(Options::default());
    let pgbench = client_bin("pgbench");
    let init = Command::new(&pgbench)
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p"])
        .arg(pg.port.to_string())
        .args(["-U", USER, DB])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let data = common::private_tempdir();
    let admin = free_port();
    let (_proxy, port, otlp) = proxy(&pg, data.path(), &["--admin", &admin.to_string()]);

    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    let (status, ready) = http(admin, "GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("ok upstream") && ready.contains("ok store"),
        "{ready}"
    );

    // Scrape all along while pgbench runs; every scrape parses and counters only grow.
    let running = Arc::new(AtomicBool::new(true));
    let scraper = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while running.load(Ordering::Relaxed) {
                let m = scrape(admin);
                seen.push(statements(&m, "UPDATE"));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let bench = Command::new(&pgbench)
        .args(["-n", "-c", &CLIENTS.to_string(), "-j", "2", "-t"])
        .arg(TRANSACTIONS.to_string())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, DB])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pgbench through the proxy");
    running.store(false, Ordering::Relaxed);
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let during = scraper.join().expect("scraper");
    assert!(
        during.len() >= 2,
        "scraped {} times during the run",
        during.len()
    );
    assert!(
        during.windows(2).all(|w| w[0] <= w[1]),
        "a counter went down: {during:?}"
    );

    // pgbench's TPC-B transaction: BEGIN; 3 UPDATEs; SELECT; INSERT; END.
    let tx = f64::from(CLIENTS * TRANSACTIONS);
    let m = scrape(admin);
    assert_eq!(statements(&m, "INSERT"), tx);
    assert_eq!(statements(&m, "UPDATE"), 3.0 * tx);
    assert_eq!(statements(&m, "BEGIN"), tx);
    assert_eq!(statements(&m, "COMMIT"), tx);
    // pgbench also reads the scale once per run.
    assert!(statements(&m, "SELECT") >= tx, "{m:?}");
    assert_eq!(statements(&m, "error"), 0.0);
    let all: f64 = flux_proxy::COMMANDS.iter().map(|c| statements(&m, c)).sum();
    let text = http(admin, "GET", "/metrics", None).1;
    assert_eq!(
        get(&m, "flux_proxy_statement_duration_seconds_count"),
        all,
        "{text}"
    );
    assert_eq!(
        get(
            &m,
            "flux_proxy_statement_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        all
    );
    assert!(get(&m, "flux_proxy_statement_duration_seconds_sum") > 0.0);
    assert!(get(&m, "flux_proxy_client_sessions_total") >= f64::from(CLIENTS));
    assert!(get(&m, "flux_proxy_upstream_sessions_total") >= f64::from(CLIENTS));
    // Each statement's text went up, each answer came down.
    assert!(
        get(&m, "flux_proxy_bytes_total{direction=\"client_to_server\"}") > 6.0 * tx * 30.0,
        "{m:?}"
    );
    assert!(get(&m, "flux_proxy_bytes_total{direction=\"server_to_client\"}") > 7.0 * tx * 10.0);

    // Capture records every row pgbench wrote (3 updates and 1 insert per transaction),
    // and the sessions close.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = scrape(admin);
        if get(&m, "flux_capture_rows_total") >= 4.0 * tx
            && get(&m, "flux_proxy_client_sessions_open") == 0.0
            && get(&m, "flux_store_queue_bytes") == 0.0
        {
            break m;
        }
        assert!(Instant::now() < deadline, "capture never caught up: {m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(get(&m, "flux_capture_rows_total"), 4.0 * tx);
    assert_eq!(get(&m, "flux_capture_dropped_records_total"), 0.0);
    assert_eq!(get(&m, "flux_proxy_upstream_sessions_open"), 0.0);
    assert!(get(&m, "flux_store_records_written_total") >= 4.0 * tx);
    assert!(get(&m, "flux_store_batches_total") >= 1.0);
    assert_eq!(get(&m, "flux_store_batch_failures_total"), 0.0);
    assert!(get(&m, "flux_store_disk_bytes") > 0.0);

    // OTLP: a good export counts its spans, a malformed one is refused whole.
    let export = EXPORT;
    let post = |body: &[u8]| http(otlp, "POST", "/v1/traces", Some(("application/json", body))).0;
    assert_eq!(post(export.as_bytes()), 200);
    assert_eq!(post(b"{\"resourceSpans\": 7}"), 400);
    let m = scrape(admin);
    assert_eq!(get(&m, "flux_otlp_spans_accepted_total"), 2.0);
    assert_eq!(get(&m, "flux_otlp_exports_refused_total"), 1.0);
    assert_eq!(get(&m, "flux_otlp_spans_rejected_total"), 0.0);

    // Readiness follows the upstream; liveness does not.
    pg.stop_immediate();
    let (status, body) = http(admin, "GET", "/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("FAIL upstream"), "{body}");
    assert!(body.contains("ok store"), "{body}");
    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    pg.start_server();
    let (status, body) = http(admin, "GET", "/readyz", None);
    assert_eq!(status, 200, "{body}");
}

/// `--retain` removes a request older than the age kept while the proxy runs, and
/// `flux store stats` shows the families before and after.
#[test]
fn retention_removes_old_requests_while_the_proxy_runs() {
    let pg = PgCluster::start(Options::default());
    let data = common::private_tempdir();
    let (_proxy, _, otlp) = proxy(&pg, data.path(), &["--retain", "20s"]);
    let stats = |data: &std::path::Path| {
        let out = flux()
            .args(["store", "stats", "--format", "json", "--data-dir"])
            .arg(data)
            .output()
            .expect("flux store stats");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["families"]
            .as_array()
            .expect("families")
            .iter()
            .find(|f| f["family"] == "requests_by_time")
            .expect("requests_by_time")["oldest"]
            .clone()
    };
    let status = http(
        otlp,
        "POST",
        "/v1/traces",
        Some(("application/json", EXPORT.as_bytes())),
    )
    .0;
    assert_eq!(status, 200);
    // Stored (the receiver answers once written); a pass runs every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let trace = flux()
            .args(["trace", "5b8efff798038103d269b633813fc60c", "--data-dir"])
            .arg(data.path())
            .output()
            .expect("flux trace");
        if !trace.status.success() {
            assert!(
                String::from_utf8_lossy(&trace.stderr).contains("5b8efff7"),
                "{}",
                String::from_utf8_lossy(&trace.stderr)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 2023 request was never removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        stats(data.path()).is_null(),
        "requests_by_time still holds a request"
    );
}
