//! The job path on the AWS adapters against moto, as Lambda runs it: submit through the
//! service, a batch of ten SQS records through the worker entrypoint, the batch's messages
//! deleted, with every billed request counted by the SDK interceptor.

use crate::helpers::{moto_sdk, unique};
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::{json, Value};
use shared::adapters::aws::{AwsBackend, AwsSettings, QueueSpec, RequestCounter};
use shared::domain::{JobError, JobStatus, JobType, Tenant};
use shared::entrypoints::sqs::handle_sqs_batch;
use shared::jobs::{BuiltinSettings, JobContext, JobHandler, JobOptions, Registry};
use shared::ports::{QueueConsumer, ReceivedMessage, StoreError};
use shared::service::{JobService, SubmitRequest};
use shared::worker::{Worker, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 10;

struct Fails;

#[async_trait]
impl JobHandler for Fails {
    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        Err(JobError::permanent("always fails"))
    }
}

/// Holds its run until the gate opens: a run that never ends on its own.
struct Hangs(Arc<tokio::sync::Semaphore>);

#[async_trait]
impl JobHandler for Hangs {
    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        let _ = self.0.acquire().await;
        Ok(json!(null))
    }
}

struct Flow {
    aws: AwsBackend,
    stream: shared::adapters::aws::StreamReader,
    counter: RequestCounter,
    registry: Arc<Registry>,
    service: JobService,
    worker: Worker,
    tenant: Tenant,
    gate: Arc<tokio::sync::Semaphore>,
}

async fn flow() -> Flow {
    flow_with(5, BuiltinSettings::default()).await
}

/// The flow with each queue's redrive after `max_receive_count` receives, and the shipped
/// types' `settings`.
async fn flow_with(max_receive_count: u32, settings: BuiltinSettings) -> Flow {
    let counter = RequestCounter::default();
    let id = unique();
    let aws = AwsBackend::counted(
        &moto_sdk().await,
        AwsSettings {
            table: format!("jobs-{id}"),
            event_bus: format!("bus-{id}"),
            shards: 16,
            events: shared::domain::EventSelection::All,
            scheduler: None,
        },
        Some(counter.clone()),
    );
    let mut registry = Registry::builtin(&format!("f{id}-"), &settings);
    registry.register("test.fails", JobOptions::default(), Fails);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    registry.register("test.hangs", JobOptions::default(), Hangs(gate.clone()));
    let queues: Vec<QueueSpec> = registry
        .iter()
        .map(|r| QueueSpec {
            name: registry.queue_name(&r.job_type),
            dead_letter_queue: registry.dead_letter_queue_name(&r.job_type),
            max_receive_count,
            visibility: r.options.visibility(),
        })
        .collect();
    aws.bootstrap(&queues).await.expect("bootstrap on moto");
    let registry = Arc::new(registry);
    let ports = aws.ports();
    // The `stats` function's part: the table's stream read (by requests not billed, as the
    // event-source mapping's are not) and queued jobs' messages sent (billed).
    let stream = AwsBackend::new(&moto_sdk().await, aws.settings().clone())
        .stream_reader()
        .with_outbox(Arc::new(shared::lifecycle::Messages::new(
            aws.queue.clone(),
            registry.clone(),
        )));
    Flow {
        stream,
        service: JobService::new(
            ports.clone(),
            registry.clone(),
            shared::config::MAX_PAYLOAD_LIMIT,
        ),
        worker: Worker::new(ports, registry.clone(), worker_settings()),
        registry,
        aws,
        counter,
        tenant: Tenant::parse("t").unwrap(),
        gate,
    }
}

fn worker_settings() -> WorkerSettings {
    WorkerSettings {
        heartbeat_interval: Duration::from_secs(10),
        stall_after: Duration::from_secs(60),
        max_payload_bytes: shared::service::DEFAULT_MAX_PAYLOAD_BYTES,
        tenant_defaults: Default::default(),
        pause_recheck: Duration::from_secs(10),
        pause_cache: Duration::ZERO,
    }
}

fn sqs_event(messages: &[ReceivedMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = Some(m.message_id.clone());
            r.receipt_handle = Some(m.receipt_handle.clone());
            r.body = Some(m.body.clone());
            r
        })
        .collect();
    event
}

impl Flow {
    async fn submit(&self, job_type: &str) -> shared::domain::Job {
        self.submit_with(job_type, json!({})).await
    }

    async fn submit_with(&self, job_type: &str, payload: Value) -> shared::domain::Job {
        let (job, _) = self
            .service
            .submit(
                self.tenant.clone(),
                SubmitRequest::new(JobType::parse(job_type).unwrap(), payload),
            )
            .await
            .unwrap();
        job
    }

    fn queue(&self, job_type: &str) -> String {
        self.registry.queue_name(&JobType::parse(job_type).unwrap())
    }

    /// What the event-source mapping does: receive up to `n` messages (batches of ten).
    async fn receive(&self, job_type: &str, n: usize) -> Vec<ReceivedMessage> {
        let mut got = vec![];
        for _ in 0..20 {
            if got.len() >= n {
                break;
            }
            self.stream.catch_up().await.unwrap();
            got.extend(
                self.aws
                    .queue
                    .receive(
                        &self.queue(job_type),
                        BATCH,
                        Duration::from_secs(60),
                        Duration::from_secs(1),
                    )
                    .await
                    .unwrap(),
            );
        }
        got
    }

    /// Run a batch through the worker entrypoint and delete what it did not report failed.
    async fn work(&self, job_type: &str, messages: &[ReceivedMessage]) {
        let response = handle_sqs_batch(&self.worker, sqs_event(messages)).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        self.aws
            .queue
            .delete(&self.queue(job_type), &handles)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_job_from_submit_to_its_event_costs_at_most_five_billed_requests() {
    // GIVEN the AWS backend on moto with every request counted
    let f = flow().await;
    f.counter.reset();

    // WHEN ten no-op jobs are submitted, received as one batch, worked and deleted
    let jobs: Vec<_> = futures::future::join_all((0..BATCH).map(|_| f.submit("noop"))).await;
    let messages = f.receive("noop", BATCH).await;
    assert_eq!(messages.len(), BATCH);
    f.work("noop", &messages).await;
    let counts = f.counter.counts();
    let total: u64 = counts.values().sum();

    // THEN every job succeeded
    for job in &jobs {
        let stored = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Succeeded);
    }
    // AND it took at most 5 billed requests a job, none of them a Scan
    let per_job = total as f64 / BATCH as f64;
    for ((service, op), n) in &counts {
        println!(
            "{service:>12} {op:<22} {n:>3}  ({:.2} a job)",
            *n as f64 / BATCH as f64
        );
    }
    println!(
        "{:>12} {:<22} {:>3}  ({per_job:.2} a job)",
        "", "total", total
    );
    assert!(per_job <= 5.0, "{per_job} requests a job: {counts:?}");
    assert!(!counts.keys().any(|(_, op)| op == "Scan"), "{counts:?}");
    // (the ten events went out together)
    assert_eq!(
        counts.get(&("EventBridge".into(), "PutEvents".into())),
        Some(&1),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_twice_moves_its_job_once() {
    // GIVEN a job and its message, delivered twice in one batch
    let f = flow().await;
    let job = f.submit("noop").await;
    let messages = f.receive("noop", 1).await;
    let twice = vec![messages[0].clone(), messages[0].clone()];

    // WHEN the batch is worked: its two deliveries run at once
    let failures = handle_sqs_batch(&f.worker, sqs_event(&twice))
        .await
        .batch_item_failures;

    // THEN the job ran one attempt and succeeded, and neither record is sent back
    assert!(failures.is_empty(), "{failures:?}");
    let stored = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempt, stored.runs),
        (JobStatus::Succeeded, 1, 1)
    );
    // AND one more delivery later changes nothing
    handle_sqs_batch(&f.worker, sqs_event(&messages)).await;
    let again = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
    assert_eq!(again, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expiry_is_a_number_of_epoch_seconds() -> Result<(), StoreError> {
    // GIVEN a job that failed (so it has an expiry and a log line) with an idempotency key
    let f = flow().await;
    let (job, _) = f
        .service
        .submit(
            f.tenant.clone(),
            SubmitRequest {
                max_attempts: Some(1),
                idempotency_key: Some(shared::domain::IdempotencyKey::parse("k1").unwrap()),
                ..SubmitRequest::new(JobType::parse("test.fails").unwrap(), json!({}))
            },
        )
        .await
        .unwrap();
    let messages = f.receive("test.fails", 1).await;
    f.work("test.fails", &messages).await;
    let stored = f.aws.ports().store.get(job.id).await?.unwrap();
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(f.aws.ports().store.logs(job.id, 0, 10).await?.len(), 1);

    // WHEN every item of the table is read as stored
    let items = f
        .aws
        .dynamodb()
        .scan()
        .table_name(&f.aws.settings().table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();

    // THEN the job, its log (its count and its line) and its key each carry `ttl` as a Number
    // of epoch seconds, and the job's is its `expires_at` (the deployment's own items, the
    // counts, the model and the stream's position, are kept)
    let pk = |i: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        i.get("pk")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let items: Vec<_> = items
        .into_iter()
        .filter(|i| {
            !["COUNT#", "META", "STREAM"]
                .iter()
                .any(|p| pk(i).starts_with(p))
        })
        .collect();
    assert_eq!(items.len(), 4, "{items:?}");
    for item in &items {
        let ttl = item
            .get("ttl")
            .unwrap_or_else(|| panic!("no ttl: {item:?}"));
        let secs: i64 = ttl.as_n().expect("ttl is a Number").parse().unwrap();
        assert!(secs > chrono::Utc::now().timestamp(), "{item:?}");
    }
    let job_item = items.iter().find(|i| pk(i).starts_with("J#")).unwrap();
    assert_eq!(
        job_item["ttl"].as_n().unwrap(),
        &stored.expires_at.unwrap().timestamp().to_string()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_payload_accepted_fits_one_item_and_runs() {
    // GIVEN a payload at the highest limit the configuration allows
    let f = flow().await;
    let filler = "x".repeat(shared::config::MAX_PAYLOAD_LIMIT - 100);
    let payload = json!({ "filler": filler });
    assert!(serde_json::to_vec(&payload).unwrap().len() <= shared::config::MAX_PAYLOAD_LIMIT);

    // WHEN it is submitted and worked
    let (job, _) = f
        .service
        .submit(
            f.tenant.clone(),
            SubmitRequest {
                idempotency_key: Some(shared::domain::IdempotencyKey::parse("big").unwrap()),
                ..SubmitRequest::new(JobType::parse("noop").unwrap(), payload.clone())
            },
        )
        .await
        .expect("the store takes the largest job the API accepts");
    let messages = f.receive("noop", 1).await;
    f.work("noop", &messages).await;

    // THEN it succeeded, and its payload came back whole
    let stored = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(stored.payload, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_run_takes_its_worker_down_every_time_ends_dead_after_its_dead_letter() {
    // GIVEN queues that dead-letter a message after its second receive, and a job whose run
    // never ends on its own
    let f = flow_with(2, BuiltinSettings::default()).await;
    let job = f.submit("test.hangs").await;
    let queue = f.queue("test.hangs");
    let receive = |visibility: u64| {
        let (aws, queue) = (&f.aws, queue.clone());
        async move {
            aws.queue
                .receive(
                    &queue,
                    10,
                    Duration::from_secs(visibility),
                    Duration::from_secs(1),
                )
                .await
                .unwrap()
        }
    };

    // WHEN an invocation takes it and dies mid-run (a crash: nothing recorded, nothing deleted)
    f.stream.catch_up().await.unwrap();
    let first = receive(1).await;
    assert_eq!(first.len(), 1);
    let crashing = Worker::new(f.aws.ports(), f.registry.clone(), worker_settings());
    let invocation = tokio::spawn({
        let event = sqs_event(&first);
        async move { handle_sqs_batch(&crashing, event).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f
        .aws
        .ports()
        .store
        .get(job.id)
        .await
        .unwrap()
        .unwrap()
        .status
        != JobStatus::Running
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    invocation.abort();

    // AND its message comes back while the job still looks alive: it is kept, not dropped
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = receive(1).await;
    assert_eq!(second.len(), 1, "the message is delivered again");
    let response = handle_sqs_batch(&f.worker, sqs_event(&second)).await;
    assert_eq!(response.batch_item_failures.len(), 1, "{response:?}");

    // AND past its receive limit SQS moves it to the dead-letter queue
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receive(1).await.is_empty(), "the message left its queue");

    // THEN the maintenance sweep ends the job dead with the reason, and empties the DLQ
    let settings = shared::maintenance::MaintenanceSettings {
        stall_after: Duration::from_secs(60),
        orphan_after: Duration::from_secs(60),
    };
    let report =
        shared::maintenance::sweep(&f.aws.ports(), &f.registry, settings, chrono::Utc::now())
            .await
            .unwrap();
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    let dead = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(
        dead.error.as_ref().map(|e| e.kind.as_str()),
        Some("dead_letter")
    );
    assert!(
        dead.attempt < dead.max_attempts,
        "it had attempts left: {dead:?}"
    );
    let dlq = f
        .registry
        .dead_letter_queue_name(&JobType::parse("test.hangs").unwrap());
    let left = f
        .aws
        .queue
        .receive(&dlq, 10, Duration::from_secs(1), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let again =
        shared::maintenance::sweep(&f.aws.ports(), &f.registry, settings, chrono::Utc::now())
            .await
            .unwrap();
    assert_eq!(again.dead_lettered, 0);
    f.gate.add_permits(100);
}

/// A DynamoDB stream record as the event-source mapping hands it to the `stats` function.
/// `item` is `JOB` for a job's state, `LOG` for a line of its log.
fn stream_record(seq: &str, item: &str, old: Option<&str>, new: Option<&str>) -> Value {
    let (pk, sk) = match item {
        "JOB" => ("J#0001#00", "01J0000000000000000000000A"),
        _ => ("L#01J0000000000000000000000A", "0000000001"),
    };
    let image = |status: &str| {
        json!({ "pk": {"S": pk}, "sk": {"S": sk}, "tenant": {"S": "acme"},
                "type": {"S": "noop"}, "status": {"S": status}, "attempt": {"N": "1"} })
    };
    let mut d = json!({ "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "SequenceNumber": seq, "StreamViewType": "NEW_AND_OLD_IMAGES" });
    if let Some(s) = old {
        d["OldImage"] = image(s);
    }
    if let Some(s) = new {
        d["NewImage"] = image(s);
    }
    let name = match (old, new) {
        (None, _) => "INSERT",
        (_, None) => "REMOVE",
        _ => "MODIFY",
    };
    json!({ "eventID": seq, "eventName": name, "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1", "dynamodb": d })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_function_counts_a_batch_and_reports_the_first_record_it_could_not() {
    use shared::adapters::aws::handle_stream_event;
    // GIVEN a batch of stream records: a job created then started, a log line, a second job
    // created, started and deleted by TTL once finished
    let f = flow().await;
    let batch = json!({ "Records": [
        stream_record("100", "JOB", None, Some("queued")),
        stream_record("101", "JOB", Some("queued"), Some("running")),
        stream_record("102", "LOG", None, Some("running")),
        stream_record("103", "JOB", None, Some("queued")),
        stream_record("104", "JOB", Some("queued"), Some("succeeded")),
        stream_record("105", "JOB", Some("succeeded"), None),
    ]});

    // WHEN the function handles it
    let answer = handle_stream_event(&f.aws.counters(), None, &batch).await;

    // THEN no record failed, and the tenant's stats show what is left: one job running
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let stats = f
        .aws
        .ports()
        .store
        .stats(&Tenant::parse("acme").unwrap())
        .await
        .unwrap();
    let rows: Vec<_> = stats
        .rows
        .iter()
        .map(|r| (r.job_type.as_str(), r.status, r.count))
        .collect();
    assert_eq!(rows, [("noop", JobStatus::Running, 1)]);

    // AND where the counters cannot be written, the first record is reported, so the
    // mapping retries the batch from there
    let missing = AwsBackend::new(
        &moto_sdk().await,
        AwsSettings {
            table: format!("missing-{}", unique()),
            event_bus: "missing".into(),
            shards: 16,
            events: shared::domain::EventSelection::All,
            scheduler: None,
        },
    );
    let answer = handle_stream_event(&missing.counters(), None, &batch).await;
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": "100" }] })
    );
}

/// A webhook receiver on a loopback port: its URL, and the last (signature, body) it got.
async fn receiver() -> (String, Arc<std::sync::Mutex<Option<(String, Vec<u8>)>>>) {
    use axum::{body::Bytes, http::HeaderMap, routing::post, Router};
    let got = Arc::new(std::sync::Mutex::new(None));
    let seen = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let signature = headers
                    .get("x-conveyor-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *seen.lock().unwrap() = Some((signature, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_signed_with_the_key_read_once_from_secrets_manager() {
    use shared::adapters::aws::webhook_key;
    // GIVEN a signing key kept in Secrets Manager, and a receiver that records what it gets
    let sdk = moto_sdk().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = format!("whsec-{}", unique());
    secrets
        .create_secret()
        .name(&name)
        .secret_string("k3y-from-the-store")
        .send()
        .await
        .unwrap();
    let key = webhook_key(&sdk, &name);
    let f = flow_with(
        5,
        BuiltinSettings {
            webhook_secret: Some(key.clone()),
            // the receiver is on this machine's loopback
            outbound: shared::jobs::OutboundPolicy::parse("127.0.0.1/32").unwrap(),
            ..BuiltinSettings::default()
        },
    )
    .await;
    let (url, got) = receiver().await;

    // WHEN a webhook.deliver job runs through the worker entrypoint
    let job = f
        .submit_with("webhook.deliver", json!({ "url": url, "body": { "n": 1 } }))
        .await;
    let messages = f.receive("webhook.deliver", 1).await;
    f.work("webhook.deliver", &messages).await;

    // THEN it succeeded, and its signature verifies with the stored key
    let stored = f.aws.ports().store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded, "{:?}", stored.error);
    let (signature, body) = got.lock().unwrap().clone().expect("a delivery");
    let t: i64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("t=<seconds>");
    // (signed with the tenant's own key, derived from the stored master key)
    let tenant_key = shared::jobs::tenant_secret("k3y-from-the-store", &job.tenant, 1);
    assert_eq!(
        signature,
        shared::jobs::sign(
            &tenant_key,
            shared::jobs::Signed {
                timestamp: t,
                job_id: &job.id.to_string(),
                attempt: 1,
                body: &body,
            }
        )
    );

    // AND the key was read once and kept: with the secret gone, it still answers
    secrets
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    assert_eq!(key.0.key().await.as_deref(), Ok("k3y-from-the-store"));

    // AND a key whose secret is not there is an error that names it (the delivery retries)
    let error = webhook_key(&sdk, &name).0.key().await.unwrap_err();
    assert!(error.contains(&name), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_backlog_is_older_than_the_orphan_window_gets_no_second_messages() {
    // GIVEN five jobs whose messages went out (through the table's outbox) and wait on a queue
    // no worker reads
    let f = flow().await;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(f.submit("noop").await.id);
    }
    f.stream.catch_up().await.unwrap();

    // WHEN maintenance sweeps as if the backlog were 20 minutes old, past the orphan window
    let settings = shared::maintenance::MaintenanceSettings {
        stall_after: Duration::from_secs(60),
        orphan_after: Duration::from_secs(15 * 60),
    };
    let later = chrono::Utc::now() + chrono::Duration::minutes(20);
    let report = shared::maintenance::sweep(&f.aws.ports(), &f.registry, settings, later)
        .await
        .unwrap();
    f.stream.catch_up().await.unwrap();

    // THEN nothing was sent again: the queue holds one message a job
    assert_eq!(report.redispatched, 0, "{report:?}");
    let mut got: Vec<String> = vec![];
    loop {
        let messages = f
            .aws
            .queue
            .receive(
                &f.queue("noop"),
                10,
                Duration::from_secs(60),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        if messages.is_empty() {
            break;
        }
        got.extend(messages.into_iter().map(|m| m.body));
    }
    got.sort();
    assert_eq!(got.len(), 5, "{got:?}");
    for id in &ids {
        assert_eq!(
            got.iter().filter(|b| b.contains(&id.to_string())).count(),
            1,
            "{id}: {got:?}"
        );
    }
}
