//! Running the app under replay: `[app] start` from `flux.toml`'s directory (or bisect's
//! worktree) with the replay environment, in its own process group — and, when there is
//! one, inside the replay's network namespace ([`Sandbox`]), its port bridged out — until
//! it is ready; and stopping all of it — the shell and everything it started — however the
//! replay ends (dropping an [`AppProcess`] kills the group).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Config;
use crate::isolation::Sandbox;

/// A running app.
#[derive(Debug)]
pub struct AppProcess {
    child: Child,
    group: ProcessGroup,
    /// Where Flux reaches the app (its `[app] url`, or the sandbox's bridge to it).
    pub url: String,
    /// The port Flux picked (also the app's `PORT`).
    pub port: u16,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Closes the bridge into the sandbox, if any, when the app goes.
    _bridge: Option<DropGuard>,
}

/// Why the app could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No free port, no log file, or the shell could not be spawned.
    #[error("starting the app ({what}): {source}")]
    Spawn {
        /// What failed.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The app exited before it was ready.
    #[error(
        "the app exited ({status}) before it was ready; the end of its output ({log}):\n{tail}"
    )]
    Exited {
        /// Its exit status.
        status: String,
        /// Its log.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// The app did not become ready in time.
    #[error("the app was not ready at {url} within {waited:?} (check [app] ready and url in flux.toml); the end of its output ({log}):\n{tail}")]
    NotReady {
        /// What was polled.
        url: String,
        /// How long.
        waited: Duration,
        /// Its log.
        log: String,
        /// The log's last lines.
        tail: String,
    },
}

/// Starts `config`'s app in `dir` with `env` added (after `[app] env`) and `PORT=port`,
/// inside `sandbox` when given, logging to `log`, and waits up to `timeout` until it is
/// ready: `[app] ready` answers 2xx, or without one, its port accepts connections.
pub async fn start(
    config: &Config,
    dir: &Path,
    env: &[(String, String)],
    log: &Path,
    timeout: Duration,
    port: u16,
    sandbox: Option<&Sandbox>,
) -> Result<AppProcess, AppError> {
    let (url, reach, bridge) = match sandbox {
        Some(sandbox) => {
            let token = CancellationToken::new();
            let reach =
                sandbox
                    .bridge_out(port, token.clone())
                    .await
                    .map_err(|e| AppError::Spawn {
                        what: "bridging its port out of the sandbox",
                        source: std::io::Error::other(e),
                    })?;
            (format!("http://{reach}"), reach, Some(token.drop_guard()))
        }
        None => (
            config.app_url(port),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            None,
        ),
    };
    let out = std::fs::File::create(log).map_err(|source| AppError::Spawn {
        what: "creating its log",
        source,
    })?;
    let err = out.try_clone().map_err(|source| AppError::Spawn {
        what: "creating its log",
        source,
    })?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&config.app.start)
        .current_dir(dir)
        .envs(&config.app.env)
        .env("PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own group, so stopping it stops whatever the shell started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(sandbox) = sandbox {
        sandbox.enter(&mut cmd);
    }
    let child = cmd.spawn().map_err(|source| AppError::Spawn {
        what: "spawning sh",
        source,
    })?;
    let group = ProcessGroup::led_by(&child);
    let mut app = AppProcess {
        child,
        group,
        url,
        port,
        log: log.to_path_buf(),
        _bridge: bridge,
    };
    let ready_url = format!("{}{}", app.url, config.app.ready.as_deref().unwrap_or(""));
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = app.child.try_wait() {
            return Err(AppError::Exited {
                status: status.to_string(),
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        let ready = match &config.app.ready {
            Some(path) => get_status(reach, path)
                .await
                .is_some_and(|s| (200..300).contains(&s)),
            // Through a bridge, a connection is accepted before the app is there: a
            // probe request must be answered (any status).
            None if sandbox.is_some() => get_status(reach, "/").await.is_some(),
            None => TcpStream::connect(reach).await.is_ok(),
        };
        if ready {
            return Ok(app);
        }
        if started.elapsed() >= timeout {
            app.kill(Signal::KILL);
            return Err(AppError::NotReady {
                url: ready_url,
                waited: timeout,
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl AppProcess {
    /// Stops the app: SIGTERM to its group, SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.kill(Signal::TERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill(Signal::KILL);
            let _ = self.child.wait().await;
        }
        // Whatever the shell started and left behind.
        self.kill(Signal::KILL);
        self.group.forget();
    }

    fn kill(&self, signal: Signal) {
        self.group.signal(signal);
    }
}

/// The process group a child leads (it was spawned with `process_group(0)`), to signal
/// it and everything it started.
#[derive(Debug)]
pub(crate) struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    /// The group `child` leads.
    pub(crate) fn led_by(child: &Child) -> Self {
        ProcessGroup(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
        )
    }

    /// Sends `signal` to the whole group (nothing once forgotten; ESRCH: already gone).
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(group) = self.0 {
            let _ = kill_process_group(group, signal);
        }
    }

    /// Once the leader was reaped its id may be reused: signal nothing from then on.
    pub(crate) fn forget(&mut self) {
        self.0 = None;
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        // An error or Ctrl-C unwinding through the replay: nothing may outlive it.
        self.kill(Signal::KILL);
    }
}

/// A port free on this machine's loopback (for the app's `PORT`).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The status of `GET path` at `addr` (HTTP/1.1, connection closed after).
async fn get_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let probe = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 32];
        let n = s.read(&mut head).await.ok()?;
        let line = std::str::from_utf8(head.get(..n)?).ok()?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(start: &str, ready: Option<&str>) -> Config {
        let ready = ready.map_or(String::new(), |r| format!("ready = {r:?}\n"));
        crate::config::parse(
            &format!(
                "[app]\nstart = {start:?}\n{ready}env = {{ GREETING = \"hi\" }}\n[replay]\ndatabase = \"postgres://x/y\"\n"
            ),
            Path::new("/tmp/flux.toml"),
        )
        .expect("config")
    }

    /// An app: a Python HTTP server answering 200 on /health, started through a shell
    /// that also leaves a child of its own running (which stopping must end too).
    const APP: &str = "sleep 300 & echo \"$GREETING $FLUX_REPLAY\"; exec python3 -c \"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/health' else 404); self.end_headers()
http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
\"";

    #[tokio::test]
    async fn starts_waits_for_ready_and_stops_the_whole_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        let env = vec![("FLUX_REPLAY".to_string(), "1".to_string())];
        let port = free_port().expect("port");
        let app = start(
            &config(APP, Some("/health")),
            dir.path(),
            &env,
            &log,
            Duration::from_secs(20),
            port,
            None,
        )
        .await
        .expect("ready");
        assert_eq!(
            get_status(([127, 0, 0, 1], app.port).into(), "/health").await,
            Some(200)
        );
        assert_eq!(
            std::fs::read_to_string(&log).expect("log").lines().next(),
            Some("hi 1")
        );
        let group = app.group.0.expect("group");
        app.stop(Duration::from_secs(5)).await;
        // Nothing of the group is left (the backgrounded sleep included), once the
        // orphans are reaped by init.
        let mut left = Vec::new();
        for _ in 0..50 {
            let alive = std::process::Command::new("pgrep")
                .arg("-g")
                .arg(group.as_raw_nonzero().to_string())
                .output()
                .expect("pgrep");
            left = String::from_utf8_lossy(&alive.stdout)
                .split_whitespace()
                .filter(|pid| {
                    // Zombies are gone, only not yet reaped.
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
                        .is_some_and(|r| !r.starts_with('Z'))
                })
                .map(str::to_string)
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(left.is_empty(), "left running: {left:?}");
    }

    #[tokio::test]
    async fn an_app_that_dies_or_never_gets_ready_is_reported_with_its_output() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        let e = start(
            &config("echo boom >&2; exit 3", None),
            dir.path(),
            &[],
            &log,
            Duration::from_secs(10),
            free_port().expect("port"),
            None,
        )
        .await
        .expect_err("exits");
        let text = e.to_string();
        assert!(text.contains("exited") && text.contains("boom"), "{text}");
        let e = start(
            &config("sleep 30", Some("/health")),
            dir.path(),
            &[],
            &log,
            Duration::from_millis(500),
            free_port().expect("port"),
            None,
        )
        .await
        .expect_err("never ready");
        assert!(e.to_string().contains("not ready"), "{e}");
    }
}
