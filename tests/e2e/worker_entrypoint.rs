//! The SQS worker entrypoint in-process, on the embedded backend and no runtime process: SQS
//! delivers at least once, so a message delivered twice, or twice at once, must still run its
//! job exactly once; a record that is not a job message fails only itself.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::json;
use shared::adapters::embedded::{Durability, EmbeddedBackend};
use shared::domain::JobError;
use shared::domain::{Job, JobId, JobStatus, JobType, LifecycleEvent, LifecycleKind, Tenant};
use shared::entrypoints::sqs::handle_sqs_batch;
use shared::jobs::{BuiltinSettings, JobContext, JobHandler, JobOptions, Noop, Registry};
use shared::service::{JobService, SubmitRequest};
use shared::worker::{Worker, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// A realistic SQS event for Lambda, with one record.
const SQS_EVENT: &str = include_str!("../fixtures/sqs_event.json");

struct Harness {
    ports: shared::ports::Ports,
    service: JobService,
    worker: Worker,
    events: broadcast::Receiver<LifecycleEvent>,
    tenant: Tenant,
    // Last: the backend's files outlive everything that uses them.
    _backend: EmbeddedBackend,
    _dir: TempDir,
}

fn harness() -> anyhow::Result<Harness> {
    harness_with(Registry::builtin("conveyor-", &BuiltinSettings::default()))
}

fn harness_with(registry: Registry) -> anyhow::Result<Harness> {
    let dir = tempfile::tempdir()?;
    let backend = EmbeddedBackend::open(dir.path(), Durability::Process, vec![])?;
    let ports = backend.ports();
    let registry = Arc::new(registry);
    Ok(Harness {
        ports: ports.clone(),
        service: JobService::new(ports.clone(), registry.clone(), 262_144),
        worker: Worker::new(
            ports,
            registry,
            WorkerSettings {
                heartbeat_interval: Duration::from_millis(200),
                stall_after: Duration::from_secs(2),
                max_payload_bytes: shared::service::DEFAULT_MAX_PAYLOAD_BYTES,
                tenant_defaults: Default::default(),
                pause_recheck: Duration::from_secs(10),
                pause_cache: Duration::ZERO,
            },
        ),
        events: backend.events.subscribe(),
        tenant: Tenant::parse("t")?,
        _backend: backend,
        _dir: dir,
    })
}

impl Harness {
    async fn submit_noop(&self) -> anyhow::Result<Job> {
        self.submit("noop").await
    }

    async fn submit(&self, job_type: &str) -> anyhow::Result<Job> {
        let (job, created) = self
            .service
            .submit(
                self.tenant.clone(),
                SubmitRequest::new(JobType::parse(job_type)?, json!({})),
            )
            .await?;
        anyhow::ensure!(created, "a new job");
        Ok(job)
    }

    fn worker_ports(&self) -> shared::ports::Ports {
        self.ports.clone()
    }

    async fn job(&self, id: JobId) -> anyhow::Result<Job> {
        Ok(self.service.get(&self.tenant, id).await?)
    }

    /// The lifecycle events published so far for `id`, in order.
    fn events_for(&mut self, id: JobId) -> Vec<LifecycleKind> {
        let mut kinds = vec![];
        loop {
            match self.events.try_recv() {
                Ok(event) if event.job_id == id => kinds.push(event.kind),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return kinds,
                Err(e) => panic!("lifecycle events lost: {e}"),
            }
        }
    }
}

/// The queue message for a job, as `dispatch` sends it.
fn job_message(id: JobId) -> String {
    json!({ "job_id": id }).to_string()
}

/// The fixture event with one record per `(message id, body)`.
fn sqs_event(records: &[(&str, String)]) -> SqsEvent {
    let mut event: SqsEvent = serde_json::from_str(SQS_EVENT).expect("the fixture is an SQS event");
    let template = event.records[0].clone();
    event.records = records
        .iter()
        .map(|(message_id, body)| {
            let mut record = template.clone();
            record.message_id = Some(message_id.to_string());
            record.body = Some(body.clone());
            record
        })
        .collect();
    event
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn a_message_delivered_twice_runs_its_job_once() -> anyhow::Result<()> {
    // GIVEN a queued noop job and the SQS event carrying its message
    let mut h = harness()?;
    let job = h.submit_noop().await?;
    let event = sqs_event(&[("059f36b4-87a3-44ab-83d2-661975830a7d", job_message(job.id))]);

    // WHEN the worker entrypoint gets the event
    let first = handle_sqs_batch(&h.worker, event.clone()).await;
    let after_first = h.job(job.id).await?;

    // AND gets the very same event again
    let second = handle_sqs_batch(&h.worker, event).await;
    let after_second = h.job(job.id).await?;

    // THEN neither delivery asks for the message to come back
    assert_eq!(failed_ids(&first), Vec::<&str>::new());
    assert_eq!(failed_ids(&second), Vec::<&str>::new());

    // AND the job succeeded on its first attempt, and the second delivery left it untouched
    assert_eq!(after_first.status, JobStatus::Succeeded, "{after_first:?}");
    assert_eq!(after_first.attempt, 1);
    assert_eq!(after_first.result, Some(json!({ "ok": true })));
    assert_eq!(after_second.version, after_first.version);
    assert_eq!(after_second.finished_at, after_first.finished_at);
    assert_eq!(after_second, after_first);

    // AND exactly one lifecycle event was published for it: JobSucceeded
    assert_eq!(h.events_for(job.id), vec![LifecycleKind::JobSucceeded]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_twice_at_once_runs_its_job_once() -> anyhow::Result<()> {
    let mut h = harness()?;
    // Several rounds, each a fresh job, to give the race many chances to show.
    for round in 0..10 {
        // GIVEN a new queued noop job
        let job = h.submit_noop().await?;
        let event = sqs_event(&[(&format!("message-{round}"), job_message(job.id))]);

        // WHEN two batches carrying its message are handled at the same time
        let (a, b) = tokio::join!(
            handle_sqs_batch(&h.worker, event.clone()),
            handle_sqs_batch(&h.worker, event)
        );

        // THEN neither asks for redelivery
        assert_eq!(failed_ids(&a), Vec::<&str>::new(), "round {round}");
        assert_eq!(failed_ids(&b), Vec::<&str>::new(), "round {round}");

        // AND the job ran exactly once: succeeded on attempt 1, no failed attempt logged
        let done = h.job(job.id).await?;
        assert_eq!(done.status, JobStatus::Succeeded, "round {round}: {done:?}");
        assert_eq!(done.attempt, 1, "round {round}: {done:?}");
        let logs = h.service.logs(&h.tenant, job.id, 0, 100).await?;
        assert!(logs.is_empty(), "round {round}: {logs:?}");

        // AND succeeded once
        assert_eq!(
            h.events_for(job.id),
            vec![LifecycleKind::JobSucceeded],
            "round {round}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_record_fails_alone_and_the_rest_of_the_batch_runs() -> anyhow::Result<()> {
    // GIVEN a batch holding a record that is not JSON, one that is JSON but not a job message,
    // one for a job that does not exist, and one for a queued job
    let mut h = harness()?;
    let job = h.submit_noop().await?;
    let event = sqs_event(&[
        ("not-json", "this is not a job message".to_string()),
        ("wrong-shape", json!({ "id": "nope" }).to_string()),
        ("unknown-job", job_message(JobId::new())),
        ("good", job_message(job.id)),
    ]);

    // WHEN the worker entrypoint gets the batch
    let response = handle_sqs_batch(&h.worker, event).await;

    // THEN only the two unreadable records are reported for redelivery (so they end in the
    // dead-letter queue); a message for a job that no longer exists is dropped
    assert_eq!(failed_ids(&response), vec!["not-json", "wrong-shape"]);

    // AND the good record's job succeeded, once
    let done = h.job(job.id).await?;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 1);
    assert_eq!(h.events_for(job.id), vec![LifecycleKind::JobSucceeded]);
    Ok(())
}

/// A handler that panics.
struct Panics;

#[async_trait::async_trait]
impl JobHandler for Panics {
    async fn run(
        &self,
        _ctx: JobContext,
        _payload: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        panic!("handler bug");
    }
}

/// A handler that never finishes.
struct Hangs;

#[async_trait::async_trait]
impl JobHandler for Hangs {
    async fn run(
        &self,
        _ctx: JobContext,
        _payload: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_panicking_or_hanging_handler_fails_only_its_own_job() -> anyhow::Result<()> {
    // GIVEN types whose handler panics or hangs (the latter with a 200 ms timeout), and a noop
    let mut registry = Registry::new("conveyor-");
    let options = JobOptions {
        timeout: Duration::from_millis(200),
        ..JobOptions::default()
    };
    // (only the hanging handler is meant to time out: the others' timeouts are generous, so a
    // loaded machine cannot turn their outcome into a timeout)
    registry.register("panics", JobOptions::default(), Panics);
    registry.register("hangs", options, Hangs);
    registry.register("noop", JobOptions::default(), Noop);
    let mut h = harness_with(registry)?;
    let (panics, hangs, noop) = (
        h.submit("panics").await?,
        h.submit("hangs").await?,
        h.submit("noop").await?,
    );

    // WHEN one batch carries all three
    let response = handle_sqs_batch(
        &h.worker,
        sqs_event(&[
            ("p", job_message(panics.id)),
            ("h", job_message(hangs.id)),
            ("n", job_message(noop.id)),
        ]),
    )
    .await;

    // THEN the batch reports no failure: every outcome was recorded
    assert_eq!(failed_ids(&response), Vec::<&str>::new());
    // AND the noop job succeeded
    assert_eq!(h.job(noop.id).await?.status, JobStatus::Succeeded);
    assert_eq!(h.events_for(noop.id), vec![LifecycleKind::JobSucceeded]);
    // AND the panic and the timeout each failed only their own attempt, retryably: back in the
    // queue for attempt 2, with the cause recorded
    for (job, kind) in [(panics, "panic"), (hangs, "timeout")] {
        let after = h.job(job.id).await?;
        assert_eq!(after.status, JobStatus::Queued, "{after:?}");
        assert_eq!(after.attempt, 1);
        let error = after.error.expect("the error is recorded");
        assert_eq!(error.kind, kind);
        assert!(error.retryable);
    }
    Ok(())
}

/// A handler that finishes only when the test lets it.
struct Gated(Arc<tokio::sync::Semaphore>);

#[async_trait::async_trait]
impl JobHandler for Gated {
    async fn run(
        &self,
        _ctx: JobContext,
        _payload: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        let _ = self.0.acquire().await;
        Ok(json!("from the old run"))
    }
}

#[tokio::test]
async fn a_late_outcome_from_an_old_run_does_not_land_on_a_newer_run() -> anyhow::Result<()> {
    // GIVEN a one-attempt job whose first run hangs in a worker
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut registry = Registry::new("conveyor-");
    let options = JobOptions {
        max_attempts: 1,
        ..JobOptions::default()
    };
    registry.register("gated", options, Gated(gate.clone()));
    let h = harness_with(registry)?;
    let job = h.submit("gated").await?;
    let old_run = tokio::spawn({
        let worker = h.worker.clone();
        let body = job_message(job.id);
        async move { worker.process_message(&body).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let running = loop {
        let j = h.job(job.id).await?;
        if j.status == JobStatus::Running {
            break j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    // AND meanwhile it was given up as stalled, retried by hand, and started again elsewhere
    let now = chrono::Utc::now();
    let store = h.worker_ports().store;
    let dead = running.stalled(now)?;
    store.transition(running.expected(), &dead).await?;
    let queued = dead.retry(now)?;
    store.transition(dead.expected(), &queued).await?;
    let newer = queued.start(now)?;
    store.transition(queued.expected(), &newer).await?;
    assert_eq!(
        (running.attempt, newer.attempt),
        (1, 1),
        "same attempt number"
    );

    // WHEN the old run finishes
    gate.add_permits(1);
    old_run.await?;

    // THEN its outcome is dropped: the newer run still owns the job, untouched
    let after = h.job(job.id).await?;
    assert_eq!(after.status, JobStatus::Running, "{after:?}");
    assert_eq!(after.runs, newer.runs);
    assert_eq!(after.result, None);
    Ok(())
}

/// A handler that counts its executions outside the store and, when asked, waits at a gate.
struct Counted {
    runs: Arc<std::sync::atomic::AtomicUsize>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait::async_trait]
impl JobHandler for Counted {
    async fn run(
        &self,
        _ctx: JobContext,
        _payload: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _ = gate.acquire().await;
        }
        Ok(json!("counted"))
    }
}

fn counted(
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> (Registry, Arc<std::sync::atomic::AtomicUsize>) {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = Registry::new("conveyor-");
    registry.register(
        "counted",
        JobOptions::default(),
        Counted {
            runs: runs.clone(),
            gate,
        },
    );
    (registry, runs)
}

#[tokio::test]
async fn duplicate_deliveries_one_after_another_or_at_once_execute_the_handler_once(
) -> anyhow::Result<()> {
    // GIVEN a counted job for one-after-another delivery, and one for deliveries at once
    let (registry, runs) = counted(None);
    let h = harness_with(registry)?;
    let (sequential, concurrent) = (h.submit("counted").await?, h.submit("counted").await?);

    // WHEN the first job's message is delivered three times in a row, and the second's three
    // times at once
    for _ in 0..3 {
        h.worker.process_message(&job_message(sequential.id)).await;
    }
    let body = job_message(concurrent.id);
    futures::future::join_all((0..3).map(|_| h.worker.process_message(&body))).await;

    // THEN each handler ran exactly once, by the count kept outside the store
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    for job in [sequential, concurrent] {
        let after = h.job(job.id).await?;
        assert_eq!((after.status, after.attempt), (JobStatus::Succeeded, 1));
    }
    Ok(())
}

#[tokio::test]
async fn a_duplicate_delivered_while_the_first_run_is_running_does_not_execute_again(
) -> anyhow::Result<()> {
    // GIVEN a counted job whose first run is in its handler, held at a gate
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (registry, runs) = counted(Some(gate.clone()));
    let h = harness_with(registry)?;
    let job = h.submit("counted").await?;
    let first = tokio::spawn({
        let (worker, body) = (h.worker.clone(), job_message(job.id));
        async move { worker.process_message(&body).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first run never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // WHEN its message is delivered again, twice, while it runs
    for _ in 0..2 {
        h.worker.process_message(&job_message(job.id)).await;
    }
    gate.add_permits(1);
    first.await?;

    // THEN the handler ran once, and the job succeeded on its first attempt
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let after = h.job(job.id).await?;
    assert_eq!((after.status, after.attempt), (JobStatus::Succeeded, 1));
    Ok(())
}

#[tokio::test]
async fn an_attempt_ends_in_time_for_its_outcome_before_the_invocation_ends() -> anyhow::Result<()>
{
    // GIVEN a job of a type with a 15-minute timeout that would run for a minute
    let h = harness()?;
    let (job, _) = h
        .service
        .submit(
            h.tenant.clone(),
            SubmitRequest {
                max_attempts: Some(1),
                ..SubmitRequest::new(JobType::parse("sleep")?, json!({ "ms": 60_000 }))
            },
        )
        .await?;
    let event = sqs_event(&[("m-deadline", job_message(job.id))]);

    // WHEN its batch runs in an invocation that ends half a second after the margin
    let ends =
        tokio::time::Instant::now() + shared::worker::DEADLINE_MARGIN + Duration::from_millis(500);
    let response =
        shared::entrypoints::sqs::handle_sqs_batch_until(&h.worker, event, Some(ends)).await;

    // THEN the attempt was cut short before the margin and its outcome is recorded
    assert!(tokio::time::Instant::now() < ends);
    assert!(response.batch_item_failures.is_empty());
    let ended = h.job(job.id).await?;
    assert_eq!(ended.status, JobStatus::Dead, "{ended:?}");
    let error = ended.error.expect("an error");
    assert_eq!(error.kind, "timeout");
    assert!(
        error.message.contains("invocation's time ran out"),
        "{}",
        error.message
    );
    Ok(())
}
