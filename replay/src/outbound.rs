//! The outbound stub that answers the app's calls during a replay. It takes them two ways:
//!
//! - transparently, inside the app's network namespace ([`crate::isolation`]), where every
//!   outbound TCP connection is redirected to it: plain HTTP (host from `Host`), TLS
//!   (terminated with a certificate for the SNI name), and anything else refused and
//!   listed in the report (SMTP, Redis, AMQP, another database: nothing to answer it with);
//! - as the proxy the app's `HTTP_PROXY`/`HTTPS_PROXY` point at, when there is no
//!   namespace: plain HTTP proxy requests (absolute-form) and `CONNECT` tunnels.
//!
//! TLS is terminated with a certificate for the requested host signed by a CA generated
//! for the run (its PEM is handed to the app as `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//! `NODE_EXTRA_CA_CERTS`).
//! Each call is answered by the [`Matcher`] of the request being replayed: the recorded
//! status after the recorded delay, a recorded timeout held until the app gives up, a
//! reset closed, a fixture, or a 502 naming the miss. Nothing leaves the machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::dns::SharedNames;
use crate::isolation::{self, Sandbox};
use crate::stub::{Answer, Failure, Matcher, Refusal};

/// How long a redirected connection may stay silent before it counts as a protocol that
/// waits for the server to speak first (SMTP, FTP, MySQL): refused.
const FIRST_BYTES_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Why the stub could not start.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// Binding or writing the CA failed.
    #[error("outbound stub: {0}")]
    Io(#[from] std::io::Error),
    /// Generating the CA failed.
    #[error("outbound stub: generating the run's CA: {0}")]
    Ca(#[from] rcgen::Error),
}

/// A running outbound stub.
pub struct Outbound {
    /// Where it listens (the app's `HTTP_PROXY`).
    pub addr: SocketAddr,
    /// The run's CA certificate (PEM), for the app's trust store.
    pub ca_file: PathBuf,
    state: Arc<State>,
    shutdown: CancellationToken,
}

struct State {
    ca: Ca,
    /// Flux's own endpoints (the run's OTLP receiver): calls to them are forwarded, not
    /// stubbed, whether the app's client sends them through the proxy or not.
    pass_through: Mutex<Vec<SocketAddr>>,
    /// Answers for the requests being replayed, by their (fresh) trace id.
    matchers: Mutex<HashMap<String, Matcher>>,
    /// The names the sandbox's resolver handed out (transparent mode).
    names: Option<SharedNames>,
    /// Connections refused while no request was in flight, each with the replayed
    /// request that answered last before it (none: the app starting up).
    refused_outside: Mutex<Vec<(Option<String>, Refusal)>>,
    /// The request whose answers were taken last.
    last_taken: Mutex<Option<String>>,
    /// Redirected connections not yet served or refused.
    pending: std::sync::atomic::AtomicUsize,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl Outbound {
    /// Starts the stub as an HTTP proxy on a free loopback port, writing the run's CA to
    /// `dir/ca.pem`.
    pub async fn start(dir: &Path) -> Result<Outbound, OutboundError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(dir, listener, None).await
    }

    /// Starts the stub inside `sandbox`, on [`isolation::STUB_PORT`], where the sandbox's
    /// rules redirect every outbound connection; `names` maps the resolver's addresses
    /// back to the names looked up.
    pub async fn start_in(
        dir: &Path,
        sandbox: &Sandbox,
        names: SharedNames,
    ) -> Result<Outbound, OutboundError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], isolation::STUB_PORT));
        let listener = TcpListener::from_std(sandbox.listen(addr)?)?;
        Self::serve(dir, listener, Some(names)).await
    }

    async fn serve(
        dir: &Path,
        listener: TcpListener,
        names: Option<SharedNames>,
    ) -> Result<Outbound, OutboundError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "flux replay outbound stub CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, cert.pem())?;
        let transparent = names.is_some();
        let state = Arc::new(State {
            ca: Ca {
                der: cert.der().to_vec(),
                issuer: Issuer::new(params, key),
                leaves: Mutex::new(HashMap::new()),
            },
            matchers: Mutex::new(HashMap::new()),
            pass_through: Mutex::new(Vec::new()),
            names,
            refused_outside: Mutex::new(Vec::new()),
            last_taken: Mutex::new(None),
            pending: std::sync::atomic::AtomicUsize::new(0),
        });
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            state.clone(),
            shutdown.clone(),
            transparent,
        ));
        Ok(Outbound {
            addr,
            ca_file,
            state,
            shutdown,
        })
    }

    /// The answers for the replayed request with trace id `trace`. A call is matched to
    /// its request by the `traceparent` an instrumented client sends; a call without one
    /// goes to the only request in flight (with `--concurrency 1`, always the case).
    pub fn set(&self, trace: &str, matcher: Matcher) {
        self.state
            .matchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(trace.to_string(), matcher);
    }

    /// Takes back a request's matcher after it finished (with the calls it could not
    /// answer).
    pub fn take(&self, trace: &str) -> Option<Matcher> {
        *self
            .state
            .last_taken
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(trace.to_string());
        self.state
            .matchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(trace)
    }

    /// Waits (up to 2 s) until every redirected connection was served or refused: an app
    /// that connects right after answering (a receipt by e-mail) is still listed.
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.state.pending.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Forwards plain-HTTP calls addressed to `addr` instead of stubbing them (Flux's own
    /// endpoints, which the app's exporter may reach through `HTTP_PROXY`).
    pub fn pass_through(&self, addr: SocketAddr) {
        self.state
            .pass_through
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr);
    }

    /// Connections refused while no single request was in flight (the app starting up,
    /// after a request answered, or several requests at once), each with the replayed
    /// request that had answered last.
    pub fn refused_outside(&self) -> Vec<(Option<String>, Refusal)> {
        self.state
            .refused_outside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The proxy URL for the app's environment.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: CancellationToken,
    transparent: bool,
) {
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        if transparent {
            tokio::spawn(redirected(tcp, state));
        } else {
            tokio::spawn(serve(TokioIo::new(tcp), state, None));
        }
    }
}

/// A connection the sandbox redirected here: served as HTTP or TLS when it is one,
/// refused (and listed against the request in flight) when it is not.
async fn redirected(tcp: TcpStream, state: Arc<State>) {
    state
        .pending
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _settled = Settled(state.clone());
    // Whose connection this is, decided when it is made (deciding after the wait below
    // would give a receipt sent after one request's answer to the next request).
    let owner = state.owner();
    let destination = match isolation::original_destination(&tcp) {
        Some(d) => state.describe(d),
        None => ("an unknown destination".to_string(), 0),
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(FIRST_BYTES_WAIT, tcp.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {
            let start = match tokio_rustls::LazyConfigAcceptor::new(
                rustls::server::Acceptor::default(),
                tcp,
            )
            .await
            {
                Ok(start) => start,
                Err(e) => {
                    state.refuse(owner.clone(), &destination, &format!("a TLS handshake that failed: {e}"));
                    return;
                }
            };
            // The name the client asked for; else the one the resolver gave its address.
            let host = start
                .client_hello()
                .server_name()
                .map(str::to_string)
                .unwrap_or_else(|| destination.0.clone());
            let tls = match state.ca.leaf(&host) {
                Ok(tls) => tls,
                Err(e) => {
                    state.refuse(owner.clone(), &destination, &format!("no certificate for {host}: {e}"));
                    return;
                }
            };
            if let Ok(stream) = start.into_stream(tls).await {
                serve(TokioIo::new(stream), state, Some(host)).await;
            }
        }
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            serve(TokioIo::new(tcp), state, None).await;
        }
        Ok(Ok(_)) => {
            let mut head = [0u8; 16];
            let n = tcp.peek(&mut head).await.unwrap_or(0);
            let shown: String = head
                .get(..n)
                .unwrap_or_default()
                .iter()
                .map(|b| match b {
                    b' '..=b'~' => char::from(*b).to_string(),
                    _ => format!("\\x{b:02x}"),
                })
                .collect();
            state.refuse(owner.clone(), &destination, &format!("not HTTP (it began {shown:?})"));
        }
        Ok(Err(e)) => state.refuse(owner.clone(), &destination, &format!("a connection that failed: {e}")),
        Err(_) => state.refuse(
            owner,
            &destination,
            "a protocol where the server speaks first (no request within 500 ms: SMTP, FTP, MySQL…)",
        ),
    }
}

/// Counts a redirected connection as decided when dropped (served, refused or failed).
struct Settled(Arc<State>);

impl Drop for Settled {
    fn drop(&mut self) {
        self.0
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 on one connection: the proxy's own, or a tunnel to `tunnel_host`.
/// Boxed: a tunnel serves requests with the same handler that opened it.
fn serve<I>(
    io: I,
    state: Arc<State>,
    tunnel_host: Option<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    Box::pin(async move {
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            let host = tunnel_host.clone();
            async move { handle(req, state, host).await }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    })
}

fn response(status: u16, body: String) -> Response<Body> {
    let json = body.trim_start().starts_with(['{', '[']);
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if json {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    r
}

/// The pass-through address a proxy request (absolute-form) or a direct one (the stub's
/// own address) is meant for.
fn forwarded_to(req: &Request<Incoming>, state: &State) -> Option<SocketAddr> {
    let authority = req.uri().authority()?.as_str().to_string();
    let targets = state.pass_through.lock().unwrap_or_else(|p| p.into_inner());
    targets
        .iter()
        .find(|a| a.to_string() == authority || format!("localhost:{}", a.port()) == authority)
        .copied()
}

/// Relays one request to `addr` over a fresh connection (Flux's own, on loopback).
async fn forward(mut req: Request<Incoming>, addr: SocketAddr) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match path.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return response(400, "flux replay stub: bad target\n".into()),
    }
    let relayed = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        // Flux's own answers are small: collected, not streamed.
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(Response::from_parts(
            parts,
            Full::new(body.to_bytes()).boxed(),
        ))
    };
    match relayed.await {
        Ok(resp) => resp,
        Err(e) => response(
            502,
            format!("flux replay stub: forwarding to {addr}: {e}\n"),
        ),
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    tunnel_host: Option<String>,
) -> Result<Response<Body>, std::io::Error> {
    if req.method() == Method::CONNECT {
        let host = req
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .unwrap_or_default();
        let tls = match state.ca.leaf(&host) {
            Ok(tls) => tls,
            Err(e) => {
                return Ok(response(
                    502,
                    format!("flux replay stub: no certificate for {host}: {e}\n"),
                ))
            }
        };
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            if let Ok(stream) = acceptor.accept(TokioIo::new(upgraded)).await {
                serve(TokioIo::new(stream), state, Some(host)).await;
            }
        });
        return Ok(Response::new(Empty::new().boxed()));
    }
    let host = tunnel_host
        .clone()
        .or_else(|| req.uri().host().map(str::to_string))
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    if tunnel_host.is_none() {
        if let Some(addr) = forwarded_to(&req, &state) {
            return Ok(forward(req, addr).await);
        }
    }
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .map(str::to_ascii_lowercase);
    let answer = {
        let mut matchers = state.matchers.lock().unwrap_or_else(|p| p.into_inner());
        let only = (matchers.len() == 1)
            .then(|| matchers.keys().next().cloned())
            .flatten();
        let key = trace.filter(|t| matchers.contains_key(t)).or(only);
        match key.and_then(|k| matchers.get_mut(&k)) {
            Some(m) => m.answer(&method, &host, &path),
            None => Answer::Miss,
        }
    };
    match answer {
        Answer::Recorded {
            status,
            delay,
            body,
        } => {
            tokio::time::sleep(delay).await;
            Ok(response(status, body.unwrap_or_default()))
        }
        Answer::Fixture { status, body } => Ok(response(status, body)),
        Answer::Fail {
            failure: Failure::Timeout,
            delay,
        } => {
            // Never answered, as before: the app's own timeout ends it, or the cap does.
            tokio::time::sleep(delay).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "recorded timeout",
            ))
        }
        Answer::Fail {
            failure: Failure::Reset,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "recorded failure",
            ))
        }
        Answer::Miss => Ok(response(
            502,
            format!(
                "flux replay stub: no recording and no [stubs] fixture for {method} {host}{path}\n"
            ),
        )),
    }
}

impl State {
    /// The host and port of a redirected connection's original destination: the name
    /// the sandbox's resolver gave that address, else the address.
    fn describe(&self, destination: SocketAddr) -> (String, u16) {
        let name = match (&self.names, destination.ip()) {
            (Some(names), std::net::IpAddr::V4(v4)) => names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .name(v4)
                .map(str::to_string),
            _ => None,
        };
        (
            name.unwrap_or_else(|| destination.ip().to_string()),
            destination.port(),
        )
    }

    /// The request a connection made now belongs to: the one in flight (with
    /// `--concurrency 1`, the only one), else the one that answered last (`None` before
    /// any: the app starting up).
    fn owner(&self) -> Option<String> {
        let matchers = self.matchers.lock().unwrap_or_else(|p| p.into_inner());
        if matchers.len() == 1 {
            return matchers.keys().next().cloned();
        }
        drop(matchers);
        self.last_taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a refused connection against `owner` (see [`State::owner`]): in its
    /// answers while they are out, else in the list the report reads afterwards.
    fn refuse(&self, owner: Option<String>, destination: &(String, u16), why: &str) {
        let refusal = Refusal {
            host: destination.0.clone(),
            port: destination.1,
            why: why.to_string(),
        };
        let mut matchers = self.matchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = owner.as_ref().and_then(|o| matchers.get_mut(o)) {
            m.refused.push(refusal);
            return;
        }
        drop(matchers);
        tracing::info!(connection = %refusal, "replay: refused a connection the app made outside a request");
        self.refused_outside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((owner, refusal));
    }
}

impl Ca {
    /// A TLS configuration presenting a certificate for `host`, signed by the run's CA.
    fn leaf(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = leaves.get(host) {
            return Ok(c.clone());
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let params = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let chain = vec![
            cert.der().clone(),
            rustls::pki_types::CertificateDer::from(self.der.clone()),
        ];
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| e.to_string())?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
        let config = Arc::new(config);
        leaves.insert(host.to_string(), config.clone());
        Ok(config)
    }
}
