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

/// The answers for one replayed request.
#[derive(Debug, Clone)]
pub struct Matcher {
    recordings: Vec<(Recording, bool)>,
    fixtures: Vec<StubFixture>,
    max_delay: Duration,
    /// Calls that had no answer: `METHOD host/path`.
    pub misses: Vec<String>,
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
                    return Answer::Recorded {
                        status,
                        delay,
                        body: fixture.map(|f| f.body.clone()),
                    }
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
    let says = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.contains("timeout") || t.contains("timed out")
    };
    s.error.as_deref().is_some_and(says)
        || s.events
            .iter()
            .flat_map(|e| e.attributes.iter())
            .any(|(_, v)| says(v))
}

fn host_and_path(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| (host.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_store::{SpanEvent, SpanSource};

    fn client(start: u64, ms: u64, attrs: &[(&str, &str)], error: Option<&str>) -> Span {
        Span {
            trace: "t".into(),
            id: format!("{start:016x}"),
            parent: None,
            name: "POST".into(),
            kind: SpanKind::Client,
            start,
            end: start + ms * 1_000_000,
            error: error.map(str::to_string),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            events: Vec::new(),
            service: None,
            source: SpanSource::App,
        }
    }

    #[test]
    fn repeated_calls_take_recordings_in_start_order() {
        let spans = vec![
            client(
                20,
                30,
                &[
                    ("http.method", "POST"),
                    ("http.url", "http://pay.example.com:8080/charge?x=1"),
                    ("http.status_code", "502"),
                ],
                None,
            ),
            client(
                10,
                5,
                &[
                    ("http.request.method", "POST"),
                    ("url.full", "https://pay.example.com/charge"),
                    ("http.response.status_code", "200"),
                ],
                None,
            ),
        ];
        let mut m = Matcher::new(&spans, Vec::new(), Duration::from_secs(30));
        let ms = Duration::from_millis;
        assert_eq!(
            m.answer("post", "PAY.example.com:443", "/charge"),
            Answer::Recorded {
                status: 200,
                delay: ms(5),
                body: None,
            }
        );
        assert_eq!(
            m.answer("POST", "pay.example.com", "/charge?y"),
            Answer::Recorded {
                status: 502,
                delay: ms(30),
                body: None,
            }
        );
        assert_eq!(m.answer("POST", "pay.example.com", "/charge"), Answer::Miss);
        assert_eq!(m.misses, vec!["POST pay.example.com/charge".to_string()]);
    }

    #[test]
    fn failures_without_status_are_reproduced_and_delays_capped() {
        let mut timeout = client(
            1,
            10_000,
            &[
                ("http.method", "POST"),
                ("server.address", "pay"),
                ("url.path", "/charge"),
            ],
            Some("ReadTimeout"),
        );
        timeout.events.push(SpanEvent {
            name: "exception".into(),
            at: 2,
            attributes: vec![(
                "exception.message".into(),
                "Read timed out. (read timeout=1)".into(),
            )],
        });
        let reset = client(
            2,
            1,
            &[
                ("http.method", "GET"),
                ("server.address", "api"),
                ("url.path", "/x"),
            ],
            Some("Connection reset by peer"),
        );
        let mut m = Matcher::new(&[timeout, reset], Vec::new(), Duration::from_secs(2));
        assert_eq!(
            m.answer("POST", "pay", "/charge"),
            Answer::Fail {
                failure: Failure::Timeout,
                delay: Duration::from_secs(2)
            }
        );
        assert!(matches!(
            m.answer("GET", "api", "/x"),
            Answer::Fail {
                failure: Failure::Reset,
                ..
            }
        ));
    }

    #[test]
    fn a_recorded_status_takes_its_body_from_a_fixture_for_the_same_call() {
        let spans = vec![client(
            1,
            40,
            &[
                ("http.method", "POST"),
                ("http.url", "http://127.0.0.1:9100/charge"),
                ("http.status_code", "200"),
            ],
            None,
        )];
        let fixture = StubFixture {
            method: "POST".into(),
            host: "*".into(),
            path: "/charge".into(),
            status: 200,
            body: r#"{"id": "ch_stub"}"#.into(),
        };
        let mut m = Matcher::new(&spans, vec![fixture], Duration::from_secs(30));
        assert_eq!(
            m.answer("POST", "127.0.0.1:9100", "/charge"),
            Answer::Recorded {
                status: 200,
                delay: Duration::from_millis(40),
                body: Some(r#"{"id": "ch_stub"}"#.into()),
            }
        );
        // The recording is used up; the wildcard fixture answers the retry.
        assert!(matches!(
            m.answer("POST", "10.0.0.1", "/charge"),
            Answer::Fixture { status: 200, .. }
        ));
    }

    #[test]
    fn fixtures_answer_what_was_not_recorded() {
        let fixture = StubFixture {
            method: "POST".into(),
            host: "payments.example.com".into(),
            path: "/charge".into(),
            status: 200,
            body: "{}".into(),
        };
        let mut m = Matcher::new(&[], vec![fixture], Duration::from_secs(30));
        assert_eq!(
            m.answer("POST", "payments.example.com", "/charge"),
            Answer::Fixture {
                status: 200,
                body: "{}".into()
            }
        );
        assert!(m.misses.is_empty());
    }
}
