//! The local runtime, built inside the end-to-end package so its tests can start it as a real
//! process (`CARGO_BIN_EXE_conveyor-under-test`), with job types only the tests use:
//! - `test.block` blocks its thread (`std::thread::sleep`) for `ms`, or until a file `release`
//!   exists in `$TEST_COUNT_DIR`;
//! - `test.spin` keeps its thread busy in a loop for `ms`, or until that file exists;
//! - `test.count` appends a line `<job id> <attempt>` to `$TEST_COUNT_DIR/runs` (a place
//!   outside the store, so exactly-once is counted, not inferred), after awaiting `ms` if given;
//! - `test.rated` does nothing, at most one start a second (a rate shared by every runtime on
//!   the store);
//! - `test.rated-per-key` does nothing, at most one start a second per concurrency key;
//! - `test.keyed` sleeps `ms`, at most two running at once per concurrency key;
//! - `test.steps` runs `steps` durable steps (`JobContext::step`) named `step-1`, `step-2`, …,
//!   each appending `<job id> step-<n>` to `$TEST_COUNT_DIR/steps` when it runs, and step `hold`
//!   holding (awaiting a long time) the first time it runs; its result is the list of the
//!   steps' results, `n * 10` each;
//! - `test.chain` awaits `ms`, then answers `{"n", "parents", "without_result"}`: `n` is its
//!   payload's `add` plus the sum of its dependencies' results' `n`, then how many dependencies
//!   it had, and how many gave no result;
//! - `test.barrier` appends its id to `$TEST_COUNT_DIR/barrier-<group>` and waits until `n`
//!   jobs of its `group` have, so they all end at the same moment;
//! - `test.fanout` adds `n` `test.echo` jobs to its own batch, then ends;
//! - `test.panics` panics, and `test.broken` fails (retryable), until a file `fixed` exists in
//!   `$TEST_COUNT_DIR` (the cause fixed); then they succeed.

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::domain::JobError;
use shared::jobs::{JobContext, JobHandler, JobOptions, Registry};
use std::io::Write;
use std::time::{Duration, Instant};

fn millis(payload: &Value) -> u64 {
    payload.get("ms").and_then(Value::as_u64).unwrap_or(0)
}

/// Whether the test let the blocking types go (a file `release` in `$TEST_COUNT_DIR`).
fn released() -> bool {
    std::env::var("TEST_COUNT_DIR")
        .is_ok_and(|dir| std::path::Path::new(&dir).join("release").exists())
}

struct Block;

#[async_trait]
impl JobHandler for Block {
    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let until = Instant::now() + Duration::from_millis(millis(&payload));
        while Instant::now() < until && !released() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(json!({ "blocked_ms": millis(&payload) }))
    }
}

struct Spin;

#[async_trait]
impl JobHandler for Spin {
    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let until = Instant::now() + Duration::from_millis(millis(&payload));
        let mut turns: u64 = 0;
        while Instant::now() < until {
            turns = std::hint::black_box(turns.wrapping_add(1));
            if turns.is_multiple_of(1_000_000) && released() {
                break;
            }
        }
        Ok(json!({ "turns": turns }))
    }
}

struct Count;

#[async_trait]
impl JobHandler for Count {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let dir = std::env::var("TEST_COUNT_DIR")
            .map_err(|_| JobError::permanent("TEST_COUNT_DIR is not set"))?;
        let line = format!("{} {}\n", ctx.job_id(), ctx.attempt());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&dir).join("runs"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| JobError::permanent(format!("counting: {e}")))?;
        tokio::time::sleep(Duration::from_millis(millis(&payload))).await;
        Ok(json!({ "counted": true }))
    }
}

/// Succeeds with the payload it was given, as its result.
struct Echo;

#[async_trait]
impl JobHandler for Echo {
    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        Ok(json!({ "payload": payload }))
    }
}

struct Steps;

#[async_trait]
impl JobHandler for Steps {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let dir = std::env::var("TEST_COUNT_DIR")
            .map_err(|_| JobError::permanent("TEST_COUNT_DIR is not set"))?;
        let file = std::path::Path::new(&dir).join("steps");
        let steps = payload.get("steps").and_then(Value::as_u64).unwrap_or(3);
        let hold = payload.get("hold").and_then(Value::as_u64);
        ctx.plan_steps(steps as u32);
        let mut results = vec![];
        for n in 1..=steps {
            let name = format!("step-{n}");
            let line = format!("{} {name}\n", ctx.job_id());
            let result: u64 = ctx
                .step(&name, async {
                    let before = std::fs::read_to_string(&file).unwrap_or_default();
                    let first = !before.contains(line.as_str());
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&file)
                        .and_then(|mut f| f.write_all(line.as_bytes()))
                        .map_err(|e| JobError::permanent(format!("counting: {e}")))?;
                    if hold == Some(n) && first {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok(n * 10)
                })
                .await?;
            results.push(result);
        }
        Ok(json!({ "steps": results }))
    }
}

struct Chain;

#[async_trait]
impl JobHandler for Chain {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        tokio::time::sleep(Duration::from_millis(millis(&payload))).await;
        let parents = ctx.dependency_results().await?;
        let sum: i64 = parents
            .iter()
            .filter_map(|(_, r)| r.as_ref()?.get("n")?.as_i64())
            .sum();
        let add = payload.get("add").and_then(Value::as_i64).unwrap_or(0);
        Ok(json!({
            "n": sum + add,
            "parents": parents.len(),
            "without_result": parents.iter().filter(|(_, r)| r.is_none()).count(),
        }))
    }
}

struct Barrier;

#[async_trait]
impl JobHandler for Barrier {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let dir = std::env::var("TEST_COUNT_DIR")
            .map_err(|_| JobError::permanent("TEST_COUNT_DIR is not set"))?;
        let group = payload
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or("all");
        let n = payload.get("n").and_then(Value::as_u64).unwrap_or(2) as usize;
        let file = std::path::Path::new(&dir).join(format!("barrier-{group}"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(format!("{}\n", ctx.job_id()).as_bytes()))
            .map_err(|e| JobError::permanent(format!("barrier: {e}")))?;
        while std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .count()
            < n
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(json!({ "met": n }))
    }
}

struct Fanout;

#[async_trait]
impl JobHandler for Fanout {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let n = payload.get("n").and_then(Value::as_u64).unwrap_or(1);
        let echo = shared::domain::JobType::parse("test.echo").expect("a type name");
        let jobs = (0..n)
            .map(|i| shared::service::SubmitRequest::new(echo.clone(), json!({ "i": i })))
            .collect();
        let added = ctx.add_to_batch(jobs).await?;
        Ok(json!({ "added": added }))
    }
}

/// Whether the cause of `test.panics` and `test.broken` was fixed.
fn fixed() -> bool {
    std::env::var("TEST_COUNT_DIR")
        .is_ok_and(|dir| std::path::Path::new(&dir).join("fixed").exists())
}

struct Panics;

#[async_trait]
impl JobHandler for Panics {
    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        if !fixed() {
            panic!("the handler is broken");
        }
        Ok(json!({ "fixed": true }))
    }
}

struct Broken;

#[async_trait]
impl JobHandler for Broken {
    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        if !fixed() {
            return Err(JobError::retryable("the handler is broken"));
        }
        Ok(json!({ "fixed": true }))
    }
}

fn test_types(registry: &mut Registry) {
    let contained = JobOptions {
        timeout: Duration::from_millis(500),
        max_attempts: 1,
        concurrency: 4,
        batch_size: 1,
        ..JobOptions::default()
    };
    registry.register("test.block", contained.clone(), Block);
    registry.register("test.spin", contained, Spin);
    registry.register(
        "test.count",
        JobOptions {
            concurrency: 8,
            ..JobOptions::default()
        },
        Count,
    );
    let fixable = JobOptions {
        concurrency: 8,
        execution: shared::jobs::Execution::Task,
        ..JobOptions::default()
    };
    registry.register(
        "test.rated",
        JobOptions {
            rate: Some(shared::domain::Rate {
                per: 1,
                period: Duration::from_secs(1),
            }),
            concurrency: 8,
            batch_size: 1,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        shared::jobs::Noop,
    );
    registry.register(
        "test.rated-per-key",
        JobOptions {
            rate_per_key: Some(shared::domain::Rate {
                per: 1,
                period: Duration::from_secs(1),
            }),
            concurrency: 8,
            batch_size: 1,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        shared::jobs::Noop,
    );
    registry.register(
        "test.keyed",
        JobOptions {
            max_running_per_key: Some(2),
            concurrency: 8,
            batch_size: 1,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        shared::jobs::Sleep,
    );
    registry.register("test.echo", fixable.clone(), Echo);
    registry.register("test.chain", fixable.clone(), Chain);
    registry.register("test.fanout", fixable.clone(), Fanout);
    registry.register(
        "test.barrier",
        JobOptions {
            concurrency: 8,
            batch_size: 1,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        Barrier,
    );
    registry.register(
        "test.steps",
        JobOptions {
            timeout: Duration::from_secs(3600),
            max_attempts: 3,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        Steps,
    );
    registry.register(
        "test.lanes",
        JobOptions {
            high_priority_ratio: Some(2),
            concurrency: 1,
            batch_size: 1,
            execution: shared::jobs::Execution::Task,
            ..JobOptions::default()
        },
        shared::jobs::Sleep,
    );
    registry.register("test.panics", fixable.clone(), Panics);
    registry.register("test.broken", fixable, Broken);
}

fn main() -> std::process::ExitCode {
    local::run_cli_with(test_types)
}
