//! What the replay crate's integration tests share.

use flux_store::{Span, SpanKind, SpanSource};

/// A CLIENT span that started at `start` (ns) and took `ms`, with these attributes.
pub fn client(start: u64, ms: u64, attrs: &[(&str, &str)], error: Option<&str>) -> Span {
    Span {
        trace: "t".into(),
        id: format!("{start:016x}"),
        parent: None,
        name: "HTTP".into(),
        kind: SpanKind::Client,
        start,
        end: start + ms * 1_000_000,
        error: error.map(str::to_string),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        events: Vec::new(),
        service: None,
        source: SpanSource::App,
    }
}
