//! Outbound-call matching (`flux_replay::stub::Matcher`): recordings from CLIENT spans by
//! method, host and path in start order, failures reproduced, delays capped, fixtures.

use std::time::Duration;

use flux_replay::config::StubFixture;
use flux_replay::stub::{Answer, Failure, Matcher};
use flux_store::SpanEvent;

mod common;

use common::client;

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
