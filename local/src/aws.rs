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

/// `conveyor bench-aws [--jobs N] [--batch K] [--payload-bytes B] [--heartbeats H]`: no-op
/// jobs through the AWS adapters wherever the standard settings point (an emulator by
/// `AWS_ENDPOINT_URL`, or an account), as Lambda would run them: each submitted through the
/// service as the API does (one API request each, audited as `CONVEYOR_AUDIT_SUBMITS` says;
/// with `--batch K`, K a request through batch submit, one audit entry a request), received in
/// batches of ten, worked by the worker entrypoint (one invocation a batch) and deleted. Each
/// job's payload is `B` bytes of JSON. Prints the billed requests by service and operation, the
/// write units the table reported (by what they were for), the cost per million jobs at the
/// list prices above, the write units of a heartbeat (H jobs started and beating once, apart
/// from the rest), and the partition heat: the largest share of the write units that one
/// partition key value took, in the table or its index, and what it means at 10,000 jobs a
/// second in one tenant. Its resources get names of their own.
pub async fn bench(args: crate::bench::BenchAwsArgs) -> anyhow::Result<()> {
    use shared::adapters::aws::{CapacityMeter, RequestCounter};
    use shared::entrypoints::sqs::handle_sqs_batch;
    use shared::jobs::BuiltinSettings;
    use shared::ports::QueueConsumer;
    use shared::service::{JobService, SubmitRequest};
    use shared::worker::{Worker, WorkerSettings};
    use std::sync::Arc;
    use std::time::Duration;

    let crate::bench::BenchAwsArgs {
        jobs,
        batch: per_submit,
        payload_bytes,
        heartbeats,
    } = args;
    let config = Config::from_env()?;
    let id = chrono::Utc::now().timestamp_millis();
    let (counter, meter) = (RequestCounter::default(), CapacityMeter::default());
    let backend = AwsBackend::metered(
        &sdk_config_from_env().await,
        AwsSettings {
            table: format!("conveyor-bench-{id}"),
            event_bus: format!("conveyor-bench-{id}"),
            scheduler: None,
            shards: config.shards,
            events: config.events.clone(),
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
        ports.clone(),
        registry.clone(),
        WorkerSettings::from_config(&config),
    );
    let noop = shared::domain::JobType::parse("noop")?;
    let queue = registry.queue_name(&noop);
    let payload = payload_of(payload_bytes);
    // The `stats` function's part, as its event-source mapping runs it: the table's stream
    // read (by requests not billed, as the mapping's are not), queued jobs' messages sent
    // (billed: through the counted queue) and the counts kept (their write units metered).
    let stream = AwsBackend::new(&sdk_config_from_env().await, backend.settings().clone())
        .stream_reader()
        .with_meter(meter.clone())
        .with_outbox(Arc::new(shared::lifecycle::Messages::new(
            backend.queue.clone(),
            registry.clone(),
        )));
    counter.reset();
    meter.reset();

    let started = std::time::Instant::now();
    let tenant = shared::domain::Tenant::parse("bench")?;
    // As the API submits: with the audit entry of who did it.
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
                    SubmitRequest::new(noop.clone(), payload.clone()),
                    config.audit_submits.then(|| entry("job.submit")),
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
                .map(|_| SubmitRequest::new(noop.clone(), payload.clone()))
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
    // (the stream is read in groups of about a thousand records, as the mapping hands them
    // over at this rate: when the queue runs dry, and every hundred batches)
    stream.catch_up().await?;
    while done < jobs {
        let messages = backend
            .queue
            .receive(&queue, 10, Duration::from_secs(60), Duration::from_secs(1))
            .await?;
        if messages.is_empty() {
            stream.catch_up().await?;
            continue;
        }
        batches += 1;
        if batches % 100 == 0 {
            stream.catch_up().await?;
        }
        let response = handle_sqs_batch(&worker, crate::poller::sqs_event(&queue, &messages)).await;
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "a batch reported failures"
        );
        let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        backend.queue.delete(&queue, &handles).await?;
        done += messages.len();
    }
    stream.catch_up().await?;
    let elapsed = started.elapsed();

    let counts = counter.counts();
    let total: u64 = counts.values().sum();
    let per_job = |n: f64| n / jobs as f64;
    println!("\nconveyor bench-aws — {jobs} no-op jobs of {payload_bytes} payload bytes, {per_submit} a submit ({requests} API requests), batches of up to 10 ({batches} batches), {} shards, {elapsed:.1?}\n", config.shards);
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
    let events: u64 = counts
        .iter()
        .filter(|((s, op), _)| s == "EventBridge" && op == "PutEvents")
        .map(|(_, n)| n)
        .sum();
    let reads: u64 = counts
        .iter()
        .filter(|((s, op), _)| {
            s == "DynamoDB" && (op == "GetItem" || op == "Query" || op == "BatchGetItem")
        })
        .map(|(_, n)| n)
        .sum();
    let wu = meter.write_units();
    // Per million jobs: the API requests and (a batch's share of) one worker invocation each,
    // the SQS requests, the events sent (at most ten a request), the write units the table
    // reported, reads at one unit each.
    let million = 1_000_000.0 / jobs as f64;
    let sent_events = if config.events == shared::domain::EventSelection::None {
        0.0
    } else {
        (events as f64).max(0.0) * 10.0
    };
    let cost = [
        requests as f64 * million * PRICES[0].1 / 1e6,
        batches as f64 * million * PRICES[1].1 / 1e6,
        sqs as f64 * million * PRICES[2].1 / 1e6,
        sent_events.min(jobs as f64) * million * PRICES[3].1 / 1e6,
        wu * million * PRICES[4].1 / 1e6,
        reads as f64 * million * PRICES[5].1 / 1e6,
    ];
    println!("\n| cost per million no-op jobs (list prices) | $ |");
    println!("|---|---|");
    for ((what, _), c) in PRICES.iter().zip(cost) {
        println!("| {what} | {c:.2} |");
    }
    println!(
        "| all (the api function's invocations, Lambda duration and storage not counted) | {:.2} |",
        cost.iter().sum::<f64>()
    );
    println!(
        "\nDynamoDB write units reported: {wu:.1} ({:.2} a job)",
        per_job(wu)
    );
    println!("\n| writes for | requests | write units | per job |");
    println!("|---|---|---|---|");
    for (kind, n, units) in meter.kinds() {
        println!("| {kind} | {n} | {units:.1} | {:.2} |", per_job(units));
    }
    let keys = meter.keys().len();
    if let Some(hot) = meter.hottest() {
        // (a key many jobs share takes the same share of the units at any rate)
        let rate = hot.units / jobs as f64 * 10_000.0;
        println!(
            "\npartition heat: {keys} partition key values written; of those many jobs share, the hottest, `{}`, took {:.1} of {wu:.1} write units ({:.2}%): {rate:.0} WCU/s at 10,000 jobs/s in one tenant (a key value takes at most ~1,000)",
            hot.key,
            hot.units,
            hot.share * 100.0
        );
    }
    if let Some((key, units)) = meter.largest_one_job_key() {
        println!(
            "of one job's own keys (payload, result, log, steps, idempotency key), the largest, `{key}`, took {units:.1} write units, once: no rate adds to it"
        );
    }

    // Heartbeats, apart: jobs started by hand, each beating once with progress.
    let mut started_jobs = vec![];
    for _ in 0..heartbeats {
        let (job, _) = service
            .submit(
                tenant.clone(),
                SubmitRequest::new(noop.clone(), payload.clone()),
            )
            .await?;
        let now = chrono::Utc::now();
        match ports.store.start(job.id, now, now).await? {
            shared::ports::Started::Running(job) => started_jobs.push(*job),
            other => anyhow::bail!("a heartbeat job did not start: {other:?}"),
        }
    }
    meter.reset();
    for job in &started_jobs {
        let progress = shared::domain::Progress {
            percent: 50,
            message: Some("half way".into()),
        };
        ports
            .store
            .heartbeat(job.id, job.runs, chrono::Utc::now(), Some(&progress))
            .await?;
    }
    let (n, units) = meter.of_kind("heartbeat");
    println!(
        "\nheartbeats with progress: {n}, {units:.1} write units ({:.2} a heartbeat)",
        units / n.max(1) as f64
    );
    Ok(())
}

/// A JSON object of exactly `bytes` bytes as text, of letters that do not compress.
fn payload_of(bytes: usize) -> serde_json::Value {
    use rand::Rng;
    let pad: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(bytes.saturating_sub(r#"{"pad":""}"#.len()))
        .map(char::from)
        .collect();
    serde_json::json!({ "pad": pad })
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
