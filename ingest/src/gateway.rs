//! The HTTP gateway (`flux proxy --http-listen ADDR --http-upstream URL`): an HTTP/1.1
//! reverse proxy in front of the app that records each request's input and response, so
//! a failed request can be replayed later.
//!
//! Per request it keeps the caller's W3C `traceparent` (or mints a sampled one) and
//! forwards it with its own span as the parent, so the app's OpenTelemetry SDK continues
//! the same trace and the request id stays the trace id; it writes a root SERVER span
//! named `gateway`; and it records method, target, headers and body, and the response's
//! status, headers and body, each body up to a limit (a longer input is kept truncated
//! and marked unreplayable). Bodies stream through: the gateway never holds more than the
//! limit per body. Upgrades (WebSocket) pass through unrecorded. Recording is fail-open:
//! the sink never blocks, so a slow or full store costs records, never the app's requests.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use flux_store::{Exchange, Span, SpanKind, SpanSource};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::headers::{connection_tokens, forward_headers, recorded, strip_hop_by_hop};
use crate::tee::{BodyCopy, Captured, Tee};
use flux_store::nanos;

/// The default limit on each recorded body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Where finished exchanges go. Must return at once (fail-open): the daemon's sink hands
/// them to the store writer's bounded queue and counts what it drops.
pub trait ExchangeSink: Send + Sync + 'static {
    /// Records one exchange and its `gateway` span.
    fn record(&self, exchange: Exchange, span: Span);
}

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The app: `http://host:port` (a path prefix is not supported).
    pub upstream: Uri,
    /// Largest body kept per request and per response.
    pub body_limit: usize,
    /// Headers whose values are stored as `<redacted>` (lower case).
    pub redact: HashSet<String>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream URL is not `http://host[:port]`.
    #[error("--http-upstream {0}: expected http://HOST[:PORT] (https is not supported)")]
    Upstream(String),
}

impl GatewayConfig {
    /// A configuration forwarding to `upstream` with the default limit and no redaction.
    pub fn new(upstream: &str) -> Result<Self, GatewayError> {
        let uri: Uri = upstream
            .parse()
            .map_err(|_| GatewayError::Upstream(upstream.to_string()))?;
        if uri.scheme_str() != Some("http")
            || uri.authority().is_none()
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return Err(GatewayError::Upstream(upstream.to_string()));
        }
        Ok(Self {
            upstream: uri,
            body_limit: DEFAULT_BODY_LIMIT,
            redact: HashSet::new(),
        })
    }
}

type GatewayBody = BoxBody<Bytes, hyper::Error>;

struct State {
    config: GatewayConfig,
    client: Client<HttpConnector, GatewayBody>,
    sink: Arc<dyn ExchangeSink>,
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then lets connections
/// finish their current exchange.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    sink: Arc<dyn ExchangeSink>,
    shutdown: CancellationToken,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let state = Arc::new(State {
        config,
        client,
        sink,
    });
    let tasks = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("gateway accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, peer, state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "gateway connection ended: {e}");
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// The trace this request belongs to: the caller's `traceparent` (trace id, the caller's
/// span as the gateway span's parent, its flags) when well-formed, else a new sampled one.
fn trace_context(headers: &HeaderMap) -> (String, Option<String>, String) {
    let parsed = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.trim().split('-');
            let (version, trace, span, flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            let valid = hex(version, 2)
                && version != "ff"
                && hex(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && hex(span, 16)
                && span.bytes().any(|b| b != b'0')
                && hex(flags, 2);
            valid.then(|| {
                (
                    trace.to_ascii_lowercase(),
                    Some(span.to_ascii_lowercase()),
                    flags.to_ascii_lowercase(),
                )
            })
        });
    parsed.unwrap_or_else(|| (random_hex(16), None, "01".to_string()))
}

/// `n` random bytes as lowercase hex, never all zero (an invalid W3C id): 16 for a trace
/// id, 8 for a span id.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    loop {
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back to the clock and a counter (ids stay unique
            // within the process, which is what the record needs).
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let seed = nanos(SystemTime::now())
                ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (seed.rotate_left(8 * (i as u32 % 8)) as u8) ^ (i as u8);
            }
        }
        if bytes.iter().any(|&b| b != 0) {
            return bytes.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

/// What the gateway knows of an exchange until its response ends. Recorded exactly once:
/// by [`Pending::finish`], or on drop when the exchange was abandoned (the client went
/// away before the app answered, so hyper dropped the handler).
struct Pending {
    finished: bool,
    state: Arc<State>,
    exchange: Exchange,
    request_body: Arc<Mutex<Captured>>,
    trace: String,
    span_id: String,
    parent: Option<String>,
    started: Instant,
    peer: SocketAddr,
}

impl Pending {
    /// Writes the exchange and its span (fail-open).
    fn finish(mut self, response: Option<Captured>, error: Option<String>) {
        self.record(response, error);
    }

    fn record(&mut self, response: Option<Captured>, error: Option<String>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let body =
            std::mem::take(&mut *self.request_body.lock().unwrap_or_else(|p| p.into_inner()));
        self.exchange.body_complete = body.complete;
        self.exchange.body = body.bytes;
        if let Some(r) = response {
            self.exchange.response_complete = r.complete;
            self.exchange.response_body = r.bytes;
        }
        self.exchange.error = error.or(self.exchange.error.take());
        let duration = self.started.elapsed().as_nanos() as u64;
        self.exchange.duration = duration;
        let x = &self.exchange;
        let mut attributes = vec![
            ("http.request.method".to_string(), x.method.clone()),
            (
                "url.path".to_string(),
                x.target.split('?').next().unwrap_or_default().to_string(),
            ),
            ("client.address".to_string(), self.peer.ip().to_string()),
            ("flux.gateway".to_string(), "true".to_string()),
        ];
        if let Some(q) = x.target.split_once('?').map(|(_, q)| q) {
            attributes.push(("url.query".to_string(), q.to_string()));
        }
        if let Some(status) = x.status {
            attributes.push(("http.response.status_code".to_string(), status.to_string()));
        }
        let error = match (&x.error, x.status) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(s)) if flux_read::failure::failed_status(s) => Some(format!("HTTP {s}")),
            _ => None,
        };
        let span = Span {
            trace: std::mem::take(&mut self.trace),
            id: std::mem::take(&mut self.span_id),
            parent: self.parent.take(),
            name: "gateway".to_string(),
            kind: SpanKind::Server,
            start: x.at,
            end: x.at.saturating_add(duration),
            error,
            attributes,
            events: Vec::new(),
            service: Some("flux-gateway".to_string()),
            source: SpanSource::App,
        };
        let exchange = std::mem::replace(&mut self.exchange, empty_exchange());
        self.state.sink.record(exchange, span);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            self.record(
                None,
                Some("the client went away before the app answered".to_string()),
            );
        }
    }
}

fn empty_exchange() -> Exchange {
    Exchange {
        request: String::new(),
        at: 0,
        duration: 0,
        method: String::new(),
        target: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        body_complete: false,
        status: None,
        response_headers: Vec::new(),
        response_body: Vec::new(),
        response_complete: false,
        error: None,
    }
}

/// The request body's copy, shared with the [`Pending`] exchange that records it.
struct RequestCopy(Arc<Mutex<Captured>>);

impl RequestCopy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BodyCopy for RequestCopy {
    fn data(&mut self, data: &[u8]) {
        self.lock().push(data);
    }

    fn ended(&mut self, error: Option<String>) {
        // A body that broke off stays incomplete (not replayable).
        if error.is_none() {
            self.lock().end();
        }
    }

    fn dropped(&mut self, _at_end: bool) {}
}

/// The response body's copy; the exchange is recorded when the body ends or the tee is
/// dropped (the client went away).
struct ResponseCopy {
    captured: Captured,
    pending: Option<Pending>,
}

impl BodyCopy for ResponseCopy {
    fn data(&mut self, data: &[u8]) {
        self.captured.push(data);
    }

    fn ended(&mut self, error: Option<String>) {
        self.finish(error.map(|e| format!("the app's response broke off: {e}")));
    }

    fn dropped(&mut self, at_end: bool) {
        // Ended early: the client closed the connection before the last byte (a body
        // that is empty by definition, as for HEAD, counts as ended).
        self.finish(
            (!at_end).then(|| "the client went away before the response ended".to_string()),
        );
    }
}

impl ResponseCopy {
    /// Records the exchange, once.
    fn finish(&mut self, error: Option<String>) {
        if let Some(pending) = self.pending.take() {
            if error.is_none() {
                self.captured.end();
            }
            pending.finish(Some(std::mem::take(&mut self.captured)), error);
        }
    }
}

fn full(text: String) -> GatewayBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: Arc<State>,
) -> Response<GatewayBody> {
    let at = nanos(SystemTime::now());
    let started = Instant::now();
    let (trace, parent, flags) = trace_context(req.headers());
    let span_id = random_hex(8);
    let connection = connection_tokens(req.headers());
    let upgrade =
        connection.iter().any(|c| c == "upgrade") && req.headers().contains_key(header::UPGRADE);
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let uri = match Uri::builder()
        .scheme("http")
        .authority(state.config.upstream.authority().map_or("", |a| a.as_str()))
        .path_and_query(target.as_str())
        .build()
    {
        Ok(uri) => uri,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full(format!("flux gateway: bad request target: {e}\n")))
                .unwrap_or_else(|_| Response::new(full(String::new())));
        }
    };
    let exchange = Exchange {
        request: trace.clone(),
        at,
        duration: 0,
        method: req.method().as_str().to_string(),
        target,
        headers: recorded(req.headers(), &state.config.redact),
        body: Vec::new(),
        // A request announcing no body is complete as it stands.
        body_complete: req.body().size_hint().exact() == Some(0),
        status: None,
        response_headers: Vec::new(),
        response_body: Vec::new(),
        response_complete: false,
        error: None,
    };

    if upgrade {
        return pass_upgrade(req, uri, &state, &trace, &span_id, &flags).await;
    }

    let request_body = Arc::new(Mutex::new(Captured::new(state.config.body_limit)));
    if exchange.body_complete {
        request_body.lock().unwrap_or_else(|p| p.into_inner()).end();
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    forward_headers(
        &mut parts.headers,
        &connection,
        &trace,
        &span_id,
        &flags,
        peer,
    );
    let body = Tee {
        inner: body,
        copy: RequestCopy(request_body.clone()),
    };
    let pending = Pending {
        finished: false,
        state: state.clone(),
        exchange,
        request_body,
        trace,
        span_id,
        parent,
        started,
        peer,
    };
    let upstream = Request::from_parts(parts, body.boxed());
    match state.client.request(upstream).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let mut pending = pending;
            pending.exchange.status = Some(parts.status.as_u16());
            pending.exchange.response_headers = recorded(&parts.headers, &state.config.redact);
            let connection = connection_tokens(&parts.headers);
            strip_hop_by_hop(&mut parts.headers, &connection);
            let body = Tee {
                inner: body,
                copy: ResponseCopy {
                    captured: Captured::new(state.config.body_limit),
                    pending: Some(pending),
                },
            };
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            let upstream = state.config.upstream.to_string();
            let why = error_chain(&e);
            tracing::warn!(%upstream, "gateway: the app did not answer: {why}");
            let mut pending = pending;
            let text = format!("flux gateway: the app at {upstream} did not answer: {why}\n");
            pending.exchange.status = Some(502);
            pending.exchange.response_body = text.clone().into_bytes();
            pending.exchange.response_complete = true;
            pending.finish(None, Some(format!("the app did not answer: {why}")));
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(full(text))
                .unwrap_or_else(|_| Response::new(full(String::new())))
        }
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// An upgrade (WebSocket): forwarded with its `Connection`/`Upgrade` headers, then the
/// two upgraded connections are joined. Not recorded: replay cannot send it again.
async fn pass_upgrade(
    mut req: Request<Incoming>,
    uri: Uri,
    state: &State,
    trace: &str,
    span_id: &str,
    flags: &str,
) -> Response<GatewayBody> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{span_id}-{flags}")) {
        parts.headers.insert("traceparent", v);
    }
    let upstream = Request::from_parts(parts, body.boxed());
    let mut resp = match state.client.request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(full(format!(
                    "flux gateway: the app did not answer: {}\n",
                    error_chain(&e)
                )))
                .unwrap_or_else(|_| Response::new(full(String::new())));
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let app_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, app_upgrade) {
                Ok((client, app)) => {
                    let mut client = TokioIo::new(client);
                    let mut app = TokioIo::new(app);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                }
                Err(e) => tracing::debug!("gateway upgrade failed: {e}"),
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.boxed())
}

/// Parses a size: bytes, or with a `K`/`M`/`G` (`KiB`, `MiB`, `GiB`; powers of 1024) suffix.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 1048576, 512K or 1MiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn trace_context_is_kept_or_minted() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00"),
        );
        assert_eq!(
            trace_context(&h),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                Some("00f067aa0ba902b7".to_string()),
                "00".to_string()
            )
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            let (trace, parent, flags) = trace_context(&h);
            assert_eq!(trace.len(), 32, "{bad}");
            assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!((parent, flags.as_str()), (None, "01"), "{bad}");
        }
    }

    #[test]
    fn recorded_headers_drop_hop_by_hop_and_redact() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let redact: HashSet<String> = ["authorization".to_string()].into();
        let r = recorded(&h, &redact);
        assert_eq!(
            r,
            vec![
                ("authorization".to_string(), "<redacted>".to_string()),
                ("content-type".to_string(), "application/json".to_string()),
            ]
        );
    }

    #[test]
    fn captured_bodies_stop_at_the_limit() {
        let mut c = Captured::new(4);
        c.push(b"ab");
        c.push(b"cdef");
        c.end();
        assert_eq!((c.bytes.as_slice(), c.complete), (&b"abcd"[..], false));
        let mut c = Captured::new(4);
        c.push(b"abcd");
        c.end();
        assert!(c.complete);
    }

    #[test]
    fn upstream_must_be_plain_http_host_port() {
        assert!(GatewayConfig::new("http://127.0.0.1:8000").is_ok());
        assert!(GatewayConfig::new("http://app:8000/").is_ok());
        for bad in ["https://app", "app:8000", "http://app/prefix"] {
            assert!(GatewayConfig::new(bad).is_err(), "{bad}");
        }
    }
}
