//! OTLP trace payloads (protobuf or JSON, optionally gzipped) into store [`Span`]s.
//!
//! A payload is accepted whole or not at all: one invalid span rejects the export with a
//! reason naming it, so a retry after a fix cannot leave half a batch behind.

use std::io::Read;

use flux_store::{Span, SpanEvent, SpanKind, SpanSource};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::Message;

/// Largest payload accepted, after decompression.
pub const MAX_PAYLOAD: usize = 32 * 1024 * 1024;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, camelCase fields).
    Json,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// gzip decoding failed.
    #[error("body is not valid gzip: {0}")]
    Gzip(std::io::Error),
    /// Larger than [`MAX_PAYLOAD`].
    #[error("payload larger than {MAX_PAYLOAD} bytes")]
    TooLarge,
    /// Not an `ExportTraceServiceRequest` in protobuf.
    #[error("not an OTLP protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not an `ExportTraceServiceRequest` in OTLP/JSON.
    #[error("not an OTLP/JSON ExportTraceServiceRequest: {0}")]
    Json(#[from] serde_json::Error),
    /// Decoded, but a span is unusable.
    #[error("{at}: {reason}")]
    Invalid {
        /// Which span (`resourceSpans[0].scopeSpans[1].spans[2]`).
        at: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Decodes one export request body into spans.
pub fn decode(body: &[u8], encoding: Encoding, gzip: bool) -> Result<Vec<Span>, IngestError> {
    let inflated;
    let bytes = if gzip {
        inflated = gunzip(body)?;
        &inflated[..]
    } else {
        if body.len() > MAX_PAYLOAD {
            return Err(IngestError::TooLarge);
        }
        body
    };
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes)?,
        Encoding::Json => parse_json(bytes)?,
    };
    convert(request)
}

/// Inflates at most [`MAX_PAYLOAD`] bytes (a small gzip bomb must not take the daemon's
/// memory).
fn gunzip(body: &[u8]) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_PAYLOAD as u64 + 1)
        .read_to_end(&mut out)
        .map_err(IngestError::Gzip)?;
    if out.len() > MAX_PAYLOAD {
        return Err(IngestError::TooLarge);
    }
    Ok(out)
}

/// OTLP/JSON allows 64-bit integers as numbers or strings; the generated serde code
/// accepts only strings for timestamps, so numbers are turned into strings first.
fn parse_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, IngestError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
    stringify_timestamps(&mut value);
    Ok(serde_json::from_value(value)?)
}

fn stringify_timestamps(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.ends_with("UnixNano") && v.is_number() {
                    *v = serde_json::Value::String(v.to_string());
                } else {
                    stringify_timestamps(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(stringify_timestamps),
        _ => {}
    }
}

/// Validates and converts every span of an export.
pub fn convert(request: ExportTraceServiceRequest) -> Result<Vec<Span>, IngestError> {
    let mut out = Vec::new();
    for (r, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let resource = |key: &str| {
            resource_spans.resource.as_ref().and_then(|res| {
                res.attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.as_ref())
                    .map(text)
            })
        };
        let service = resource("service.name");
        // Which build served the request (bisect's default good end), kept on the spans
        // where a request enters the service.
        let version = resource("service.version");
        for (s, scope) in resource_spans.scope_spans.into_iter().enumerate() {
            for (i, sp) in scope.spans.into_iter().enumerate() {
                let at = || format!("resourceSpans[{r}].scopeSpans[{s}].spans[{i}]");
                let invalid = |reason: String| IngestError::Invalid { at: at(), reason };
                let trace =
                    id_hex(&sp.trace_id, 16).map_err(|e| invalid(format!("traceId {e}")))?;
                let id = id_hex(&sp.span_id, 8).map_err(|e| invalid(format!("spanId {e}")))?;
                let parent = if sp.parent_span_id.is_empty() {
                    None
                } else {
                    Some(
                        id_hex(&sp.parent_span_id, 8)
                            .map_err(|e| invalid(format!("parentSpanId {e}")))?,
                    )
                };
                if sp.start_time_unix_nano == 0 {
                    return Err(invalid("startTimeUnixNano is missing".into()));
                }
                let error = sp
                    .status
                    .as_ref()
                    .filter(|st| st.code == status::StatusCode::Error as i32)
                    .map(|st| st.message.clone());
                out.push(Span {
                    trace,
                    id,
                    parent,
                    name: sp.name,
                    kind: kind(sp.kind),
                    start: sp.start_time_unix_nano,
                    end: sp.end_time_unix_nano.max(sp.start_time_unix_nano),
                    error,
                    attributes: {
                        let mut a = attributes(&sp.attributes);
                        let entry = sp.kind == span::SpanKind::Server as i32
                            || sp.parent_span_id.is_empty();
                        if let (Some(v), true) = (&version, entry) {
                            a.push(("service.version".to_string(), v.clone()));
                        }
                        a
                    },
                    events: sp
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            name: e.name,
                            at: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    service: service.clone(),
                    source: SpanSource::App,
                });
            }
        }
    }
    Ok(out)
}

/// Lowercase hex of an id of `len` bytes; all-zero ids are invalid (W3C).
fn id_hex(bytes: &[u8], len: usize) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!("must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Err("is all zeros".into());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn kind(k: i32) -> SpanKind {
    match span::SpanKind::try_from(k) {
        Ok(span::SpanKind::Internal) => SpanKind::Internal,
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

/// An attribute value as text: strings as they are, scalars printed, arrays and maps as
/// JSON.
fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => json(other).to_string().trim_matches('"').to_string(),
        None => String::new(),
    }
}

fn json(v: &any_value::Value) -> serde_json::Value {
    use any_value::Value as V;
    match v {
        V::StringValue(s) => s.clone().into(),
        V::BoolValue(b) => (*b).into(),
        V::IntValue(i) => (*i).into(),
        V::DoubleValue(d) => (*d).into(),
        V::BytesValue(b) => b
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into(),
        V::ArrayValue(a) => a
            .values
            .iter()
            .map(|x| x.value.as_ref().map_or(serde_json::Value::Null, json))
            .collect(),
        V::KvlistValue(kv) => kv
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value
                        .as_ref()
                        .and_then(|x| x.value.as_ref())
                        .map_or(serde_json::Value::Null, json),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Reads a file of OTLP/JSON exports, one per line (the collector's file exporter format;
/// blank lines skipped). Each line is decoded whole; an invalid line is reported with its
/// number and the lines before it are kept.
pub fn decode_lines(
    text: &str,
) -> impl Iterator<Item = (usize, Result<Vec<Span>, IngestError>)> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| (n + 1, decode(line.as_bytes(), Encoding::Json, false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"scope":{"name":"x"},"spans":[
      {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"POST /checkout","kind":2,
       "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
       "attributes":[{"key":"http.status_code","value":{"intValue":"500"}},{"key":"ok","value":{"boolValue":false}},{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}],
       "status":{"code":2,"message":"boom"},
       "events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[{"key":"exception.type","value":{"stringValue":"ValueError"}}]}]},
      {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174","name":"child","kind":1,
       "startTimeUnixNano":"1544712660100000000","endTimeUnixNano":"1544712660200000000"}]}]}]}"#;

    #[test]
    fn json_exports_decode_with_hex_ids_and_either_integer_form() {
        let spans = decode(EXPORT.as_bytes(), Encoding::Json, false).expect("decodes");
        assert_eq!(spans.len(), 2);
        let root = &spans[0];
        assert_eq!(root.trace, "5b8efff798038103d269b633813fc60c");
        assert_eq!(root.id, "eee19b7ec3c1b174");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(root.end - root.start, 1_000_000_000);
        assert_eq!(root.error.as_deref(), Some("boom"));
        assert_eq!(root.attr("http.status_code"), Some("500"));
        assert_eq!(root.attr("ok"), Some("false"));
        assert_eq!(root.attr("tags"), Some(r#"["a"]"#));
        assert_eq!(root.service.as_deref(), Some("shop"));
        assert_eq!(root.events[0].attributes[0].1, "ValueError");
        assert_eq!(spans[1].parent.as_deref(), Some("eee19b7ec3c1b174"));
    }

    #[test]
    fn protobuf_and_gzip_round_trip() {
        let request: ExportTraceServiceRequest =
            parse_json(EXPORT.as_bytes()).expect("json parses");
        let bytes = request.encode_to_vec();
        let direct = decode(&bytes, Encoding::Protobuf, false).expect("protobuf");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).expect("gzip");
        let zipped = gz.finish().expect("gzip");
        let inflated = decode(&zipped, Encoding::Protobuf, true).expect("gzip protobuf");
        assert_eq!(direct, inflated);
        assert_eq!(
            direct,
            decode(EXPORT.as_bytes(), Encoding::Json, false).expect("json")
        );
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let cases: Vec<(Vec<u8>, Encoding, bool, &str)> = vec![
            (b"{not json".to_vec(), Encoding::Json, false, "OTLP/JSON"),
            (
                b"\xff\xff\xff".to_vec(),
                Encoding::Protobuf,
                false,
                "protobuf",
            ),
            (b"plain".to_vec(), Encoding::Protobuf, true, "gzip"),
            (
                EXPORT.replace("EEE19B7EC3C1B174", "EEE1").into_bytes(),
                Encoding::Json,
                false,
                "spans[0]: spanId must be 8 bytes",
            ),
            (
                EXPORT
                    .replace(
                        "5B8EFFF798038103D269B633813FC60C",
                        "00000000000000000000000000000000",
                    )
                    .into_bytes(),
                Encoding::Json,
                false,
                "traceId is all zeros",
            ),
        ];
        for (body, encoding, gzip, expect) in cases {
            let err = decode(&body, encoding, gzip).expect_err("refused");
            assert!(err.to_string().contains(expect), "{err} lacks {expect}");
        }
        // A gzip bomb stops at the limit instead of filling memory.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_PAYLOAD >> 20) + 1 {
            gz.write_all(&zeros).expect("gzip");
        }
        let bomb = gz.finish().expect("gzip");
        assert!(matches!(
            decode(&bomb, Encoding::Protobuf, true),
            Err(IngestError::TooLarge)
        ));
    }

    #[test]
    fn files_are_read_line_by_line() {
        let text = format!("{}\n\n{{broken\n", EXPORT.replace('\n', ""));
        let lines: Vec<_> = decode_lines(&text).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, 1);
        assert_eq!(lines[0].1.as_ref().map(Vec::len).ok(), Some(2));
        assert_eq!(lines[1].0, 3);
        assert!(lines[1].1.is_err());
    }
}
