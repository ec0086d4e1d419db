//! Wire framing: splitting a byte stream into PostgreSQL protocol messages.
//!
//! After startup every message is `tag(1) | length(4, big-endian, includes itself) | body`.
//! The proxy relays whole frames, so it must find frame boundaries without trusting the
//! length field: a length under 4 or over the configured limit is a protocol violation.
//! Frames that the proxy never decodes (COPY data, result rows) may be larger than what we
//! want to hold in memory; those are *streamed*: forwarded piece by piece as bytes arrive.

/// Bytes in a regular message header: the tag and the length.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Default cap on one message (1 GiB, PostgreSQL's own `PQ_LARGE_MESSAGE_LIMIT`).
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Frames of a streamable type larger than this are forwarded in pieces instead of
/// being held whole, which keeps per-session memory bounded.
pub const STREAM_THRESHOLD: usize = 256 * 1024;

/// A framing violation by the peer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length field is under 4 (it counts itself) or negative.
    #[error("invalid length {len} in a message of type {tag}")]
    InvalidLength { tag: TagName, len: i64 },
    /// The length field is over the configured limit.
    #[error("message of type {tag} declares {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        tag: TagName,
        len: usize,
        limit: usize,
    },
    /// A startup-phase packet with an impossible length.
    #[error("invalid startup packet length {0}")]
    InvalidStartupLength(i64),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// A message tag, printed readably in errors (`'Q'` or `0x00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagName(pub u8);

impl std::fmt::Display for TagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Reads the header at the start of `buf`, if it holds one whole header.
/// Returns the tag and the frame's total size on the wire (header included).
pub fn parse_header(buf: &[u8], limit: usize) -> Result<Option<(u8, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(FrameError::InvalidLength {
            tag: TagName(tag),
            len: i64::from(len),
        });
    }
    // len >= 4 here, so the cast is lossless.
    let len = len as usize;
    if len > limit {
        return Err(FrameError::TooLarge {
            tag: TagName(tag),
            len,
            limit,
        });
    }
    Ok(Some((tag, len + 1)))
}

/// What the bytes at the front of a relay buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A complete frame: `tag`, and `size` bytes on the wire including the header.
    Frame { tag: u8, size: usize },
    /// `n` bytes belonging to a large streamed frame; forward them untouched.
    Stream { n: usize },
    /// Not enough bytes for the next step; `want` more would complete it (0 if unknown).
    NeedMore { want: usize },
}

/// Finds frame boundaries in one direction of a connection, across reads.
#[derive(Debug)]
pub struct FrameCursor {
    limit: usize,
    stream_threshold: usize,
    /// Bytes still to forward of the frame being streamed.
    streaming: usize,
}

impl FrameCursor {
    /// A cursor enforcing `limit` on declared frame lengths.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            stream_threshold: STREAM_THRESHOLD,
            streaming: 0,
        }
    }

    /// Overrides the size above which streamable frames are forwarded in pieces.
    pub fn with_stream_threshold(mut self, threshold: usize) -> Self {
        self.stream_threshold = threshold;
        self
    }

    /// Whether the cursor is in the middle of a streamed frame.
    pub fn is_streaming(&self) -> bool {
        self.streaming > 0
    }

    /// Classifies the front of `buf`. `streamable` says which tags may be streamed
    /// rather than held whole (the caller never needs to decode those).
    pub fn next(
        &mut self,
        buf: &[u8],
        streamable: impl Fn(u8) -> bool,
    ) -> Result<Next, FrameError> {
        if self.streaming > 0 {
            if buf.is_empty() {
                return Ok(Next::NeedMore { want: 0 });
            }
            let n = self.streaming.min(buf.len());
            self.streaming -= n;
            return Ok(Next::Stream { n });
        }
        let Some((tag, size)) = parse_header(buf, self.limit)? else {
            return Ok(Next::NeedMore {
                want: HEADER_LEN - buf.len(),
            });
        };
        if buf.len() >= size {
            return Ok(Next::Frame { tag, size });
        }
        if size > self.stream_threshold && streamable(tag) {
            let n = buf.len();
            self.streaming = size - n;
            return Ok(Next::Stream { n });
        }
        Ok(Next::NeedMore {
            want: size - buf.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        crate::message::encode(tag, body).to_vec()
    }

    #[test]
    fn splits_whole_frames() {
        let mut buf = frame(b'Q', b"select 1\0");
        buf.extend(frame(b'S', b""));
        let mut c = FrameCursor::new(DEFAULT_MAX_FRAME);
        let no = |_| false;
        assert_eq!(
            c.next(&buf, no).unwrap(),
            Next::Frame {
                tag: b'Q',
                size: 14
            }
        );
        assert_eq!(
            c.next(&buf[14..], no).unwrap(),
            Next::Frame { tag: b'S', size: 5 }
        );
        assert_eq!(c.next(&buf[19..], no).unwrap(), Next::NeedMore { want: 5 });
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut c = FrameCursor::new(100);
        for len in [0i32, 3, -1, i32::MIN] {
            let mut b = vec![b'Q'];
            b.extend_from_slice(&len.to_be_bytes());
            assert!(matches!(
                c.next(&b, |_| false),
                Err(FrameError::InvalidLength { .. })
            ));
        }
        let mut b = vec![b'Q'];
        b.extend_from_slice(&101i32.to_be_bytes());
        assert!(matches!(
            c.next(&b, |_| false),
            Err(FrameError::TooLarge { len: 101, .. })
        ));
    }

    #[test]
    fn streams_large_frames_in_pieces() {
        let body = vec![7u8; 100];
        let buf = frame(b'd', &body);
        let mut c = FrameCursor::new(1000).with_stream_threshold(10);
        let any = |_| true;
        assert_eq!(c.next(&buf[..50], any).unwrap(), Next::Stream { n: 50 });
        assert!(c.is_streaming());
        assert_eq!(c.next(&buf[50..60], any).unwrap(), Next::Stream { n: 10 });
        assert_eq!(c.next(&buf[60..], any).unwrap(), Next::Stream { n: 45 });
        assert!(!c.is_streaming());
        // A non-streamable large frame waits until whole.
        let q = frame(b'Q', &body);
        assert_eq!(
            c.next(&q[..50], |t| t == b'd').unwrap(),
            Next::NeedMore { want: 55 }
        );
    }
}
