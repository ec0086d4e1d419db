//! A raw protocol client: sends exact frontend bytes, returns exact backend messages.
//! Used where a driver would hide what travels on the wire (equivalence, pipelining,
//! malformed input).

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message, header included.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg(pub Bytes);

impl Msg {
    /// The tag byte.
    pub fn tag(&self) -> u8 {
        self.0[0]
    }
    /// The body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.0[5..]
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self.body();
        let shown = &body[..body.len().min(80)];
        write!(
            f,
            "{}:{:?}",
            self.tag() as char,
            String::from_utf8_lossy(shown)
        )?;
        if body.len() > 80 {
            write!(f, "…({} bytes)", body.len())?;
        }
        Ok(())
    }
}

/// A connection speaking raw protocol.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    /// Messages received during startup (through the first ReadyForQuery).
    pub startup: Vec<Msg>,
}

/// A `StartupMessage` for protocol 3.0.
pub fn startup_message(user: &str, database: &str) -> Bytes {
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut buf)
        .expect("startup message");
    buf.freeze()
}

impl RawConn {
    /// Opens a TCP connection without speaking.
    pub async fn open(addr: impl tokio::net::ToSocketAddrs) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            buf: BytesMut::new(),
            startup: Vec::new(),
        }
    }

    /// Opens a session with trust authentication and reads through ReadyForQuery.
    pub async fn connect(
        addr: impl tokio::net::ToSocketAddrs,
        user: &str,
        database: &str,
    ) -> RawConn {
        let mut c = Self::open(addr).await;
        c.send(&startup_message(user, database)).await;
        c.startup = c.until_ready(1).await;
        assert!(
            c.startup.iter().any(|m| m.tag() == b'Z'),
            "startup failed: {:?}",
            c.startup
        );
        c
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one message; `None` when the peer closed the connection.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let size = usize::try_from(len).expect("server sent a negative length") + 1;
                if self.buf.len() >= size {
                    return Some(Msg(self.buf.split_to(size).freeze()));
                }
                self.buf.reserve(size - self.buf.len());
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads messages until `n` ReadyForQuery (or a close), returning all of them.
    pub async fn until_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let Some(m) = self.recv().await else { break };
            if m.tag() == b'Z' {
                seen += 1;
            }
            let fatal = m.tag() == b'E' && is_fatal(&m);
            out.push(m);
            if fatal {
                break;
            }
        }
        out
    }

    /// Whether the peer has closed the connection (reads EOF within the timeout).
    pub async fn closed_within(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Whether an `ErrorResponse` is FATAL.
pub fn is_fatal(m: &Msg) -> bool {
    error_field(m, b'V')
        .or_else(|| error_field(m, b'S'))
        .as_deref()
        == Some("FATAL")
}

/// A field of an `ErrorResponse`/`NoticeResponse` (`b'C'` SQLSTATE, `b'M'` message…).
pub fn error_field(m: &Msg, field: u8) -> Option<String> {
    let mut body = m.body();
    while let Some((&t, rest)) = body.split_first() {
        if t == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0)?;
        if t == field {
            return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
        body = &rest[end + 1..];
    }
    None
}

/// Frontend message builders (thin wrappers over `postgres-protocol`).
pub mod fe {
    use super::*;

    fn done(buf: BytesMut) -> Bytes {
        buf.freeze()
    }

    /// `Query`.
    pub fn query(sql: &str) -> Bytes {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b).expect("query");
        done(b)
    }

    /// `Parse` with no declared parameter types.
    pub fn parse(name: &str, sql: &str) -> Bytes {
        let mut b = BytesMut::new();
        frontend::parse(name, sql, std::iter::empty(), &mut b).expect("parse");
        done(b)
    }

    /// `Bind` with text parameters (`None` = NULL) and one result format for all columns.
    pub fn bind(portal: &str, stmt: &str, params: &[Option<&[u8]>], binary_results: bool) -> Bytes {
        let mut b = BytesMut::new();
        let formats: [i16; 0] = [];
        let result_formats: Vec<i16> = if binary_results { vec![1] } else { vec![] };
        let r = frontend::bind(
            portal,
            stmt,
            formats,
            params.iter(),
            |p, buf| match p {
                Some(v) => {
                    buf.put_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            result_formats,
            &mut b,
        );
        if r.is_err() {
            panic!("bind encoding failed");
        }
        done(b)
    }

    /// `Bind` with text parameters and explicit per-column result formats.
    pub fn bind_formats(
        portal: &str,
        stmt: &str,
        params: &[&str],
        result_formats: &[i16],
    ) -> Bytes {
        let mut b = BytesMut::new();
        let formats: [i16; 0] = [];
        let r = frontend::bind(
            portal,
            stmt,
            formats,
            params.iter(),
            |p, buf| {
                buf.put_slice(p.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            result_formats.iter().copied(),
            &mut b,
        );
        if r.is_err() {
            panic!("bind encoding failed");
        }
        done(b)
    }

    /// `Bind` with binary parameters.
    pub fn bind_binary(portal: &str, stmt: &str, params: &[&[u8]], binary_results: bool) -> Bytes {
        let mut b = BytesMut::new();
        let result_formats: Vec<i16> = if binary_results { vec![1] } else { vec![] };
        let r = frontend::bind(
            portal,
            stmt,
            [1i16],
            params.iter(),
            |p, buf| {
                buf.put_slice(p);
                Ok(postgres_protocol::IsNull::No)
            },
            result_formats,
            &mut b,
        );
        if r.is_err() {
            panic!("bind encoding failed");
        }
        done(b)
    }

    /// `Describe` of a statement (`b'S'`) or portal (`b'P'`).
    pub fn describe(kind: u8, name: &str) -> Bytes {
        let mut b = BytesMut::new();
        frontend::describe(kind, name, &mut b).expect("describe");
        done(b)
    }

    /// `Execute` with a row limit (0 = all).
    pub fn execute(portal: &str, max_rows: i32) -> Bytes {
        let mut b = BytesMut::new();
        frontend::execute(portal, max_rows, &mut b).expect("execute");
        done(b)
    }

    /// `Close` of a statement or portal.
    pub fn close(kind: u8, name: &str) -> Bytes {
        let mut b = BytesMut::new();
        frontend::close(kind, name, &mut b).expect("close");
        done(b)
    }

    /// `Sync`.
    pub fn sync() -> Bytes {
        let mut b = BytesMut::new();
        frontend::sync(&mut b);
        done(b)
    }

    /// `Flush`.
    pub fn flush() -> Bytes {
        let mut b = BytesMut::new();
        frontend::flush(&mut b);
        done(b)
    }

    /// `CopyData`.
    pub fn copy_data(data: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'd');
        b.put_i32(data.len() as i32 + 4);
        b.put_slice(data);
        done(b)
    }

    /// `CopyDone`.
    pub fn copy_done() -> Bytes {
        let mut b = BytesMut::new();
        frontend::copy_done(&mut b);
        done(b)
    }

    /// `Terminate`.
    pub fn terminate() -> Bytes {
        let mut b = BytesMut::new();
        frontend::terminate(&mut b);
        done(b)
    }

    /// Concatenates messages into one write.
    pub fn batch(parts: &[Bytes]) -> Bytes {
        let mut b = BytesMut::new();
        for p in parts {
            b.put_slice(p);
        }
        done(b)
    }
}
