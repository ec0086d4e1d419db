//! Test harness for Flux: real PostgreSQL clusters started in temp dirs, the proxy run
//! in-process or as the `flux` binary, a raw wire-protocol client, TLS certificates.
//! Nothing here is a mock: every test talks to a real server through the real proxy.

pub mod certs;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod wire;

/// Installs a tracing subscriber once, honouring `RUST_LOG` (quiet by default).
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Waits until `cond` holds, polling, or panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
