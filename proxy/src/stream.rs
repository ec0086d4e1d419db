//! A connection leg that is plain TCP or TLS, and its borrowed read/write halves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// One leg of a session: the client's connection or the upstream's.
#[allow(clippy::large_enum_variant)]
pub enum Stream {
    /// Unencrypted TCP.
    Plain(TcpStream),
    /// TLS over TCP (either side of the handshake).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A Unix-domain socket (an upstream on the same host).
    Unix(UnixStream),
}

impl Stream {
    /// Whether this leg is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Splits into halves borrowed for the relay. Plain TCP splits without locking.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

/// The read half of a [`Stream`].
pub enum ReadHalf<'a> {
    /// Plain TCP.
    Plain(tokio::net::tcp::ReadHalf<'a>),
    /// TLS.
    Tls(tokio::io::ReadHalf<&'a mut tokio_rustls::TlsStream<TcpStream>>),
    /// Unix socket.
    Unix(tokio::net::unix::ReadHalf<'a>),
}

/// The write half of a [`Stream`].
pub enum WriteHalf<'a> {
    /// Plain TCP.
    Plain(tokio::net::tcp::WriteHalf<'a>),
    /// TLS.
    Tls(tokio::io::WriteHalf<&'a mut tokio_rustls::TlsStream<TcpStream>>),
    /// Unix socket.
    Unix(tokio::net::unix::WriteHalf<'a>),
}

macro_rules! delegate_read {
    ($t:ty, $($v:path),+) => {
        impl AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($v(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty, $($v:path),+) => {
        impl AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($v(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($v(s) => Pin::new(s).poll_flush(cx),)+
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($v(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(Stream, Stream::Plain, Stream::Tls, Stream::Unix);
delegate_write!(Stream, Stream::Plain, Stream::Tls, Stream::Unix);
delegate_read!(ReadHalf<'_>, ReadHalf::Plain, ReadHalf::Tls, ReadHalf::Unix);
delegate_write!(
    WriteHalf<'_>,
    WriteHalf::Plain,
    WriteHalf::Tls,
    WriteHalf::Unix
);
