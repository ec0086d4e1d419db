//! `--on-store-failure=reject`: refusing writes the store cannot keep (DESIGN §3).
//!
//! A refused write must fail exactly as a failing statement would, so the server's
//! transaction state stays the client's: the proxy sends the server a statement that
//! raises the refusal (SQLSTATE 53000, insufficient resources) in its place, and the
//! server answers — and aborts an open transaction — as it would for any error.
//!
//! - A simple `Query` holding a write is replaced whole by the raising `DO` block.
//! - An `Execute` of a write becomes `Close`/`Parse`/`Bind`/`Execute` of the raising
//!   statement under names no app uses; the reader drops the three acknowledgements
//!   (`CloseComplete`, `ParseComplete`, `BindComplete`) the client did not ask for, and
//!   the client gets the error where its `Execute`'s answer would be.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::{self, tag};

/// The statement and portal name of an injected refusal.
const NAME: &[u8] = b"__flux_refused";

/// How many acknowledgements an injected extended-protocol refusal draws.
pub(crate) const ACKS: u8 = 3;

/// SQL raising the refusal, with `why` (the store's state) in the message.
pub fn statement(why: &str) -> String {
    let message = format!(
        "flux: write refused: the record of it cannot be kept ({why}); flux proxy runs with --on-store-failure=reject"
    )
    // Inside a dollar-quoted body, in a single-quoted literal.
    .replace('$', "")
    .replace('\'', "''");
    format!(
        "DO $flux$BEGIN RAISE EXCEPTION USING ERRCODE = '53000', MESSAGE = '{message}', \
         HINT = 'Free the store (disk space, permissions); writes are accepted again once it recovers.'; END$flux$"
    )
}

/// The `Query` that replaces a simple query holding a write.
pub fn query(why: &str) -> Bytes {
    message::query(&statement(why))
}

/// The frames that replace an `Execute` of a write.
pub fn execute(why: &str) -> Bytes {
    let sql = statement(why);
    let mut out = BytesMut::new();
    let mut close = Vec::new();
    close.push(b'S');
    cstr(&mut close, NAME);
    out.put(message::encode(tag::CLOSE, &close));
    let mut parse = Vec::new();
    cstr(&mut parse, NAME);
    cstr(&mut parse, sql.as_bytes());
    parse.put_i16(0);
    out.put(message::encode(tag::PARSE, &parse));
    let mut bind = Vec::new();
    cstr(&mut bind, NAME);
    cstr(&mut bind, NAME);
    bind.put_i16(0); // parameter formats
    bind.put_i16(0); // parameters
    bind.put_i16(0); // result formats
    out.put(message::encode(tag::BIND, &bind));
    let mut execute = Vec::new();
    cstr(&mut execute, NAME);
    execute.put_i32(0);
    out.put(message::encode(tag::EXECUTE, &execute));
    out.freeze()
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_quotes_what_it_is_told() {
        let sql = statement("it's $flux$ broken");
        assert!(sql.contains("it''s flux broken"), "{sql}");
        assert_eq!(sql.matches("$flux$").count(), 2);
    }

    #[test]
    fn an_execute_becomes_four_well_formed_frames() {
        let frames = execute("disk full");
        let mut cursor = crate::frame::FrameCursor::new(1 << 20);
        let mut tags = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            match cursor.next(&frames[at..], |_| false).expect("frame") {
                crate::frame::Next::Frame { tag, size } => {
                    tags.push(tag);
                    at += size;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(tags, [tag::CLOSE, tag::PARSE, tag::BIND, tag::EXECUTE]);
    }
}
