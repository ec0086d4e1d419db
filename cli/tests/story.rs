//! The demo's story end to end, with the real OpenTelemetry SDK: the example shop
//! (examples/shop: Flask, the official Python SDK exporting OTLP/HTTP protobuf, psycopg2
//! with sqlcommenter) talks to PostgreSQL through `flux proxy --otlp`; a checkout whose
//! payment call times out after writing is then explained by `flux tail`, `flux why`,
//! `flux trace` and `flux trace diff`, asserted on their JSON.
//!
//! Needs the example's Python environment: `FLUX_EXAMPLE_PYTHON`, else
//! /var/tmp/flux-example-venv/bin/python (`./dev setup` creates it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{call, flux_json, python, shop, ShopStack};
use flux_integration_tests::pg::{Options, PgCluster};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checkout_story_with_the_real_sdk() {
    python(); // fails early, saying how to install it, when the example's Python is missing
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(&std::fs::read_to_string(shop().join("schema.sql")).expect("schema"));
    let data = common::private_tempdir();
    let stack = ShopStack::start(&pg, data.path(), &shop().join("app.py"), false, &[]);
    let app = stack.entry;

    assert_eq!(
        call(app, "POST", "/users", r#"{"id": 42, "email": "a@b.com"}"#),
        201
    );
    assert_eq!(
        call(app, "POST", "/users", r#"{"id": 7, "email": "c@d.com"}"#),
        201
    );
    assert_eq!(call(app, "GET", "/users/42", ""), 200);
    assert_eq!(
        call(app, "POST", "/checkout", r#"{"user_id": 7, "amount": 25}"#),
        201
    );
    assert_eq!(
        call(
            app,
            "POST",
            "/checkout",
            r#"{"user_id": 42, "amount": 5000}"#
        ),
        500
    );

    // The SDK exports in batches: wait for the five root spans.
    let deadline = Instant::now() + Duration::from_secs(30);
    let tail = loop {
        let tail = flux_json(data.path(), &["tail", "--since", "10m", "--no-follow"]);
        let rooted = tail
            .as_array()
            .map_or(0, |a| a.iter().filter(|r| !r["method"].is_null()).count());
        if rooted >= 5 {
            break tail;
        }
        assert!(
            Instant::now() < deadline,
            "only {rooted} requests arrived: {tail:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let rows = tail.as_array().expect("array");
    let find = |path: &str, status: u64| {
        rows.iter()
            .find(|r| r["path"] == path && r["status"] == status)
            .unwrap_or_else(|| panic!("no {path} {status} in {tail:#}"))
    };
    let failed = find("/checkout", 500);
    let paid = find("/checkout", 201);
    find("/users", 201);
    find("/users/<int:user_id>", 200);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("/charge timeout after 1s")),
        "{failed:#}"
    );
    let failed_id = failed["request"].as_str().expect("id").to_string();
    let paid_id = paid["request"].as_str().expect("id").to_string();
    // Following (the default): already-recorded requests first, one JSON object per line,
    // then a request made while following, once its root span is in.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_flux"))
        .args([
            "tail",
            "--since",
            "10m",
            "--filter",
            "path=/checkout",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run flux tail");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut followed = Vec::new();
    for round in 0..3 {
        if round == 2 {
            assert_eq!(
                call(app, "POST", "/checkout", r#"{"user_id": 7, "amount": 30}"#),
                201
            );
        }
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("flux tail printed only {followed:?}"));
        followed.push(serde_json::from_str::<Value>(&line).expect("one JSON object per line"));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        followed.iter().all(|r| r["path"] == "/checkout"),
        "{followed:?}"
    );
    let statuses: Vec<&Value> = followed.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [201, 500, 201], "{followed:?}");
    let errors = flux_json(
        data.path(),
        &["tail", "--since", "10m", "--no-follow", "--errors-only"],
    );
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors:#}");

    // flux why: the payment timeout, the app frame that called it, both writes rolled back.
    let why = flux_json(data.path(), &["why", &failed_id[..8]]);
    // Read at a glance (the call, its peer, how long), the raw text beside it, and the
    // line relative to the app's root.
    let cause = why["root_cause"]["message"].as_str().unwrap_or("");
    assert!(
        cause.starts_with("POST 127.0.0.1:") && cause.ends_with("/charge timeout after 1s"),
        "{why:#}"
    );
    assert_eq!(why["root_cause"]["shape"], "timeout");
    let raw = why["root_cause"]["raw"].as_str().unwrap_or("");
    assert!(
        raw.contains("ReadTimeout") && raw.contains("timed out"),
        "{why:#}"
    );
    assert_eq!(why["location"]["file"], "app.py", "{why:#}");
    let path = why["location"]["path"].as_str().unwrap_or("");
    assert!(path.ends_with("examples/shop/app.py"), "{why:#}");
    assert_eq!(why["location"]["function"], "charge", "{why:#}");
    let changes = why["data_changes"].as_array().expect("changes");
    let tables: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap_or(""),
                c["op"].as_str().unwrap_or(""),
                c["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        tables,
        vec![
            ("orders", "INSERT", "rolled_back"),
            ("users", "UPDATE", "rolled_back")
        ],
        "{why:#}"
    );
    assert!(why["suggestion"]
        .as_str()
        .is_some_and(|s| s.contains("timeout")));

    // flux trace: the proxy's statement spans sit under the app's spans.
    let trace = flux_json(data.path(), &["trace", &failed_id]);
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans[0]["depth"], 0);
    assert_eq!(spans[0]["attributes"]["http.route"], "/checkout");
    let by_name = |n: &str| spans.iter().find(|s| s["name"] == n);
    let insert = by_name("db.insert(orders)").unwrap_or_else(|| panic!("{trace:#}"));
    assert_eq!(insert["source"], "proxy");
    let create = by_name("create_order").expect("create_order span");
    assert!(
        insert["depth"].as_u64() > create["depth"].as_u64(),
        "{trace:#}"
    );
    let failing: Vec<&Value> = spans.iter().filter(|s| !s["error"].is_null()).collect();
    assert!(!failing.is_empty());

    // flux trace diff: the charge changed (it failed), the paid-only UPDATE is missing.
    let diff = flux_json(data.path(), &["trace", "diff", &paid_id, &failed_id]);
    let verdict = |suffix: &str| {
        diff["spans"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
            .map(|r| r["verdict"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        verdict("/payment.charge").as_deref(),
        Some("changed"),
        "{diff:#}"
    );
    assert!(!diff["data_changes"]["only_before"]
        .as_array()
        .expect("list")
        .is_empty());

    // And the rows: user 42's plan change is recorded as rolled back.
    let history = flux_json(data.path(), &["state", "history", "users", "--id", "42"]);
    let outcomes: Vec<&str> = history["mutations"]
        .as_array()
        .or(history.as_array())
        .expect("mutations")
        .iter()
        .map(|m| m["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, vec!["committed", "rolled_back"], "{history:#}");
}
