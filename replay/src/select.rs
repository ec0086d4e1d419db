//! Which recorded requests a replay sends again (`--request`, a window, `--route`,
//! `--failed-only`), and what each original did, to judge its replay against.

use flux_store::{Exchange, Nanos, Outcome as Fate, Store, StoreError};
use serde_json::Value;

use crate::judge::{Outcome, Write};
use crate::report::Skipped;
use crate::run::{Options, ReplayError};
use crate::stub::Matcher;
use flux_read::window::Window;

/// Which recorded requests to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Requests that arrived in this window.
    pub window: Option<Window>,
    /// These requests (ids or unique prefixes), in addition.
    pub requests: Vec<String>,
    /// Only `METHOD /path` (the recorded target's path, or the app's route).
    pub route: Option<(String, String)>,
    /// Only requests whose original failed.
    pub failed_only: bool,
}

/// A recorded request chosen for replay.
pub(crate) struct Chosen {
    pub(crate) id: String,
    pub(crate) exchange: Exchange,
    pub(crate) original: Outcome,
    /// Whether the original's record has the app's own spans (then the replay's should).
    pub(crate) app_spans: bool,
    pub(crate) matcher: Matcher,
}

/// The requests to replay (recorded order), the ones left out, and the restore's point
/// in time.
pub(crate) fn select(
    store: &Store,
    options: &Options,
) -> Result<(Vec<Chosen>, Vec<Skipped>, Nanos), ReplayError> {
    let read = |source| ReplayError::Store {
        path: options.data_dir.clone(),
        source,
    };
    let sel = &options.selection;
    let mut ids: Vec<String> = Vec::new();
    if let Some(w) = sel.window {
        for r in store
            .requests_between(w.from, w.to, usize::MAX)
            .map_err(read)?
        {
            ids.push(r.id);
        }
    }
    for given in &sel.requests {
        ids.push(resolve_request(store, given)?);
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));

    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for id in ids {
        let summary = store.request(&id).map_err(read)?;
        let what = summary
            .as_ref()
            .map(|s| {
                format!(
                    "{} {}",
                    s.method.as_deref().unwrap_or(""),
                    s.path.as_deref().unwrap_or(&s.name)
                )
                .trim()
                .to_string()
            })
            .unwrap_or_default();
        let Some(exchange) = store.exchange(&id).map_err(read)? else {
            skipped.push(Skipped {
                request: id,
                what,
                reason: "no recorded input (it did not come through flux proxy --http-listen)"
                    .into(),
            });
            continue;
        };
        let path = exchange.target.split('?').next().unwrap_or("");
        if let Some((method, route)) = &sel.route {
            let route_matches = path == route
                || summary
                    .as_ref()
                    .and_then(|s| s.path.as_deref())
                    .is_some_and(|p| p == route);
            if !exchange.method.eq_ignore_ascii_case(method) || !route_matches {
                continue;
            }
        }
        let what = format!("{} {}", exchange.method, path);
        if !exchange.replayable() {
            skipped.push(Skipped {
                request: id,
                what,
                reason: "its body was over --http-body-limit or did not arrive whole".into(),
            });
            continue;
        }
        let body = exchange
            .response_complete
            .then_some(&exchange.response_body);
        let original = outcome_of(store, &id, exchange.status, body).map_err(read)?;
        let original = Outcome {
            error: original.error.map(|e| one_line(&e)),
            window: Some((exchange.at, exchange.at + exchange.duration)),
            ..original
        };
        if sel.failed_only && original.passing() {
            continue;
        }
        let spans = store.trace_spans(&id).map_err(read)?;
        chosen.push(Chosen {
            app_spans: summary.as_ref().is_some_and(|s| s.app && s.spans > 1),
            matcher: Matcher::new(&spans, options.config.stubs.clone(), options.max_delay),
            id,
            exchange,
            original,
        });
    }
    chosen.sort_by_key(|c| c.exchange.at);
    if chosen.is_empty() {
        let why = if skipped.is_empty() {
            "no recorded request matches (flux tail --since … lists what was recorded)".to_string()
        } else {
            format!(
                "none of the {} selected requests can be replayed: {}",
                skipped.len(),
                skipped
                    .first()
                    .map(|s| s.reason.as_str())
                    .unwrap_or_default()
            )
        };
        return Err(ReplayError::Nothing(why));
    }
    let start = match sel.window {
        Some(w) => w.from,
        None => chosen.iter().map(|c| c.exchange.at).min().unwrap_or(0),
    };
    Ok((chosen, skipped, start))
}

/// The recorded request an id or unique prefix (`req:` optional) names.
pub fn resolve_request(store: &Store, given: &str) -> Result<String, ReplayError> {
    Ok(flux_read::address::resolve(store, given)?)
}

/// What a request did, from a store: the status, the root cause when it failed, its
/// committed writes, and its JSON response.
pub(crate) fn outcome_of(
    store: &Store,
    id: &str,
    status: Option<u16>,
    body: Option<&Vec<u8>>,
) -> Result<Outcome, StoreError> {
    let why = flux_read::why::why(store, id)?;
    let failed = flux_read::failure::answer_failed(status) || why.root_failed;
    // A handled failure inside a passing request (a retried call) is not the request's.
    let error = failed
        .then(|| why.cause.as_ref().map(|c| c.message.clone()))
        .flatten();
    let writes = why
        .changes
        .iter()
        .filter(|h| h.outcome == Fate::Committed)
        .map(|h| Write {
            table: h.mutation.table.clone(),
            op: h.mutation.op.to_string(),
            row: h
                .mutation
                .after
                .clone()
                .or_else(|| h.mutation.before.clone())
                .unwrap_or(Value::Null),
        })
        .collect();
    let response = body.and_then(|b| serde_json::from_slice(b).ok());
    Ok(Outcome {
        status,
        error,
        writes,
        response,
        window: None,
    })
}

/// Causes in a report are one line of at most this many characters.
pub(crate) const CAUSE_WIDTH: usize = 160;

pub(crate) fn one_line(s: &str) -> String {
    flux_read::cause::one_line(s, CAUSE_WIDTH)
}
