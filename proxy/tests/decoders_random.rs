//! Randomized robustness: arbitrary bytes through the frame cursor, the message decoders
//! and the FIFO must never panic, and the cursor must never report more bytes than it was
//! given. (cargo-fuzz needs a nightly toolchain, which this project's machines do not
//! have; this runs hundreds of thousands of deterministic cases on stable instead.)

use bytes::Bytes;
use flux_proxy::frame::{FrameCursor, Next};
use flux_proxy::message;
use flux_proxy::pipeline::{Pipeline, Request, Statement};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        let interesting = [
            0u8, 0xff, 4, 5, b'Q', b'P', b'B', b'E', b'S', b'D', b'C', b'Z', b'd', b'T',
        ];
        (0..n)
            .map(|_| {
                if self.below(3) == 0 {
                    interesting[self.below(interesting.len())]
                } else {
                    self.next() as u8
                }
            })
            .collect()
    }
}

/// A frame with a plausible header and a random body, so decoders see real tags.
fn framed(rng: &mut Rng, tag: u8) -> Bytes {
    message::encode(tag, &rng.bytes(40))
}

#[test]
fn frame_cursor_never_overruns_or_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        let data = rng.bytes(64);
        let limit = 1 + rng.below(100);
        let mut cursor = FrameCursor::new(limit).with_stream_threshold(rng.below(32));
        let mut at = 0;
        // Feed in random pieces, as a socket would.
        while at < data.len() {
            let end = at + 1 + rng.below(data.len() - at);
            match cursor.next(&data[at..end], |t| t == b'd') {
                Ok(Next::Frame { size, .. }) => {
                    assert!(size >= 5 && at + size <= end);
                    at += size;
                }
                Ok(Next::Stream { n }) => {
                    assert!(n > 0 && at + n <= end);
                    at += n;
                }
                Ok(Next::NeedMore { .. }) if end < data.len() => continue,
                Ok(Next::NeedMore { .. }) | Err(_) => break,
            }
        }
    }
}

#[test]
fn decoders_accept_any_body_without_panicking() {
    let mut rng = Rng(42);
    for _ in 0..200_000 {
        let tag = b"QPBEDCEpTZ"[rng.below(10)];
        let f = framed(&mut rng, tag);
        let _ = message::query_sql(&f);
        let _ = message::parse_message(&f);
        let _ = message::bind_names(&f);
        let _ = message::execute_portal(&f);
        let _ = message::target(&f);
        let _ = message::sasl_mechanism(&f);
        let _ = message::command_tag(&f);
        let _ = message::error_fields(&f);
        // Frames shorter than a header, too.
        let short = Bytes::from(rng.bytes(4));
        let _ = message::query_sql(&short);
        let _ = message::target(&short);
        let _ = message::error_fields(&short);
    }
}

#[test]
fn fifo_survives_any_message_order() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let mut p = Pipeline::new(true);
        for _ in 0..rng.below(60) {
            if rng.below(2) == 0 {
                let t = b"QPBDECSHFdcfX"[rng.below(13)];
                p.on_frontend(t, || match t {
                    b'Q' => Some(Request::Query(Statement::new(None, None))),
                    b'E' => Some(Request::Execute(Statement::new(None, None))),
                    b'P' => Some(Request::Parse),
                    b'B' => Some(Request::Bind),
                    b'D' => Some(Request::Describe(None)),
                    b'C' => Some(Request::Close),
                    b'F' => Some(Request::FunctionCall),
                    _ => None,
                });
            } else {
                let t = b"123nTtCIsEZGHWDANSd"[rng.below(19)];
                let f = framed(&mut rng, t);
                let _ = p.on_backend(t, &f);
            }
            assert!(p.in_flight() <= 60);
        }
    }
}

#[test]
fn capture_decoders_and_analysis_survive_any_input() {
    use flux_proxy::capture::{analysis, plan};
    let mut rng = Rng(0xfeed_beef);
    // Pieces of SQL, glued at random, so the parser sees near-valid statements too.
    let pieces = [
        "insert into t values (1)",
        "update t set a = 1",
        " where ",
        "delete from t",
        " returning *",
        ";",
        "/*",
        "*/",
        "'",
        "\"",
        "$$",
        "--",
        "\n",
        " on conflict (a) do update set b = 2",
        "(",
        ")",
        "é",
        "set local flux.request_id = 'x'",
        "savepoint s",
        "rollback to s",
        "with x as (",
        "select set_config('flux.request_id', 'r', true)",
        "set role ",
        "set session authorization ",
        "reset ",
        "prepare p as ",
        "execute p",
        "create rule r as on insert to t do instead (",
        "begin atomic ",
        " end",
        "do $$ ",
        "(",
        ")",
        "select set_config('role', ",
        "traceparent='00-",
        ",",
    ];
    for _ in 0..3000 {
        let mut sql = String::new();
        for _ in 0..rng.below(8) {
            sql.push_str(pieces[rng.below(pieces.len())]);
        }
        let a = analysis::analyze(&sql);
        for step in &a.steps {
            assert!(step.insert_at <= sql.len() && sql.is_char_boundary(step.insert_at));
        }
        let _ = flux_proxy::capture::request_id::split_trailing_comment(&sql);
        let confirmed = flux_proxy::capture::role::RoleState::new("app");
        let (mut pending, mut unsettled, mut prepared) = (Vec::new(), false, Default::default());
        let mut cx = plan::Context {
            snapshot: None,
            catalog_error: None,
            confirmed: &confirmed,
            pending_roles: &mut pending,
            unsettled: &mut unsettled,
            prepared: &mut prepared,
        };
        let _ = plan::plan(&sql, &a, None, &mut cx);
        let row = framed(&mut rng, b'D');
        let _ = plan::split_data_row(&row, rng.below(2) == 0, rng.below(2) == 0);
        let _ = plan::strip_row_description(&framed(&mut rng, b'T'));
        let _ = plan::key_of(&String::from_utf8_lossy(&rng.bytes(40)), &["id".into()]);
    }
}
