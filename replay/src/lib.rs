//! `flux-replay`: sending recorded requests to current code, and judging the result.
//!
//! - [`run`]: the driver behind `flux incident replay`, using the parts below.
//! - [`bisect`]: `flux bug bisect`, git's bisect in a temporary worktree ([`git`]) with a
//!   replay of the request judging each commit.
//! - [`app`]: the app under replay, started in its own process group and always stopped.
//! - [`config`]: `flux.toml`, found like `.git` (this directory or a parent).
//! - [`window`]: the time windows `flux incident replay` takes (`14:00..14:05`, `-30m..`).
//! - [`restore`]: the scratch database put back to the committed state at the window's
//!   start for every row the selected requests wrote.
//! - [`stub`]: outbound calls answered from the original request's CLIENT spans, and
//!   [`outbound`]: the HTTP/CONNECT stub server that plays those answers.
//! - [`judge`]: verdicts and the first difference between a replay and its original.

// Library code never panics on what it is given: errors are returned, not unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod bisect;
pub mod config;
pub mod git;
pub mod judge;
pub mod outbound;
pub mod restore;
pub mod run;
pub mod stub;
pub mod window;
