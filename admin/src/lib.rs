//! `flux-admin`: what an operator watches a running `flux proxy` through
//! (`--admin ADDR`, off unless asked, loopback by default).
//!
//! - [`metrics`]: the counters the proxy, capture, the store writer and the OTLP receiver
//!   keep (plain atomics, read at scrape time), rendered in the Prometheus text format
//!   with `prometheus-client`.
//! - [`health`]: liveness (`/healthz`) and readiness (`/readyz`: the upstream answers a
//!   connection, the store writer is running and its last write succeeded).
//! - [`server`]: the HTTP routes.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod health;
pub mod metrics;
pub mod server;

pub use health::Readiness;
pub use metrics::Sources;
pub use server::serve;
