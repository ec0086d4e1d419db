//! `flux-replay`: sending recorded requests to current code, and judging the result.
//!
//! - [`run`]: the driver behind `flux incident replay`, using the parts below: which
//!   requests ([`select`]), the scratch database ([`scratch`]), sending them again
//!   ([`send`]), and what the run reports ([`report`]). Its services (proxy, recorder,
//!   OTLP receiver, gateway) are `flux-service`'s, as `flux proxy`'s are.
//! - [`bisect`]: `flux bug bisect`, git's bisect in a temporary worktree ([`git`]) with a
//!   replay of the request judging each commit by its [`criterion`].
//! - [`app`]: the app under replay, started in its own process group and always stopped.
//! - [`isolation`]: the network namespace the app runs in, where every outbound
//!   connection goes to the stub, and [`dns`]: its resolver (every name resolves).
//! - [`config`]: `flux.toml`, found like `.git` (this directory or a parent).
//! - [`restore`]: the scratch database put back to the committed state at the window's
//!   start for every row the selected requests wrote.
//! - [`stub`]: outbound calls answered from the original request's CLIENT spans, and
//!   [`outbound`]: the HTTP/CONNECT stub server that plays those answers.
//! - [`judge`]: verdicts and the first difference between a replay and its original, with
//!   [`noise`]: what differs on every run by construction (clocks, generated ids).

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod bisect;
pub mod config;
pub mod criterion;
pub mod dns;
pub mod git;
pub mod isolation;
pub mod judge;
pub mod noise;
pub mod outbound;
pub mod report;
pub mod restore;
pub mod run;
pub mod scratch;
pub mod select;
pub mod send;
pub mod stub;
