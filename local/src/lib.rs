//! Conveyor's one-machine runtime: the HTTP API, a poller per job-type queue that builds real
//! SQS batches for the same worker entrypoint Lambda calls, and the maintenance schedule — all
//! on the embedded backend, in one process.

pub mod bench;
pub mod poller;
pub mod runtime;

pub use runtime::{run, LocalSettings};

use anyhow::Context;

/// `conveyor [serve] [--addr A] [--data-dir D] [--backend B]` or `conveyor bench [...]`.
pub fn run_cli() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first().map(String::as_str) {
        Some("bench") => {
            args.remove(0);
            "bench"
        }
        Some("serve") => {
            args.remove(0);
            "serve"
        }
        Some("-h" | "--help" | "help") => {
            println!("{}", USAGE);
            return Ok(());
        }
        _ => "serve",
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match command {
        "bench" => rt.block_on(bench::run(args)),
        _ => {
            init_tracing();
            let settings = LocalSettings::from_env_and_args(&args)?;
            rt.block_on(run(settings))
        }
    }
}

const USAGE: &str = "\
conveyor — background jobs on one machine

USAGE:
  conveyor [serve] [--addr HOST:PORT] [--data-dir DIR] [--backend embedded]
  conveyor bench [--jobs N] [--clients C] [--queued N] [--url URL]

Flags mirror the environment: CONVEYOR_ADDR, CONVEYOR_DATA_DIR, CONVEYOR_BACKEND (see README).";

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
