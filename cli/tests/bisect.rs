//! `flux bug bisect` end to end: a throwaway git repository made from the example shop
//! with a dozen commits — one breaks checkout, one does not build — and a passing checkout
//! recorded (through `flux proxy --http-listen`, with the real SDK) at the first commit.
//! Asserted: bisect names the breaking commit, skips the one that does not build, leaves
//! the user's working tree, index, stash and refs exactly as they were, and its suggested
//! `flux trace diff` shows the changed spans under `COMMIT` columns; Ctrl-C mid-bisect
//! leaves the checkout untouched too; a good end that fails stops it with exit 2.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{call, flux, flux_json, git, python, scratch_database, shop, ShopStack};
use flux_integration_tests::pg::{Options, PgCluster};
use flux_integration_tests::process::{signal, wait_exit};

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "--short=7", "HEAD"])
}

/// Everything about the user's checkout bisect must not change.
fn checkout_state(repo: &Path) -> String {
    let mut files = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.file_name()
                .is_some_and(|n| n == ".git" || n == "__pycache__")
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(format!(
                    "{} {:?}",
                    p.display(),
                    std::fs::read(&p).expect("read file")
                ));
            }
        }
    }
    files.sort();
    [
        git(repo, &["status", "--porcelain=v1", "--untracked-files=all"]),
        git(repo, &["for-each-ref"]),
        git(repo, &["stash", "list"]),
        git(repo, &["worktree", "list", "--porcelain"]),
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["diff", "--cached"]),
        files.join("\n"),
    ]
    .join("\n--\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisect_names_the_commit_that_broke_checkout() {
    let py = python();
    let pg = PgCluster::start(Options::default());
    let schema = std::fs::read_to_string(shop().join("schema.sql")).expect("schema");
    pg.admin_sql(&schema);
    let (scratch, _scratch_db) = scratch_database(&pg).await;

    // The user's repository: the shop at its first commit.
    let work = common::private_tempdir();
    let repo = work.path().join("shop");
    std::fs::create_dir_all(&repo).expect("repo");
    for f in ["app.py", "schema.sql"] {
        std::fs::copy(shop().join(f), repo.join(f)).expect("copy");
    }
    let toml = std::fs::read_to_string(shop().join("flux.toml"))
        .expect("flux.toml")
        .replace(
            "ready = \"/health\"",
            "ready = \"/health\"\nbuild = \"python -m py_compile app.py\"",
        );
    std::fs::write(repo.join("flux.toml"), toml).expect("flux.toml");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "dev@example.com"]);
    git(&repo, &["config", "user.name", "Dev"]);
    let first = commit(&repo, "Initial shop");
    let first_full = git(&repo, &["rev-parse", "HEAD"]);

    // Record a passing checkout served by the first commit.
    let data = common::private_tempdir();
    let mut stack = ShopStack::start(
        &pg,
        data.path(),
        &repo.join("app.py"),
        true,
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!("service.version={first_full}"),
        )],
    );
    let gw = stack.entry;
    assert_eq!(
        call(gw, "POST", "/users", r#"{"id": 7, "email": "c@d.com"}"#),
        201
    );
    // Two checkouts: the earlier one names the build that served it (the default good
    // end); bisect replays the later one.
    for _ in 0..2 {
        assert_eq!(
            call(gw, "POST", "/checkout", r#"{"user_id": 7, "amount": 25}"#),
            201
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let checkout = loop {
        let tail = flux_json(data.path(), &["tail", "--since", "10m", "--no-follow"]);
        let done: Vec<String> = tail
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["path"] == "/checkout" && r["spans"].as_u64() >= Some(5))
            .filter_map(|r| r["request"].as_str().map(str::to_string))
            .collect();
        if done.len() == 2 {
            break done[1].clone();
        }
        assert!(Instant::now() < deadline, "spans did not arrive: {tail:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    stack.stop_shop();

    // Eleven more commits: one does not build, one breaks checkout.
    let app_py = repo.join("app.py");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&app_py).expect("app.py");
        assert!(text.contains(from), "{from}");
        std::fs::write(&app_py, text.replacen(from, to, 1)).expect("app.py");
    };
    let note = |n: usize| {
        std::fs::write(repo.join("NOTES.md"), format!("Release notes, part {n}\n")).expect("notes")
    };
    // git's first pick in this range is the 6th commit: it does not build, so bisect must
    // skip it and still isolate the 9th.
    let mut shorts = vec![first.clone()];
    for n in 2..=5 {
        note(n);
        shorts.push(commit(&repo, &format!("Notes, part {n}")));
    }
    edit("def health():", "def health(:");
    let unbuildable = commit(&repo, "Health check: half-finished refactor");
    shorts.push(unbuildable.clone());
    edit("def health(:", "def health():");
    shorts.push(commit(&repo, "Health check: finish the refactor"));
    note(8);
    shorts.push(commit(&repo, "Notes, part 8"));
    edit(
        "    user_id, amount = body[\"user_id\"], int(body[\"amount\"])\n",
        "    user_id, amount = body[\"user_id\"], int(body[\"amount\"])\n    if amount < 100:\n        return jsonify(error=\"minimum order is 100\"), 422\n",
    );
    let breaking = commit(&repo, "Checkout: enforce a minimum order");
    shorts.push(breaking.clone());
    for n in 10..=12 {
        note(n);
        shorts.push(commit(&repo, &format!("Notes, part {n}")));
    }
    eprintln!("commits: {shorts:?}");
    assert_eq!(shorts.len(), 12);
    // The user's own state: a branch, a stash, a staged change, an untracked file.
    git(&repo, &["branch", "feature"]);
    std::fs::write(repo.join("NOTES.md"), "stashed work\n").expect("notes");
    git(&repo, &["stash", "-q"]);
    std::fs::write(repo.join("schema.sql"), format!("{schema}\n-- staged\n")).expect("schema");
    git(&repo, &["add", "schema.sql"]);
    std::fs::write(repo.join("scratch.txt"), "untracked\n").expect("untracked");
    let before = checkout_state(&repo);

    let venv = py.parent().expect("venv bin");
    let path = format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let data_dir = data.path().display().to_string();
    let started = Instant::now();
    let out = flux()
        .current_dir(&repo)
        .env("PATH", &path)
        .args(["bug", "bisect", "--request", &checkout[..8]])
        .args(["--data-dir", &data_dir, "--database", &scratch])
        .output()
        .expect("flux bug bisect");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    eprintln!("flux bug bisect took {took:?}:\n{text}");
    assert!(
        text.contains("Bisecting 11 commits"),
        "good end from service.version: {text}"
    );
    assert!(
        text.contains(&format!("Testing {first}…  ✔ passes")),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == "FIRST BAD COMMIT")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        lines.get(at + 1).copied(),
        Some(format!("{breaking}  \"Checkout: enforce a minimum order\"").as_str())
    );
    assert!(lines
        .get(at + 2)
        .is_some_and(|l| l.ends_with("by dev@example.com")));
    assert!(
        text.contains(&format!("Testing {unbuildable}…  ~ skipped (build failed)")),
        "the commit that does not build is skipped: {text}"
    );
    let diff_cmd = lines
        .iter()
        .find(|l| l.starts_with("flux trace diff "))
        .unwrap_or_else(|| panic!("{text}"));
    let diff_args: Vec<&str> = diff_cmd.split_whitespace().skip(1).collect();
    let parent = &shorts[shorts
        .iter()
        .position(|s| *s == breaking)
        .expect("breaking")
        - 1];
    let id = &checkout[..8];
    assert_eq!(
        diff_args,
        [
            "trace",
            "diff",
            &format!("{parent}:{id}"),
            &format!("{breaking}:{id}")
        ]
    );

    // The user's checkout is exactly as it was; no worktree or bisect state is left.
    assert_eq!(checkout_state(&repo), before);

    // The suggested diff works: COMMIT columns, the payment call gone at the bad commit.
    let diff = flux_json(data.path(), &diff_args);
    assert_eq!(
        diff["columns"],
        serde_json::json!([format!("COMMIT {parent}"), format!("COMMIT {breaking}")])
    );
    let spans = diff["spans"].as_array().expect("spans");
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "payment.charge" && s["verdict"] == "missing"),
        "{diff:#}"
    );
    let shown = flux()
        .args(&diff_args)
        .args(["--data-dir", &data_dir])
        .output()
        .expect("flux trace diff");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("COMMIT {parent}"))
            && shown.contains(&format!("COMMIT {breaking}")),
        "{shown}"
    );

    // Ctrl-C while git bisect runs: flux stops, and the checkout is still untouched.
    let mut child = flux()
        .current_dir(&repo)
        .env("PATH", &path)
        .args(["bug", "bisect", "--request", &checkout[..8]])
        .args(["--data-dir", &data_dir, "--database", &scratch])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flux bug bisect");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // The first commit git picks is being tested once the bad end's line is out.
    for line in lines.by_ref() {
        if line.expect("line").contains("(bad end)") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert_eq!(checkout_state(&repo), before);

    // A good end that fails too: said, and nothing bisected.
    let out = flux()
        .current_dir(&repo)
        .env("PATH", &path)
        .args([
            "bug",
            "bisect",
            "--request",
            &checkout[..8],
            "--good",
            &breaking,
        ])
        .args(["--data-dir", &data_dir, "--database", &scratch])
        .output()
        .expect("flux bug bisect");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fails too"), "{err}");
    assert_eq!(checkout_state(&repo), before);
}
