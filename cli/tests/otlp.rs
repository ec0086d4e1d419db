//! OTLP/HTTP ingest end to end: `flux proxy --otlp` in front of a real PostgreSQL, exports
//! sent the way SDK exporters send them (protobuf, JSON, gzip; split, retried, children
//! before parents), statements tagged through sqlcommenter, and `flux trace`/`flux tail`
//! reading the one tree that results.

use std::io::{Read, Write};
use std::net::TcpStream;

mod common;

use common::{flux, flux_json, Running};
use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const TRACE: &str = "5b8efff798038103d269b633813fc60c";
const ROOT: &str = "eee19b7ec3c1b174";
const HANDLER: &str = "eee19b7ec3c1b175";
const CHARGE: &str = "eee19b7ec3c1b176";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn span(id: &str, parent: Option<&str>, name: &str, start_ms: u64, end_ms: u64) -> Span {
    let base = 1_700_000_000_000_000_000u64;
    Span {
        trace_id: hex(TRACE),
        span_id: hex(id),
        parent_span_id: parent.map(hex).unwrap_or_default(),
        name: name.into(),
        kind: 1,
        start_time_unix_nano: base + start_ms * 1_000_000,
        end_time_unix_nano: base + end_ms * 1_000_000,
        ..Default::default()
    }
}

fn export(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr(
                    "service.name",
                    any_value::Value::StringValue("shop".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// POSTs to the receiver; returns the status code and body.
fn post(port: u16, content_type: &str, gzip: bool, body: &[u8]) -> (u16, String) {
    let body = if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        body.to_vec()
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the OTLP receiver");
    let encoding = if gzip {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(&body).expect("write body");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// Spans of one request arriving in pieces, out of order, once twice, in both encodings,
/// plus the proxy's own statement spans: one tree, one request summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_retried_out_of_order_exports_make_one_tree() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create table orders(id int primary key, amount int)");
    let data = common::private_tempdir();
    let (port, otlp) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let otlp_addr = format!("127.0.0.1:{otlp}");
    let mut cmd = flux();
    cmd.args([
        "proxy",
        "--listen",
        &listen,
        "--upstream",
        &pg.url(),
        "--otlp",
        &otlp_addr,
        "--data-dir",
    ])
    .arg(data.path());
    let _proxy = Running(start_proxy(&mut cmd, &listen));

    // The app's statements: one carrying the handler span in its sqlcommenter traceparent,
    // one tagged with the request id only (it hangs under the root).
    let c = flux_integration_tests::pg::connect(&format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB}"
    ))
    .await;
    c.batch_execute(&format!(
        "insert into orders values (1, 25) /*traceparent='00-{TRACE}-{HANDLER}-01'*/"
    ))
    .await
    .expect("tagged insert");
    c.batch_execute(&format!(
        "begin; set local flux.request_id = '{TRACE}'; select * from orders; commit;"
    ))
    .await
    .expect("tagged select");

    // Export 1 (protobuf, gzip): the deepest span first, then its parent; no root yet.
    let mut charge = span(CHARGE, Some(HANDLER), "payment.charge", 20, 60);
    charge.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "payment timeout".into(),
    });
    let first = export(vec![charge, span(HANDLER, Some(ROOT), "checkout", 5, 90)]);
    let (code, body) = post(otlp, "application/x-protobuf", true, &first.encode_to_vec());
    assert_eq!(code, 200, "{body}");
    // Export 2 (JSON): the root, the server span with HTTP attributes (new names).
    let mut root = span(ROOT, None, "POST /checkout", 0, 100);
    root.kind = 2;
    root.attributes = vec![
        attr(
            "http.request.method",
            any_value::Value::StringValue("POST".into()),
        ),
        attr(
            "http.route",
            any_value::Value::StringValue("/checkout".into()),
        ),
        attr("http.response.status_code", any_value::Value::IntValue(500)),
    ];
    let json = serde_json::to_vec(&export(vec![root])).expect("json");
    let (code, body) = post(otlp, "application/json", false, &json);
    assert_eq!(code, 200, "{body}");
    // Export 1 again: an exporter's retry.
    let (code, _) = post(
        otlp,
        "application/x-protobuf",
        false,
        &first.encode_to_vec(),
    );
    assert_eq!(code, 200);

    let trace = flux_json(data.path(), &["trace", &TRACE[..8]]);
    let spans: Vec<(String, u64)> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["depth"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let names: Vec<(&str, u64)> = spans.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    // Statement spans have real (current) times, the app's are from 2023: sort order
    // among siblings follows start time.
    assert_eq!(
        names,
        vec![
            ("POST /checkout", 0),
            ("checkout", 1),
            ("payment.charge", 2),
            ("db.insert(orders)", 2),
            ("db.select(orders)", 1),
            // The COMMIT ran under the request id too; the SET LOCAL itself did not.
            ("db.commit", 1),
        ],
        "{trace:#}"
    );
    let summary = &trace["summary"];
    assert_eq!(summary["method"], "POST");
    assert_eq!(summary["path"], "/checkout");
    assert_eq!(summary["status"], 500);
    // The failing span's status says "payment timeout": read as the span and how long.
    assert_eq!(summary["error"], "payment.charge timeout after 40ms");
    let tail = flux_json(data.path(), &["tail", "--no-follow", "--errors-only"]);
    assert_eq!(tail.as_array().map(Vec::len), Some(1), "{tail:#}");
    assert_eq!(tail[0]["request"], TRACE);

    // Malformed payloads: 400 with a reason, and nothing of them stored.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let bad = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": other, "spanId": "b7ad6b7169203331", "name": "ok", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
        {"traceId": other, "spanId": "b7ad", "name": "bad", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    ]}]}]});
    let (code, body) = post(otlp, "application/json", false, bad.to_string().as_bytes());
    assert_eq!(code, 400);
    assert!(body.contains("spans[1]: spanId must be 8 bytes"), "{body}");
    let (code, body) = post(otlp, "application/x-protobuf", false, b"\x0a\xff\xff\xff");
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(otlp, "application/json", true, b"not gzip at all");
    assert_eq!(code, 400);
    let (code, _) = post(otlp, "text/plain", false, b"hello");
    assert_eq!(code, 415);
    let out = flux()
        .args(["trace", other, "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run flux trace");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the refused export left spans behind"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing recorded"));
}

/// `flux ingest` loads the collector's file-exporter format offline, reporting bad lines.
#[test]
fn ingest_loads_json_lines_files() {
    let dir = common::private_tempdir();
    let file = dir.path().join("traces.jsonl");
    let mut root = span(ROOT, None, "GET /users/{id}", 0, 12);
    root.kind = 2;
    root.attributes = vec![
        attr("http.method", any_value::Value::StringValue("GET".into())),
        attr(
            "http.target",
            any_value::Value::StringValue("/users/42?x=1".into()),
        ),
        attr("http.status_code", any_value::Value::IntValue(200)),
    ];
    let lines = [
        serde_json::to_string(&export(vec![span(HANDLER, Some(ROOT), "load_user", 2, 10)]))
            .expect("json"),
        "{broken".to_string(),
        serde_json::to_string(&export(vec![root])).expect("json"),
    ];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let data = dir.path().join("data");
    let out = flux()
        .args(["ingest"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run flux ingest");
    assert_eq!(out.status.code(), Some(1), "a bad line is reported");
    assert!(String::from_utf8_lossy(&out.stderr).contains("traces.jsonl:2"));
    let tail = flux_json(&data, &["tail", "--no-follow"]);
    assert_eq!(tail[0]["method"], "GET");
    assert_eq!(tail[0]["path"], "/users/42");
    assert_eq!(tail[0]["status"], 200);
    assert_eq!(tail[0]["spans"], 2);
}
