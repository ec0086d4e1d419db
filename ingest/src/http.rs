//! The OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, gzip or not, as
//! every OpenTelemetry SDK's HTTP exporter sends them.
//!
//! Answers: 200 once the spans are written (so a success means stored); 400 with the
//! reason for a payload that cannot be decoded (nothing of it is stored: the exporter must
//! not retry it); 415 for other encodings; 503 when the store cannot take more right now
//! (retryable, with `Retry-After`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flux_store::Span;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpListener;

use crate::otlp::{self, Encoding, MAX_PAYLOAD};

/// Where decoded spans go. The daemon's sink hands them to the store writer.
pub trait SpanSink: Send + Sync + 'static {
    /// Stores spans; resolves once they are written, or fails when the store cannot take
    /// them now (the exporter is asked to retry).
    fn accept(
        &self,
        spans: Vec<Span>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;
}

/// Why a sink could not store an export now.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The writer's queue is full.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// Writing failed.
    #[error("writing spans: {0}")]
    Write(String),
    /// The writer has stopped.
    #[error("the store writer has stopped")]
    Stopped,
}

/// What the receiver accepted and refused, for metrics.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans stored.
    pub accepted_spans: AtomicU64,
    /// Spans decoded but not stored (the store was busy or failed; the exporter retries).
    pub rejected_spans: AtomicU64,
    /// Exports refused whole: undecodable, or an unsupported encoding.
    pub refused_exports: AtomicU64,
}

/// Serves OTLP/HTTP on `listener` until `shutdown` resolves, counting into `stats`.
pub async fn serve(
    listener: TcpListener,
    sink: Arc<dyn SpanSink>,
    stats: Arc<OtlpStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sink, stats))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, for embedding or testing.
pub fn router(sink: Arc<dyn SpanSink>, stats: Arc<OtlpStats>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        // Compressed bodies are bounded again after inflating (otlp::gunzip).
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD))
        .with_state((sink, stats))
}

async fn traces(
    State((sink, stats)): State<(Arc<dyn SpanSink>, Arc<OtlpStats>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = export(&sink, &stats, &headers, &body).await;
    if response.status().is_client_error() {
        stats.refused_exports.fetch_add(1, Ordering::Relaxed);
    }
    response
}

async fn export(
    sink: &Arc<dyn SpanSink>,
    stats: &OtlpStats,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let encoding = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-type {other:?}: send application/x-protobuf or application/json\n"),
            )
                .into_response()
        }
    };
    let gzip = match header_str(header::CONTENT_ENCODING).as_str() {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-encoding {other:?}: send gzip or none\n"),
            )
                .into_response()
        }
    };
    let spans = match otlp::decode(body, encoding, gzip) {
        Ok(spans) => spans,
        Err(e) => {
            tracing::warn!(error = %e, "refused an OTLP export");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let count = spans.len();
    if let Err(e) = sink.accept(spans).await {
        stats
            .rejected_spans
            .fetch_add(count as u64, Ordering::Relaxed);
        tracing::warn!(error = %e, spans = count, "could not store an OTLP export; asked the exporter to retry");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("{e}\n"),
        )
            .into_response();
    }
    stats
        .accepted_spans
        .fetch_add(count as u64, Ordering::Relaxed);
    tracing::debug!(spans = count, "stored an OTLP export");
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}
