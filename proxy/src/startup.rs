//! The startup phase: `SSLRequest`/`GSSENCRequest` negotiation with the client, the
//! `StartupMessage` or `CancelRequest`, and the authentication exchange relayed verbatim
//! between client and server until the first `ReadyForQuery`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::SessionError;
use crate::frame::{self, FrameError, MAX_STARTUP_PACKET};
use crate::message::{self, backend_tag as bt};
use crate::stream::Stream;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// What the client opened the connection for.
pub enum Opening {
    /// A `CancelRequest`, whole as received (keys are 4–256 bytes in protocol 3.2).
    Cancel(Bytes),
    /// A regular session with these startup parameters.
    Session(StartupMessage),
    /// The client closed the connection before sending anything.
    Closed,
}

/// A `StartupMessage`: protocol version and parameters, in the client's order.
#[derive(Debug, Clone)]
pub struct StartupMessage {
    /// Protocol version (`3 << 16 | minor`).
    pub version: u32,
    /// `(name, value)` pairs.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    fn parse(version: u32, body: &[u8]) -> Result<Self, SessionError> {
        let bad = || SessionError::Protocol("invalid startup packet layout".into());
        let mut params = Vec::new();
        let mut parts = body.split(|&b| b == 0);
        loop {
            let name = parts.next().ok_or_else(bad)?;
            if name.is_empty() {
                break; // the terminating NUL
            }
            let value = parts.next().ok_or_else(bad)?;
            params.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        Ok(Self { version, params })
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a parameter the client left out.
    pub fn set_default(&mut self, name: &str, value: &str) {
        if self.get(name).is_none() {
            self.params.push((name.to_string(), value.to_string()));
        }
    }

    /// A replication connection (physical or logical walsender).
    pub fn is_replication(&self) -> bool {
        self.get("replication").is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "false" | "off" | "no" | "0"
            )
        })
    }

    /// The packet to send upstream.
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        body.put_u32(self.version);
        for (k, v) in &self.params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_u32(body.len() as u32 + 4);
        out.put_slice(&body);
        out.freeze()
    }
}

/// Reads one length-prefixed startup-phase packet; `None` if the peer closed first.
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<Bytes>, SessionError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(SessionError::ClientIo(e)),
    }
    let n = i32::from_be_bytes(len);
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&n) {
        return Err(SessionError::ClientFrame(FrameError::InvalidStartupLength(
            i64::from(n),
        )));
    }
    let mut packet = BytesMut::zeroed(n as usize);
    packet[..4].copy_from_slice(&len);
    s.read_exact(&mut packet[4..])
        .await
        .map_err(SessionError::ClientIo)?;
    Ok(Some(packet.freeze()))
}

/// Runs the client side of startup up to the `StartupMessage` or `CancelRequest`.
/// `client` starts as the plain connection and is upgraded in place when TLS is
/// negotiated; it is left `None` only if a TLS handshake failed midway.
pub async fn accept(
    client: &mut Option<Stream>,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Opening, SessionError> {
    let mut ssl_answered = false;
    let mut gss_answered = false;
    loop {
        let stream = client
            .as_mut()
            .ok_or(SessionError::ClientTls("connection lost".into()))?;
        let Some(packet) = read_packet(stream).await? else {
            return Ok(Opening::Closed);
        };
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST if !ssl_answered && !stream.is_tls() => {
                ssl_answered = true;
                match (tls, client.take()) {
                    (Some(acceptor), Some(Stream::Plain(mut tcp))) => {
                        tcp.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                        // read_packet reads exactly one packet, so no plaintext the
                        // client sent after SSLRequest can leak into the TLS session.
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(|e| SessionError::ClientTls(e.to_string()))?;
                        *client = Some(Stream::Tls(Box::new(tls.into())));
                    }
                    (_, Some(mut s)) => {
                        s.write_all(b"N").await.map_err(SessionError::ClientIo)?;
                        *client = Some(s);
                    }
                    (_, None) => return Err(SessionError::ClientTls("connection lost".into())),
                }
            }
            GSSENC_REQUEST if !gss_answered && !stream.is_tls() => {
                gss_answered = true;
                stream
                    .write_all(b"N")
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            CANCEL_REQUEST => return Ok(Opening::Cancel(packet)),
            v if v >> 16 == 3 => {
                return Ok(Opening::Session(StartupMessage::parse(v, &packet[8..])?))
            }
            SSL_REQUEST | GSSENC_REQUEST => {
                return Err(SessionError::Protocol(
                    "duplicate encryption request".into(),
                ))
            }
            v => {
                return Err(SessionError::Protocol(format!(
                    "unsupported frontend protocol {}.{}: flux supports protocol 3",
                    v >> 16,
                    v & 0xffff
                )))
            }
        }
    }
}

/// Reads one whole regular frame (header included) during the startup phase.
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S, limit: usize) -> Result<Bytes, ReadFailure> {
    let mut header = [0u8; frame::HEADER_LEN];
    s.read_exact(&mut header).await.map_err(ReadFailure::Io)?;
    let (_, size) = frame::parse_header(&header, limit)
        .map_err(ReadFailure::Frame)?
        .ok_or(ReadFailure::Frame(FrameError::Truncated))?;
    let mut buf = BytesMut::zeroed(size);
    buf[..frame::HEADER_LEN].copy_from_slice(&header);
    s.read_exact(&mut buf[frame::HEADER_LEN..])
        .await
        .map_err(ReadFailure::Io)?;
    Ok(buf.freeze())
}

enum ReadFailure {
    Io(std::io::Error),
    Frame(FrameError),
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// How authentication ended.
pub enum AuthOutcome {
    /// The server sent `ReadyForQuery`; the session is open.
    Ready,
    /// The server refused (its `ErrorResponse` was passed to the client) or the client quit.
    Ended,
}

/// Relays the authentication exchange until the server's first `ReadyForQuery`.
/// Messages pass verbatim in both directions: the proxy never sees a password it could
/// use, and cleartext, MD5 and SCRAM all work end to end.
pub async fn authenticate(
    client: &mut Stream,
    server: &mut Stream,
    startup: &StartupMessage,
    limit: usize,
    channel_binding_hint: &Arc<str>,
) -> Result<AuthOutcome, SessionError> {
    write(server, &startup.encode())
        .await
        .map_err(SessionError::ServerIo)?;
    loop {
        let frame = read_frame(server, limit).await.map_err(|e| match e {
            ReadFailure::Io(e) => SessionError::ServerIo(e),
            ReadFailure::Frame(e) => SessionError::ServerFrame(e),
        })?;
        let tag = frame[0];
        let frame = if tag == bt::AUTHENTICATION && !client.is_tls() {
            without_channel_binding(frame)
        } else {
            frame
        };
        write(client, &frame)
            .await
            .map_err(SessionError::ClientIo)?;
        match tag {
            bt::READY_FOR_QUERY => return Ok(AuthOutcome::Ready),
            bt::ERROR_RESPONSE => return Ok(AuthOutcome::Ended),
            bt::AUTHENTICATION => {
                let code = frame
                    .get(5..9)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(SessionError::ServerFrame(FrameError::Truncated))?;
                // Cleartext, MD5, GSS, GSS-continue, SSPI, SASL, SASL-continue await an answer.
                if !matches!(code, 3 | 5 | 7 | 8 | 9 | 10 | 11) {
                    continue;
                }
                let answer = match read_frame(client, limit).await {
                    Ok(f) => f,
                    Err(ReadFailure::Io(_)) => return Ok(AuthOutcome::Ended),
                    Err(ReadFailure::Frame(e)) => return Err(SessionError::ClientFrame(e)),
                };
                if code == 10
                    && answer[0] == message::tag::PASSWORD
                    && message::sasl_mechanism(&answer).is_ok_and(|m| m.ends_with(b"-PLUS"))
                {
                    // The client binds to the certificate it sees, which is the proxy's;
                    // the server would check it against its own and fail opaquely.
                    return Err(SessionError::ChannelBinding(channel_binding_hint.clone()));
                }
                write(server, &answer)
                    .await
                    .map_err(SessionError::ServerIo)?;
                if answer[0] == message::tag::TERMINATE {
                    return Ok(AuthOutcome::Ended);
                }
            }
            _ => {} // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion
        }
    }
}

/// Removes `-PLUS` mechanisms from an `AuthenticationSASL` offer. The server offers
/// them because its own leg is TLS; a client on a plain connection to the proxy cannot
/// use them (libpq refuses such an offer outright) and, without them, answers with the
/// gs2 flag `n`, which the server accepts. Other messages are returned unchanged.
fn without_channel_binding(frame: Bytes) -> Bytes {
    let Some(body) = frame.get(9..) else {
        return frame;
    };
    if frame.get(5..9) != Some(&10i32.to_be_bytes()[..]) {
        return frame;
    }
    let mechanisms: Vec<&[u8]> = body.split(|&b| b == 0).filter(|m| !m.is_empty()).collect();
    if !mechanisms.iter().any(|m| m.ends_with(b"-PLUS")) {
        return frame;
    }
    let mut out = BytesMut::with_capacity(frame.len());
    out.put_u8(bt::AUTHENTICATION);
    out.put_i32(0); // patched below
    out.put_i32(10);
    for m in mechanisms.into_iter().filter(|m| !m.ends_with(b"-PLUS")) {
        out.put_slice(m);
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_plus_mechanisms_only() {
        let mut f = vec![b'R'];
        let body = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        f.extend_from_slice(body);
        let out = without_channel_binding(Bytes::from(f));
        assert_eq!(&out[..], b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
        let ok = Bytes::from_static(b"R\0\0\0\x08\0\0\0\0");
        assert_eq!(without_channel_binding(ok.clone()), ok);
    }

    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut m = StartupMessage {
            version: 196608,
            params: vec![("user".into(), "alice".into())],
        };
        m.set_default("database", "app");
        m.set_default("user", "bob");
        let bytes = m.encode();
        let back = StartupMessage::parse(196608, &bytes[8..]).unwrap();
        assert_eq!(back.params, m.params);
        assert!(!back.is_replication());
        assert!(StartupMessage::parse(196608, b"user\0x").is_err());
    }
}
