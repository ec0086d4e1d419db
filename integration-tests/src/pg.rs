//! Real PostgreSQL clusters for tests: `initdb` in a temp dir, a free port, a chosen
//! authentication method, stopped (immediate mode) on drop.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root, so when the test
//! runs as root the cluster is run as an unprivileged user (`FLUX_PG_USER`, else
//! `postgres`, else `nobody`) owning the temp dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// How TCP clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No password.
    Trust,
    /// MD5 challenge (password stored as MD5).
    Md5,
    /// SCRAM-SHA-256 (password stored as SCRAM).
    Scram,
}

impl Auth {
    fn hba(self) -> &'static str {
        match self {
            Auth::Trust => "trust",
            Auth::Md5 => "md5",
            Auth::Scram => "scram-sha-256",
        }
    }
}

/// Cluster options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Authentication for TCP connections.
    pub auth: Auth,
    /// Serve TLS (self-signed certificate).
    pub ssl: bool,
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth: Auth::Trust,
            ssl: false,
            conf: Vec::new(),
        }
    }
}

/// The role tests connect as (a superuser with a password).
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "s3cret-pw";
/// The database tests use.
pub const DB: &str = "postgres";

/// A running PostgreSQL cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    running: bool,
}

/// Where the server binaries are: `FLUX_PG_BIN`, `initdb` on `PATH`, or the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("FLUX_PG_BIN") {
            return PathBuf::from(dir);
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                    return dir;
                }
            }
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, p)| p).unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run ./dev test \
                 (it installs them), `apt-get install postgresql`, or set FLUX_PG_BIN"
            )
        })
    })
    .clone()
}

/// Client binaries (`psql`, `pgbench`): beside the server's, else on `PATH`.
pub fn client_bin(name: &str) -> PathBuf {
    let beside = bin_dir().join(name);
    if beside.is_file() {
        beside
    } else {
        PathBuf::from(name)
    }
}

/// The OS user to run the server as, when we are root.
fn run_as() -> Option<&'static str> {
    static USER: OnceLock<Option<String>> = OnceLock::new();
    USER.get_or_init(|| {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        if let Ok(u) = std::env::var("FLUX_PG_USER") {
            return Some(u);
        }
        let exists = |u: &str| {
            Command::new("id")
                .arg(u)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        Some(
            if exists("postgres") {
                "postgres"
            } else {
                "nobody"
            }
            .to_string(),
        )
    })
    .as_deref()
}

fn command(bin: &Path) -> Command {
    match run_as() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A temp dir the server's OS user owns (PostgreSQL refuses a data dir it cannot own).
fn server_owned_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("flux-pg-")
        .tempdir()
        .expect("temp dir");
    if let Some(user) = run_as() {
        check(
            "chown",
            Command::new("chown").arg(user).arg(dir.path()).output(),
        );
    }
    dir
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on a lost race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl PgCluster {
    /// Creates and starts a cluster with a trust-authenticated superuser `postgres` on the
    /// Unix socket and the role [`USER`] for TCP clients.
    pub fn start(opts: Options) -> PgCluster {
        let mut c = Self::init(&opts);
        c.start_server();
        c.setup_roles(opts.auth);
        c
    }

    /// Creates a cluster without starting it.
    fn init(opts: &Options) -> PgCluster {
        let dir = server_owned_tempdir();
        let bin = bin_dir();
        let data = dir.path().join("data");
        check(
            "initdb",
            command(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .output(),
        );
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_string(),
            "fsync = off".into(),
            "max_connections = 100".into(),
            format!("unix_socket_directories = '{}'", dir.path().display()),
            format!(
                "password_encryption = '{}'",
                if opts.auth == Auth::Md5 {
                    "md5"
                } else {
                    "scram-sha-256"
                }
            ),
        ];
        if opts.ssl {
            let certs = crate::certs::self_signed(&data, "server");
            conf.push(format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
                certs.cert.display(),
                certs.key.display()
            ));
            if let Some(user) = run_as() {
                check(
                    "chown",
                    Command::new("chown")
                        .arg(user)
                        .arg(&certs.cert)
                        .arg(&certs.key)
                        .output(),
                );
            }
            check(
                "chmod",
                Command::new("chmod").arg("600").arg(&certs.key).output(),
            );
        }
        conf.extend(opts.conf.iter().cloned());
        append(&data.join("postgresql.conf"), &conf.join("\n"));
        let hba = format!(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 {m}\nhost replication all 127.0.0.1/32 {m}\n",
            m = opts.auth.hba()
        );
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        PgCluster {
            dir,
            port: 0,
            bin,
            running: false,
        }
    }

    /// Copies this (stopped) cluster's data into a new one: same catalog, same OIDs.
    pub fn clone_stopped(&self) -> PgCluster {
        assert!(!self.running, "clone_stopped needs a stopped cluster");
        let dir = server_owned_tempdir();
        check(
            "copy data dir",
            Command::new("cp")
                .arg("-a")
                .arg(self.data_dir())
                .arg(dir.path().join("data"))
                .output(),
        );
        append(
            &dir.path().join("data/postgresql.conf"),
            &format!("unix_socket_directories = '{}'", dir.path().display()),
        );
        PgCluster {
            dir,
            port: 0,
            bin: self.bin.clone(),
            running: false,
        }
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (on a new free port the first time, the same port after).
    pub fn start_server(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            if self.port == 0 || !last.is_empty() {
                self.port = free_port();
            }
            let out = command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start")
                .stdout(Stdio::null())
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                self.running = true;
                return;
            }
            last = self.log();
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    /// Stops the server at once (`-m immediate`): backends die without goodbye.
    pub fn stop_immediate(&mut self) {
        if self.running {
            let _ = command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }

    /// Stops the server cleanly (`-m fast`).
    pub fn stop(&mut self) {
        if self.running {
            check(
                "pg_ctl stop",
                command(&self.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(self.data_dir())
                    .args(["-m", "fast", "-w", "stop"])
                    .output(),
            );
            self.running = false;
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser over the Unix socket; returns psql's stdout.
    pub fn admin_sql(&self, sql: &str) -> String {
        let out = check(
            "psql (admin)",
            Command::new(client_bin("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                    "-d",
                    DB,
                    "-h",
                ])
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql)
                .output(),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn setup_roles(&self, auth: Auth) {
        let _ = auth;
        self.admin_sql(&format!(
            "CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"
        ));
    }

    /// A libpq-style connection string for direct TCP connections as [`USER`].
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
            self.port
        )
    }

    /// The `postgres://` URL of this server, for `--upstream`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{DB}?sslmode=prefer",
            self.port
        )
    }

    /// Connects with tokio-postgres directly (no proxy).
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.conn_str()).await
    }

    /// How many client backends are connected now (excluding the asking one).
    pub fn backends(&self) -> usize {
        self.admin_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap_or(usize::MAX)
    }
}

/// Connects with tokio-postgres (no TLS), driving the connection in a task.
pub async fn connect(conn_str: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e:?}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    writeln!(f, "\n{text}").expect("append conf");
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}
