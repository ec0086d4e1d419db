//! Helpers the `flux` binary's end-to-end tests share.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `flux` binary under test.
pub fn flux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flux"))
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `flux ARGS… --format json --data-dir DATA`, asserts success, parses the output.
pub fn flux_json(data: &Path, args: &[&str]) -> Value {
    let out = flux()
        .args(args)
        .args(["--format", "json", "--data-dir"])
        .arg(data)
        .output()
        .expect("run flux");
    assert!(
        out.status.success(),
        "flux {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// The example app's Python: `FLUX_EXAMPLE_PYTHON`, else /var/tmp/flux-example-venv/bin/python
/// (`./dev setup` creates it).
pub fn python() -> PathBuf {
    let py = std::env::var_os("FLUX_EXAMPLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/flux-example-venv/bin/python"));
    assert!(
        py.exists(),
        "the example app's Python ({}) is missing: run ./dev setup, or set FLUX_EXAMPLE_PYTHON",
        py.display()
    );
    py
}

/// The example shop's directory.
pub fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

/// One HTTP request with curl-free std I/O; returns the status code.
pub fn call(port: u16, method: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the shop");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits until `port` accepts connections, failing if `child` exits first.
pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
