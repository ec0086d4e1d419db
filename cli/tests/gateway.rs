//! The HTTP gateway (`flux proxy --http-listen … --http-upstream …`) end to end: a real
//! HTTP app (axum, on its own port), `curl` as the client, the `flux` binary in between,
//! and the store read back. Each exchange must reach the app and the client unchanged
//! (apart from the forwarded trace context) and be recorded: input, response, limits,
//! redaction, and what went wrong when something did.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use flux_integration_tests::pg::{free_port, Options, PgCluster};
use flux_integration_tests::process::start_proxy;
use flux_store::{Exchange, Store};
use serde_json::Value;

mod common;

use common::{flux, Running};

/// The app behind the gateway: echoes what it got, streams, stalls, fails.
async fn app() -> SocketAddr {
    async fn echo(headers: HeaderMap, body: Bytes) -> String {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        serde_json::json!({
            "len": body.len(),
            "traceparent": h("traceparent"),
            "authorization": h("authorization"),
            "x_forwarded_for": h("x-forwarded-for"),
        })
        .to_string()
    }
    let router = Router::new()
        .route("/echo", post(echo))
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "payment timed out") }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = (0..3).map(|i| Ok::<_, std::io::Error>(format!("chunk {i};")));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind app");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

struct Gateway {
    _pg: PgCluster,
    _proxy: Running,
    data: tempfile::TempDir,
    url: String,
}

/// `flux proxy` with the gateway in front of `upstream` (any address, even a closed one).
fn gateway(upstream: &str, extra: &[&str]) -> Gateway {
    let pg = PgCluster::start(Options::default());
    let data = common::private_tempdir();
    let listen = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = flux();
    cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--http-listen", &http, "--http-upstream", upstream])
        .args(extra)
        .env("FLUX_LOG", "info");
    let proxy = Running(start_proxy(&mut cmd, &listen));
    Gateway {
        _pg: pg,
        _proxy: proxy,
        data,
        url: format!("http://{http}"),
    }
}

/// Runs curl; returns (HTTP status, body). `-s` without `-f`: error statuses are answers.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The exchange recorded for `request`, waiting for the writer (fsync every 100 ms).
fn exchange(data: &Path, request: &str) -> Exchange {
    let store = Store::open_reader(data).expect("open store");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.catch_up().expect("catch up");
        if let Some(x) = store.exchange(request).expect("read") {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "no exchange recorded for {request}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every exchange in the store (there is no listing command yet): by the requests the
/// gateway spans made.
fn requests(data: &Path) -> Vec<Value> {
    let out = flux()
        .args([
            "tail",
            "--no-follow",
            "--since",
            "1h",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("flux tail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_app_and_are_recorded() {
    let app = app().await;
    let gw = gateway(
        &format!("http://{app}"),
        &["--http-redact", "Authorization"],
    );
    let traceparent = format!("traceparent: 00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, body) = tokio::task::spawn_blocking({
        let url = format!("{}/echo?x=1", gw.url);
        move || {
            curl(&[
                "-X",
                "POST",
                &url,
                "-H",
                &traceparent,
                "-H",
                "Authorization: Bearer s3cret",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                r#"{"amount": 25}"#,
            ])
        }
    })
    .await
    .expect("curl");
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_str(&body).expect("echo json");
    // The app continues the caller's trace, with the gateway's span as its parent; it
    // gets the real header value (only the record is redacted).
    let forwarded = seen["traceparent"].as_str().expect("traceparent");
    assert!(
        forwarded.starts_with(&format!("00-{CALLER_TRACE}-")),
        "{forwarded}"
    );
    let gateway_span = forwarded.split('-').nth(2).expect("span id").to_string();
    assert_ne!(gateway_span, CALLER_SPAN);
    assert_eq!(seen["authorization"], "Bearer s3cret");
    assert_eq!(seen["x_forwarded_for"], "127.0.0.1");
    assert_eq!(seen["len"], 14);

    let x = exchange(gw.data.path(), CALLER_TRACE);
    assert_eq!(
        (x.method.as_str(), x.target.as_str()),
        ("POST", "/echo?x=1")
    );
    assert_eq!(x.body, br#"{"amount": 25}"#);
    assert!(x.body_complete && x.replayable());
    assert_eq!(x.status, Some(200));
    assert_eq!(x.response_body, body.as_bytes());
    assert!(x.response_complete);
    assert!(x.error.is_none(), "{:?}", x.error);
    let header = |name: &str| {
        x.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("<redacted>"));
    assert_eq!(header("content-type"), Some("application/json"));

    // The request's trace starts at the gateway span, parented to the caller's.
    let trace = common::flux_json(gw.data.path(), &["trace", CALLER_TRACE]);
    let text = trace.to_string();
    assert!(text.contains("\"gateway\""), "{text}");
    assert!(text.contains(&gateway_span), "{text}");
    let listed = requests(gw.data.path());
    let r = listed
        .iter()
        .find(|r| r["request"].as_str() == Some(CALLER_TRACE))
        .unwrap_or_else(|| panic!("not in tail: {listed:?}"));
    assert_eq!(r["method"], "POST");
    assert_eq!(r["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_chunked_large_and_with_100_continue() {
    let app = app().await;
    let gw = gateway(&format!("http://{app}"), &["--http-body-limit", "64K"]);
    let dir = common::private_tempdir();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 200_000]).expect("write");
    let big_arg = format!("@{}", big.display());
    let url = gw.url.clone();
    let results = tokio::task::spawn_blocking(move || {
        let post = |extra: &[&str]| {
            let mut args = vec![
                "-X".to_string(),
                "POST".into(),
                format!("{url}/echo"),
                "--data-binary".into(),
                big_arg.clone(),
                "-D".into(),
                "/dev/stderr".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args)
        };
        (
            post(&[]),
            post(&["-H", "Transfer-Encoding: chunked"]),
            post(&["-H", "Expect: 100-continue"]),
            curl(&[&format!("{url}/stream")]),
        )
    })
    .await
    .expect("curl");
    let (plain, chunked, expect, stream) = results;
    for (what, (status, body)) in [
        ("plain", &plain),
        ("chunked", &chunked),
        ("100-continue", &expect),
    ] {
        assert_eq!(*status, 200, "{what}");
        let seen: Value = serde_json::from_str(body).expect("json");
        assert_eq!(seen["len"], 200_000, "{what}: the app got the whole body");
    }
    assert_eq!(stream, (200, "chunk 0;chunk 1;chunk 2;".to_string()));

    // Each big input is kept truncated at the limit and marked unreplayable.
    let store_requests = requests(gw.data.path());
    let posts: Vec<&Value> = store_requests
        .iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 3, "{store_requests:?}");
    for r in posts {
        let x = exchange(gw.data.path(), r["request"].as_str().expect("id"));
        assert_eq!(x.body.len(), 64 * 1024);
        assert!(!x.body_complete && !x.replayable());
        assert_eq!(x.status, Some(200));
        assert!(x.response_complete);
    }
    let get = store_requests
        .iter()
        .find(|r| r["method"] == "GET")
        .expect("the streamed GET");
    let x = exchange(gw.data.path(), get["request"].as_str().expect("id"));
    assert_eq!(x.response_body, b"chunk 0;chunk 1;chunk 2;");
    assert!(x.response_complete && x.body_complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_answered_and_recorded() {
    let app = app().await;
    let gw = gateway(&format!("http://{app}"), &[]);
    let url = gw.url.clone();
    let (fail, slow) = tokio::task::spawn_blocking(move || {
        (
            curl(&["-X", "POST", &format!("{url}/fail"), "--data", "{}"]),
            // The client gives up before the app answers.
            curl(&["--max-time", "0.5", &format!("{url}/slow")]),
        )
    })
    .await
    .expect("curl");
    assert_eq!(fail, (500, "payment timed out".to_string()));
    assert_eq!(slow.0, 0, "curl timed out");
    let listed = requests(gw.data.path());
    let by = |method: &str| {
        listed
            .iter()
            .find(|r| r["method"] == method)
            .and_then(|r| r["request"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {method} in {listed:?}"))
    };
    let x = exchange(gw.data.path(), &by("POST"));
    assert_eq!(x.status, Some(500));
    assert_eq!(x.response_body, b"payment timed out");
    let x = exchange(gw.data.path(), &by("GET"));
    assert_eq!(x.status, None);
    assert!(
        x.error.as_deref().is_some_and(|e| e.contains("went away")),
        "{:?}",
        x.error
    );

    // The app is down: the client gets a 502 naming it, and the attempt is recorded.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = gateway(&closed, &[]);
    let url = gw.url.clone();
    let (status, body) = tokio::task::spawn_blocking(move || curl(&[&format!("{url}/echo")]))
        .await
        .expect("curl");
    assert_eq!(status, 502);
    assert!(body.contains("did not answer"), "{body}");
    let listed = requests(gw.data.path());
    let id = listed
        .first()
        .and_then(|r| r["request"].as_str())
        .expect("the failed request is listed")
        .to_string();
    let x = exchange(gw.data.path(), &id);
    assert_eq!((x.method.as_str(), x.status), ("GET", Some(502)));
    assert!(x.body_complete, "a GET without a body can be replayed");
    assert!(x
        .error
        .as_deref()
        .is_some_and(|e| e.contains("did not answer")));
}
