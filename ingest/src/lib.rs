//! `flux-ingest`: what the application does, from its side, into Flux's record.
//!
//! - [`otlp`]: OTLP export requests (protobuf, JSON, gzip; the collector's JSON-lines
//!   files) decoded and validated into store spans.
//! - [`http`]: the OTLP/HTTP receiver (`POST /v1/traces`) `flux proxy --otlp` serves.
//! - [`gateway`]: the HTTP reverse proxy `flux proxy --http-listen` puts in front of the
//!   app, recording each request's input and response (what replay sends again), with
//!   [`tee`]: bodies copied as they stream, and [`headers`]: what is forwarded and kept.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod gateway;
pub mod headers;
pub mod http;
pub mod otlp;
pub mod tee;
