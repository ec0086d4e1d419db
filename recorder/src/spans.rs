//! The application's spans (from OTLP) into the store's writer.

use flux_ingest::http::SinkError;
use flux_store::{Record, WriterHandle};

/// Hands the application's spans (from OTLP) to the store writer and answers once they
/// are written, so the exporter's success means stored.
pub struct SpanWriter {
    writer: WriterHandle,
    redact: crate::Redactor,
}

impl SpanWriter {
    /// Spans go through `writer`.
    pub fn new(writer: WriterHandle) -> Self {
        SpanWriter {
            writer,
            redact: crate::Redactor::default(),
        }
    }

    /// Takes `redact`'s columns' literals out of the statements spans carry
    /// (`db.statement`, `db.query.text`) before they are stored.
    pub fn with_redaction(mut self, redact: crate::Redactor) -> Self {
        self.redact = redact;
        self
    }
}

impl flux_ingest::http::SpanSink for SpanWriter {
    fn accept(
        &self,
        spans: Vec<flux_store::Span>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send>> {
        let records = spans
            .into_iter()
            .map(|mut span| {
                if !self.redact.is_empty() {
                    for (key, value) in span.attributes.iter_mut() {
                        if key == "db.statement" || key == "db.query.text" {
                            *value = self.redact.sql(std::mem::take(value));
                        }
                    }
                }
                Record::Span(span)
            })
            .collect();
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
