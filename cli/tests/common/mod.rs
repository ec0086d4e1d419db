//! Helpers the `flux` binary's end-to-end tests share.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};

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
