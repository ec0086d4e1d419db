//! Keeping a replayed app's side effects in (DESIGN §7 step 3). A replay sends production
//! requests to the app again; a call that reached a live service would charge a card or
//! send an e-mail a second time. So, where Linux allows it, the app runs in a network
//! namespace of its own ([`Sandbox`]) that has nothing but a loopback interface:
//!
//! - every outbound TCP connection, to any address and port, is redirected by an nftables
//!   `redirect` rule to the outbound stub inside the namespace, which reads the original
//!   destination from the socket (`SO_ORIGINAL_DST`) and the host from `Host`/SNI;
//! - DNS (UDP port 53, any server) is redirected to Flux's own resolver ([`crate::dns`]):
//!   every name resolves, to an address that maps back to the name;
//! - Flux's own services the app must reach (the replay proxy, the OTLP receiver) are
//!   bridged into the namespace on their ports, and the app's port is bridged out to the
//!   gateway; these are the only exceptions to the redirect;
//! - nothing else exists: there is no interface through which a packet could leave.
//!
//! It needs root, or `CAP_SYS_ADMIN` and `CAP_NET_ADMIN` (to create the namespace and load
//! its rules), and the `ip` (iproute2) and `nft` (nftables) commands. Without them the
//! replay falls back to proxy environment variables, which clients may ignore, and says
//! so: [`Containment`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use rustix::thread::{LinkNameSpaceType, UnshareFlags};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dns::SharedNames;

/// The outbound stub's port inside the namespace: below 1024, so never a port the app is
/// given (Flux picks those from the ephemeral range).
pub const STUB_PORT: u16 = 999;
/// The resolver's port inside the namespace.
pub const DNS_PORT: u16 = 53;

/// How the replayed app's outbound traffic was kept from live services. Always reported,
/// truthfully, in the replay's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Containment {
    /// The app ran in its own network namespace: every outbound TCP connection went to
    /// the stub, names were resolved by Flux, nothing else could leave.
    Namespace,
    /// Only proxy environment variables pointed the app's clients at the stub: side
    /// effects are NOT contained.
    Environment {
        /// Why no namespace could be made.
        why: String,
    },
}

impl Containment {
    /// Whether side effects were contained.
    pub fn contained(&self) -> bool {
        matches!(self, Containment::Namespace)
    }
}

/// Clients known to ignore the proxy environment variables the fallback sets (said in the
/// report's header when side effects are not contained).
pub const BYPASSING_CLIENTS: &str = "Node's http/https before Node 24 (and any client that ignores HTTP_PROXY), \
Java clients that ignore the proxy properties, most gRPC clients, raw TCP (SMTP, Redis, AMQP, other databases)";

/// The fallback without a namespace: every proxy setting clients commonly honour points
/// at the stub (`stub`), Flux's own receiver (`own`) excepted. Clients that ignore them
/// reach live services; the report says so. `java_options`: the app's own
/// `JAVA_TOOL_OPTIONS`, kept in front.
pub fn proxy_environment(
    stub: SocketAddr,
    own: SocketAddr,
    java_options: Option<&str>,
) -> Vec<(String, String)> {
    let url = format!("http://{stub}");
    let mut env: Vec<(String, String)> = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .iter()
        .map(|var| (var.to_string(), url.clone()))
        .collect();
    // Only Flux's own receiver bypasses the stub (the stub forwards it anyway, for
    // clients that ignore ports here).
    let no_proxy = format!("{own},localhost:{}", own.port());
    env.push(("NO_PROXY".to_string(), no_proxy.clone()));
    env.push(("no_proxy".to_string(), no_proxy));
    // Node 24+ honours the variables above only when asked to.
    env.push(("NODE_USE_ENV_PROXY".to_string(), "1".to_string()));
    // Java's URLConnection and HttpClient read system properties; an empty
    // nonProxyHosts sends loopback calls to the stub too (it forwards Flux's own).
    let (host, port) = (stub.ip(), stub.port());
    let mut java = format!(
        "-Dhttp.proxyHost={host} -Dhttp.proxyPort={port} -Dhttps.proxyHost={host} -Dhttps.proxyPort={port} -Dhttp.nonProxyHosts="
    );
    if let Some(own) = java_options {
        java = format!("{own} {java}");
    }
    env.push(("JAVA_TOOL_OPTIONS".to_string(), java));
    env
}

/// Why no sandbox could be made.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A command the sandbox needs is not installed.
    #[error("`{0}` is not installed (Debian/Ubuntu: apt-get install {1})")]
    MissingTool(&'static str, &'static str),
    /// Creating the namespace was refused.
    #[error("creating a network namespace: {0} (needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN)")]
    Unshare(io::Error),
    /// Setting up the namespace's interface or rules failed.
    #[error("setting up the replay's network namespace (`{command}`): {detail}")]
    Setup {
        /// The command.
        command: String,
        /// What it said.
        detail: String,
    },
    /// Binding or connecting inside the namespace.
    #[error("{what} in the replay's network namespace: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
}

/// A network namespace for the app under replay, alive while this (or a clone) is.
#[derive(Debug, Clone)]
pub struct Sandbox {
    ns: Arc<OwnedFd>,
    ip: PathBuf,
    nft: PathBuf,
}

impl Sandbox {
    /// Creates the namespace with its loopback interface up and every address routed to
    /// it (so a connection to any address is made locally, where the redirect rules see
    /// it); no rules yet ([`Sandbox::contain`] adds them).
    pub fn create() -> Result<Sandbox, IsolationError> {
        let ip = tool("ip").ok_or(IsolationError::MissingTool("ip", "iproute2"))?;
        let nft = tool("nft").ok_or(IsolationError::MissingTool("nft", "nftables"))?;
        // A thread of its own moves into a new namespace and hands back a handle to it;
        // the namespace lives as long as the handle, whatever happens to the thread.
        let ns = std::thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: NEWNET only changes this thread's network namespace; no file
            // descriptor table is unshared.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            Ok(rustix::fs::open(
                "/proc/thread-self/ns/net",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?)
        })
        .join()
        .map_err(|_| IsolationError::Unshare(io::Error::other("the namespace thread panicked")))?
        .map_err(IsolationError::Unshare)?;
        let sandbox = Sandbox {
            ns: Arc::new(ns),
            ip,
            nft,
        };
        sandbox.run(&sandbox.ip, &["link", "set", "lo", "up"], None)?;
        // The source address matters: without it, connections to a non-local address
        // would leave from 0.0.0.0 and their replies would go nowhere.
        sandbox.run(
            &sandbox.ip,
            &["route", "add", "default", "dev", "lo", "src", "127.0.0.1"],
            None,
        )?;
        // IPv6 may be off in the kernel; then there is nothing to route.
        if let Err(e) = sandbox.run(
            &sandbox.ip,
            &["-6", "route", "add", "default", "dev", "lo"],
            None,
        ) {
            tracing::debug!(error = %e, "no IPv6 route in the replay's namespace");
        }
        Ok(sandbox)
    }

    /// Loads the rules: TCP to the ports in `exempt` on 127.0.0.1 (Flux's bridged
    /// services, the app's own port) goes where it is addressed; UDP port 53 goes to
    /// Flux's resolver; every other TCP connection goes to the stub.
    pub fn contain(&self, exempt: &[u16]) -> Result<(), IsolationError> {
        let mut ports: Vec<String> = exempt.iter().map(u16::to_string).collect();
        ports.push(STUB_PORT.to_string());
        let rules = format!(
            "table inet flux_replay {{\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr 127.0.0.1 tcp dport {{ {ports} }} accept\n\
             \t\tudp dport 53 redirect to :{DNS_PORT}\n\
             \t\tmeta l4proto tcp redirect to :{STUB_PORT}\n\
             \t}}\n\
             }}\n",
            ports = ports.join(", ")
        );
        self.run(&self.nft, &["-f", "-"], Some(&rules))
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates belong to it).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    self.ns.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a sandbox thread panicked")))
        })
    }

    /// A TCP listener on `addr` inside the namespace, non-blocking (for tokio).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        self.within(|| {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
    }

    /// A UDP socket on `addr` inside the namespace, non-blocking (for tokio).
    pub fn udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        self.within(|| {
            let s = UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
    }

    /// A connection to `addr` inside the namespace (blocking connect: loopback only),
    /// non-blocking once made.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.within(|| {
            let s = TcpStream::connect(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
    }

    /// Makes `command` run inside the namespace.
    pub fn enter(&self, command: &mut tokio::process::Command) {
        self.enter_std(command.as_std_mut());
    }

    fn enter_std(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe, and the descriptor stays open in the child
        // until exec (the sandbox outlives the spawn).
        unsafe {
            command.pre_exec(move || {
                let ns = BorrowedFd::borrow_raw(fd);
                rustix::thread::move_into_link_name_space(ns, Some(LinkNameSpaceType::Network))
                    .map_err(io::Error::from)
            });
        }
    }

    /// Readies the namespace for the app: Flux's `services` bridged in on their ports,
    /// the resolver answering from `names`, then the rules (the services' ports and
    /// `app_port` exempt). All of it stops with `shutdown`.
    pub fn prepare(
        &self,
        services: &[SocketAddr],
        app_port: u16,
        names: SharedNames,
        shutdown: &CancellationToken,
    ) -> Result<(), IsolationError> {
        for service in services {
            self.bridge_in(*service, shutdown.clone())?;
        }
        let resolver = self
            .udp(SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT)))
            .and_then(tokio::net::UdpSocket::from_std)
            .map_err(|source| IsolationError::Io {
                what: "starting the resolver".into(),
                source,
            })?;
        tokio::spawn(crate::dns::serve(resolver, names, shutdown.clone()));
        let mut exempt: Vec<u16> = services.iter().map(SocketAddr::port).collect();
        exempt.push(app_port);
        self.contain(&exempt)
    }

    /// Makes Flux's service at `host` (in Flux's own namespace) reachable inside the
    /// namespace at 127.0.0.1 on the same port, until `shutdown`.
    pub fn bridge_in(
        &self,
        host: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), IsolationError> {
        let inside = self
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, host.port())))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| IsolationError::Io {
                what: format!("bridging {host} in"),
                source,
            })?;
        tokio::spawn(relay(inside, shutdown, move || async move {
            tokio::net::TcpStream::connect(host).await
        }));
        Ok(())
    }

    /// An address in Flux's namespace whose connections reach 127.0.0.1:`port` inside
    /// the namespace (the app), until `shutdown`.
    pub async fn bridge_out(
        &self,
        port: u16,
        shutdown: CancellationToken,
    ) -> Result<SocketAddr, IsolationError> {
        let failed = |source| IsolationError::Io {
            what: format!("bridging the app's port {port} out"),
            source,
        };
        let outside = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(failed)?;
        let addr = outside.local_addr().map_err(failed)?;
        let sandbox = self.clone();
        tokio::spawn(relay(outside, shutdown, move || {
            let sandbox = sandbox.clone();
            async move {
                let app = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
                let s = tokio::task::spawn_blocking(move || sandbox.connect(app))
                    .await
                    .map_err(io::Error::other)??;
                tokio::net::TcpStream::from_std(s)
            }
        }));
        Ok(addr)
    }

    /// Runs one set-up command inside the namespace, with `stdin` fed to it.
    fn run(
        &self,
        program: &PathBuf,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(), IsolationError> {
        use std::io::Write;
        let shown = format!("{} {}", program.display(), args.join(" "));
        let failed = |detail: String| IsolationError::Setup {
            command: shown.clone(),
            detail,
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.enter_std(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .map_err(|e| failed(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Accepts on `listener` and joins each connection to one `dial` makes, until `shutdown`.
async fn relay<D, F>(listener: tokio::net::TcpListener, shutdown: CancellationToken, dial: D)
where
    D: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = io::Result<tokio::net::TcpStream>> + Send + 'static,
{
    loop {
        let mut accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let dialing = dial();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut other = match dialing.await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "replay bridge: the other side refused");
                    return;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut accepted, &mut other) => {}
            }
        });
    }
}

/// `name`'s path on PATH or in the sbin directories (root's tools live there).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The original destination of a connection the redirect rule sent to the stub.
pub fn original_destination(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let fd = stream.as_fd();
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => rustix::net::sockopt::ip_original_dst(fd)
            .ok()
            .map(SocketAddr::V4),
        SocketAddr::V6(_) => rustix::net::sockopt::ipv6_original_dst(fd)
            .ok()
            .map(SocketAddr::V6),
    }
}
