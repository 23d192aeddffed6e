//! Conveyor's one-machine runtime: the HTTP API, a poller per job-type queue that builds real
//! SQS batches for the same worker entrypoint Lambda calls, and the maintenance schedule — all
//! in one process, on the embedded backend or (feature `aws`) on DynamoDB, SQS and EventBridge.

pub mod access;
#[cfg(feature = "aws")]
pub mod aws;
pub mod bench;
pub mod cli;
pub mod live;
pub mod metrics;
pub mod poller;
pub mod runtime;
pub mod supervise;

pub use runtime::{run, LocalSettings};

use shared::jobs::Registry;

/// `conveyor [COMMAND]`: see `cli` (and `conveyor --help`).
pub fn run_cli() -> std::process::ExitCode {
    run_cli_with(|_| {})
}

/// `run_cli` with job types added to the shipped ones (the test build's extra types).
pub fn run_cli_with(extend: fn(&mut Registry)) -> std::process::ExitCode {
    cli::run(extend)
}

/// Logs on stderr: human text with colours on a terminal; JSON lines, no escape codes,
/// anywhere else (a file, a pipe, a log collector).
pub(crate) fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().with_ansi(false).init();
    }
}
