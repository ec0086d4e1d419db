//! `flux why`, `flux tail` and `flux trace` for a Node/Express service instrumented by the
//! official OpenTelemetry JS SDK (examples/transfer: OTLP/HTTP protobuf, the http, express
//! and pg instrumentations, pg's sqlcommenter), through `flux proxy --otlp`: a transfer
//! whose fraud check answers 403 (the handler answers 502, no exception), one whose fraud
//! check times out, and a passing one. Needs node and the example's packages
//! (`./dev setup` installs them; FLUX_EXAMPLE_NODE_MODULES overrides where).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{call, flux, flux_json, node_modules, transfer as example, wait_port, Running};
use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;
use serde_json::Value;

fn flux_text(data: &Path, args: &[&str]) -> String {
    let out = flux()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("NO_COLOR", "1")
        .output()
        .expect("run flux");
    assert!(
        out.status.success(),
        "flux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn why_reads_an_outbound_403_and_a_timeout_from_the_js_sdk() {
    let modules = node_modules();
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(&std::fs::read_to_string(example().join("schema.sql")).expect("schema"));
    let data = common::private_tempdir();
    let (port, otlp, fraud, app) = (free_port(), free_port(), free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = flux();
    cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
        .args(["--otlp", &format!("127.0.0.1:{otlp}")])
        .arg("--data-dir")
        .arg(data.path());
    let _proxy = Running(start_proxy(&mut cmd, &listen));
    let node = |args: &[&str]| {
        let mut c = Command::new("node");
        c.args(args)
            .current_dir(example())
            .env("NODE_PATH", &modules)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut fraud_svc = node(&["fraud.js", &fraud.to_string()])
        .spawn()
        .expect("start the fraud service");
    wait_port(fraud, &mut fraud_svc, "the fraud service");
    let _fraud_svc = Running(fraud_svc);
    let mut app_svc = node(&["--require", "./tracing.js", "app.js"])
        .env(
            "DATABASE_URL",
            format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"),
        )
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("FRAUD_URL", format!("http://127.0.0.1:{fraud}"))
        .env("PORT", app.to_string())
        .spawn()
        .expect("start the transfer service");
    wait_port(app, &mut app_svc, "the transfer service");
    let _app_svc = Running(app_svc);

    let transfer = |amount: u32| {
        call(
            app,
            "POST",
            "/transfers",
            &format!(r#"{{"from": 1, "to": 2, "amount": {amount}}}"#),
        )
    };
    assert_eq!(transfer(10), 201);
    assert_eq!(transfer(2000), 502, "the fraud service's 403, answered 502");
    assert_eq!(transfer(777), 500, "the fraud check timed out");

    // The SDK exports in batches: wait for the three root spans.
    let deadline = Instant::now() + Duration::from_secs(30);
    let requests = loop {
        let tail = flux_json(data.path(), &["tail", "--no-follow"]);
        let rows = tail.as_array().cloned().unwrap_or_default();
        if rows.iter().filter(|r| r["status"].is_u64()).count() >= 3 {
            break rows;
        }
        assert!(Instant::now() < deadline, "requests not recorded: {tail}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let id_of = |status: u64| {
        requests
            .iter()
            .find(|r| r["status"] == status)
            .and_then(|r| r["request"].as_str())
            .unwrap_or_else(|| panic!("no {status} in {requests:?}"))
            .to_string()
    };
    let (refused, timed_out) = (id_of(502), id_of(500));

    // The 403: the call and its status, no stack trace to point at.
    let why: Value = flux_json(data.path(), &["why", &refused]);
    let cause = &why["root_cause"];
    let expected = format!("POST 127.0.0.1:{fraud}/check → 403 Forbidden");
    assert_eq!(cause["message"], expected.as_str(), "{why:#}");
    assert_eq!(cause["shape"], "client_error");
    assert_eq!(cause["status"], 403);
    assert!(cause["raw"].is_string());
    assert!(why["location"].is_null(), "{why:#}");
    assert!(
        why["suggestion"]
            .as_str()
            .is_some_and(|s| s.contains("401/403")),
        "{why:#}"
    );
    let text = flux_text(data.path(), &["why", &refused]);
    assert!(text.contains(&format!("ROOT CAUSE   {expected}")), "{text}");
    assert!(
        text.contains(
            "LOCATION     unknown: the call in the POST /transfers handler failed with a status"
        ),
        "{text}"
    );
    assert!(text.contains("(rolled back)"), "{text}");
    let tail = flux_text(data.path(), &["tail", "--no-follow"]);
    assert!(tail.contains(&format!("└─ {expected}")), "{tail}");

    // The timeout: the peer and how long, the app's line relative to its root.
    let why: Value = flux_json(data.path(), &["why", &timed_out]);
    let expected = format!("POST 127.0.0.1:{fraud}/check timeout after 1s");
    assert_eq!(why["root_cause"]["message"], expected.as_str(), "{why:#}");
    assert_eq!(why["root_cause"]["shape"], "timeout");
    assert!(
        why["root_cause"]["raw"]
            .as_str()
            .is_some_and(|r| r.contains("ETIMEDOUT")),
        "{why:#}"
    );
    assert_eq!(why["location"]["file"], "app.js", "{why:#}");
    assert!(why["location"]["line"].as_u64().is_some_and(|l| l > 1));
    assert!(
        why["location"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("examples/transfer/app.js")),
        "{why:#}"
    );
    let text = flux_text(data.path(), &["why", &timed_out]);
    assert!(text.contains(&format!("ROOT CAUSE   {expected}")), "{text}");
    assert!(text.contains("LOCATION     app.js:"), "{text}");
    assert!(text.contains("SUGGESTION"), "{text}");

    // What the passing transfer did after the fraud check and the refused one never ran.
    let trace = flux_text(data.path(), &["trace", &refused]);
    let skipped: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("— skipped (upstream error)"))
        .collect();
    assert!(
        skipped.iter().any(|l| l.contains("pg.query:COMMIT")),
        "{trace}"
    );
    assert!(
        trace.contains(&format!("← POST 127.0.0.1:{fraud}/check → 403 Forbidden")),
        "{trace}"
    );
    let json = flux_json(data.path(), &["trace", &refused]);
    assert!(
        json["skipped"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("pg.query:COMMIT")))),
        "{json:#}"
    );
}
