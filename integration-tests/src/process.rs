//! Running the `flux` binary as a child process: readiness, signals, exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` (a `flux proxy …`) and waits for its `listening on LISTEN` line.
pub fn start_proxy(cmd: &mut Command, listen: &str) -> Child {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn flux");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "flux did not print `listening on {listen}` in time; it said:\n{}",
                    seen.join("\n")
                )
            }
        };
        if line.contains(&format!("listening on {listen}")) {
            break;
        }
        seen.push(line);
    }
    // Keep draining (and echo warnings) so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in rx {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("flux: {line}");
            }
        }
    });
    child
}

/// Sends `sig` (e.g. `-TERM`, `-KILL`) to the child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// Waits for the child to exit; kills it and panics after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("flux did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
