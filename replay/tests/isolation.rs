//! The replay sandbox (DESIGN §7, isolation), with a real network namespace, nftables and
//! a real client inside it: a "live" HTTP service and a "live" SMTP server listen on this
//! machine's loopback, and a program in the sandbox calls them by address and by name.
//! Asserted: neither is ever reached; the HTTP call is answered by the stub (a miss, 502,
//! naming the host the program asked for); a name resolves to Flux's own address; the SMTP
//! connection is refused and listed; a service bridged in is reachable, and the app's port
//! bridged out is.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and `nft`: without them the sandbox must
//! refuse to exist, which is asserted instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flux_replay::dns::{self, SharedNames};
use flux_replay::isolation::{Sandbox, DNS_PORT};
use flux_replay::outbound::Outbound;
use tokio_util::sync::CancellationToken;

/// A server on the host's loopback that counts connections and answers `reply`.
fn live(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(reply);
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
        }
    });
    (addr, count)
}

/// Runs a Python program inside the sandbox; its stdout.
async fn inside(sandbox: &Sandbox, program: &str) -> String {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(program);
    sandbox.enter(&mut cmd);
    let out = cmd.output().await.expect("run python3 in the sandbox");
    assert!(
        out.status.success(),
        "{program}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_the_sandbox_and_every_call_meets_the_stub() {
    let sandbox = match Sandbox::create() {
        Ok(s) => s,
        Err(e) => {
            // Only where the privilege or the tools are missing; then replay must say
            // side effects are not contained (tested in the CLI's replay tests).
            use std::os::unix::fs::MetadataExt;
            let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
            let has_nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
                .iter()
                .any(|p| std::path::Path::new(p).exists());
            assert!(
                !root || !has_nft,
                "root with nft installed, and still no sandbox: {e}"
            );
            return;
        }
    };
    let (http_addr, http_hits) = live(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlive");
    let (smtp_addr, smtp_hits) = live(b"220 live ESMTP\r\n");
    let (flux_addr, flux_hits) = live(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nflux");

    let dir = tempfile::tempdir().expect("tmp");
    let names: SharedNames = Arc::default();
    let stub = Outbound::start_in(dir.path(), &sandbox, names.clone())
        .await
        .expect("stub");
    let stop = CancellationToken::new();
    let resolver = tokio::net::UdpSocket::from_std(
        sandbox
            .udp(SocketAddr::from(([127, 0, 0, 1], DNS_PORT)))
            .expect("resolver socket"),
    )
    .expect("tokio");
    tokio::spawn(dns::serve(resolver, names.clone(), stop.clone()));
    sandbox
        .bridge_in(flux_addr, stop.clone())
        .expect("bridge in");
    // 18080: the "app" started below, whose port replay exempts as it does the real app's.
    sandbox.contain(&[flux_addr.port(), 18080]).expect("rules");

    // By address: the "live" HTTP service's own address and port.
    let got = inside(
        &sandbox,
        &format!(
            "import urllib.request, urllib.error\n\
             try:\n  r = urllib.request.urlopen('http://{http_addr}/charge', timeout=5); print(r.status, r.read().decode())\n\
             except urllib.error.HTTPError as e: print(e.code, e.read().decode())"
        ),
    )
    .await;
    assert!(
        got.starts_with("502") && got.contains("no recording") && got.contains("/charge"),
        "the stub answered: {got}"
    );
    // By name, on another port: resolved by Flux, answered by the stub for that name.
    let got = inside(
        &sandbox,
        "import socket, urllib.request, urllib.error\n\
         print(socket.gethostbyname('payments.example.com'))\n\
         try:\n  urllib.request.urlopen('http://payments.example.com:8080/v1/charge', timeout=5)\n\
         except urllib.error.HTTPError as e: print(e.code, e.read().decode())",
    )
    .await;
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("198.18.0.1"), "{got}");
    let answer = lines.next().unwrap_or_default();
    assert!(
        answer.starts_with("502") && answer.contains("payments.example.com:8080/v1/charge"),
        "{got}"
    );
    // SMTP waits for the server to speak: refused, and listed.
    let got = inside(
        &sandbox,
        &format!(
            "import socket\n\
             s = socket.create_connection(('{}', {}), timeout=5)\n\
             print(repr(s.recv(100)))",
            smtp_addr.ip(),
            smtp_addr.port()
        ),
    )
    .await;
    assert_eq!(got, "b''", "closed without a greeting");
    stub.settle().await;
    let refused = stub.refused_outside();
    assert!(
        refused.iter().any(
            |(_, r)| r.to_string().contains(&format!("TCP to {smtp_addr}"))
                && r.why.contains("server speaks first")
        ),
        "{refused:?}"
    );
    // Flux's own service, bridged in on its port, is reachable.
    let got = inside(
        &sandbox,
        &format!(
            "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{}/', timeout=5).read().decode())",
            flux_addr.port()
        ),
    )
    .await;
    assert_eq!(got, "flux");
    assert_eq!(flux_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        http_hits.load(Ordering::SeqCst),
        0,
        "the live HTTP service was reached"
    );
    assert_eq!(
        smtp_hits.load(Ordering::SeqCst),
        0,
        "the live SMTP server was reached"
    );

    // The app's port, bridged out: a server inside answers a client outside.
    let mut server = tokio::process::Command::new("python3");
    server
        .arg("-c")
        .arg("import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    self.send_response(200); self.end_headers(); self.wfile.write(b'app')\nhttp.server.HTTPServer(('127.0.0.1', 18080), H).serve_forever()")
        .kill_on_drop(true);
    sandbox.enter(&mut server);
    let _server = server.spawn().expect("server in the sandbox");
    let out = sandbox
        .bridge_out(18080, stop.clone())
        .await
        .expect("bridge out");
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect(out) {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.ends_with("app") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.ends_with("app"), "{body}");
    stop.cancel();
}
