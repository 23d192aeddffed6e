//! The `conveyor` command line as types: the runtime's commands (`serve`, the default, and
//! `bootstrap`, `bench`, `bench-aws`, `token`, `keys`), the client commands that talk HTTP (and,
//! for `watch`, the WebSocket) to any deployment, and `completions`. Every command answers
//! `--help`; a wrong command line names what is wrong.
//!
//! Exit codes: 0 done (for `watch`: every job succeeded), 1 the request failed, 2 the command
//! line or the configuration is wrong; `watch` also 3 when a job failed, 4 dead, 5 cancelled
//! (the worst one).

mod batches;
mod bulk;
mod client;
mod dead_letters;
mod jobs;
mod limits;
mod schedules;
mod transfer;
mod types;
mod watch;

use crate::access::{KeysCommand, TokenArgs};
use crate::bench::{BenchArgs, BenchAwsArgs};
use crate::runtime::{LocalSettings, ServeArgs};
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use shared::jobs::Registry;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
With no command, `conveyor` serves (the same as `conveyor serve`). Settings are environment
variables (see the README); --addr, --data-dir and --backend win over CONVEYOR_ADDR,
CONVEYOR_DATA_DIR and CONVEYOR_BACKEND.

The client commands talk to any deployment: CONVEYOR_URL (or --url; default
http://127.0.0.1:3000), CONVEYOR_TOKEN (or --token: an API key or JWT; none in dev mode), and
CONVEYOR_WS_URL (or --ws-url) where live updates are not at CONVEYOR_URL/ws. --json on each
prints the API's JSON, for scripts.

Exit codes: 0 done, 1 the request failed, 2 the command line or configuration is wrong;
`watch`: 3 a job failed, 4 dead, 5 cancelled (the worst one).";

/// conveyor — background jobs on one machine, and a client of any deployment
#[derive(Debug, Parser)]
#[command(
    name = "conveyor",
    bin_name = "conveyor",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API, a poller per job type and maintenance (the default command)
    Serve(ServeArgs),
    /// Create the AWS backend's table, bus, queues and dead-letter queues where
    /// AWS_ENDPOINT_URL (or AWS) points, then exit
    Bootstrap(ServeArgs),
    /// Start the runtime on a fresh data directory, drive it over HTTP and print its figures
    Bench(BenchArgs),
    /// No-op jobs through the AWS adapters (AWS_ENDPOINT_URL): billed requests per job and
    /// cost per million
    BenchAws(BenchAwsArgs),
    /// Print a JWT signed with CONVEYOR_JWT_SECRET
    Token(TokenArgs),
    /// API keys, in the store CONVEYOR_BACKEND names (the embedded one while no runtime uses
    /// its data directory)
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Submit a job
    Submit(jobs::SubmitArgs),
    /// A job, with its result
    Get(jobs::JobArgs),
    /// The tenant's jobs, newest first
    List(jobs::ListArgs),
    /// Cancel a job (a running one is asked to stop)
    Cancel(jobs::JobArgs),
    /// Retry a job that ended, with fresh attempts
    Retry(jobs::JobArgs),
    /// A new job made from one (of any status), with its payload or another
    Replay(jobs::ReplayArgs),
    /// A job's log lines
    Logs(jobs::LogsArgs),
    /// The tenant's jobs counted by type and status
    Stats(jobs::StatsArgs),
    /// A live progress bar for each job until all have ended; exits 0 when every one
    /// succeeded, 3 failed, 4 dead, 5 cancelled (the worst one)
    Watch(watch::WatchArgs),
    /// Recurring jobs
    Schedules(schedules::SchedulesArgs),
    /// Many jobs as one batch, followed together
    Batches(batches::BatchesArgs),
    /// Dead jobs, and putting them back
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Retry or cancel many jobs at once
    Bulk(bulk::BulkArgs),
    /// A tenant's limits
    Limits(limits::LimitsArgs),
    /// The job types, and pausing and resuming one
    Types(types::TypesArgs),
    /// Write the tenant's jobs (by filter) as JSON Lines, oldest first, each with its payload,
    /// result, log and steps
    Export(transfer::ExportArgs),
    /// Take in jobs `conveyor export` wrote, under their ids: a finished one as it ended (it
    /// never runs again), a queued or running one queued again
    Import(transfer::ImportArgs),
    /// Print a completion script for a shell, e.g. `conveyor completions bash >
    /// /etc/bash_completion.d/conveyor`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// The command line's definition (its help, its completions, its tests).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parse the process's arguments and run what they say; the process's exit code.
pub fn run(extend: fn(&mut Registry)) -> ExitCode {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // (help and the version on stdout with 0; a usage error on stderr with 2)
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let name = matches.subcommand_name().unwrap_or("serve").to_string();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(flags) => runtime(extend, &flags, false),
        Command::Bootstrap(flags) => runtime(extend, &flags, true),
        Command::Bench(args) => blocking(|rt| rt.block_on(crate::bench::run(args))),
        Command::BenchAws(args) => blocking(|rt| rt.block_on(bench_aws(args))),
        Command::Token(args) => credentials(|config| crate::access::token(config, &args)),
        Command::Keys { command } => {
            credentials(|config| tokio_runtime()?.block_on(crate::access::keys(config, &command)))
        }
        Command::Completions { shell } => {
            use std::io::Write;
            let mut script = vec![];
            clap_complete::generate(shell, &mut command(), "conveyor", &mut script);
            // (a reader that stops early, such as `head`, is no failure)
            let _ = std::io::stdout().write_all(&script);
            ExitCode::SUCCESS
        }
        client => run_client(&name, client),
    }
}

/// A client command, on a runtime of its own.
fn run_client(name: &str, command: Command) -> ExitCode {
    let outcome = tokio_runtime().and_then(|rt| {
        rt.block_on(async move {
            match command {
                Command::Submit(a) => jobs::submit(a).await,
                Command::Get(a) => jobs::one("get", a).await,
                Command::Cancel(a) => jobs::one("cancel", a).await,
                Command::Retry(a) => jobs::one("retry", a).await,
                Command::Replay(a) => jobs::replay(a).await,
                Command::List(a) => jobs::list(a).await,
                Command::Logs(a) => jobs::logs(a).await,
                Command::Stats(a) => jobs::stats(a).await,
                Command::Watch(a) => watch::watch(a).await,
                Command::Schedules(a) => schedules::run(a).await,
                Command::Batches(a) => batches::run(a).await,
                Command::DeadLetters(a) => dead_letters::run(a).await,
                Command::Bulk(a) => bulk::run(a).await,
                Command::Limits(a) => limits::run(a).await,
                Command::Types(a) => types::run(a).await,
                Command::Export(a) => transfer::export(a).await,
                Command::Import(a) => transfer::import(a).await,
                other => unreachable!("not a client command: {other:?}"),
            }
        })
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<client::Usage>().is_some() => {
            eprintln!("conveyor {name}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("conveyor {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Run `work` on a runtime of its own: exit code 0, or 1 with its error.
fn blocking(work: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<()>) -> ExitCode {
    let result = tokio_runtime().and_then(|rt| {
        let result = work(&rt);
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

/// `serve` or `bootstrap`: settings from the environment and the flags (exit code 2 when
/// they are wrong), then the runtime.
fn runtime(extend: fn(&mut Registry), flags: &ServeArgs, bootstrap: bool) -> ExitCode {
    let settings = match LocalSettings::from_env_and_flags(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("conveyor: {e}");
            return ExitCode::from(2);
        }
    };
    crate::init_tracing();
    blocking(|rt| {
        if bootstrap {
            rt.block_on(crate::runtime::bootstrap(settings, extend))
        } else {
            rt.block_on(crate::run(settings, extend))
        }
    })
}

/// `token` and `keys`: the configuration (exit code 2 when it is wrong), then `work`.
fn credentials(work: impl FnOnce(&shared::Config) -> anyhow::Result<()>) -> ExitCode {
    let config = match shared::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conveyor: {e}");
            return ExitCode::from(2);
        }
    };
    match work(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conveyor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "aws")]
async fn bench_aws(args: BenchAwsArgs) -> anyhow::Result<()> {
    crate::aws::bench(args).await
}

#[cfg(not(feature = "aws"))]
async fn bench_aws(_: BenchAwsArgs) -> anyhow::Result<()> {
    anyhow::bail!("this build has no AWS backend (build with `--features aws`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn no_command_is_serve_with_its_flags() {
        let cli = Cli::try_parse_from(["conveyor", "--addr", "127.0.0.1:4000"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.addr, Some("127.0.0.1:4000".parse().unwrap()));
        let cli = Cli::try_parse_from(["conveyor", "serve", "--backend", "aws"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Serve(ServeArgs { backend: Some(ref b), .. })) if b == "aws")
        );
    }

    #[test]
    fn usage_errors_name_the_flag_and_exit_2() {
        for args in [
            &["conveyor", "submit", "noop", "--frobnicate"][..],
            &["conveyor", "bench", "--frobnicate", "1"],
            &["conveyor", "--frobnicate"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains("--frobnicate"), "{e}");
        }
        let e =
            Cli::try_parse_from(["conveyor", "submit", "noop", "--payload", "{no"]).unwrap_err();
        assert!(e.to_string().contains("--payload"), "{e}");
    }

    #[test]
    fn the_documented_invocations_parse() {
        for args in [
            &[
                "conveyor", "token", "--tenant", "T", "--role", "operator", "--ttl", "2h",
            ][..],
            &[
                "conveyor",
                "token",
                "--tenant",
                "t",
                "--role",
                "reader,submitter",
                "--role",
                "admin",
            ],
            &[
                "conveyor",
                "bench",
                "--jobs",
                "20000",
                "--queued",
                "0",
                "--pickups",
                "1",
                "--push-clients",
                "0",
            ],
            &["conveyor", "bench", "--celery"],
            &["conveyor", "bench-aws", "--jobs", "1000", "--batch", "25"],
            &["conveyor", "bootstrap", "--backend", "aws"],
            &[
                "conveyor",
                "keys",
                "create",
                "--tenant",
                "acme",
                "--role",
                "reader",
                "--name",
                "cli",
                "--expires-in",
                "90d",
            ],
            &["conveyor", "keys", "revoke", "01j0000000000000000000000a"],
            &[
                "conveyor",
                "submit",
                "sleep",
                "--payload",
                r#"{"ms": 3000}"#,
                "--priority",
                "-5",
                "--json",
            ],
            &[
                "conveyor",
                "schedules",
                "create",
                "nightly",
                "noop",
                "--cron",
                "30 2 * * *",
                "--json",
            ],
            &["conveyor", "schedules", "--json", "list"],
            &[
                "conveyor", "bulk", "retry", "--status", "dead", "--type", "noop",
            ],
            &["conveyor", "dead-letters", "redrive", "01J1", "01J2"],
            &[
                "conveyor",
                "limits",
                "set",
                "acme",
                "--max-active",
                "default",
            ],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn a_bulk_action_takes_ids_or_a_filter_not_both_and_not_neither() {
        for args in [
            &["conveyor", "bulk", "retry"][..],
            &["conveyor", "bulk", "retry", "01J1", "--type", "noop"],
            &["conveyor", "bulk", "cancel", "--all", "--status", "queued"],
            &["conveyor", "dead-letters", "redrive"],
            &[
                "conveyor",
                "dead-letters",
                "redrive",
                "01J1",
                "--type",
                "noop",
            ],
            &["conveyor", "schedules", "create", "n", "noop"],
            &[
                "conveyor",
                "schedules",
                "create",
                "n",
                "noop",
                "--cron",
                "* * * * *",
                "--rate",
                "1 hour",
            ],
            &["conveyor", "limits", "set", "acme"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
