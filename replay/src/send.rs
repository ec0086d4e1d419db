//! Sending the recorded inputs again through the replay's gateway, and waiting until
//! their records are in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flux_store::{Exchange, Nanos, Store};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::outbound::Outbound;
use crate::run::{Options, Progress};
use crate::select::Chosen;
use crate::stub::Refusal;

/// One request as sent.
pub(crate) struct Sent {
    pub(crate) trace: String,
    /// When it was sent (ns since the epoch).
    pub(crate) at: Nanos,
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<Vec<u8>>,
    /// Why there is no answer (the app closed the connection, the wait ran out).
    pub(crate) failure: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) misses: Vec<String>,
    pub(crate) refused: Vec<Refusal>,
    pub(crate) bodiless: Vec<String>,
}

/// Sends every chosen input to the gateway, `concurrency` at a time, in recorded order.
pub(crate) async fn send_all(
    chosen: &[Chosen],
    gateway: SocketAddr,
    outbound: &Outbound,
    options: &Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Vec<Sent> {
    use futures_util::stream::{self, StreamExt};
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // A request whose app never answers must not stall the replay forever.
    let limit = options.max_delay * 2 + Duration::from_secs(30);
    let of = chosen.len();
    let mut done = 0;
    let mut sent: Vec<Option<Sent>> = (0..of).map(|_| None).collect();
    let mut answers = stream::iter(chosen.iter().enumerate())
        .map(|(i, c)| {
            let client = client.clone();
            let trace = flux_ingest::gateway::random_hex(16);
            outbound.set(&trace, c.matcher.clone());
            async move {
                let at = flux_store::nanos(std::time::SystemTime::now());
                let began = Instant::now();
                let result =
                    tokio::time::timeout(limit, send_one(&client, gateway, &c.exchange, &trace))
                        .await;
                let (status, body, failure) = match result {
                    Ok(Ok((status, body))) => (Some(status), Some(body), None),
                    Ok(Err(e)) => (None, None, Some(format!("no answer from the app: {e}"))),
                    Err(_) => (
                        None,
                        None,
                        Some(format!("no answer from the app within {limit:?}")),
                    ),
                };
                (i, trace, at, status, body, failure, began.elapsed())
            }
        })
        .buffered(options.concurrency.max(1));
    while let Some((i, trace, at, status, body, failure, elapsed)) = answers.next().await {
        let (misses, refused, bodiless) = outbound
            .take(&trace)
            .map(|m| (m.misses, m.refused, m.bodiless))
            .unwrap_or_default();
        if let Some(slot) = sent.get_mut(i) {
            *slot = Some(Sent {
                trace,
                at,
                status,
                body,
                failure,
                elapsed,
                misses,
                refused,
                bodiless,
            });
        }
        done += 1;
        progress(Progress::Sent { done, of });
    }
    sent.into_iter().flatten().collect()
}

/// Sends one recorded input with a fresh `traceparent`; the status and the whole body.
pub(crate) async fn send_one(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    exchange: &Exchange,
    trace: &str,
) -> Result<(u16, Vec<u8>), String> {
    let uri = format!("http://{gateway}{}", exchange.target);
    let mut req = http::Request::builder()
        .method(exchange.method.as_str())
        .uri(uri);
    for (name, value) in &exchange.headers {
        let lower = name.to_ascii_lowercase();
        // A fresh trace; a redacted value is not the caller's; the body is whole now.
        if matches!(
            lower.as_str(),
            "traceparent" | "tracestate" | "content-length" | "transfer-encoding" | "expect"
        ) || value == "<redacted>"
        {
            continue;
        }
        req = req.header(name.as_str(), value.as_str());
    }
    let span = flux_ingest::gateway::random_hex(8);
    req = req.header("traceparent", format!("00-{trace}-{span}-01"));
    let req = req
        .body(Full::new(Bytes::from(exchange.body.clone())))
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// Waits until each replayed request's record has arrived in the run's store: the
/// gateway's exchange, and the app's spans when the original had them; then until no new
/// span has arrived for a moment (the SDK exports in batches). At most 10 s.
pub(crate) async fn wait_for_records(store: &Store, chosen: &[Chosen], sent: &[Sent]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let quiet = Duration::from_millis(400);
    // Per request: its exchange seen (read once, never again), and its span count.
    let mut exchanged = vec![false; sent.len()];
    let mut spans_seen = vec![0u32; sent.len()];
    let mut changed = Instant::now();
    loop {
        let mut complete = true;
        let mut any_change = false;
        for (i, (c, s)) in chosen.iter().zip(sent).enumerate() {
            if let Some(seen) = exchanged.get_mut(i).filter(|seen| !**seen) {
                *seen = matches!(store.exchange(&s.trace), Ok(Some(_)));
            }
            let summary = store.request(&s.trace).ok().flatten();
            let spans = summary.as_ref().map_or(0, |r| r.spans);
            let app = summary.as_ref().is_some_and(|r| r.app && r.spans > 1);
            if !exchanged.get(i).copied().unwrap_or(false) || (c.app_spans && !app) {
                complete = false;
            }
            if let Some(before) = spans_seen.get_mut(i) {
                if *before != spans {
                    *before = spans;
                    any_change = true;
                }
            }
        }
        if any_change {
            changed = Instant::now();
        }
        if (complete && changed.elapsed() >= quiet) || Instant::now() >= deadline {
            if !complete {
                tracing::warn!("some replayed requests' spans did not arrive within 10 s; they are judged on what arrived");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
