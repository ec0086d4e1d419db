//! `flux-ingest`: the application's own traces into Flux's record.
//!
//! - [`otlp`]: OTLP export requests (protobuf, JSON, gzip; the collector's JSON-lines
//!   files) decoded and validated into store spans.
//! - [`http`]: the OTLP/HTTP receiver (`POST /v1/traces`) `flux proxy --otlp` serves.

pub mod http;
pub mod otlp;
