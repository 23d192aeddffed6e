//! The local runtime on the AWS backend (`CONVEYOR_BACKEND=aws`): the same pollers and
//! maintenance timer, against DynamoDB, SQS and EventBridge wherever the standard AWS settings
//! point (`AWS_ENDPOINT_URL` for LocalStack or moto). `conveyor bootstrap` creates the
//! resources only.

use anyhow::Context;
use shared::adapters::aws::{sdk_config_from_env, AwsBackend, AwsSettings};
use shared::adapters::queue_specs;
use shared::config::Config;
use shared::jobs::Registry;

/// The AWS backend, with the table, bus and each type's queue and dead-letter queue created
/// where they do not exist yet.
pub async fn bootstrap(config: &Config, registry: &Registry) -> anyhow::Result<AwsBackend> {
    let sdk = sdk_config_from_env().await;
    let backend = AwsBackend::new(&sdk, AwsSettings::of(config));
    backend
        .bootstrap(&queue_specs(config, registry))
        .await
        .context("creating the AWS resources")?;
    Ok(backend)
}

/// List prices used for the cost figure (us-east-1, on-demand, as of this writing; see README).
const PRICES: &[(&str, f64)] = &[
    ("API Gateway HTTP API, per million requests", 1.00),
    ("Lambda, per million invocations", 0.20),
    ("SQS standard, per million requests", 0.40),
    ("EventBridge custom events, per million", 1.00),
    ("DynamoDB on-demand, per million write units", 0.625),
    ("DynamoDB on-demand, per million read units", 0.125),
];

/// `conveyor bench-aws [--jobs N] [--batch K]`: no-op jobs through the AWS adapters wherever
/// the standard settings point (an emulator by `AWS_ENDPOINT_URL`, or an account), as Lambda
/// would run them: each submitted through the service as the API does (one API request each,
/// its audit entry in the same write; with `--batch K`, K a request through batch submit),
/// received in batches of ten, worked by the worker entrypoint (one invocation a batch) and
/// deleted. Prints the billed requests by service and operation, the write units the table
/// reported, and the cost per million jobs at the list prices above. Its resources get names
/// of their own.
pub async fn bench(args: Vec<String>) -> anyhow::Result<()> {
    use shared::adapters::aws::{CapacityMeter, RequestCounter};
    use shared::entrypoints::sqs::handle_sqs_batch;
    use shared::jobs::BuiltinSettings;
    use shared::ports::QueueConsumer;
    use shared::service::{JobService, SubmitRequest};
    use shared::worker::{Worker, WorkerSettings};
    use std::sync::Arc;
    use std::time::Duration;

    let jobs: usize = match args.iter().position(|a| a == "--jobs") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .context("--jobs needs a number")?,
        None => 200,
    };
    // Jobs per submit: 1 submits each on its own (one API request a job); more, through batch
    // submit (one API request a batch).
    let per_submit: usize = match args.iter().position(|a| a == "--batch") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=1000).contains(n))
            .context("--batch needs a number from 1 to 1000")?,
        None => 1,
    };
    let config = Config::from_env()?;
    let id = chrono::Utc::now().timestamp_millis();
    let (counter, meter) = (RequestCounter::default(), CapacityMeter::default());
    let backend = AwsBackend::metered(
        &sdk_config_from_env().await,
        AwsSettings {
            table: format!("conveyor-bench-{id}"),
            event_bus: format!("conveyor-bench-{id}"),
            scheduler: None,
        },
        Some(counter.clone()),
        Some(meter.clone()),
    );
    let registry = Arc::new(Registry::builtin(
        &format!("cb{id}-"),
        &BuiltinSettings::default(),
    ));
    backend
        .bootstrap(&queue_specs(&config, &registry))
        .await
        .context("creating the bench's resources")?;
    let ports = backend.ports();
    let service = JobService::new(ports.clone(), registry.clone(), config.max_payload_bytes);
    let worker = Worker::new(
        ports,
        registry.clone(),
        WorkerSettings::from_config(&config),
    );
    let noop = shared::domain::JobType::parse("noop")?;
    let queue = registry.queue_name(&noop);
    counter.reset();
    meter.reset();

    let started = std::time::Instant::now();
    let tenant = shared::domain::Tenant::parse("bench")?;
    // As the API submits: with the audit entry of who did it, in the jobs' own write.
    let entry = |action: &str| {
        shared::domain::Actor {
            actor: "jwt:bench".into(),
            source_ip: Some("127.0.0.1".into()),
        }
        .entry(
            Some(tenant.clone()),
            action,
            None,
            "ok",
            chrono::Utc::now(),
            std::time::Duration::from_secs(90 * 24 * 3600),
        )
    };
    let mut requests = 0;
    if per_submit == 1 {
        for chunk in (0..jobs).collect::<Vec<_>>().chunks(8) {
            let submits = chunk.iter().map(|_| {
                service.submit_audited(
                    tenant.clone(),
                    SubmitRequest::new(noop.clone(), serde_json::json!({})),
                    Some(entry("job.submit")),
                )
            });
            for r in futures::future::join_all(submits).await {
                r?;
            }
            requests += chunk.len();
        }
    } else {
        for chunk in (0..jobs).collect::<Vec<_>>().chunks(per_submit) {
            let items = chunk
                .iter()
                .map(|_| SubmitRequest::new(noop.clone(), serde_json::json!({})))
                .collect();
            let results = service
                .submit_batch(
                    tenant.clone(),
                    items,
                    false,
                    Some(entry("job.submit_batch")),
                )
                .await?;
            for r in results {
                r?;
            }
            requests += 1;
        }
    }
    let (mut done, mut batches) = (0, 0);
    while done < jobs {
        let messages = backend
            .queue
            .receive(&queue, 10, Duration::from_secs(60), Duration::from_secs(1))
            .await?;
        if messages.is_empty() {
            continue;
        }
        batches += 1;
        let response = handle_sqs_batch(&worker, crate::poller::sqs_event(&queue, &messages)).await;
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "a batch reported failures"
        );
        let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        backend.queue.delete(&queue, &handles).await?;
        done += messages.len();
    }
    let elapsed = started.elapsed();

    let counts = counter.counts();
    let total: u64 = counts.values().sum();
    let per_job = |n: f64| n / jobs as f64;
    println!("\nconveyor bench-aws — {jobs} no-op jobs, {per_submit} a submit ({requests} API requests), batches of up to 10 ({batches} batches), {elapsed:.1?}\n");
    println!("| service | operation | requests | per job |");
    println!("|---|---|---|---|");
    for ((service, op), n) in &counts {
        println!("| {service} | {op} | {n} | {:.2} |", per_job(*n as f64));
    }
    println!("| all | | {total} | {:.2} |", per_job(total as f64));
    let billed = total + requests as u64 + batches as u64;
    println!(
        "| with the API requests and the worker invocations | | {billed} | {:.2} |",
        per_job(billed as f64)
    );
    let sqs: u64 = counts
        .iter()
        .filter(|((s, _), _)| s == "SQS")
        .map(|(_, n)| n)
        .sum();
    let reads: u64 = counts
        .iter()
        .filter(|((s, op), _)| s == "DynamoDB" && (op == "GetItem" || op == "Query"))
        .map(|(_, n)| n)
        .sum();
    let wu = meter.write_units();
    // Per million jobs: the API requests and (a batch's share of) one invocation each, the SQS
    // requests, one event each, the write units the table reported, reads at one unit each.
    let million = 1_000_000.0 / jobs as f64;
    let cost = [
        requests as f64 * million * PRICES[0].1 / 1e6,
        batches as f64 * million * PRICES[1].1 / 1e6,
        sqs as f64 * million * PRICES[2].1 / 1e6,
        jobs as f64 * million * PRICES[3].1 / 1e6,
        wu * million * PRICES[4].1 / 1e6,
        reads as f64 * million * PRICES[5].1 / 1e6,
    ];
    println!("\n| cost per million no-op jobs (list prices) | $ |");
    println!("|---|---|");
    for ((what, _), c) in PRICES.iter().zip(cost) {
        println!("| {what} | {c:.2} |");
    }
    println!(
        "| all (Lambda duration and storage not counted) | {:.2} |",
        cost.iter().sum::<f64>()
    );
    println!(
        "\nDynamoDB write units reported: {wu:.1} ({:.2} a job)",
        per_job(wu)
    );
    Ok(())
}

/// The name the stream reader goes by in `/healthz`.
pub const COUNTS: &str = "stats";

/// The local stand-in for the `stats` function and its event-source mapping: the table's
/// stream read four times a second and kept as counter items (and its job changes handed to
/// the live updates). A failed read is logged and shown in
/// `/healthz` until one succeeds; nothing is lost, as the next read starts where this one did.
pub async fn count_stream(
    reader: std::sync::Arc<shared::adapters::aws::StreamReader>,
    health: std::sync::Arc<shared::health::Health>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => match reader.catch_up().await {
                Ok(_) => health.up(COUNTS),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the table's stream failed; the next read tries again");
                    health.down(COUNTS, format!("reading the stream: {e}"));
                }
            },
            _ = crate::poller::stopped(&mut stop) => return,
        }
    }
}
