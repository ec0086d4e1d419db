//! `flux trace debug` in a pseudo-terminal: a recorded request stepped through with next,
//! prev, expand and quit, as a person at a terminal would.

use std::process::Command;

mod common;

use common::flux;

/// A request of three spans: the root, a failing call with an exception and its stack
/// trace, and the work after it.
const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"transfer"}}]},"scopeSpans":[{"spans":[
{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":"POST /transfers","kind":2,"startTimeUnixNano":"1764300000000000000","endTimeUnixNano":"1764300001100000000","status":{"code":2},"attributes":[{"key":"http.request.method","value":{"stringValue":"POST"}},{"key":"url.path","value":{"stringValue":"/transfers"}},{"key":"http.response.status_code","value":{"intValue":"500"}}]},
{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b8","parentSpanId":"00f067aa0ba902b7","name":"POST","kind":3,"startTimeUnixNano":"1764300000050000000","endTimeUnixNano":"1764300001050000000","status":{"code":2,"message":"fraud check timed out after 1000ms"},"attributes":[{"key":"http.request.method","value":{"stringValue":"POST"}},{"key":"url.full","value":{"stringValue":"http://fraud.internal/check"}}],"events":[{"name":"exception","timeUnixNano":"1764300001050000000","attributes":[{"key":"exception.type","value":{"stringValue":"ETIMEDOUT"}},{"key":"exception.message","value":{"stringValue":"fraud check timed out after 1000ms"}},{"key":"exception.stacktrace","value":{"stringValue":"Error: fraud check timed out after 1000ms\n    at fraudCheck (/srv/transfer/src/fraud.js:31:19)\n    at transfer (/srv/transfer/src/app.js:12:5)"}}]}]},
{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b9","parentSpanId":"00f067aa0ba902b7","name":"render error","kind":1,"startTimeUnixNano":"1764300001060000000","endTimeUnixNano":"1764300001070000000"}
]}]}]}"#;

#[test]
fn trace_debug_steps_through_a_request_in_a_terminal() {
    let tmp = common::private_tempdir();
    let data = tmp.path().join("data");
    let file = tmp.path().join("export.jsonl");
    std::fs::write(&file, EXPORT.replace('\n', "")).expect("export file");
    let ingest = flux()
        .arg("ingest")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("flux ingest");
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );

    // A terminal of a known size (a pseudo-terminal starts with none).
    let script = format!(
        "stty rows 40 cols 120; exec {} trace debug 4bf92f35 --data-dir {}",
        env!("CARGO_BIN_EXE_flux"),
        data.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("TERM", "xterm-256color");
    let mut t = Terminal {
        pty: rexpect::session::spawn_command(cmd, Some(10_000)).expect("spawn in a pty"),
        screen: vt100::Parser::new(
            std::num::NonZeroU16::new(40).expect("rows"),
            std::num::NonZeroU16::new(120).expect("columns"),
            0,
        ),
        raw: String::new(),
    };
    t.shows("Step 1/3");
    t.shows("POST /transfers");
    t.shows("Input");
    t.press("j");
    t.shows("Step 2/3");
    t.shows("POST http://fraud.internal/check");
    t.shows("POST fraud.internal/check timeout after 1s");
    assert!(!t.text().contains("Attributes"));
    t.press("e");
    t.shows("Attributes");
    t.shows("url.full = http://fraud.internal/check");
    t.shows("at fraudCheck (/srv/transfer/src/fraud.js:31:19)");
    t.press("j");
    t.shows("Step 3/3");
    t.shows("render error");
    t.press("j");
    t.shows("Step 3/3");
    t.press("k");
    t.shows("Step 2/3");
    t.press("q");
    t.pty.exp_eof().expect("the debugger ends on q");
    match t.pty.process_mut().wait().expect("exit status") {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("{other:?}"),
    }
}

/// The pseudo-terminal and what it shows, rendered by a terminal emulator (`vt100`).
struct Terminal {
    pty: rexpect::session::PtySession,
    screen: vt100::Parser,
    /// Output not yet searched for cursor-position queries.
    raw: String,
}

impl Terminal {
    fn text(&self) -> String {
        self.screen.screen().contents()
    }

    /// Reads output until the screen shows `what`, answering cursor-position queries
    /// (`ESC [6n`, which ratatui sends before repainting) as a terminal does.
    fn shows(&mut self, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.text().contains(what) {
            match self.pty.try_read() {
                Some(c) => {
                    let mut b = [0u8; 4];
                    self.screen.process(c.encode_utf8(&mut b).as_bytes());
                    self.raw.push(c);
                    if self.raw.ends_with("\x1b[6n") {
                        self.raw.clear();
                        self.pty.send("\x1b[1;1R").expect("answer");
                        self.pty.flush().expect("flush");
                    }
                }
                None => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the screen never showed {what:?}:\n{}",
                        self.text()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    fn press(&mut self, key: &str) {
        self.pty.send(key).expect("key");
        self.pty.flush().expect("flush");
    }
}

#[test]
fn trace_debug_without_a_terminal_says_what_to_use_instead() {
    let tmp = common::private_tempdir();
    let data = tmp.path().join("data");
    let file = tmp.path().join("export.jsonl");
    std::fs::write(&file, EXPORT.replace('\n', "")).expect("export file");
    assert!(flux()
        .arg("ingest")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("flux ingest")
        .status
        .success());
    let out = flux()
        .args(["trace", "debug", "4bf92f35", "--data-dir"])
        .arg(&data)
        .output()
        .expect("flux trace debug");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a terminal") && err.contains("--format json"),
        "{err}"
    );
}
