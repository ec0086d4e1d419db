//! `flux incident replay` end to end, with the real shop and OpenTelemetry SDK: requests
//! recorded through `flux proxy --http-listen` (one checkout passing, one failing on a
//! payment timeout) are replayed on a scratch database against the unchanged shop (the
//! failure stays), then against a fixed copy (resolved). Asserted: the JSON verdicts, the
//! rows restored to the window's start (stale scratch rows removed, an updated row's
//! before image put back), the stub holding the recorded timeout, `FLUX_REPLAY=1` keeping
//! the shop's e-mail unsent, `RUN:ID` addressing, the refusal of the recorded database,
//! and that the recorded database is untouched.
//!
//! Needs the example's Python environment (see `common::python`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{call, flux, flux_json, python, scratch_database, shop, ShopStack};
use flux_integration_tests::pg::{Options, PgCluster};
use flux_integration_tests::process::{signal, wait_exit};
use serde_json::Value;

/// The recorded database's rows, to prove the replay never wrote there.
fn snapshot(pg: &PgCluster) -> String {
    pg.admin_sql(
        "SELECT (SELECT string_agg(u::text, ';' ORDER BY id) FROM users u) || ' | ' || \
         (SELECT coalesce(string_agg(o::text, ';' ORDER BY id), '') FROM orders o)",
    )
}

/// `flux incident replay …` in `dir` with the venv's python first on PATH: exit code and
/// stdout, stderr.
fn replay(dir: &Path, py: &Path, args: &[&str]) -> (i32, String, String) {
    let bin = py.parent().expect("venv bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = flux()
        .current_dir(dir)
        .env("PATH", path)
        .args(["incident", "replay"])
        .args(args)
        .output()
        .expect("run flux incident replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn by_target<'a>(report: &'a Value, method: &str, target: &str, nth: usize) -> &'a Value {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["method"] == method && r["target"] == target)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {method} {target} #{nth} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_replays_still_failing_then_resolved_after_the_fix() {
    let py = python();
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(&std::fs::read_to_string(shop().join("schema.sql")).expect("schema"));
    let (scratch, scratch_db) = scratch_database(&pg).await;
    let data = common::private_tempdir();
    let work = common::private_tempdir();
    let outbox = work.path().join("outbox");
    let stack = ShopStack::start(
        &pg,
        data.path(),
        &shop().join("app.py"),
        true,
        &[("SHOP_OUTBOX", outbox.display().to_string())],
    );
    let gw = stack.entry;

    // Before the window: user 9 exists with the free plan.
    assert_eq!(
        call(gw, "POST", "/users", r#"{"id": 9, "email": "n@x.com"}"#),
        201
    );
    std::thread::sleep(Duration::from_millis(1100));
    let from = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let requests: [(&str, &str, &str, u16); 6] = [
        ("POST", "/users", r#"{"id": 42, "email": "a@b.com"}"#, 201),
        ("POST", "/users", r#"{"id": 7, "email": "c@d.com"}"#, 201),
        ("GET", "/users/42", "", 200),
        ("POST", "/users/9/upgrade", r#"{"plan": "pro"}"#, 200),
        ("POST", "/checkout", r#"{"user_id": 7, "amount": 25}"#, 201),
        // The payment server stalls past the shop's 1 s timeout.
        (
            "POST",
            "/checkout",
            r#"{"user_id": 42, "amount": 5000}"#,
            500,
        ),
    ];
    for (method, path, body, status) in requests {
        assert_eq!(call(gw, method, path, body), status, "{method} {path}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let to = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    // Every request's gateway and app spans are in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tail = flux_json(data.path(), &["tail", "--since", "10m", "--no-follow"]);
        let whole = tail
            .as_array()
            .map(|a| a.iter().filter(|r| r["spans"].as_u64() >= Some(3)).count())
            .unwrap_or(0);
        if whole >= 7 {
            break;
        }
        assert!(Instant::now() < deadline, "spans did not arrive: {tail:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let recorded = snapshot(&pg);
    let sent_mail = std::fs::read_to_string(&outbox).expect("outbox");
    assert_eq!(sent_mail.lines().count(), 1, "the paid checkout's e-mail");

    // Stale scratch rows that the restore must deal with: user 42 did not exist at the
    // window's start (removed), user 9 had the free plan (put back).
    scratch_db
        .batch_execute(
            "INSERT INTO users (id, email, plan) VALUES (42, 'stale@x.com', 'pro'), (9, 'n@x.com', 'enterprise')",
        )
        .await
        .expect("stale rows");

    // The shop as it is, from a copy outside any git checkout (runs r1, r2).
    let copy = work.path().join("shop");
    std::fs::create_dir_all(&copy).expect("copy");
    for f in ["app.py", "flux.toml"] {
        std::fs::copy(shop().join(f), copy.join(f)).expect("copy");
    }
    let toml = std::fs::read_to_string(copy.join("flux.toml")).expect("flux.toml");
    let toml = toml.replace(
        "ready = \"/health\"",
        &format!(
            "ready = \"/health\"\nenv = {{ SHOP_OUTBOX = {:?} }}",
            outbox.display().to_string()
        ),
    );
    std::fs::write(copy.join("flux.toml"), toml).expect("flux.toml");
    let window = format!("{from}..{to}");
    let data_dir = data.path().display().to_string();

    // The recorded database is refused as the scratch one.
    let (code, _, err) = replay(
        &copy,
        &py,
        &[&window, "--data-dir", &data_dir, "--database", &pg.url()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("records in front of"), "{err}");

    let args = [
        window.as_str(),
        "--data-dir",
        &data_dir,
        "--database",
        &scratch,
        "--format",
        "json",
    ];
    let (code, out, err) = replay(&copy, &py, &args);
    assert_eq!(code, 1, "a request still fails: {out}\n{err}");
    let first: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(first["run"], "r1");
    assert_eq!(first["replayed"], 6, "{first:#}");
    assert_eq!(first["still_failing"], 1, "{first:#}");
    assert_eq!(
        first["restored"]["restored"], 1,
        "user 9 put back: {first:#}"
    );
    let failing = by_target(&first, "POST", "/checkout", 1);
    assert_eq!(
        failing["verdict"]["verdict"], "still_failing",
        "{failing:#}"
    );
    let cause = failing["verdict"]["cause"].as_str().unwrap_or("");
    assert!(cause.ends_with("/charge timeout after 1s"), "{cause}");
    // The stub held the recorded timeout: the shop gave up after its own 1 s.
    let ms = failing["duration_ms"].as_u64().unwrap_or(0);
    assert!((1000..5000).contains(&ms), "{ms} ms");
    let paid = by_target(&first, "POST", "/checkout", 0);
    assert_eq!(paid["verdict"]["verdict"], "passing", "{paid:#}");
    assert_eq!(paid["status"], 201);
    assert!(paid["misses"].as_array().is_some_and(Vec::is_empty));
    for (method, target) in [("POST", "/users"), ("GET", "/users/42")] {
        let r = by_target(&first, method, target, 0);
        assert_eq!(r["verdict"]["verdict"], "passing", "{r:#}");
        assert_eq!(r["verdict"]["differs"], Value::Null, "{r:#}");
    }

    // The upgrade ran on user 9 as it was at the window's start (plan free), and the
    // replay's record answers to RUN:ID with the original's id.
    let upgrade = by_target(&first, "POST", "/users/9/upgrade", 0);
    let id = upgrade["request"].as_str().expect("id").to_string();
    let history = flux_json(
        data.path(),
        &["state", "history", "--request", &format!("r1:{id}")],
    );
    let text = history.to_string();
    assert!(text.contains(r#""plan":"free""#), "before image: {text}");
    assert!(text.contains(r#""plan":"pro""#), "after image: {text}");
    let failed_id = failing["request"].as_str().expect("id").to_string();
    let diff = flux_json(
        data.path(),
        &["trace", "diff", &failed_id, &format!("r1:{failed_id}")],
    );
    assert!(diff["spans"].as_array().is_some_and(|s| !s.is_empty()));
    let why = flux_json(data.path(), &["why", &format!("r1:{}", &failed_id[..8])]);
    assert!(
        why["root_cause"].to_string().contains("timed out"),
        "{why:#}"
    );

    // Selections: only what failed; only one route.
    let only = |extra: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(extra);
        let (_, out, err) = replay(&copy, &py, &a);
        serde_json::from_str::<Value>(&out).unwrap_or_else(|_| panic!("{out}\n{err}"))
    };
    let failed_only = only(&["--failed-only"]);
    assert_eq!(failed_only["replayed"], 1, "{failed_only:#}");
    assert_eq!(
        failed_only["results"][0]["request"].as_str(),
        Some(failed_id.as_str())
    );
    assert_eq!(only(&["--route", "POST /checkout"])["replayed"], 2);

    // The fix: a longer timeout and one retry.
    let code_path = copy.join("app.py");
    let fixed = std::fs::read_to_string(&code_path)
        .expect("app.py")
        .replace(r#""PAYMENT_TIMEOUT", "1""#, r#""PAYMENT_TIMEOUT", "2""#)
        .replace("PAYMENT_ATTEMPTS = 1\n", "PAYMENT_ATTEMPTS = 2\n");
    std::fs::write(&code_path, fixed).expect("fix");
    let (code, out, err) = replay(&copy, &py, &args);
    assert_eq!(code, 0, "resolved: {out}\n{err}");
    let second: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(second["run"], "r4", "after r2 and r3, the selections");
    assert_eq!(second["resolved"], true);
    assert_eq!(second["passing"], 6, "{second:#}");
    let fixed = by_target(&second, "POST", "/checkout", 1);
    assert_eq!(fixed["verdict"]["verdict"], "passing", "{fixed:#}");
    assert_eq!(fixed["verdict"]["was"], "500", "{fixed:#}");
    // The recorded timeout was held past the new 2 s before the retry got the fixture.
    assert!(
        fixed["duration_ms"].as_u64().unwrap_or(0) >= 2000,
        "{fixed:#}"
    );

    // Ctrl-C while the app starts: flux stops it (its whole process group) and exits.
    let hung = work.path().join("hung");
    std::fs::create_dir_all(&hung).expect("dir");
    std::fs::write(
        hung.join("flux.toml"),
        format!(
            "[app]\nstart = \"echo $$ > app.pid; exec sleep 300\"\nurl = \"http://127.0.0.1:{{port}}\"\nready = \"/health\"\n\n[replay]\ndatabase = {scratch:?}\n"
        ),
    )
    .expect("flux.toml");
    let mut child = flux()
        .current_dir(&hung)
        .args(["incident", "replay", &window, "--data-dir", &data_dir])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flux incident replay");
    let pid_file = hung.join("app.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the app never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    let alive = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("kill -0");
    assert!(!alive.success(), "the app (pid {pid}) outlived the replay");

    // Nothing reached the recorded database or the customer's inbox.
    assert_eq!(snapshot(&pg), recorded);
    assert_eq!(
        std::fs::read_to_string(&outbox).expect("outbox"),
        sent_mail,
        "FLUX_REPLAY=1: no second e-mail"
    );
}
