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

use anyhow::Context;
use shared::jobs::Registry;

/// `conveyor [serve] [--addr A] [--data-dir D] [--backend B]` or `conveyor bench [...]`.
/// Exit codes: 0 done, 1 failed while running, 2 the configuration or command line is wrong.
pub fn run_cli() -> std::process::ExitCode {
    run_cli_with(|_| {})
}

/// `run_cli` with job types added to the shipped ones (the test build's extra types).
pub fn run_cli_with(extend: fn(&mut Registry)) -> std::process::ExitCode {
    use std::process::ExitCode;
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
        Some("bootstrap") => {
            args.remove(0);
            "bootstrap"
        }
        Some("bench-aws") => {
            args.remove(0);
            "bench-aws"
        }
        Some(c @ ("token" | "keys")) => {
            let command = if c == "token" { "token" } else { "keys" };
            args.remove(0);
            return credentials(command, &args);
        }
        Some(c) if cli::COMMANDS.contains(&c) => {
            let command = args.remove(0);
            return cli::run(&command, &args);
        }
        Some("-h" | "--help" | "help") => {
            println!("{}", USAGE);
            return ExitCode::SUCCESS;
        }
        _ => "serve",
    };
    let settings = if command != "bench" && command != "bench-aws" {
        match LocalSettings::from_env_and_args(&args) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("conveyor: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| {
            let result = match settings {
                None if command == "bench-aws" => rt.block_on(bench_aws(args)),
                None => rt.block_on(bench::run(args)),
                Some(settings) if command == "bootstrap" => {
                    init_tracing();
                    rt.block_on(runtime::bootstrap(settings, extend))
                }
                Some(settings) => {
                    init_tracing();
                    rt.block_on(run(settings, extend))
                }
            };
            // A handler stuck on its thread past its job's end must not hold up the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conveyor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
conveyor — background jobs on one machine

USAGE:
  conveyor [serve] [--addr HOST:PORT] [--data-dir DIR] [--backend embedded|aws]
  conveyor bootstrap --backend aws   create the table, bus, queues and dead-letter queues
                                     where AWS_ENDPOINT_URL (or AWS) points, then exit
  conveyor bench-aws [--jobs N]      no-op jobs through the AWS adapters (AWS_ENDPOINT_URL):
                                     billed requests per job and cost per million
  conveyor bench [--jobs N] [--clients C] [--queued N] [--url URL]
  conveyor token --tenant T --role R [--role R2] [--sub NAME] [--ttl 1h]
                                     print a JWT signed with CONVEYOR_JWT_SECRET
  conveyor keys create --tenant T --role R [--name N] [--expires-in 90d]
  conveyor keys list [--tenant T]
  conveyor keys revoke KEY_ID        API keys, in the store CONVEYOR_BACKEND names (the
                                     embedded one while no runtime uses its data directory)

CLIENT (any deployment: CONVEYOR_URL, default http://127.0.0.1:3000; CONVEYOR_TOKEN, an API
key or JWT; CONVEYOR_WS_URL where live updates are not at CONVEYOR_URL/ws; --json on each):
  conveyor submit TYPE [--payload JSON] [--delay S] [--run-at TIME] [--priority N]
                  [--max-attempts N] [--idempotency-key K]
  conveyor get|cancel|retry JOB_ID
  conveyor list [--status S] [--type T] [--limit N] [--cursor C]
  conveyor logs JOB_ID [--follow]
  conveyor stats
  conveyor watch JOB_ID [JOB_ID …]   live progress bars; exits 0 when every job succeeded,
                                     3 failed, 4 dead, 5 cancelled (the worst one)
  conveyor schedules create|update NAME TYPE (--cron EXPR | --rate EXPR | --at TIME)
                  [--timezone TZ] [--payload JSON] [--overlap skip|allow|queue_one]
                  [--catch-up latest|none] [--start-at T] [--end-at T] [--paused]
  conveyor schedules list | get NAME | runs NAME | pause NAME | resume NAME | delete NAME

Flags mirror the environment: CONVEYOR_ADDR, CONVEYOR_DATA_DIR, CONVEYOR_BACKEND (see README).";

/// `conveyor token …` and `conveyor keys …`.
fn credentials(command: &str, args: &[String]) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match shared::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conveyor: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if command == "token" {
        access::token(&config, args)
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(access::keys(&config, args)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conveyor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "aws")]
async fn bench_aws(args: Vec<String>) -> anyhow::Result<()> {
    aws::bench(args).await
}

#[cfg(not(feature = "aws"))]
async fn bench_aws(_: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("this build has no AWS backend (build with `--features aws`)")
}

/// Logs on stderr: human text with colours on a terminal; JSON lines, no escape codes,
/// anywhere else (a file, a pipe, a log collector).
fn init_tracing() {
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
