//! Decoding the few messages the proxy needs to understand, and encoding the few it sends.
//!
//! Backend layouts come from `postgres-protocol`. It has no decoder for frontend messages,
//! and the proxy needs only names and SQL text out of five of them, so those are read here
//! with a zero-copy cursor over the frame (`Bytes` slices share the frame's buffer, which
//! matters on the per-message path). Every accessor is bounds-checked: these bytes come
//! from a socket.

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend;

/// Frontend message tags (protocol 3.0 / 3.2).
pub mod tag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// Backend message tags.
pub mod backend_tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NO_DATA: u8 = b'n';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// A body that did not hold what its tag promised.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what} message")]
pub struct Malformed {
    /// Which message it was.
    pub what: &'static str,
}

/// Zero-copy reader over a message body: everything it returns borrows the frame.
struct Cursor<'a> {
    body: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(frame: &'a [u8], what: &'static str) -> Self {
        Self {
            body: frame.get(crate::frame::HEADER_LEN..).unwrap_or_default(),
            pos: 0,
            what,
        }
    }

    fn err(&self) -> Malformed {
        Malformed { what: self.what }
    }

    /// A NUL-terminated string, without its terminator.
    fn cstr(&mut self) -> Result<&'a [u8], Malformed> {
        let rest = self.body.get(self.pos..).ok_or_else(|| self.err())?;
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err())?;
        let s = rest.get(..nul).ok_or_else(|| self.err())?;
        self.pos += nul + 1;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        let b = *self.body.get(self.pos).ok_or_else(|| self.err())?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.err())?;
        let s = self
            .body
            .get(self.pos..end)
            .ok_or(Malformed { what: self.what })?;
        self.pos = end;
        Ok(s)
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&self) -> &'a [u8] {
        self.body.get(self.pos..).unwrap_or_default()
    }
}

/// `Parse` with its SQL text replaced (name and parameter types kept).
pub fn parse_with_sql(frame: &[u8], sql: &str) -> Result<Bytes, Malformed> {
    let mut c = Cursor::new(frame, "Parse");
    let name = c.cstr()?;
    c.cstr()?;
    let rest = c.rest();
    let mut body = Vec::with_capacity(name.len() + sql.len() + rest.len() + 2);
    body.extend_from_slice(name);
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(rest);
    Ok(encode(tag::PARSE, &body))
}

/// `Query` carrying `sql`.
pub fn query(sql: &str) -> Bytes {
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    encode(tag::QUERY, &body)
}

/// A `Bind`'s parameter `n` (1-based) as bytes, when it is not NULL.
pub fn bind_param(frame: &[u8], n: usize) -> Result<Option<&[u8]>, Malformed> {
    let mut c = Cursor::new(frame, "Bind");
    c.cstr()?;
    c.cstr()?;
    let formats = usize::try_from(c.i16()?).map_err(|_| c.err())?;
    c.take(formats * 2)?;
    let params = usize::try_from(c.i16()?).map_err(|_| c.err())?;
    for i in 1..=params {
        let len = c.i32()?;
        let value = if len >= 0 {
            Some(c.take(len as usize)?)
        } else {
            None
        };
        if i == n {
            return Ok(value);
        }
    }
    Ok(None)
}

/// A `Bind`'s result-format codes, and where their count starts in the body.
pub fn bind_result_formats(frame: &[u8]) -> Result<(usize, Vec<i16>), Malformed> {
    let mut c = Cursor::new(frame, "Bind");
    c.cstr()?;
    c.cstr()?;
    let n = usize::try_from(c.i16()?).map_err(|_| c.err())?;
    c.take(n * 2)?;
    let params = c.i16()?;
    for _ in 0..params {
        let len = c.i32()?;
        if len > 0 {
            c.take(len as usize)?;
        }
    }
    let at = c.pos;
    let n = usize::try_from(c.i16()?).map_err(|_| c.err())?;
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(c.i16()?);
    }
    Ok((at, codes))
}

/// A `Bind` whose per-column result formats get `extra` more text (0) codes, for the
/// columns capture appended. `codes` and `at` come from [`bind_result_formats`].
pub fn bind_with_extra_formats(frame: &[u8], at: usize, codes: &[i16], extra: usize) -> Bytes {
    let body = frame.get(crate::frame::HEADER_LEN..).unwrap_or_default();
    let head = body.get(..at).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + extra * 2);
    out.extend_from_slice(head);
    out.extend_from_slice(&((codes.len() + extra) as i16).to_be_bytes());
    for c in codes {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend(std::iter::repeat_n([0u8, 0u8], extra).flatten());
    encode(tag::BIND, &out)
}

/// `Query`: the SQL text of a simple-protocol query.
pub fn query_sql(frame: &[u8]) -> Result<&[u8], Malformed> {
    Cursor::new(frame, "Query").cstr()
}

/// `Parse`: statement name and SQL text.
pub fn parse_message(frame: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut c = Cursor::new(frame, "Parse");
    let name = c.cstr()?;
    let sql = c.cstr()?;
    Ok((name, sql))
}

/// `Bind`: portal name and statement name (parameters are not decoded here).
pub fn bind_names(frame: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut c = Cursor::new(frame, "Bind");
    let portal = c.cstr()?;
    let statement = c.cstr()?;
    Ok((portal, statement))
}

/// `Execute`: the portal name.
pub fn execute_portal(frame: &[u8]) -> Result<&[u8], Malformed> {
    Cursor::new(frame, "Execute").cstr()
}

/// `Close` and `Describe`: `b'S'` (statement) or `b'P'` (portal), and the name.
pub fn target(frame: &[u8]) -> Result<(u8, &[u8]), Malformed> {
    let mut c = Cursor::new(frame, "Close/Describe");
    let kind = c.u8()?;
    let name = c.cstr()?;
    Ok((kind, name))
}

/// `SASLInitialResponse` (a `p` message answering `AuthenticationSASL`): the mechanism.
pub fn sasl_mechanism(frame: &[u8]) -> Result<&[u8], Malformed> {
    Cursor::new(frame, "SASLInitialResponse").cstr()
}

/// The fields of an `ErrorResponse` that the proxy acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Non-localized severity (`V`) when sent, else the localized one (`S`).
    pub severity: String,
    /// SQLSTATE (`C`).
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
}

impl ErrorFields {
    /// Whether the server ends the session after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

/// Decodes an `ErrorResponse` (or `NoticeResponse`) frame, header included.
/// Called only for error frames, which are rare; it copies the frame to use the parser.
pub fn error_fields(frame: &[u8]) -> Result<ErrorFields, Malformed> {
    let malformed = || Malformed {
        what: "ErrorResponse",
    };
    let mut buf = BytesMut::from(frame);
    let msg = backend::Message::parse(&mut buf)
        .map_err(|_| malformed())?
        .ok_or_else(malformed)?;
    let mut fields = match &msg {
        backend::Message::ErrorResponse(body) => body.fields(),
        backend::Message::NoticeResponse(body) => body.fields(),
        _ => return Err(malformed()),
    };
    let mut out = ErrorFields::default();
    let mut localized_severity = String::new();
    use fallible_iterator::FallibleIterator;
    while let Some(field) = fields.next().map_err(|_| malformed())? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => out.severity = value,
            b'S' => localized_severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    if out.severity.is_empty() {
        out.severity = localized_severity;
    }
    Ok(out)
}

/// The command tag of a `CommandComplete` frame (header included).
pub fn command_tag(frame: &[u8]) -> Result<&[u8], Malformed> {
    let body = frame.get(crate::frame::HEADER_LEN..).unwrap_or_default();
    let nul = body.iter().position(|&b| b == 0).ok_or(Malformed {
        what: "CommandComplete",
    })?;
    Ok(&body[..nul])
}

/// SQLSTATE codes the proxy itself sends.
pub mod sqlstate {
    /// `protocol_violation`: malformed or oversized frames.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `connection_failure`: the upstream could not be reached or went away.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `admin_shutdown`: the proxy is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `feature_not_supported`.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
}

/// Encodes an `ErrorResponse` the way PostgreSQL does (both `S` and `V` severities).
pub fn error_response(severity: &str, code: &str, message: &str) -> Bytes {
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(field);
        // A NUL inside would end the field early; our messages never hold one, but be safe.
        body.put_slice(value.replace('\0', " ").as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    encode(backend_tag::ERROR_RESPONSE, &body)
}

/// Frames `body` as a message of type `tag` (header included).
pub fn encode(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + crate::frame::HEADER_LEN);
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out.freeze()
}

/// Encodes a FATAL `ErrorResponse`.
pub fn fatal(code: &str, message: &str) -> Bytes {
    error_response("FATAL", code, message)
}

/// The `Terminate` message.
pub fn terminate() -> Bytes {
    Bytes::from_static(&[tag::TERMINATE, 0, 0, 0, 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Bytes {
        encode(tag, body)
    }

    #[test]
    fn decodes_frontend_messages() {
        let p = frame(b'P', b"s1\0select $1\0\0\0");
        let (name, sql) = parse_message(&p).unwrap();
        assert_eq!((name, sql), (&b"s1"[..], &b"select $1"[..]));
        let b = frame(b'B', b"p\0s1\0\0\0\0\0\0\0");
        let (portal, stmt) = bind_names(&b).unwrap();
        assert_eq!((portal, stmt), (&b"p"[..], &b"s1"[..]));
        let d = frame(b'D', b"Sname\0");
        assert_eq!(target(&d).unwrap(), (b'S', &b"name"[..]));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"abc", b"S"] {
            let f = frame(b'P', body);
            assert!(parse_message(&f).is_err());
            assert!(target(&f).is_err());
        }
        assert!(query_sql(&Bytes::from_static(b"Q")).is_err());
    }

    #[test]
    fn error_response_round_trips() {
        let f = fatal("08P01", "bad frame");
        let e = error_fields(&f).unwrap();
        assert_eq!(e.code, "08P01");
        assert_eq!(e.message, "bad frame");
        assert!(e.is_fatal());
        assert!(error_fields(b"E\0\0\0\x05\0").unwrap().code.is_empty());
        assert!(error_fields(b"E\0\0\0\x04").is_err());
        assert!(error_fields(b"E\0\0\0\x05x").is_err());
    }
}
