//! The ports the domain talks through. Each has an embedded adapter (`adapters::embedded`) and,
//! with the AWS layer, an adapter over DynamoDB, SQS and EventBridge. None names an AWS type.

use crate::domain::{
    Admission, ApiKey, AuditEntry, Batch, BatchId, Expected, Job, JobId, JobStatus, JobSummary,
    JobType, LifecycleEvent, MemberPosition, MembersPage, Progress, Schedule, ScheduleName, Tenant,
    TenantLimits, Topic, WebhookGenerations,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

mod debounces;
mod history;
mod no_dead_letters;
mod pauses;
mod types;
pub use debounces::Debounces;
pub use history::TypeHistory;
pub use no_dead_letters::NoDeadLetters;
pub use pauses::PauseStore;
pub use types::TypeStore;

/// The adapters one deployment runs on, handed to every use case.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn QueueSender>,
    pub events: Arc<dyn EventPublisher>,
    /// The types' dead-letter queues, read only by maintenance: it settles the job of every
    /// message found there (see `maintenance::settle_dead_letters`).
    pub dead_letters: Arc<dyn QueueConsumer>,
    /// API keys (stored as digests).
    pub keys: Arc<dyn KeyStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Tenants' limits and their active-job counts.
    pub tenants: Arc<dyn TenantStore>,
    /// Recurring jobs' definitions and runs.
    pub schedules: Arc<dyn ScheduleStore>,
    /// What fires a schedule's ticks (EventBridge Scheduler on AWS; locally nothing here: the
    /// runtime's scheduler reads the stored definitions).
    pub triggers: Arc<dyn ScheduleTrigger>,
    /// Start rates shared by every worker of a deployment.
    pub rates: Arc<dyn StartRates>,
    /// Slots of running jobs per key (`max_running_per_key`), shared likewise.
    pub slots: Arc<dyn RunningSlots>,
    /// Which job a debounce key holds now (`debounce` on submit).
    pub debounces: Arc<dyn Debounces>,
    /// Job types paused for a tenant or for all (`domain::Pauses`).
    pub pauses: Arc<dyn PauseStore>,
    /// Declared external job types.
    pub types: Arc<dyn TypeStore>,
    /// What ended per type and minute.
    pub history: Arc<dyn TypeHistory>,
    /// Who sends the message of a job that a write queued.
    pub dispatch: Dispatch,
}

/// How a job that a write made `queued` gets its queue message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Whoever wrote the change sends it, right after the write (the embedded backend, whose
    /// restart re-sends what a crash left unsent).
    AfterWrite,
    /// The reader of the table's stream sends it, for each write that queued a job: a
    /// transactional outbox, so no write that queued a job is ever without its message, even
    /// when its writer died at once (the AWS backend; see `Outbox`).
    FromStream,
}

/// Sends the messages of jobs that writes queued, as the table's stream shows them
/// (`Dispatch::FromStream`).
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn send(&self, jobs: &[Job]) -> Result<(), QueueError>;
}

/// A backend failure. `Conflict` is the expected outcome of a lost race; the others are
/// infrastructure trouble, worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job changed since it was read (conditional write failed)")]
    Conflict,
    /// The store is saturated and refused new work without doing any of it (backpressure):
    /// retry after a moment. Nothing was written.
    #[error("storage busy: {0}")]
    Busy(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store refused the write for good (an item too large, a malformed request): trying
    /// again cannot help, so it is never retried as an outage.
    #[error("storage refused the write: {0}")]
    Rejected(String),
}

/// Log lines kept per job; one marker line says when later lines were dropped.
pub const LOG_CAP: u64 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("queue unavailable: {0}")]
pub struct QueueError(pub String);

/// The result of `JobStore::create`.
#[derive(Debug)]
pub enum Created {
    New,
    /// The idempotency key was used before: here is the job it made.
    Existing(Box<Job>),
    /// Nothing written: the tenant already has `max` unfinished jobs.
    OverQuota {
        max: u64,
    },
    /// Nothing written: the tenant's submissions this second are used up.
    RateLimited {
        per_second: u32,
    },
}

/// What is written with a new job, in the same write: the audit entry of its submit, the
/// quota it must fit in (with `admission.max_active`, the job must have `holds_slot` set), and
/// its queue message where the store `writes_messages` (a store that does not ignores it).
#[derive(Debug, Clone, Default)]
pub struct CreateWith {
    pub audit: Option<AuditEntry>,
    pub admission: Admission,
    pub message: Option<QueuedMessage>,
}

/// A queued job's message: the queue, the body, the delay before it is visible, the priority.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub queue: String,
    pub body: String,
    pub delay: std::time::Duration,
    pub priority: i32,
}

/// What a transition's write found on the job: the jobs waiting for it (`depends_on`), when
/// the transition ended it (taken off it in the same write, so they are told once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transitioned {
    pub waiters: Vec<JobId>,
    /// The job's batch, when this change left none of its members unfinished.
    pub batch_ended: Option<BatchId>,
}

/// How long a batch goes without a member ending before maintenance looks at it (the net
/// under an end that was not seen: a crash after the last member's end).
pub const BATCH_LOOK_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// The result of `JobStore::start`.
#[derive(Debug)]
pub enum Started {
    /// The job was queued and due: it is running now, as stored (`Job::start` applied).
    Running(Box<Job>),
    /// The job could not start: here it is as stored (not queued, or queued for later).
    Refused(Box<Job>),
    /// No such job (expired, or never stored).
    Missing,
}

/// What a heartbeat or progress report learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub cancel_requested: bool,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Always one tenant's jobs: no backend lists across tenants (that would be a scan).
    pub tenant: Tenant,
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    /// Return jobs older than this id (the previous page's cursor).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// A line for a job's log (`JobStore::append_log`).
#[derive(Debug, Clone, Copy)]
pub struct NewLogLine<'a> {
    pub tenant: &'a Tenant,
    pub job_id: JobId,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub line: &'a str,
    /// Kept at least until then: as long as the job (its expiry, or while it has none, its
    /// retention from now). A store that deletes a job's log with the job may ignore it.
    pub keep_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub line: String,
}

/// A durable step a job's handler completed (`JobContext::step`): its result, kept with the job.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StepRecord {
    pub name: String,
    pub result: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// The largest step result kept, as JSON text: a step hands on a summary or a reference, not
/// bulk data.
pub const STEP_RESULT_CAP: usize = 64 * 1024;

/// Counts for stats: jobs by type and status, and rows set aside because they could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub rows: Vec<StatsRow>,
    pub quarantined: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsRow {
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    pub count: u64,
}

/// Job state, with conditional writes.
///
/// Who writes which field: `heartbeat_at` and `progress` are WORKER-OWNED. While a job is
/// running they belong to its run and are written only by `heartbeat` (by that run); a
/// `transition` from `running` leaves the stored ones as they are, so a change computed from an
/// older read (a cancel request, a finish, a stall) can never undo a newer heartbeat or progress.
/// A `transition` from any other status sets them from `next` (no run exists to race with; a
/// start gives the new run its first heartbeat). Every other field is transition-owned.
/// A stored job that cannot be read is quarantined: kept aside, counted in `stats`, and from
/// then on absent from `get`, `list` and `due` (which never come back short because of it).
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Write a new job; with an idempotency key, atomically with the key's claim; with an
    /// audit entry (who submitted it) and a quota, atomically with the entry, the tenant's
    /// active-job count (taken only below `max_active`) and its submissions this second (only
    /// below `per_second`). An existing job found by its idempotency key is returned before any
    /// limit applies, and writes nothing.
    async fn create_with(&self, job: &Job, with: &CreateWith) -> Result<Created, StoreError>;
    /// Whether `create_with` writes `with.message` in the new job's own write (one commit for
    /// both, and none left for the caller to send). Where not, the caller sends it.
    fn writes_messages(&self) -> bool {
        false
    }
    async fn create(&self, job: &Job) -> Result<Created, StoreError> {
        self.create_with(job, &CreateWith::default()).await
    }
    /// Write new jobs together (a batch submit, with one audit entry for it), in order: each
    /// `New`, or `Existing` where its idempotency key was used before (by an earlier job or an
    /// earlier one of the batch). With `atomic`, the new ones are written all in one write or
    /// none (`Rejected` when the backend cannot hold them in one). No quota applies here.
    async fn create_batch(
        &self,
        jobs: &[Job],
        audit: Option<&AuditEntry>,
        atomic: bool,
    ) -> Result<Vec<Created>, StoreError>;
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    /// Start a job in one conditional write: if it is `queued` with `run_at <= due_by`, apply
    /// `Job::start(now)` and return the result (`Running`); otherwise return it as stored
    /// (`Refused`), so the caller needs no read before and none after.
    async fn start(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<Started, StoreError>;
    /// Write `next` only if the stored job still matches `expected`; else `Conflict`. A job that
    /// holds a quota slot gives it back in the same write when it finishes, and takes it again
    /// when a retry brings it back (`domain::slot_change`). A transition that ends the job
    /// takes the jobs waiting for it off it and returns them.
    async fn transition(&self, expected: Expected, next: &Job) -> Result<Transitioned, StoreError>;
    /// `transition`, writing `next`'s payload too (a transition keeps the stored payload: only
    /// a debounced submit replaces it, of a job that never ran).
    async fn transition_with_payload(
        &self,
        expected: Expected,
        next: &Job,
    ) -> Result<Transitioned, StoreError> {
        self.transition(expected, next).await
    }
    /// Note on job `parent` (of `tenant`) that `waiter` waits for it to end, so the transition
    /// that ends it returns `waiter` (see `Transitioned`); nothing is noted on a job that has
    /// ended. Returns the parent's status as the note was made, `None` when there is no such
    /// job of `tenant`.
    async fn add_waiter(
        &self,
        parent: JobId,
        tenant: &Tenant,
        waiter: JobId,
    ) -> Result<Option<JobStatus>, StoreError>;
    /// A run's heartbeat (`run` = `Job::runs` at its start), with optional progress.
    /// `Conflict` when the job is no longer running that run (the worker lost it and must stop).
    async fn heartbeat(
        &self,
        id: JobId,
        run: u32,
        at: DateTime<Utc>,
        progress: Option<&Progress>,
    ) -> Result<Liveness, StoreError>;
    /// Summaries (no payload, no result), newest first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError>;
    /// A tenant's jobs changed at or after `since`, oldest change first (for polling: the next
    /// poll asks from the last one's `updated_at`, and tells a repeat by its `version`).
    async fn updated_since(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError>;
    /// One tenant's counts (eventually consistent on AWS).
    async fn stats(&self, tenant: &Tenant) -> Result<StoreStats, StoreError>;
    /// Append to a job's log (capped per job; lines past the cap are dropped).
    async fn append_log(&self, line: NewLogLine<'_>) -> Result<(), StoreError>;
    async fn logs(
        &self,
        id: JobId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError>;
    /// Record a completed step of a job, kept until `keep_until` (at least as long as the
    /// job). The first record of a name stays: the stored result is returned, which is another
    /// run's if one recorded the step first.
    async fn save_step(
        &self,
        id: JobId,
        name: &str,
        result: &serde_json::Value,
        at: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError>;
    /// The steps a job recorded, oldest first.
    async fn steps(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError>;
    /// Store a new batch, with no members yet: creating a job with its `batch_id` counts it in,
    /// and lists it among the members, in the same write (its end, in the write that ends it).
    async fn open_batch(&self, batch: &Batch) -> Result<(), StoreError>;
    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError>;
    /// Up to `limit` of a batch's members from `from` (the start when `None`), in the order they
    /// joined (`MemberPosition`); members whose jobs have expired are left out.
    async fn batch_members(
        &self,
        id: BatchId,
        from: Option<MemberPosition>,
        limit: usize,
    ) -> Result<MembersPage, StoreError>;
    /// Record the callbacks an ended batch submitted, and when it ended: it leaves
    /// `due_batches`.
    async fn finish_batch(
        &self,
        id: BatchId,
        callbacks: &std::collections::BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Unfinished batches due a look by maintenance before `before` (none of their members
    /// ended for `BATCH_LOOK_AFTER`, or `recheck_batch` said so), oldest first.
    async fn due_batches(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError>;
    /// Look at an unfinished batch again at `at`.
    async fn recheck_batch(&self, id: BatchId, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Jobs in `status` whose `Job::due_at` is before `before`, oldest first.
    async fn due(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;
    /// Delete finished jobs (and their logs and idempotency keys) whose `expires_at` passed.
    async fn delete_expired(&self, now: DateTime<Utc>, limit: usize) -> Result<u64, StoreError>;
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
}

/// Sending to a queue with SQS semantics (at-least-once, delay): what the API, the worker
/// and maintenance do, on every backend and in every Lambda function.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// `delay` is rounded up to whole seconds where the backend counts in seconds (SQS), at
    /// most 15 minutes. `priority` orders ready messages where the backend can (higher first);
    /// SQS cannot (a type that needs priorities gets a queue of its own for them).
    async fn send(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        priority: i32,
    ) -> Result<String, QueueError>;
    /// Several messages to one queue: `(body, delay, priority)` each (SQS: ten a request).
    async fn send_all(
        &self,
        queue: &str,
        messages: &[(String, Duration, i32)],
    ) -> Result<(), QueueError> {
        for (body, delay, priority) in messages {
            self.send(queue, body, *delay, *priority).await?;
        }
        Ok(())
    }
}

/// Consuming a queue: visibility timeout, receive count, dead-letter queue after too many
/// receives. On AWS the SQS event-source mapping does this and no function ever receives;
/// locally the pollers do.
#[async_trait]
pub trait QueueConsumer: Send + Sync {
    /// Up to `max` messages, waiting up to `wait` for the first (long polling).
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;
    async fn delete(&self, queue: &str, receipt_handles: &[String]) -> Result<(), QueueError>;
    async fn change_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;
}

/// Both sides of a queue, for what plays the event-source mapping (the local pollers, tests).
pub trait JobQueue: QueueSender + QueueConsumer {}

impl<T: QueueSender + QueueConsumer> JobQueue for T {}

/// Lifecycle events out to whoever listens (EventBridge bus on AWS, in-process locally).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, event: &LifecycleEvent) -> Result<(), QueueError>;
    /// Several at once (EventBridge takes ten a request); each is published or an error says
    /// how many were not.
    async fn publish_all(&self, events: &[LifecycleEvent]) -> Result<(), QueueError> {
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }
}

/// API keys, kept as digests. Listing is an admin's occasional call; `get_key` is on every
/// request made with a key.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Store a new key (its id is new: never overwrites).
    async fn put_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Keys, newest first: one tenant's, or every tenant's.
    async fn list_keys(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiKey>, StoreError>;
    /// Mark a key revoked (from then on it opens nothing); the key as stored after, `None` if
    /// there is no such key. Revoking twice keeps the first time.
    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>, StoreError>;
    /// Note that a key was used (callers do this at most about once a minute per key).
    async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Whether any key that is not revoked exists (the local runtime's dev mode is only for a
    /// store without keys).
    async fn any_live_key(&self) -> Result<bool, StoreError>;
}

/// Which audit entries to read: one tenant's (or those of callers who could not be identified,
/// `tenant: None`), from `since` on, oldest first.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub tenant: Option<Tenant>,
    pub since: DateTime<Utc>,
    pub limit: usize,
}

/// The audit trail: append-only; entries past their `expires_at` are deleted by maintenance
/// (embedded) or TTL (DynamoDB) and never returned.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Tenants' limits (set by an admin) and their counts of unfinished jobs that hold a slot.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// The limits stored for `tenant` (all `None` when none were set).
    async fn limits(&self, tenant: &Tenant) -> Result<TenantLimits, StoreError>;
    async fn set_limits(&self, tenant: &Tenant, limits: &TenantLimits) -> Result<(), StoreError>;
    /// Unfinished jobs of `tenant` holding a quota slot.
    async fn active_jobs(&self, tenant: &Tenant) -> Result<u64, StoreError>;
    /// Count one submission of `tenant` in the one-second window `window` (unix seconds) that
    /// made no job (a debounced submit that replaced the waiting one), in the same count a
    /// job's creation takes from, if fewer than `per_second` were counted there; whether it was.
    async fn count_submit(
        &self,
        tenant: &Tenant,
        per_second: u32,
        window: i64,
    ) -> Result<bool, StoreError>;
    /// The tenant's webhook key generations; the first call for a tenant stores generation 1.
    async fn webhook_generations(&self, tenant: &Tenant) -> Result<WebhookGenerations, StoreError>;
    /// Start the next generation, the current one staying valid until `overlap_until`.
    async fn rotate_webhook_key(
        &self,
        tenant: &Tenant,
        overlap_until: DateTime<Utc>,
    ) -> Result<WebhookGenerations, StoreError>;
}

/// A live-update connection: who opened it, and until when it may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub tenant: Tenant,
    /// The credential's subject (as in the audit trail).
    pub subject: String,
    pub connected_at: DateTime<Utc>,
    /// After this the connection and its subscriptions are ignored (API Gateway closes a
    /// WebSocket after 2 hours; the table's TTL then deletes them).
    pub expires_at: DateTime<Utc>,
}

/// Live-update connections and what each is subscribed to.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn connect(&self, connection: &Connection) -> Result<(), StoreError>;
    async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;
    /// Forget the connection and its subscriptions (nothing if it is unknown).
    async fn disconnect(&self, id: &str) -> Result<(), StoreError>;
    async fn subscribe(&self, connection: &Connection, topic: Topic) -> Result<(), StoreError>;
    async fn unsubscribe(&self, connection: &Connection, topic: Topic) -> Result<(), StoreError>;
    /// The live connections subscribed to `topic` in `tenant`.
    async fn subscribers(&self, tenant: &Tenant, topic: Topic) -> Result<Vec<String>, StoreError> {
        Ok(self
            .subscriptions(tenant)
            .await?
            .into_iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, c)| c)
            .collect())
    }
    /// Every live subscription in `tenant`, as (topic, connection): what one batch of changes
    /// needs, in one read.
    async fn subscriptions(&self, tenant: &Tenant) -> Result<Vec<(Topic, String)>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The connection is closed, or was too slow and has been dropped: forget it.
    #[error("the connection is gone")]
    Gone,
    #[error("push failed: {0}")]
    Unavailable(String),
}

/// Sends messages to a connected client (in-process locally, `PostToConnection` on AWS).
#[async_trait]
pub trait ClientPusher: Send + Sync {
    /// Send `messages`, in order, to `connection`.
    async fn push(&self, connection: &str, messages: &[Arc<str>]) -> Result<(), PushError>;
}

/// The live-update side of a deployment.
#[derive(Clone)]
pub struct LivePorts {
    pub connections: Arc<dyn ConnectionStore>,
    pub pusher: Arc<dyn ClientPusher>,
}

/// Schedules (recurring jobs), each one item, changed by conditional writes on `version`.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Store `schedule` (its `version` already the new one). `expected: None` writes only if no
    /// schedule of that name exists, else only if the stored one has version `expected`;
    /// otherwise `Conflict`.
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<Option<Schedule>, StoreError>;
    /// One tenant's schedules by name, or every tenant's (what the local scheduler evaluates).
    async fn schedules(&self, tenant: Option<&Tenant>) -> Result<Vec<Schedule>, StoreError>;
    /// The schedules the scheduler may have something to do for at `now`: a tick due, or one
    /// waiting (at least those: a store that cannot tell reads them all, as the default does).
    async fn due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<Schedule>, StoreError> {
        let _ = now;
        self.schedules(None).await
    }
    /// Whether there was one to delete.
    async fn delete_schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<bool, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The definition cannot be armed as given (the service refused it).
    #[error("the schedule was refused: {0}")]
    Refused(String),
    #[error("the scheduler is unavailable: {0}")]
    Unavailable(String),
}

/// What fires a schedule's ticks where the runtime does not (EventBridge Scheduler on AWS):
/// armed with each stored definition, disarmed when it is deleted.
#[async_trait]
pub trait ScheduleTrigger: Send + Sync {
    /// Create or replace the trigger for `schedule` (paused: disabled).
    async fn arm(&self, schedule: &Schedule) -> Result<(), TriggerError>;
    /// Remove it (nothing if there is none).
    async fn disarm(&self, tenant: &Tenant, name: &ScheduleName) -> Result<(), TriggerError>;
}

/// The trigger where the runtime's own scheduler fires ticks from the stored definitions (the
/// local runtime): nothing to arm.
#[derive(Debug, Default)]
pub struct StoredDefinitionsOnly;

#[async_trait]
impl ScheduleTrigger for StoredDefinitionsOnly {
    async fn arm(&self, _: &Schedule) -> Result<(), TriggerError> {
        Ok(())
    }
    async fn disarm(&self, _: &Tenant, _: &ScheduleName) -> Result<(), TriggerError> {
        Ok(())
    }
}

/// Whether a start may happen now under a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Counted: start now.
    Admitted,
    /// Nothing counted: the earliest time a start may be admitted.
    WaitUntil(DateTime<Utc>),
}

/// Rates of starts held in the store, so every worker and Lambda of a deployment shares them
/// (not one process's memory): GCRA, one start per `interval` with bursts of up to `burst`.
#[async_trait]
pub trait StartRates: Send + Sync {
    /// Admit one start under `key` at `now`, or say when one may be: a conditional write on the
    /// key's theoretical arrival time (`domain::gcra`), so two workers are never both admitted
    /// past the rate.
    async fn admit(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError>;
}

/// What asking for a running slot gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTake {
    Taken,
    AlreadyHeld,
    Full,
}

/// How long a job waiting for a running slot keeps its place in line without asking again.
pub const SLOT_LINE_LEASE: Duration = Duration::from_secs(10);

/// Slots of running jobs, at most `max` per key across every worker of a deployment, each held
/// by a job until it ends or until its lease runs out (a worker that died frees its slot then).
/// Jobs that wait for one stand in line in submit order (their ids'), and a free slot goes to
/// the first in line.
#[async_trait]
pub trait RunningSlots: Send + Sync {
    /// Take a slot of `key` for `holder` until `until`: `Taken`, `AlreadyHeld` (renewed: a
    /// duplicate delivery of a job that runs, which must not give the slot back), or `Full`
    /// when `max` others hold one or the free ones are for jobs ahead of it in line (then it
    /// is in line itself until `now + SLOT_LINE_LEASE`). Slots whose lease ran out by `now` are
    /// free, and a place in line that ran out is gone.
    async fn take(
        &self,
        key: &str,
        holder: JobId,
        max: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SlotTake, StoreError>;
    /// Give `holder`'s slot of `key` back (nothing if it has none).
    async fn release(&self, key: &str, holder: JobId) -> Result<(), StoreError>;
}

/// Where the signing key comes from: a value given, or a secret store read on first use.
#[async_trait]
pub trait SigningKey: Send + Sync {
    /// The key; an error is why it could not be had (the delivery is retried).
    async fn key(&self) -> Result<String, String>;
}

#[async_trait]
impl SigningKey for String {
    async fn key(&self) -> Result<String, String> {
        Ok(self.clone())
    }
}

/// Why a use case (submit, read, cancel, retry, …) did not do what was asked: what the HTTP API
/// answers with, and what a job that acts on other jobs (through [`TenantJobs`]) is told.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(#[from] crate::domain::ValidationError),
    #[error("payload is {size} bytes; the limit is {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("no job {0}")]
    NotFound(JobId),
    #[error("no batch {0}")]
    BatchNotFound(crate::domain::BatchId),
    #[error("idempotency key '{0}' was used before for a different request (job {1})")]
    IdempotencyConflict(crate::domain::IdempotencyKey, JobId),
    #[error(transparent)]
    Illegal(#[from] crate::domain::TransitionError),
    #[error("the job kept changing; try again")]
    Contended,
    /// Saturated: nothing was accepted; the client should retry after a moment.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Unavailable(String),
    /// The store refused the request for good (e.g. the job would be too large to store).
    #[error("{0}")]
    Rejected(String),
    #[error("the tenant has {max} unfinished jobs, its quota; submit again once one finishes")]
    QuotaExceeded { max: u64 },
    #[error("the tenant may submit {per_second} jobs a second; try again in a second")]
    RateLimited { per_second: u32 },
    #[error("the tenant has {max} schedules, its most (max_schedules); delete one first")]
    TooManySchedules { max: u64 },
    #[error("no schedule '{0}'")]
    ScheduleNotFound(crate::domain::ScheduleName),
    #[error("a schedule named '{0}' exists; change it with PUT /v1/schedules/{0}")]
    ScheduleExists(crate::domain::ScheduleName),
    /// The scheduler service refused the definition.
    #[error("{0}")]
    ScheduleRefused(String),
    /// An atomic batch with refused items (by index, with why): nothing was created.
    #[error("{} of the batch's jobs are refused; nothing was created (atomic)", .0.len())]
    InvalidBatch(Vec<(usize, ServiceError)>),
}

impl From<TriggerError> for ServiceError {
    fn from(e: TriggerError) -> Self {
        match e {
            TriggerError::Refused(m) => ServiceError::ScheduleRefused(m),
            TriggerError::Unavailable(m) => ServiceError::Unavailable(m),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ServiceError::Contended,
            StoreError::Busy(m) => ServiceError::Busy(m),
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            StoreError::Rejected(m) => ServiceError::Rejected(m),
        }
    }
}

/// What a running job may do to other jobs of its tenant, through the same use cases as the
/// API (the service provides it to the worker): a job submits, retries and cancels through this
/// port, never through the service itself.
#[async_trait]
pub trait TenantJobs: Send + Sync {
    /// Submit a job; the job made (or the one an earlier submit with its idempotency key made).
    async fn submit(
        &self,
        tenant: Tenant,
        job: crate::domain::SubmitRequest,
    ) -> Result<Job, ServiceError>;
    async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError>;
    async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError>;
}
