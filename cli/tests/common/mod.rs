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

/// The Node example's directory (examples/transfer).
pub fn transfer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/transfer")
}

/// The Node example's packages: `FLUX_EXAMPLE_NODE_MODULES`, else
/// /var/tmp/flux-example-node/node_modules (`./dev setup` installs them).
pub fn node_modules() -> PathBuf {
    let dir = std::env::var_os("FLUX_EXAMPLE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/flux-example-node/node_modules"));
    assert!(
        dir.join("@opentelemetry/sdk-node").is_dir(),
        "the Node example's packages ({}) are missing: run ./dev setup, or set FLUX_EXAMPLE_NODE_MODULES",
        dir.display()
    );
    dir
}

/// `git -C repo ARGS…`, asserted to succeed; its trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// The example shop running against a cluster through `flux proxy` (capture, OTLP, and
/// with `gateway` the HTTP recorder in front of the shop), with its payment server.
pub struct ShopStack {
    /// The proxy's PostgreSQL port.
    pub port: u16,
    /// Where requests go: the HTTP recorder when started with one, else the shop.
    pub entry: u16,
    /// The shop's own port.
    pub app: u16,
    proxy: Option<Running>,
    payments: Option<Running>,
    shop: Option<Running>,
}

impl ShopStack {
    /// Starts the proxy recording into `data`, the payment server, and the shop from
    /// `app_py` with `env` added.
    pub fn start(
        pg: &flux_integration_tests::pg::PgCluster,
        data: &Path,
        app_py: &Path,
        gateway: bool,
        env: &[(&str, String)],
    ) -> ShopStack {
        use flux_integration_tests::pg::{free_port, DB, PASSWORD, USER};
        use std::process::Stdio;
        let py = python();
        let (port, otlp, pay, app, gw) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = flux();
        cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
            .args(["--otlp", &format!("127.0.0.1:{otlp}")]);
        if gateway {
            cmd.args(["--http-listen", &format!("127.0.0.1:{gw}")])
                .args(["--http-upstream", &format!("http://127.0.0.1:{app}")]);
        }
        cmd.arg("--data-dir").arg(data);
        let proxy = Running(flux_integration_tests::process::start_proxy(
            &mut cmd, &listen,
        ));
        let mut payments = Command::new(&py)
            .arg(shop().join("payments.py"))
            .arg(pay.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the payment server");
        wait_port(pay, &mut payments, "the payment server");
        let payments = Running(payments);
        let mut shop_app = Command::new(&py)
            .arg(app_py)
            .env(
                "DATABASE_URL",
                format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"),
            )
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("PAYMENT_URL", format!("http://127.0.0.1:{pay}"))
            .env("PORT", app.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the shop");
        wait_port(app, &mut shop_app, "the shop");
        ShopStack {
            port,
            entry: if gateway { gw } else { app },
            app,
            proxy: Some(proxy),
            payments: Some(payments),
            shop: Some(Running(shop_app)),
        }
    }

    /// Stops the shop (the proxy and the payment server stay).
    pub fn stop_shop(&mut self) {
        self.shop = None;
    }
}

impl Drop for ShopStack {
    fn drop(&mut self) {
        // The shop before what it talks to.
        self.shop = None;
        self.payments = None;
        self.proxy = None;
    }
}

/// Creates `shop_scratch` beside the recorded database with the shop's schema: its URL,
/// and a client connected to it.
pub async fn scratch_database(
    pg: &flux_integration_tests::pg::PgCluster,
) -> (String, tokio_postgres::Client) {
    scratch_database_named(pg, "shop_scratch", &shop().join("schema.sql")).await
}

/// Creates database `name` beside the recorded one with the schema in `schema`: its URL,
/// and a client connected to it.
pub async fn scratch_database_named(
    pg: &flux_integration_tests::pg::PgCluster,
    name: &str,
    schema: &Path,
) -> (String, tokio_postgres::Client) {
    use flux_integration_tests::pg::{PASSWORD, USER};
    let schema = std::fs::read_to_string(schema).expect("schema");
    pg.admin_sql(&format!("CREATE DATABASE {name}"));
    let port = pg
        .url()
        .rsplit_once(':')
        .and_then(|(_, p)| p.split('/').next().map(str::to_string))
        .expect("port");
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{name}");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the scratch database");
    tokio::spawn(conn);
    client.batch_execute(&schema).await.expect("schema");
    (url, client)
}

/// A temporary directory only its owner may read (`0700`): what `flux` accepts as a data
/// dir (it refuses one every user may read; `tempfile` leaves the mode to the umask).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Status and body of `GET path` (or `POST` with a body) over plain HTTP/1.1.
pub fn http(port: u16, method: &str, path: &str, body: Option<(&str, &[u8])>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to --admin");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some((ct, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some((_, b)) = body {
        bytes.extend_from_slice(b);
    }
    std::io::Write::write_all(&mut s, &bytes).expect("send");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}
