//! How `flux bug bisect` judges a commit: the `--fail-if` language (`status >= 500`,
//! `span.NAME.duration > MS`, `span.NAME.error`, `spans-differ`), what one commit's
//! replay showed ([`Observed`]), and the verdict ([`judge`]), whose write comparison is
//! replay's own ([`crate::judge::compare`]).

use std::fmt;

use flux_read::failure::is_failed;
use flux_read::Tree;
use serde::{Deserialize, Serialize};

use crate::judge::{self, Ignore, Write};

/// A `--fail-if` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CriterionError(String);

/// A comparison in `--fail-if`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

/// `--fail-if`: when a commit counts as bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FailIf {
    /// `status >= 500` (no answer counts as failing).
    Status(Cmp, f64),
    /// `span.NAME.duration > 5000` (ms; a missing span does not match).
    Duration(String, Cmp, f64),
    /// `span.NAME.error`.
    Error(String),
}

const FAIL_IF_SHAPES: &str =
    "expected `status >= 500`, `span.NAME.duration > MS`, `span.NAME.error` or `spans-differ`";

/// `--fail-if spans-differ`: the span tree is part of the criterion.
pub const SPANS_DIFFER: &str = "spans-differ";

/// How commits are judged, from `--fail-if` (absent: the default).
pub fn criterion(fail_if: Option<&str>) -> Result<Criterion, CriterionError> {
    Ok(match fail_if.map(str::trim) {
        None => Criterion::Writes(None),
        Some(SPANS_DIFFER) => Criterion::Spans(None),
        Some(f) => Criterion::FailIf(parse_fail_if(f)?),
    })
}

/// Parses `--fail-if`.
pub fn parse_fail_if(text: &str) -> Result<FailIf, CriterionError> {
    let bad = |why: &str| CriterionError(format!("--fail-if {text:?}: {why}"));
    let t = text.trim();
    let ops = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        ("==", Cmp::Eq),
        ("!=", Cmp::Ne),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
    ];
    let split = ops
        .iter()
        .find_map(|(s, op)| t.split_once(s).map(|(l, r)| (l.trim(), *op, r.trim())));
    match split {
        Some((lhs, op, rhs)) => {
            let value: f64 = rhs
                .parse()
                .map_err(|_| bad(&format!("{rhs:?} is not a number; {FAIL_IF_SHAPES}")))?;
            if lhs == "status" {
                return Ok(FailIf::Status(op, value));
            }
            match lhs.strip_prefix("span.").and_then(|r| r.rsplit_once('.')) {
                Some((name, "duration")) if !name.is_empty() => {
                    Ok(FailIf::Duration(name.to_string(), op, value))
                }
                _ => Err(bad(FAIL_IF_SHAPES)),
            }
        }
        None => match t.strip_prefix("span.").and_then(|r| r.rsplit_once('.')) {
            Some((name, "error")) if !name.is_empty() => Ok(FailIf::Error(name.to_string())),
            _ => Err(bad(FAIL_IF_SHAPES)),
        },
    }
}

/// What one commit's replay of the request showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The status (`None`: no answer).
    pub status: Option<u16>,
    /// Success status and no error on the request.
    pub passing: bool,
    /// The root cause, when failing.
    pub cause: Option<String>,
    /// Every span: name, duration (ns), failed.
    pub spans: Vec<(String, u64, bool)>,
    /// The span tree's shape without sibling order: the path of each span with
    /// application meaning, sorted.
    pub signature: Vec<SpanPath>,
    /// Its committed writes, in order.
    pub writes: Vec<Write>,
}

impl Observed {
    /// From a span tree and the replay's verdict and writes.
    pub fn new(
        tree: &Tree,
        status: Option<u16>,
        passing: bool,
        cause: Option<String>,
        writes: Vec<Write>,
    ) -> Self {
        let walk = tree.walk();
        Observed {
            status,
            passing,
            cause,
            spans: walk
                .iter()
                .filter_map(|&(i, _)| tree.nodes.get(i))
                .map(|n| (n.span.name.clone(), n.span.duration(), is_failed(&n.span)))
                .collect(),
            signature: signature(tree),
            writes,
        }
    }
}

/// The tree's meaningful spans as sorted paths. A span has no application meaning when
/// a framework's instrumentation marks it as middleware or routing (`express.type`,
/// `koa.type`, `fastify.type`, `hapi.type`, `next.span_type` of those kinds; or named
/// `middleware - …` / `router - …` / `request handler - …`): those come and go with
/// framework versions and app set-up, not with what the request does.
fn signature(tree: &Tree) -> Vec<SpanPath> {
    let meaningful = |span: &flux_store::Span| {
        let framework = ["express.type", "koa.type", "fastify.type", "hapi.type"]
            .iter()
            .filter_map(|k| span.attr(k))
            .any(|t| {
                matches!(
                    t,
                    "middleware"
                        | "router"
                        | "request_handler"
                        | "router.middleware"
                        | "hook"
                        | "plugin"
                        | "onion"
                )
            });
        let name = span.name.to_ascii_lowercase();
        let named = [
            "middleware - ",
            "router - ",
            "request handler - ",
            "middleware.",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        !framework && !named
    };
    let by_id: std::collections::HashMap<&str, usize> = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.span.id.as_str(), i))
        .collect();
    let mut paths: Vec<SpanPath> = tree
        .nodes
        .iter()
        .filter(|n| meaningful(&n.span))
        .map(|n| {
            let mut names = vec![n.span.name.clone()];
            let mut parent = n.span.parent.as_deref();
            let mut hops = 0;
            while let Some(i) = parent.and_then(|p| by_id.get(p)) {
                let Some(p) = tree.nodes.get(*i) else { break };
                if meaningful(&p.span) {
                    names.push(p.span.name.clone());
                }
                parent = p.span.parent.as_deref();
                hops += 1;
                if hops > tree.nodes.len() {
                    break; // a cycle in a malformed trace
                }
            }
            names.reverse();
            SpanPath(names)
        })
        .collect();
    paths.sort();
    paths
}

/// How commits are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Criterion {
    /// `--fail-if EXPR`.
    FailIf(FailIf),
    /// The default: a success status, no error on the request, and, once the good end
    /// is known, its committed writes.
    Writes(Option<Vec<Write>>),
    /// `--fail-if spans-differ`: a success status, no error, and, once the good end is
    /// known, its span tree (order and meaningless spans aside).
    Spans(Option<Vec<SpanPath>>),
}

/// A span's place in the tree: its name after those of its meaningful ancestors, from
/// the root. Shown ` > `-joined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpanPath(pub Vec<String>);

impl fmt::Display for SpanPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" > "))
    }
}

/// Whether a commit passes under `criterion`, and why not; writes are compared with
/// `ignore` (`[replay] ignore` and the replay's noise).
pub fn judge(criterion: &Criterion, seen: &Observed, ignore: &Ignore) -> Result<(), String> {
    let failing = || {
        let status = seen
            .status
            .map_or("no answer".to_string(), |s| format!("HTTP {s}"));
        match &seen.cause {
            Some(c) if *c != status => format!("{status}: {c}"),
            _ => status,
        }
    };
    match criterion {
        Criterion::FailIf(f) => {
            let fails = match f {
                FailIf::Status(op, v) => seen.status.is_none_or(|s| op.holds(f64::from(s), *v)),
                FailIf::Duration(name, op, ms) => seen
                    .spans
                    .iter()
                    .any(|(n, d, _)| n == name && op.holds(*d as f64 / 1e6, *ms)),
                FailIf::Error(name) => seen.spans.iter().any(|(n, _, e)| n == name && *e),
            };
            if fails {
                Err(match (f, seen.status) {
                    (FailIf::Status(..), Some(s)) => format!("status {s}"),
                    (FailIf::Status(..), None) => "no answer".into(),
                    (FailIf::Duration(n, ..), _) => format!("span {n} too slow"),
                    (FailIf::Error(n), _) => format!("span {n} failed"),
                })
            } else {
                Ok(())
            }
        }
        Criterion::Writes(good) => {
            if !seen.passing {
                return Err(failing());
            }
            let Some(good) = good else { return Ok(()) };
            let outcome = |writes: &[Write]| judge::Outcome {
                status: seen.status,
                error: None,
                writes: writes.to_vec(),
                response: None,
                window: None,
            };
            match judge::compare(&outcome(good), &outcome(&seen.writes), ignore).first {
                Some(d) => Err(format!("writes differ from the good end's: {d}")),
                None => Ok(()),
            }
        }
        Criterion::Spans(good) => {
            if !seen.passing {
                return Err(failing());
            }
            let Some(good) = good else { return Ok(()) };
            if *good == seen.signature {
                return Ok(());
            }
            let missing = good.iter().find(|p| !seen.signature.contains(p));
            let extra = seen.signature.iter().find(|p| !good.contains(p));
            Err(match (missing, extra) {
                (Some(m), _) => format!("span tree differs from the good end's: no {m}"),
                (None, Some(e)) => format!("span tree differs from the good end's: an extra {e}"),
                (None, None) => {
                    "span tree differs from the good end's in how often a span occurs".into()
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_if_reads_the_three_shapes() {
        assert_eq!(
            parse_fail_if("status >= 500").unwrap(),
            FailIf::Status(Cmp::Ge, 500.0)
        );
        assert_eq!(
            parse_fail_if(" span.payment.charge.duration > 5000 ").unwrap(),
            FailIf::Duration("payment.charge".into(), Cmp::Gt, 5000.0)
        );
        assert_eq!(
            parse_fail_if("span.db.insert(orders).error").unwrap(),
            FailIf::Error("db.insert(orders)".into())
        );
        for bad in [
            "latency > 3",
            "status >= fast",
            "span..error",
            "span.x.colour",
            "span.x.duration",
            "",
        ] {
            let e = parse_fail_if(bad).unwrap_err().to_string();
            assert!(e.contains("--fail-if"), "{bad}: {e}");
        }
    }

    fn seen(status: Option<u16>, passing: bool, spans: &[(&str, u64, bool)]) -> Observed {
        Observed {
            status,
            passing,
            cause: (!passing).then(|| "boom".to_string()),
            spans: spans
                .iter()
                .map(|(n, d, e)| (n.to_string(), *d, *e))
                .collect(),
            signature: spans
                .iter()
                .map(|(n, _, _)| SpanPath(vec![n.to_string()]))
                .collect(),
            writes: Vec::new(),
        }
    }

    #[test]
    fn fail_if_judges_status_durations_and_errors() {
        let slow = seen(Some(201), true, &[("charge", 6_000_000_000, false)]);
        let status = Criterion::FailIf(FailIf::Status(Cmp::Ge, 500.0));
        assert!(judge(&status, &slow, &none()).is_ok());
        assert!(judge(&status, &seen(Some(502), false, &[]), &none()).is_err());
        assert!(
            judge(&status, &seen(None, false, &[]), &none()).is_err(),
            "no answer"
        );
        let duration = Criterion::FailIf(FailIf::Duration("charge".into(), Cmp::Gt, 5000.0));
        assert_eq!(
            judge(&duration, &slow, &none()).unwrap_err(),
            "span charge too slow"
        );
        assert!(judge(
            &duration,
            &seen(Some(201), true, &[("other", 9e9 as u64, false)]),
            &none()
        )
        .is_ok());
        let error = Criterion::FailIf(FailIf::Error("charge".into()));
        assert!(judge(&error, &slow, &none()).is_ok());
        assert!(judge(
            &error,
            &seen(Some(201), true, &[("charge", 1, true)]),
            &none()
        )
        .is_err());
    }

    fn write(table: &str, op: &str, row: serde_json::Value) -> Write {
        Write {
            table: table.into(),
            op: op.into(),
            row,
        }
    }

    #[test]
    fn by_default_a_commit_passes_with_success_and_the_good_ends_writes_noise_aside() {
        let mut good = seen(
            Some(201),
            true,
            &[("gateway", 1, false), ("charge", 1, false)],
        );
        good.writes = vec![write(
            "transfers",
            "INSERT",
            serde_json::json!({"id": 1, "amount": 10, "updated_at": "t1"}),
        )];
        let criterion = Criterion::Writes(Some(good.writes.clone()));
        let ignore = Ignore::new(["transfers.id"]).with_noise(["transfers.updated_at"]);
        assert!(judge(&criterion, &good, &ignore).is_ok());
        assert!(judge(&Criterion::Writes(None), &good, &ignore).is_ok());
        // Instrumentation changes nothing: another span tree, same writes.
        let mut rewired = good.clone();
        rewired.signature = vec![
            SpanPath(vec!["gateway".into()]),
            SpanPath(vec!["middleware - query".into()]),
        ];
        rewired.writes[0].row = serde_json::json!({"id": 9, "amount": 10, "updated_at": "t2"});
        assert!(judge(&criterion, &rewired, &ignore).is_ok());
        let failing = seen(Some(500), false, &[("gateway", 1, true)]);
        assert_eq!(
            judge(&criterion, &failing, &ignore).unwrap_err(),
            "HTTP 500: boom"
        );
        let mut fee = good.clone();
        fee.writes[0].row = serde_json::json!({"id": 1, "amount": 11, "updated_at": "t1"});
        assert_eq!(
            judge(&criterion, &fee, &ignore).unwrap_err(),
            "writes differ from the good end's: write 1 (INSERT transfers): amount: 10 → 11"
        );
    }

    fn node(
        id: &str,
        parent: Option<&str>,
        name: &str,
        attrs: &[(&str, &str)],
    ) -> flux_store::Span {
        flux_store::Span {
            trace: "t".into(),
            id: id.into(),
            parent: parent.map(str::to_string),
            name: name.into(),
            kind: flux_store::SpanKind::Internal,
            start: id.len() as u64,
            end: 10,
            error: None,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            events: Vec::new(),
            service: None,
            source: flux_store::SpanSource::App,
        }
    }

    #[test]
    fn spans_differ_ignores_sibling_order_and_framework_middleware() {
        let tree = |middleware: &[&str], calls: &[&str]| {
            let mut spans = vec![node("r", None, "POST /transfers", &[])];
            for (i, m) in middleware.iter().enumerate() {
                spans.push(node(
                    &format!("m{i}"),
                    Some("r"),
                    &format!("middleware - {m}"),
                    &[("express.type", "middleware")],
                ));
            }
            for (i, c) in calls.iter().enumerate() {
                spans.push(node(&format!("c{i}"), Some("r"), c, &[]));
            }
            Tree::build(spans)
        };
        let good = signature(&tree(
            &["query", "expressInit"],
            &["POST", "pg.query:INSERT"],
        ));
        assert_eq!(
            good.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "POST /transfers",
                "POST /transfers > POST",
                "POST /transfers > pg.query:INSERT"
            ]
        );
        assert_eq!(
            signature(&tree(
                &["expressInit", "query", "jsonParser"],
                &["pg.query:INSERT", "POST"]
            )),
            good,
            "middleware added and reordered, calls reordered: the same tree"
        );
        let criterion = Criterion::Spans(Some(good.clone()));
        let mut changed = seen(Some(201), true, &[]);
        changed.signature = signature(&tree(&[], &["pg.query:INSERT"]));
        assert_eq!(
            judge(&criterion, &changed, &Ignore::default()).unwrap_err(),
            "span tree differs from the good end's: no POST /transfers > POST"
        );
        assert_eq!(criterion_of(Some(" spans-differ ")), Criterion::Spans(None));
        assert_eq!(criterion_of(None), Criterion::Writes(None));
    }

    fn criterion_of(f: Option<&str>) -> Criterion {
        criterion(f).expect("criterion")
    }

    fn none() -> Ignore {
        Ignore::default()
    }
}
