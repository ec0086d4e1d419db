//! `flux incident replay` and `flux bug bisect` on a stack Flux was not written around:
//! the Node/Express transfer service (examples/transfer: Node's own `http` module for the
//! outbound fraud check, which ignores HTTP_PROXY; a raw SMTP connection for receipts;
//! `now()` and `gen_random_uuid()` columns), recorded through `flux proxy --http-listen`.
//! Asserted, with the fraud service and an SMTP listener running and counting:
//! - no call reaches either during replay or bisect (the app runs in its own network
//!   namespace; the report says so), and the SMTP connection is refused and listed;
//! - the unchanged app replays without a `≠` (clock and generated-id columns are noise,
//!   counted), and a real column's change shows one; `--strict` shows the noise;
//! - the README's relative window form (`-10m..`) parses;
//! - bisect over a history whose other commits add middleware names the commit that
//!   makes the transfer answer 409.
//!
//! Needs root (network namespaces), `nft`, node and the example's packages (`./dev
//! setup` installs them).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{
    call, flux, flux_json, git, node_modules, scratch_database_named, transfer as example,
    wait_port, Running,
};
use flux_integration_tests::pg::{free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;
use serde_json::Value;

/// An SMTP server's first move (its greeting), counting every connection it gets.
fn smtp_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind smtp");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"220 mail.test ESMTP\r\n");
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    });
    (port, count)
}

fn fraud_calls(port: u16) -> u64 {
    let (status, body) = common::http(port, "GET", "/calls", None);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["calls"].as_u64().expect("calls")
}

/// The recorded service: PostgreSQL, the proxy (capture, OTLP, gateway), the fraud
/// service, an SMTP listener and the app from `dir`.
struct Stack {
    pg: PgCluster,
    data: tempfile::TempDir,
    gateway: u16,
    fraud: u16,
    smtp: (u16, Arc<AtomicUsize>),
    scratch: String,
    env: Vec<(String, String)>,
    _running: Vec<Running>,
}

impl Stack {
    async fn start(dir: &Path, env: &[(&str, String)]) -> Stack {
        let modules = node_modules();
        let pg = PgCluster::start(Options::default());
        let schema = std::fs::read_to_string(example().join("schema.sql")).expect("schema");
        pg.admin_sql(&schema);
        let (scratch, _) =
            scratch_database_named(&pg, "transfer_scratch", &example().join("schema.sql")).await;
        let data = common::private_tempdir();
        let (port, otlp, fraud, app, gateway) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = flux();
        cmd.args(["proxy", "--listen", &listen, "--upstream", &pg.url()])
            .args(["--otlp", &format!("127.0.0.1:{otlp}")])
            .args(["--http-listen", &format!("127.0.0.1:{gateway}")])
            .args(["--http-upstream", &format!("http://127.0.0.1:{app}")])
            .arg("--data-dir")
            .arg(data.path());
        let proxy = Running(start_proxy(&mut cmd, &listen));
        let smtp = smtp_listener();
        // What the app needs wherever it runs (recording, replay, bisect): inherited by
        // `flux` and from it by the app.
        let mut shared: Vec<(String, String)> = vec![
            ("NODE_PATH".into(), modules.display().to_string()),
            ("FRAUD_URL".into(), format!("http://127.0.0.1:{fraud}")),
            ("NOTIFY_SMTP".into(), format!("127.0.0.1:{}", smtp.0)),
        ];
        shared.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let node = |args: &[&str]| {
            let mut c = Command::new("node");
            c.args(args)
                .current_dir(dir)
                .envs(shared.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        let mut fraud_svc = node(&[
            example().join("fraud.js").to_str().expect("path"),
            &fraud.to_string(),
        ])
        .spawn()
        .expect("start the fraud service");
        wait_port(fraud, &mut fraud_svc, "the fraud service");
        let mut app_svc = node(&["--require", "./tracing.js", "app.js"])
            .env(
                "DATABASE_URL",
                format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"),
            )
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("PORT", app.to_string())
            .spawn()
            .expect("start the transfer service");
        wait_port(app, &mut app_svc, "the transfer service");
        Stack {
            pg,
            data,
            gateway,
            fraud,
            smtp,
            scratch,
            env: shared,
            _running: vec![Running(app_svc), Running(fraud_svc), proxy],
        }
    }

    fn transfer(&self, amount: u32) -> u16 {
        call(
            self.gateway,
            "POST",
            "/transfers",
            &format!(r#"{{"from": 1, "to": 2, "amount": {amount}}}"#),
        )
    }

    /// Waits until `n` requests with a status are recorded; their ids by status.
    fn recorded(&self, n: usize) -> Vec<(u64, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tail = flux_json(self.data.path(), &["tail", "--no-follow"]);
            let rows: Vec<(u64, String)> = tail
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|r| Some((r["status"].as_u64()?, r["request"].as_str()?.to_string())))
                .collect();
            if rows.len() >= n {
                return rows;
            }
            assert!(Instant::now() < deadline, "requests not recorded: {tail}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `flux ARGS --data-dir … --database scratch` with the app's environment, in `dir`:
    /// exit code, stdout, stderr.
    fn flux(&self, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let out = flux()
            .current_dir(dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--database", &self.scratch])
            .output()
            .expect("run flux");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A copy of the example (app, tracing, flux.toml) in a fresh directory.
fn copy_example(to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for f in ["app.js", "tracing.js", "flux.toml", "schema.sql"] {
        std::fs::copy(example().join(f), to.join(f)).expect("copy");
    }
}

/// Whether this test runs as root (which network namespaces need).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reaches_no_live_service_and_shows_only_real_differences() {
    let work = common::private_tempdir();
    let app_dir = work.path().join("transfer");
    copy_example(&app_dir);
    let stack = Stack::start(&app_dir, &[]).await;
    assert_eq!(stack.transfer(10), 201);
    assert_eq!(stack.transfer(20), 201);
    assert_eq!(stack.transfer(2000), 502, "the fraud service's 403");
    let recorded = stack.recorded(3);
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    // The receipts go out after the answer: wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.smtp.1.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the receipts never reached the SMTP listener"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (fraud_before, smtp_before) = (
        fraud_calls(stack.fraud),
        stack.smtp.1.load(Ordering::SeqCst),
    );
    assert_eq!(fraud_before, 3);

    // The README's relative window, as it shows it (no `--` needed).
    let (code, out, err) = stack.flux(
        &app_dir,
        &["incident", "replay", "-10m..", "--format", "json"],
    );
    assert_eq!(code, 1, "the 502 still fails: {out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(
        fraud_calls(stack.fraud),
        fraud_before,
        "a replay reached the fraud service"
    );
    assert_eq!(
        stack.smtp.1.load(Ordering::SeqCst),
        smtp_before,
        "a replay reached the SMTP server"
    );
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{report:#}");
    if !is_root() {
        // No namespace without privilege: said loudly, never claimed.
        assert_eq!(report["containment"]["mode"], "environment", "{report:#}");
        return;
    }
    assert_eq!(report["containment"]["mode"], "namespace", "{report:#}");
    let passing: Vec<&Value> = results
        .iter()
        .filter(|r| r["verdict"]["verdict"] == "passing")
        .collect();
    assert_eq!(passing.len(), 2, "{report:#}");
    for r in &passing {
        assert!(
            r["verdict"]["differs"].is_null(),
            "noise shown as a difference: {r:#}"
        );
        assert!(
            r["noise"].as_u64().is_some_and(|n| n >= 3),
            "ids, refs and clocks counted: {r:#}"
        );
    }
    // Both receipts were refused and listed (each under the request in flight when it
    // was made — a receipt sent after an answer may fall to the next request).
    let smtp = format!("TCP to 127.0.0.1:{}", stack.smtp.0);
    let listed = results
        .iter()
        .flat_map(|r| r["refused"].as_array().cloned().unwrap_or_default())
        .chain(report["refused"].as_array().cloned().unwrap_or_default())
        .filter(|x| {
            x.as_str()
                .is_some_and(|x| x.contains(&smtp) && x.contains("server speaks first"))
        })
        .count();
    assert_eq!(listed, 2, "the SMTP connections are listed: {report:#}");
    let failed = results
        .iter()
        .find(|r| r["verdict"]["verdict"] == "still_failing")
        .expect("the 502");
    assert!(
        failed["verdict"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("403")),
        "{failed:#}"
    );

    // The text report says what contained the app.
    let (_, text, _) = stack.flux(&app_dir, &["incident", "replay", "-10m.."]);
    assert!(text.contains("Side-effects: contained"), "{text}");
    assert!(!text.contains('≠'), "{text}");
    assert!(text.contains("⊘ refused TCP to 127.0.0.1"), "{text}");
    assert!(text.contains("treated as noise"), "{text}");

    // --strict compares everything: the clocks and generated ids differ.
    let (_, out, err) = stack.flux(
        &app_dir,
        &[
            "incident", "replay", "-10m..", "--strict", "--format", "json",
        ],
    );
    let strict: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert!(
        strict["results"]
            .as_array()
            .expect("results")
            .iter()
            .any(|r| r["verdict"]["differs"].is_string()),
        "{strict:#}"
    );

    // A real change: the app now writes amount + 1.
    let changed = work.path().join("changed");
    copy_example(&changed);
    let app_js = std::fs::read_to_string(changed.join("app.js")).expect("app.js");
    std::fs::write(
        changed.join("app.js"),
        app_js.replace(
            "[from, to, amount],\n    );",
            "[from, to, amount + 1],\n    );",
        ),
    )
    .expect("write app.js");
    let (_, out, err) = stack.flux(
        &changed,
        &["incident", "replay", "-10m..", "--format", "json"],
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let differs: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["verdict"]["differs"].as_str())
        .collect();
    assert_eq!(differs.len(), 2, "{report:#}");
    assert!(
        differs
            .iter()
            .all(|d| d.contains("(INSERT transfers): amount: ")),
        "{differs:?}"
    );
    assert_eq!(
        fraud_calls(stack.fraud),
        fraud_before,
        "a replay reached the fraud service"
    );
    assert_eq!(stack.smtp.1.load(Ordering::SeqCst), smtp_before);
    drop(stack.pg);
}

fn commit(repo: &Path, message: &str, edit: impl FnOnce(&str) -> String) -> String {
    let app = repo.join("app.js");
    let text = std::fs::read_to_string(&app).expect("app.js");
    let edited = edit(&text);
    assert_ne!(edited, text, "{message}: the edit changed nothing");
    std::fs::write(&app, edited).expect("write app.js");
    git(repo, &["commit", "-q", "-am", message]);
    git(repo, &["rev-parse", "--short=7", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisect_names_the_commit_that_breaks_the_transfer_not_the_middleware() {
    let work = common::private_tempdir();
    let repo = work.path().join("transfer");
    copy_example(&repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "dev@example.com"]);
    git(&repo, &["config", "user.name", "Dev"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Initial transfer service"]);
    let first = git(&repo, &["rev-parse", "--short=7", "HEAD"]);

    let stack = Stack::start(&repo, &[]).await;
    assert_eq!(stack.transfer(10), 201);
    let recorded = stack.recorded(1);
    let request = recorded[0].1.clone();
    let fraud_before = fraud_calls(stack.fraud);

    let json_line = "app.use(express.json());";
    commit(&repo, "Add request ids", |t| {
        t.replace(
            json_line,
            &format!("{json_line}\napp.use(function requestId(req, _res, next) {{ req.id = Date.now(); next(); }});"),
        )
    });
    let fee = commit(&repo, "transfers: charge the fee", |t| {
        t.replace(
            "    await client.query(\"BEGIN\");",
            "    await client.query(\"BEGIN\");\n    const FEE = 5000;\n    const { rows: [acct] } = await client.query(\"SELECT balance FROM accounts WHERE id = $1\", [from]);\n    if (acct.balance < amount + FEE) {\n      await client.query(\"ROLLBACK\");\n      return res.status(409).json({ error: \"insufficient funds for the fee\" });\n    }",
        )
    });
    commit(&repo, "Time each request", |t| {
        t.replace(
            json_line,
            &format!("{json_line}\napp.use(function timing(req, res, next) {{ const t = Date.now(); res.on(\"finish\", () => (req.took = Date.now() - t)); next(); }});"),
        )
    });

    let (code, out, err) = stack.flux(
        &repo,
        &["bug", "bisect", "--request", &request, "--good", &first],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("FIRST BAD COMMIT"), "{out}\n{err}");
    assert!(
        out.contains(&format!("{fee}  \"transfers: charge the fee\"")),
        "bisect named another commit:\n{out}\n{err}"
    );
    assert!(!out.contains("span tree differs"), "{out}");
    assert_eq!(
        fraud_calls(stack.fraud),
        fraud_before,
        "bisect reached the fraud service"
    );
    if is_root() {
        assert!(out.contains("Side-effects: contained"), "{out}");
    } else {
        assert!(out.contains("Side-effects: NOT CONTAINED"), "{out}");
    }
    drop(stack.pg);
}
