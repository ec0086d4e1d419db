//! Liveness and readiness.
//!
//! `/healthz` answers while the process serves HTTP at all. `/readyz` says whether the
//! proxy can do its job now: the upstream accepts a connection (a bare TCP or Unix
//! connect, closed at once, so the server logs nothing), and — with capture on — the store
//! writer is running and its last write succeeded.

use std::sync::Arc;
use std::time::Duration;

use flux_proxy::Upstream;

/// How long the upstream gets to accept the probe's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The database.
    pub upstream: Arc<Upstream>,
    /// The store writer, when capture is on.
    pub writer: Option<Arc<flux_store::WriterStats>>,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `upstream` or `store`.
    pub name: &'static str,
    /// Passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl Readiness {
    /// Runs every check.
    pub async fn check(&self) -> Vec<Check> {
        let mut checks = vec![self.upstream().await];
        if let Some(w) = &self.writer {
            checks.push(store(w));
        }
        checks
    }

    async fn upstream(&self) -> Check {
        let addr = self.upstream.addr();
        let connected = match self.upstream.socket_path() {
            Some(path) => {
                tokio::time::timeout(CONNECT_TIMEOUT, async {
                    tokio::net::UnixStream::connect(path).await.map(drop)
                })
                .await
            }
            None => {
                tokio::time::timeout(CONNECT_TIMEOUT, async {
                    tokio::net::TcpStream::connect((
                        self.upstream.host.as_str(),
                        self.upstream.port,
                    ))
                    .await
                    .map(drop)
                })
                .await
            }
        };
        let (ok, detail) = match connected {
            Ok(Ok(())) => (true, format!("{addr} accepts connections")),
            Ok(Err(e)) => (false, format!("{addr}: {e}")),
            Err(_) => (
                false,
                format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"),
            ),
        };
        Check {
            name: "upstream",
            ok,
            detail,
        }
    }
}

fn store(w: &flux_store::WriterStats) -> Check {
    let failure = w.failure();
    Check {
        name: "store",
        ok: failure.is_none(),
        detail: match failure {
            Some(why) => format!("{why} (see the proxy's log)"),
            None => "the store writer is writing".to_string(),
        },
    }
}
