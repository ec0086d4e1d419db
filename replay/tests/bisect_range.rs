//! Bisect's default good end, against a real git repository and a real store: the commit
//! named by `service.version` on the last passing request of the same route, else the first
//! commit in the 14 days before the request.

use std::path::Path;
use std::process::Command;

use flux_replay::bisect::default_good;
use flux_store::{Exchange, Record, Span, SpanKind, SpanSource};

const DAY: u64 = 86_400;

fn git(repo: &Path, args: &[&str], date: Option<u64>) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args(args);
    if let Some(d) = date {
        cmd.env("GIT_COMMITTER_DATE", format!("@{d} +0000"))
            .env("GIT_AUTHOR_DATE", format!("@{d} +0000"));
    }
    let out = cmd.output().expect("git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with commits 20, 10 and 1 day(s) before `now`.
fn repo(dir: &Path, now: u64) -> Vec<String> {
    git(dir, &["init", "-q", "-b", "main"], None);
    git(dir, &["config", "user.email", "dev@example.com"], None);
    git(dir, &["config", "user.name", "Dev"], None);
    [20, 10, 1]
        .iter()
        .map(|days| {
            std::fs::write(dir.join("f"), days.to_string()).expect("write");
            git(dir, &["add", "f"], None);
            let at = now - days * DAY;
            git(dir, &["commit", "-q", "-m", &format!("{days}")], Some(at));
            git(dir, &["rev-parse", "HEAD"], None)
        })
        .collect()
}

fn request(id: &str, at_s: u64, target: &str, status: u16, version: Option<&str>) -> Vec<Record> {
    let at = at_s * 1_000_000_000;
    let mut attributes = vec![];
    if let Some(v) = version {
        attributes.push(("service.version".to_string(), v.to_string()));
    }
    vec![
        Record::Span(Span {
            trace: id.into(),
            id: "00000000000000a1".into(),
            parent: None,
            name: format!("POST {target}"),
            kind: SpanKind::Server,
            start: at,
            end: at + 1_000_000,
            error: None,
            attributes,
            events: vec![],
            service: Some("shop".into()),
            source: SpanSource::App,
        }),
        Record::Exchange(Exchange {
            request: id.into(),
            at,
            duration: 1_000_000,
            method: "POST".into(),
            target: target.into(),
            headers: vec![],
            body: vec![],
            body_complete: true,
            status: Some(status),
            response_headers: vec![],
            response_body: vec![],
            response_complete: true,
            error: None,
        }),
    ]
}

#[test]
fn the_good_end_comes_from_the_last_passing_requests_version_else_fourteen_days_back() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let dir = tempfile::tempdir().expect("tmp");
    let commits = repo(dir.path(), now);
    let data = tempfile::tempdir().expect("tmp");
    let store = flux_read::open_writer(data.path()).expect("store");
    let failing_at = now - 3600;
    let mut records = Vec::new();
    // Passing checkouts served by the first and the second commit, then a passing request
    // of another route naming the third, then a failing checkout naming the third.
    records.extend(request(
        "a1",
        now - 5 * DAY,
        "/checkout",
        201,
        Some(&commits[0]),
    ));
    records.extend(request(
        "a2",
        now - 4 * DAY,
        "/checkout",
        201,
        Some(&commits[1][..7]),
    ));
    records.extend(request(
        "a3",
        now - 2 * DAY,
        "/users",
        201,
        Some(&commits[2]),
    ));
    records.extend(request(
        "a4",
        now - 2 * DAY + 1,
        "/checkout",
        500,
        Some(&commits[2]),
    ));
    records.extend(request(
        "bad",
        failing_at,
        "/checkout",
        500,
        Some(&commits[2]),
    ));
    // A passing checkout whose version names no commit, for the fallback.
    records.extend(request("b1", now - 3 * DAY, "/pay", 201, Some("v1.2.3")));
    records.extend(request("b2", failing_at + 1, "/pay", 500, None));
    store.write(&records, true).expect("write");

    let bad = &commits[2];
    let x = store.exchange("bad").expect("read").expect("exchange");
    assert_eq!(
        default_good(&store, dir.path(), bad, &x).expect("good"),
        commits[1],
        "the short hash on the last passing checkout"
    );
    let y = store.exchange("b2").expect("read").expect("exchange");
    assert_eq!(
        default_good(&store, dir.path(), bad, &y).expect("good"),
        commits[1],
        "no commit named: the first commit in the 14 days before (10 days ago)"
    );
}
