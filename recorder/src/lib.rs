//! `flux-recorder`: what the proxy and the OTLP receiver observe, into the store.
//!
//! - [`events`]: capture events into records through the store's bounded writer. Fail-open
//!   (the proxy never waits on a lagging store; every record it drops is counted and
//!   written as a gap once the writer accepts again), and the durability policy (strict:
//!   a commit's answer waits until its records are synced).
//! - [`spans`]: OTLP spans into the writer, acknowledged once written.
//! - [`redact`]: `--redact` columns' values taken out of images and statements before
//!   anything is stored.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod events;
pub mod redact;
pub mod spans;

pub use events::{CaptureStats, StoreSink};
pub use redact::Redactor;
pub use spans::SpanWriter;

pub use flux_store::nanos;
