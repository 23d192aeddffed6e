//! Maintenance sweeps in-process (they take `now`, so minutes pass without waiting): a queued
//! job whose message was lost is re-dispatched (outbox rule), a scheduled job is released when
//! it comes within the queue's delay limit, and a message that arrives before its job's run
//! time is sent on with the rest of the delay.

use serde_json::json;
use shared::adapters::embedded::{Durability, EmbeddedBackend};
use shared::domain::{Backoff, Job, JobStatus, JobType, NewJob, Tenant};
use shared::jobs::{BuiltinSettings, Registry};
use shared::lifecycle::Lifecycle;
use shared::maintenance::{redispatch_orphans, release_scheduled_jobs};
use shared::ports::Ports;
use shared::ports::QueueConsumer;
use shared::worker::{Disposition, Worker, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;

struct Harness {
    backend: EmbeddedBackend,
    ports: Ports,
    registry: Arc<Registry>,
    worker: Worker,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Durability::Process, vec![]).unwrap();
    let ports = backend.ports();
    let registry = Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default()));
    let worker = Worker::new(
        ports.clone(),
        registry.clone(),
        WorkerSettings {
            heartbeat_interval: Duration::from_millis(200),
            stall_after: Duration::from_secs(2),
            max_payload_bytes: shared::service::DEFAULT_MAX_PAYLOAD_BYTES,
            tenant_defaults: Default::default(),
            pause_recheck: Duration::from_secs(10),
            pause_cache: Duration::ZERO,
        },
    );
    Harness {
        backend,
        ports,
        registry,
        worker,
        _dir: dir,
    }
}

fn noop_job(run_at: chrono::DateTime<chrono::Utc>) -> Job {
    Job::create(
        NewJob {
            tenant: Tenant::parse("t").unwrap(),
            job_type: JobType::parse("noop").unwrap(),
            priority: 0,
            payload: json!({}),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            timeout: Duration::from_secs(5),
            retention: Duration::from_secs(60),
            idempotency_key: None,
            request_fingerprint: None,
            run_at,
        },
        chrono::Utc::now(),
    )
}

const NOOP_QUEUE: &str = "conveyor-noop";

impl Harness {
    /// Receive what is visible on the noop queue now and run it through the worker.
    async fn work_visible_messages(&self) -> usize {
        let messages = self
            .backend
            .queue
            .receive(NOOP_QUEUE, 10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        for m in &messages {
            assert_eq!(
                self.worker.process_message(&m.body).await,
                Disposition::Done
            );
            self.backend
                .queue
                .delete(NOOP_QUEUE, std::slice::from_ref(&m.receipt_handle))
                .await
                .unwrap();
        }
        messages.len()
    }

    async fn job(&self, job: &Job) -> Job {
        self.ports.store.get(job.id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_queued_job_whose_message_was_lost_is_redispatched_and_runs() {
    // GIVEN a job stored as queued whose message was never sent (the process died in between)
    let h = harness();
    let job = noop_job(chrono::Utc::now());
    h.ports.store.create(&job).await.unwrap();
    assert_eq!(h.backend.queue.depth(NOOP_QUEUE), 0);

    // WHEN a sweep runs before the orphan window has passed
    let orphan_after = Duration::from_secs(900);
    let soon = chrono::Utc::now() + chrono::Duration::seconds(60);
    let early = redispatch_orphans(&h.ports, &h.registry, orphan_after, soon)
        .await
        .unwrap();
    // THEN nothing is sent yet
    assert_eq!(early, 0);
    assert_eq!(h.backend.queue.depth(NOOP_QUEUE), 0);

    // WHEN a sweep runs after it
    let later = chrono::Utc::now() + chrono::Duration::seconds(901);
    let sent = redispatch_orphans(&h.ports, &h.registry, orphan_after, later)
        .await
        .unwrap();

    // THEN one message is sent, and the job runs from it and succeeds once
    assert_eq!(sent, 1);
    assert_eq!(h.work_visible_messages().await, 1);
    let done = h.job(&job).await;
    assert_eq!((done.status, done.attempt), (JobStatus::Succeeded, 1));
}

#[tokio::test]
async fn a_scheduled_job_is_released_when_it_comes_within_the_queue_delay() {
    // GIVEN a job due in 20 minutes: beyond the queue's 15-minute delay, so scheduled
    let h = harness();
    let now = chrono::Utc::now();
    let job = noop_job(now + chrono::Duration::minutes(20));
    assert_eq!(job.status, JobStatus::Scheduled);
    h.ports.store.create(&job).await.unwrap();

    // WHEN maintenance runs now: nothing is due within 15 minutes
    assert_eq!(
        release_scheduled_jobs(&h.ports, &h.registry, now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(h.job(&job).await.status, JobStatus::Scheduled);

    // WHEN it runs 6 minutes later: the job is 14 minutes out
    let later = now + chrono::Duration::minutes(6);
    assert_eq!(
        release_scheduled_jobs(&h.ports, &h.registry, later)
            .await
            .unwrap(),
        1
    );

    // THEN it is queued with its message delayed, not visible yet
    assert_eq!(h.job(&job).await.status, JobStatus::Queued);
    assert_eq!(h.backend.queue.depth(NOOP_QUEUE), 1);
    assert_eq!(h.work_visible_messages().await, 0);
}

#[tokio::test]
async fn a_message_that_arrives_early_is_sent_on_and_the_job_waits() {
    // GIVEN a job due in 10 minutes whose message is delivered now (as after a capped delay)
    let h = harness();
    let job = noop_job(chrono::Utc::now() + chrono::Duration::minutes(10));
    h.ports.store.create(&job).await.unwrap();
    let body = json!({ "job_id": job.id }).to_string();

    // WHEN the worker gets it
    let disposition = h.worker.process_message(&body).await;

    // THEN the message is done with, the job still waits, and a delayed message replaces it
    assert_eq!(disposition, Disposition::Done);
    let after = h.job(&job).await;
    assert_eq!((after.status, after.attempt), (JobStatus::Queued, 0));
    assert_eq!(h.backend.queue.depth(NOOP_QUEUE), 1);
    assert_eq!(h.work_visible_messages().await, 0);
}

#[tokio::test]
async fn a_job_due_now_dispatched_twice_still_runs_once() {
    // GIVEN a queued job with two messages (the outbox rule may send a duplicate)
    let h = harness();
    let job = noop_job(chrono::Utc::now());
    h.ports.store.create(&job).await.unwrap();
    for _ in 0..2 {
        Lifecycle::new(&h.ports, &h.registry)
            .dispatch(&job, chrono::Utc::now())
            .await
            .unwrap();
    }
    // WHEN both are worked
    assert_eq!(h.work_visible_messages().await, 2);
    // THEN the job ran once
    let done = h.job(&job).await;
    assert_eq!((done.status, done.attempt), (JobStatus::Succeeded, 1));
}
