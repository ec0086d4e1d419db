//! Why a session ended abnormally, and what the client is told.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::frame::FrameError;
use crate::message::{self, sqlstate};
use crate::upstream::UpstreamError;

/// Why a session ended abnormally. Each variant decides what, if anything, the client
/// is told before the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client broke framing.
    #[error("invalid message from client: {0}")]
    ClientFrame(FrameError),
    /// The client broke the startup protocol.
    #[error("{0}")]
    Protocol(String),
    /// The client's socket failed.
    #[error("client connection: {0}")]
    ClientIo(io::Error),
    /// TLS with the client failed.
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(String),
    /// The upstream could not be reached.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream broke framing.
    #[error("invalid message from upstream: {0}")]
    ServerFrame(FrameError),
    /// The upstream's socket failed.
    #[error("upstream connection: {0}")]
    ServerIo(io::Error),
    /// The client chose SCRAM channel binding, which cannot pass through the proxy.
    #[error("{0}")]
    ChannelBinding(Arc<str>),
    /// Startup did not finish in time.
    #[error("startup did not complete within {0:?}")]
    StartupTimeout(Duration),
}

impl SessionError {
    /// The `ErrorResponse` the client gets for this failure, if any.
    pub(crate) fn client_notice(&self, upstream: &str) -> Option<Bytes> {
        let (code, msg) = match self {
            SessionError::ClientFrame(e) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message: {e}"),
            ),
            SessionError::Protocol(m) => (sqlstate::PROTOCOL_VIOLATION, m.clone()),
            SessionError::Upstream(e) => (sqlstate::CONNECTION_FAILURE, format!("flux: {e}")),
            SessionError::ServerFrame(e) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("flux: invalid message from upstream {upstream}: {e}"),
            ),
            SessionError::ServerIo(e) => (
                sqlstate::CONNECTION_FAILURE,
                format!("flux: lost connection to upstream {upstream}: {e}"),
            ),
            SessionError::ChannelBinding(hint) => {
                (sqlstate::FEATURE_NOT_SUPPORTED, hint.to_string())
            }
            SessionError::StartupTimeout(t) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("flux: startup did not complete within {t:?}"),
            ),
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => return None,
        };
        Some(message::fatal(code, &msg))
    }
}
