//! Outbound calls during a replay, answered from the original request's CLIENT spans
//! (DESIGN §7 step 4): matched by method + host + path in start order, a repeated call
//! taking the next recording (as Speedscale's instance counter does); the recorded status
//! after the recorded duration (capped); a recorded failure without a status (timeout,
//! reset) reproduced as such. No recording: a `[stubs]` fixture, else a miss (502).
//!
//! This module decides the answer; the stub's HTTP/CONNECT server plays it.

use std::time::Duration;

use flux_store::{Span, SpanKind};

use crate::config::StubFixture;

/// One outbound call the original request made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Method, upper case.
    pub method: String,
    /// Host, lower case, without port.
    pub host: String,
    /// Path, without query.
    pub path: String,
    /// The status it got, if it got one.
    pub status: Option<u16>,
    /// How long it took.
    pub duration: Duration,
    /// How it failed without a status.
    pub failure: Option<Failure>,
}

/// A call that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It timed out (the stub holds the connection past the caller's patience).
    Timeout,
    /// The connection failed (the stub resets it).
    Reset,
}

/// What the stub does with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The recorded status, after the recorded delay. Spans keep no bodies: the body is
    /// the `[stubs]` fixture's for the same call when there is one, else empty.
    Recorded {
        /// Status.
        status: u16,
        /// Wait before answering.
        delay: Duration,
        /// The fixture's body, if a fixture names this call.
        body: Option<String>,
    },
    /// The recorded failure: a reset after the recorded delay; a timeout held unanswered
    /// for `delay` (`--max-delay`: the call never got an answer, so however long the app
    /// now waits, it waits in vain, up to that cap).
    Fail {
        /// Which.
        failure: Failure,
        /// Wait before failing.
        delay: Duration,
    },
    /// A `[stubs]` fixture.
    Fixture {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Nothing recorded and no fixture: 502, and listed in the report.
    Miss,
}

/// A connection the sandbox's stub refused: it was neither HTTP nor TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The name the app looked up for it, else the address it connected to.
    pub host: String,
    /// The port it connected to.
    pub port: u16,
    /// Why it was refused.
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "TCP to [{}]:{}: {}", self.host, self.port, self.why)
        } else {
            write!(f, "TCP to {}:{}: {}", self.host, self.port, self.why)
        }
    }
}

/// The answers for one replayed request.
#[derive(Debug, Clone)]
pub struct Matcher {
    recordings: Vec<(Recording, bool)>,
    fixtures: Vec<StubFixture>,
    max_delay: Duration,
    /// Calls that had no answer: `METHOD host/path`.
    pub misses: Vec<String>,
    /// Connections the sandbox's stub refused (not HTTP: SMTP, Redis, another database…).
    pub refused: Vec<Refusal>,
    /// Calls answered with a recorded status but no body (spans keep none, and no
    /// `[stubs]` fixture gave one): `METHOD host/path`.
    pub bodiless: Vec<String>,
}

impl Matcher {
    /// Answers from the original request's spans (its CLIENT spans with HTTP attributes,
    /// in start order), then `fixtures`; delays capped at `max_delay`.
    pub fn new(spans: &[Span], fixtures: Vec<StubFixture>, max_delay: Duration) -> Self {
        let mut calls: Vec<&Span> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client)
            .collect();
        calls.sort_by_key(|s| s.start);
        Self {
            recordings: calls
                .into_iter()
                .filter_map(recording)
                .map(|r| (r, false))
                .collect(),
            fixtures,
            max_delay,
            misses: Vec::new(),
            refused: Vec::new(),
            bodiless: Vec::new(),
        }
    }

    /// The answer for a call; consumes the recording it uses.
    pub fn answer(&mut self, method: &str, host: &str, path: &str) -> Answer {
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        let path = path.split('?').next().unwrap_or(path);
        let found = self.recordings.iter_mut().find(|(r, used)| {
            !used && r.method.eq_ignore_ascii_case(method) && r.host == host && r.path == path
        });
        let fixture = self.fixtures.iter().find(|f| {
            f.method.eq_ignore_ascii_case(method)
                && (f.host == "*" || f.host == host)
                && f.path == path
        });
        if let Some((r, used)) = found {
            *used = true;
            let delay = r.duration.min(self.max_delay);
            match (r.status, r.failure) {
                (Some(status), _) => {
                    if fixture.is_none() {
                        self.bodiless
                            .push(format!("{} {host}{path}", method.to_ascii_uppercase()));
                    }
                    return Answer::Recorded {
                        status,
                        delay,
                        body: fixture.map(|f| f.body.clone()),
                    };
                }
                (None, Some(Failure::Timeout)) => {
                    return Answer::Fail {
                        failure: Failure::Timeout,
                        delay: self.max_delay,
                    }
                }
                (None, Some(failure)) => return Answer::Fail { failure, delay },
                // Recorded without a status or a failure: nothing to reproduce.
                (None, None) => {}
            }
        }
        if let Some(f) = fixture {
            return Answer::Fixture {
                status: f.status,
                body: f.body.clone(),
            };
        }
        self.misses
            .push(format!("{} {host}{path}", method.to_ascii_uppercase()));
        Answer::Miss
    }
}

/// An outbound HTTP call, from a CLIENT span's attributes (old and new semantic-convention
/// names).
fn recording(s: &Span) -> Option<Recording> {
    let method = s.attr_any(&["http.request.method", "http.method"])?;
    let (host, path) = match s.attr_any(&["url.full", "http.url"]) {
        Some(url) => host_and_path(url)?,
        None => (
            s.attr_any(&["server.address", "net.peer.name"])?
                .to_string(),
            s.attr_any(&["url.path", "http.target"])
                .unwrap_or("/")
                .to_string(),
        ),
    };
    let status = s
        .attr_any(&["http.response.status_code", "http.status_code"])
        .and_then(|v| v.parse().ok());
    // No status and a failure recorded: the call never got an answer.
    let failure = (status.is_none() && (s.error.is_some() || !s.events.is_empty())).then(|| {
        if mentions_timeout(s) {
            Failure::Timeout
        } else {
            Failure::Reset
        }
    });
    Some(Recording {
        method: method.to_ascii_uppercase(),
        host: host.split(':').next().unwrap_or(&host).to_ascii_lowercase(),
        path: path.split('?').next().unwrap_or(&path).to_string(),
        status,
        duration: Duration::from_nanos(s.duration()),
        failure,
    })
}

fn mentions_timeout(s: &Span) -> bool {
    let says = flux_read::failure::is_timeout;
    s.error.as_deref().is_some_and(says)
        || s.events
            .iter()
            .flat_map(|e| e.attributes.iter())
            .any(|(_, v)| says(v))
}

/// The host (without port) and path of an absolute URL.
fn host_and_path(url: &str) -> Option<(String, String)> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str().filter(|h| !h.is_empty())?;
    Some((host.to_string(), u.path().to_string()))
}
