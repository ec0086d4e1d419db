//! The application's spans (from OTLP) into the store's writer.

use flux_ingest::http::SinkError;
use flux_store::{Record, WriterHandle};

/// Hands the application's spans (from OTLP) to the store writer and answers once they
/// are written, so the exporter's success means stored.
pub struct SpanWriter {
    writer: WriterHandle,
}

impl SpanWriter {
    /// Spans go through `writer`.
    pub fn new(writer: WriterHandle) -> Self {
        SpanWriter { writer }
    }
}

impl flux_ingest::http::SpanSink for SpanWriter {
    fn accept(
        &self,
        spans: Vec<flux_store::Span>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send>> {
        let records = spans.into_iter().map(Record::Span).collect();
        let ack = self.writer.write_durable(records);
        Box::pin(async move {
            let ack = ack.map_err(|e| SinkError::Busy(e.to_string()))?;
            match ack.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::Write(e.to_string())),
                Err(_) => Err(SinkError::Stopped),
            }
        })
    }
}
