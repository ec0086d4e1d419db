//! One client session: startup and authentication, then the relay, then an orderly end.
//!
//! [`run`] accepts the connection (TLS, `StartupMessage` or `CancelRequest`), opens the
//! upstream and relays authentication ([`crate::startup`]), then hands both sockets to
//! [`crate::relay`] with the pass-through seams (`--capture off`) or capture's
//! ([`crate::capture::layer`]). However the relay ends, the client is told why when it
//! should be.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::capture::event::{CaptureEvent, SessionId};
use crate::capture::layer;
use crate::error::SessionError;
use crate::message::{self, sqlstate};
use crate::relay::{self, PassThrough, RelayEnd};
use crate::shared::Shared;
use crate::startup::{self, AuthOutcome, Opening};
use crate::stream::Stream;

/// Runs one accepted connection to completion. Never panics on peer input; every
/// failure ends only this session.
pub(crate) async fn run(tcp: TcpStream, peer: SocketAddr, id: SessionId, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let upstream_addr = shared.config.upstream.addr();
    let startup_timeout = shared.config.startup_timeout;
    let mut client = Some(Stream::Plain(tcp));
    let result = async {
        let opened = tokio::time::timeout(
            startup_timeout,
            startup::accept(&mut client, shared.client_tls.as_ref()),
        )
        .await
        .map_err(|_| SessionError::StartupTimeout(startup_timeout))??;
        match opened {
            Opening::Closed => Ok(()),
            Opening::Cancel(packet) => {
                forward_cancel(&shared, packet).await;
                Ok(())
            }
            Opening::Session(startup) => serve(&mut client, startup, peer, id, &shared).await,
        }
    }
    .await;
    if let Err(e) = result {
        match &e {
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => {
                tracing::debug!(session = id, %peer, "session ended: {e}")
            }
            SessionError::ClientFrame(_) | SessionError::Protocol(_) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = id, %peer, "closing session: {e}")
            }
            _ => {
                shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = id, %peer, "closing session: {e}")
            }
        }
        if let (Some(client), Some(notice)) = (client.as_mut(), e.client_notice(&upstream_addr)) {
            let _ = write_and_close(client, &notice).await;
        }
    }
}

async fn write_and_close<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    let done = async {
        s.write_all(bytes).await?;
        s.flush().await?;
        s.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn forward_cancel(shared: &Shared, packet: Bytes) {
    let cfg = &shared.config;
    let result = async {
        let mut server = cfg
            .upstream
            .connect(shared.upstream_tls.as_ref(), cfg.connect_timeout)
            .await?;
        server
            .write_all(&packet)
            .await
            .map_err(SessionError::ServerIo)?;
        server.flush().await.map_err(SessionError::ServerIo)?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(cfg.connect_timeout, server.read(&mut sink)).await;
        Ok::<_, SessionError>(())
    }
    .await;
    match result {
        Ok(()) => {
            shared
                .stats
                .cancels_forwarded
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("forwarded CancelRequest upstream");
        }
        Err(e) => tracing::warn!("could not forward CancelRequest: {e}"),
    }
}

async fn serve(
    client: &mut Option<Stream>,
    mut startup: startup::StartupMessage,
    peer: SocketAddr,
    id: SessionId,
    shared: &Arc<Shared>,
) -> Result<(), SessionError> {
    let cfg = &shared.config;
    let client = client
        .as_mut()
        .ok_or_else(|| SessionError::ClientTls("connection lost".into()))?;
    // The URL gives defaults; what the client asks for wins.
    if let Some(user) = &cfg.upstream.user {
        startup.set_default("user", user);
    }
    if let Some(db) = &cfg.upstream.database {
        startup.set_default("database", db);
    }
    let user = startup.get("user").unwrap_or_default().to_string();
    let database = startup.get("database").unwrap_or(&user).to_string();

    let mut server = cfg
        .upstream
        .connect(shared.upstream_tls.as_ref(), cfg.connect_timeout)
        .await?;
    shared.stats.upstream_total.fetch_add(1, Ordering::Relaxed);
    let _upstream_open = crate::shared::Open::count(&shared.stats, |s| &s.upstream_active);
    let auth = tokio::time::timeout(
        cfg.startup_timeout,
        startup::authenticate(
            client,
            &mut server,
            &startup,
            cfg.max_frame_len,
            &shared.channel_binding_hint,
        ),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout(cfg.startup_timeout))??;
    if let AuthOutcome::Ended = auth {
        let _ = server.shutdown().await;
        let _ = client.shutdown().await;
        return Ok(());
    }

    if startup.is_replication() {
        // Replication speaks CopyBoth for the life of the connection: pure pass-through.
        tracing::info!(session = id, %peer, "replication connection: relayed without capture");
        let _ = tokio::io::copy_bidirectional(client, &mut server).await;
        return Ok(());
    }

    let (end, desyncs) = match &shared.sink {
        None => relay::run(client, &mut server, PassThrough, PassThrough, (), shared).await,
        Some(sink) => {
            sink.emit(CaptureEvent::SessionStarted {
                session: id,
                peer,
                user: user.clone(),
                database: database.clone(),
            });
            let (planner, reader, state) = layer::start(id, shared, sink.clone(), &database, &user);
            relay::run(client, &mut server, planner, reader, state, shared).await
        }
    };
    if desyncs > 0 {
        tracing::debug!(session = id, desyncs, "response FIFO resynchronised");
    }
    match end? {
        RelayEnd::ClientTerminated | RelayEnd::ClientClosed => {
            let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
        }
        RelayEnd::ServerClosedWithError => {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
        }
        RelayEnd::ServerClosed => {
            return Err(SessionError::ServerIo(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        RelayEnd::Shutdown { idle } => {
            if idle {
                // At a message boundary with nothing in flight: end the backend cleanly.
                let _ = write_and_close(&mut server, &message::terminate()).await;
            }
            let notice = message::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the flux proxy is shutting down",
            );
            let _ = write_and_close(client, &notice).await;
        }
    }
    Ok(())
}
