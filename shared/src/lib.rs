//! Conveyor's shared crate: the job domain, the ports it talks through, the adapters behind them,
//! and the entrypoints that turn events (HTTP, SQS batches, schedules) into domain calls.
//!
//! The Lambda binaries in `functions/` and the one-machine runtime in `local/` are thin wrappers
//! over this crate, so every path a job takes is the same code wherever it runs.

pub mod adapters;
pub mod assets;
pub mod auth;
pub mod config;
pub mod domain;
pub mod entrypoints;
pub mod health;
pub mod jobs;
pub mod lifecycle;
pub mod live;
pub mod maintenance;
pub mod metrics;
pub mod outbound;
pub mod ports;
pub mod schedules;
pub mod service;
pub mod worker;

pub use config::Config;

/// A Lambda function's logs: JSON lines (CloudWatch adds the time), INFO and above.
#[cfg(feature = "lambda")]
pub fn init_lambda_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .without_time()
        .init();
}
