//! The outbound stub with a real client (`curl` through it as a proxy): recorded answers
//! with their delays, HTTPS through CONNECT verified against the run's CA, a recorded
//! timeout the client runs into, fixtures, misses that name the call, and Flux's own
//! endpoints forwarded rather than stubbed.

use std::process::Command;
use std::time::{Duration, Instant};

use flux_replay::config::StubFixture;
use flux_replay::outbound::Outbound;
use flux_replay::stub::Matcher;

mod common;

use common::client;

/// curl through the stub: (exit code, HTTP status, body, seconds taken).
fn curl(proxy: &str, args: &[&str]) -> (i32, u16, String, f64) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-x", proxy])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        started.elapsed().as_secs_f64(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_from_the_recording() {
    let dir = tempfile::tempdir().expect("tmp");
    let stub = Outbound::start(dir.path()).await.expect("start");
    let spans = vec![
        client(
            1,
            300,
            &[
                ("http.method", "POST"),
                ("http.url", "http://payments.example.com/charge"),
                ("http.status_code", "200"),
            ],
            None,
        ),
        client(
            2,
            10,
            &[
                ("http.request.method", "POST"),
                ("url.full", "https://secure.example.com/charge"),
                ("http.response.status_code", "402"),
            ],
            None,
        ),
        client(
            3,
            300,
            &[
                ("http.method", "POST"),
                ("http.url", "http://slow.example.com/pay"),
            ],
            Some("ReadTimeout: Read timed out. (read timeout=0.3)"),
        ),
    ];
    let fixtures = vec![StubFixture {
        method: "GET".into(),
        host: "api.example.com".into(),
        path: "/rates".into(),
        status: 200,
        body: r#"{"rate": 1}"#.into(),
    }];
    stub.set("t", Matcher::new(&spans, fixtures, Duration::from_secs(30)));
    let proxy = stub.url();
    let ca = stub.ca_file.display().to_string();
    let results = tokio::task::spawn_blocking(move || {
        (
            curl(
                &proxy,
                &["-X", "POST", "http://payments.example.com/charge"],
            ),
            curl(
                &proxy,
                &[
                    "--cacert",
                    &ca,
                    "-X",
                    "POST",
                    "https://secure.example.com/charge",
                ],
            ),
            curl(
                &proxy,
                &[
                    "--max-time",
                    "0.5",
                    "-X",
                    "POST",
                    "http://slow.example.com/pay",
                ],
            ),
            curl(&proxy, &["http://api.example.com/rates"]),
            curl(&proxy, &["http://unknown.example.com/x?y=1"]),
        )
    })
    .await
    .expect("curl");
    let (paid, secure, slow, rates, unknown) = results;
    assert_eq!((paid.0, paid.1), (0, 200));
    assert!(paid.3 >= 0.3, "the recorded 300 ms: {}", paid.3);
    assert_eq!(
        (secure.0, secure.1),
        (0, 402),
        "TLS verified against the run's CA"
    );
    assert_eq!(slow.0, 28, "curl timed out, as the app did when recorded");
    assert_eq!((rates.1, rates.2.as_str()), (200, r#"{"rate": 1}"#));
    assert_eq!(unknown.1, 502);
    assert!(
        unknown.2.contains("GET unknown.example.com/x"),
        "{}",
        unknown.2
    );
    let m = stub.take("t").expect("matcher");
    assert_eq!(m.misses, vec!["GET unknown.example.com/x".to_string()]);
}

/// Flux's own endpoints (the run's OTLP receiver) are reached through the stub, not
/// stubbed: an exporter that honours HTTP_PROXY for every host still delivers its spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_flux_own_endpoints_are_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = receiver.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = receiver.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            // Origin-form, as a direct client would send it.
            let line = head.lines().next().unwrap_or("").to_string();
            let body = format!("received: {line}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let stub = Outbound::start(dir.path()).await.expect("stub");
    stub.pass_through(addr);
    let proxy = stub.url();
    let target = format!("http://{addr}/v1/traces");
    let (code, status, body, _) =
        tokio::task::spawn_blocking(move || curl(&proxy, &["-X", "POST", &target]))
            .await
            .expect("curl");
    assert_eq!((code, status), (0, 200));
    assert_eq!(body, "received: POST /v1/traces HTTP/1.1");
}
