//! The one path for a change of a job's state: the conditional write, then what follows from
//! it, always in the same order and with the same error policy:
//!
//! 1. the write (`JobStore::transition`, or the create or start that made the state);
//! 2. the attempt's log line, if the change has one (a failure is best-effort logged: the
//!    state is what counts, and it is already stored);
//! 3. the lifecycle event, if the new status announces one (best effort, logged on failure);
//! 4. the queue message, if the new status is `queued` (on failure maintenance re-dispatches
//!    it: the outbox rule; the caller learns it through `Followed::NotDispatched`);
//! 5. when the change ended the job: the jobs waiting for it (`depends_on`), each decided from
//!    its dependencies (released to the queue, or cancelled) through these same steps; and, if
//!    it was its batch's last unfinished member, the batch's callbacks. On a failure
//!    maintenance does these later (`maintenance::settle_waiting_jobs`, `finish_ended_batches`).
//!
//! Service, worker and maintenance all change jobs through here, so a new consequence of a
//! change (a push to subscribers, a counter) is added once.

use crate::domain::JobMessage;
use crate::domain::{
    Batch, BatchId, CallbackSpec, Expected, IdempotencyKey, Job, JobId, JobStatus, LifecycleEvent,
    NewJob, BATCH_KEY_PREFIX, MAX_QUEUE_DELAY,
};
use crate::jobs::Registry;
use crate::ports::Created;
use crate::ports::{Dispatch, Outbox, Ports, QueueError, QueueSender, StoreError};
use chrono::{DateTime, Utc};

/// A stored change in the figures: by type and status; a failed attempt that went back to the
/// queue as a retry; a job ended by the dead-letter queue.
fn count_change(job: &Job) {
    let m = crate::metrics::global();
    let job_type = job.job_type.as_str();
    m.count(
        "conveyor_job_changes_total",
        &[("type", job_type), ("status", job.status.as_str())],
        1,
    );
    let kind = job.error.as_ref().map(|e| e.kind.as_str());
    match job.status {
        JobStatus::Queued | JobStatus::Scheduled
            if job.attempt > 0 && !matches!(kind, None | Some("interrupted")) =>
        {
            m.count("conveyor_job_retries_total", &[("type", job_type)], 1)
        }
        JobStatus::Dead if kind == Some("dead_letter") => {
            m.count("conveyor_dead_letters_total", &[("type", job_type)], 1)
        }
        _ => {}
    }
}

/// What followed a stored change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Everything that follows the change is done (or there was nothing to do).
    Complete,
    /// The job is queued but its message could not be sent; maintenance re-dispatches it.
    NotDispatched,
}

/// A change of state as the caller computed it from a read of the job.
#[derive(Debug, Clone)]
pub struct Change {
    /// What the stored job must still be for the change to apply.
    pub expected: Expected,
    pub next: Job,
    /// The attempt's log line (for the attempt in `expected`), if the change has one.
    pub log: Option<String>,
    /// Send the queued job's message (`false`: one already out serves, see `keeping_message`).
    pub dispatch: bool,
    /// Write `next`'s payload (a transition keeps the stored one; see `with_new_payload`).
    pub payload: bool,
}

impl Change {
    /// `from → next`, expecting `from` unchanged, with no log line.
    pub fn of(from: &Job, next: Job) -> Self {
        Self {
            expected: from.expected(),
            next,
            log: None,
            dispatch: true,
            payload: false,
        }
    }

    /// A change that replaces the job's payload (a debounced submit's).
    pub fn with_new_payload(mut self) -> Self {
        self.payload = true;
        self
    }

    /// A change of a queued job whose message is already out and comes no later than `next`
    /// is due (it is sent on when early): no second message.
    pub fn keeping_message(mut self) -> Self {
        self.dispatch = false;
        self
    }

    pub fn with_log(mut self, line: Option<String>) -> Self {
        self.log = line;
        self
    }
}

/// Lifecycle events held back to be published together (a queue batch's, in one request per
/// ten on EventBridge instead of one each).
#[derive(Debug, Default)]
pub struct EventBatch(std::sync::Mutex<Vec<LifecycleEvent>>);

impl EventBatch {
    /// Publish what was collected (a failure is logged: the jobs' states are already stored).
    pub async fn publish(&self, ports: &Ports) {
        let events = std::mem::take(&mut *self.0.lock().unwrap());
        if events.is_empty() {
            return;
        }
        if let Err(e) = ports.events.publish_all(&events).await {
            tracing::warn!(error = %e, "lifecycle events not published");
        }
    }
}

#[derive(Clone, Copy)]
pub struct Lifecycle<'a> {
    ports: &'a Ports,
    registry: &'a Registry,
    batch: Option<&'a EventBatch>,
}

impl<'a> Lifecycle<'a> {
    pub fn new(ports: &'a Ports, registry: &'a Registry) -> Self {
        Self {
            ports,
            registry,
            batch: None,
        }
    }

    /// Events go to `batch` (published by whoever owns it) instead of out at once.
    pub fn collecting(self, batch: Option<&'a EventBatch>) -> Self {
        Self { batch, ..self }
    }

    /// Write the change if the stored job still matches; then everything that follows it.
    /// `Conflict` (someone else changed the job first) and store errors come back untouched,
    /// and then nothing followed.
    pub async fn apply(&self, change: &Change, now: DateTime<Utc>) -> Result<Followed, StoreError> {
        let store = &self.ports.store;
        let written = if change.payload {
            store
                .transition_with_payload(change.expected, &change.next)
                .await?
        } else {
            store.transition(change.expected, &change.next).await?
        };
        let followed = self
            .follow_sending(
                &change.next,
                change.expected.attempt,
                change.log.as_deref(),
                now,
                change.dispatch,
            )
            .await;
        if !written.waiters.is_empty() {
            self.settle_waiting(written.waiters, Some(&change.next), now)
                .await;
        }
        if let Some(batch) = written.batch_ended {
            self.finish_batch(batch, now).await;
        }
        Ok(followed)
    }

    /// A batch none of whose members is unfinished: submit its callbacks (each once: its
    /// idempotency key is the batch's and the callback's), then record them. A failure leaves
    /// the batch to maintenance, which calls this again.
    pub async fn finish_batch(&self, id: BatchId, now: DateTime<Utc>) {
        let batch = match self.ports.store.get_batch(id).await {
            Ok(Some(b)) if b.finished_at.is_none() && b.pending == 0 => b,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(batch_id = %id, error = %e, "an ended batch not finished; maintenance will");
                return;
            }
        };
        let mut callbacks = std::collections::BTreeMap::new();
        for (name, spec) in batch.due_callbacks() {
            match self.submit_callback(&batch, name, spec, now).await {
                Ok(Some(job)) => {
                    callbacks.insert(name.to_string(), job);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(batch_id = %id, error = %e, "a batch callback not submitted; maintenance will");
                    return;
                }
            }
        }
        if let Err(e) = self.ports.store.finish_batch(id, &callbacks, now).await {
            tracing::warn!(batch_id = %id, error = %e, "an ended batch not recorded; maintenance will");
        }
        tracing::info!(batch_id = %id, total = batch.total, succeeded = batch.succeeded, "batch ended");
    }

    /// One callback's job (the batch's summary in its payload, as `batch`); `None` when its
    /// type is no longer registered.
    async fn submit_callback(
        &self,
        batch: &Batch,
        name: &str,
        spec: &CallbackSpec,
        now: DateTime<Utc>,
    ) -> Result<Option<JobId>, StoreError> {
        let Some(registration) = self.registry.resolve(&batch.tenant, &spec.job_type).await? else {
            tracing::warn!(batch_id = %batch.id, job_type = %spec.job_type, "a batch callback's type is not registered; skipped");
            return Ok(None);
        };
        let options = &registration.options;
        let payload = match spec.payload.clone() {
            serde_json::Value::Object(mut o) => {
                o.insert("batch".into(), batch.summary());
                serde_json::Value::Object(o)
            }
            serde_json::Value::Null => serde_json::json!({ "batch": batch.summary() }),
            other => other,
        };
        let key = IdempotencyKey::parse(format!("{BATCH_KEY_PREFIX}{}:{name}", batch.id))
            .map_err(|e| StoreError::Rejected(e.message))?;
        let job = Job::create(
            NewJob {
                tenant: batch.tenant.clone(),
                job_type: spec.job_type.clone(),
                priority: spec.priority,
                payload,
                max_attempts: spec.max_attempts.unwrap_or(options.max_attempts),
                backoff: options.backoff,
                timeout: options.timeout,
                retention: options.retention,
                idempotency_key: Some(key),
                request_fingerprint: None,
                run_at: now,
            },
            now,
        );
        match self.ports.store.create(&job).await? {
            Created::New => {
                self.follow(&job, 0, None, now).await;
                Ok(Some(job.id))
            }
            Created::Existing(made) => Ok(Some(made.id)),
            _ => Ok(None),
        }
    }

    /// Decide jobs waiting for others (`depends_on`) from how those stand now: each that can
    /// leave `waiting` is released to the queue, or cancelled with the reason, through the one
    /// path; the jobs waiting for a cancelled one are decided in turn. A job still waiting, or
    /// one whose write failed, is left to the next job that ends or to maintenance.
    /// `ended` is the job whose end told them (none: maintenance asks): it is taken as read, and
    /// then the others are read only up to the first unfinished one (any that failed told them
    /// too), instead of every one each time.
    pub async fn settle_waiting(&self, ids: Vec<JobId>, ended: Option<&Job>, now: DateTime<Utc>) {
        let store = &self.ports.store;
        let mut todo: std::collections::VecDeque<(JobId, Option<(JobId, JobStatus)>)> = ids
            .into_iter()
            .map(|id| (id, ended.map(|e| (e.id, e.status))))
            .collect();
        while let Some((id, told_by)) = todo.pop_front() {
            for _ in 0..8 {
                let child = match store.get(id).await {
                    Ok(Some(child)) if child.status == JobStatus::Waiting => child,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "a waiting job not decided; maintenance will");
                        break;
                    }
                };
                let told_by = told_by.filter(|(p, _)| child.depends_on.contains(p));
                // The one that told, then the others in order (when told: up to the first
                // unfinished one, which the job waits on anyway).
                let mut parents: Vec<(JobId, Option<JobStatus>)> =
                    told_by.map(|(p, s)| (p, Some(s))).into_iter().collect();
                let mut unreadable = false;
                for parent in &child.depends_on {
                    if told_by.is_some_and(|(p, _)| p == *parent) {
                        continue;
                    }
                    match store.get(*parent).await {
                        Ok(found) => {
                            let status = found.map(|p| p.status);
                            parents.push((*parent, status));
                            if told_by.is_some() && status.is_some_and(|s| !s.is_terminal()) {
                                break;
                            }
                        }
                        Err(_) => {
                            unreadable = true;
                            break;
                        }
                    }
                }
                if unreadable {
                    break;
                }
                // (an unfinished one read last keeps it waiting, unless a failure decided it)
                let Some(next) = child.settle_dependencies(&parents, now) else {
                    break;
                };
                let log = match &next.error {
                    Some(e) if next.status == JobStatus::Cancelled => Some(e.message.clone()),
                    _ => None,
                };
                match store.transition(child.expected(), &next).await {
                    Ok(written) => {
                        self.follow(&next, child.attempt, log.as_deref(), now).await;
                        if let Some(batch) = written.batch_ended {
                            self.finish_batch(batch, now).await;
                        }
                        let told = (next.id, next.status);
                        todo.extend(written.waiters.into_iter().map(|w| (w, Some(told))));
                        break;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "a waiting job not decided; maintenance will");
                        break;
                    }
                }
            }
        }
    }

    /// What follows a stored change that made `job` (a transition, a create, a start).
    pub async fn follow(
        &self,
        job: &Job,
        attempt: u32,
        log: Option<&str>,
        now: DateTime<Utc>,
    ) -> Followed {
        self.follow_sending(job, attempt, log, now, true).await
    }

    /// `follow` for a new job whose message the store wrote with it (`writes_messages`).
    pub async fn follow_sent(&self, job: &Job, now: DateTime<Utc>) -> Followed {
        self.follow_sending(job, 0, None, now, false).await
    }

    /// The message `dispatch` would send for `job` now (`None` unless it is queued).
    pub fn message_for(
        &self,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Option<crate::ports::QueuedMessage> {
        message_of(self.registry, job, now).map(|(queue, (body, delay, priority))| {
            crate::ports::QueuedMessage {
                queue,
                body,
                delay,
                priority,
            }
        })
    }

    async fn follow_sending(
        &self,
        job: &Job,
        attempt: u32,
        log: Option<&str>,
        now: DateTime<Utc>,
        send: bool,
    ) -> Followed {
        count_change(job);
        if job.status.is_terminal() {
            self.ports.history.ended(job);
        }
        if let Some(line) = log {
            if let Err(e) = self
                .ports
                .store
                .append_log(crate::ports::NewLogLine {
                    tenant: &job.tenant,
                    job_id: job.id,
                    attempt,
                    at: now,
                    line,
                    keep_until: job.expires_at.unwrap_or(now)
                        + chrono::Duration::seconds(job.retention_secs as i64),
                })
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "log line not written");
            }
        }
        if let Some(event) = job.lifecycle_event() {
            match self.batch {
                Some(batch) => batch.0.lock().unwrap().push(event),
                None => {
                    if let Err(e) = self.ports.events.publish(&event).await {
                        tracing::warn!(job_id = %job.id, error = %e, "lifecycle event not published");
                    }
                }
            }
        }
        if !send || self.ports.dispatch == Dispatch::FromStream {
            return Followed::Complete;
        }
        match self.dispatch(job, now).await {
            Ok(()) => Followed::Complete,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "job queued but its message not sent; maintenance re-dispatches it");
                Followed::NotDispatched
            }
        }
    }

    /// What follows the creation of new jobs together (a batch submit): as `follow` for each,
    /// with their events published together and their messages sent together per queue.
    pub async fn follow_new(&self, jobs: &[Job], now: DateTime<Utc>) {
        let mut events = vec![];
        let mut queues: std::collections::BTreeMap<
            String,
            Vec<(String, std::time::Duration, i32)>,
        > = Default::default();
        for job in jobs {
            count_change(job);
            if job.status.is_terminal() {
                self.ports.history.ended(job);
            }
            events.extend(job.lifecycle_event());
            if self.ports.dispatch == Dispatch::AfterWrite {
                if let Some((queue, message)) = message_of(self.registry, job, now) {
                    queues.entry(queue).or_default().push(message);
                }
            }
        }
        match self.batch {
            Some(batch) => batch.0.lock().unwrap().extend(events),
            None if events.is_empty() => {}
            None => {
                if let Err(e) = self.ports.events.publish_all(&events).await {
                    tracing::warn!(error = %e, "lifecycle events of new jobs not published");
                }
            }
        }
        for (queue, messages) in queues {
            if let Err(e) = self.ports.queue.send_all(&queue, &messages).await {
                tracing::warn!(queue, error = %e, "jobs queued but their messages not all sent; maintenance re-dispatches them");
            }
        }
    }

    /// Send a queued job's message; nothing for any other status.
    pub async fn dispatch(&self, job: &Job, now: DateTime<Utc>) -> Result<(), QueueError> {
        let Some((queue, (body, delay, priority))) = message_of(self.registry, job, now) else {
            return Ok(());
        };
        self.ports
            .queue
            .send(&queue, &body, delay, priority)
            .await
            .map(|_| ())
    }
}

/// A queued job's message: its queue, and its body, delay (the time left until its run time,
/// within the queue's limit) and priority; `None` for any other status. What every message of
/// a job is made from.
fn message_of(
    registry: &Registry,
    job: &Job,
    now: DateTime<Utc>,
) -> Option<(String, (String, std::time::Duration, i32))> {
    let delay = job.dispatch_delay(now)?;
    Some((
        registry.queue_for(&job.job_type, job.priority),
        (
            JobMessage::of(job).to_body(),
            delay.min(MAX_QUEUE_DELAY),
            job.priority,
        ),
    ))
}

/// The messages of queued jobs, sent together per queue: the `Outbox` the reader of the
/// table's stream sends through.
pub struct Messages {
    queue: std::sync::Arc<dyn QueueSender>,
    registry: std::sync::Arc<Registry>,
}

impl Messages {
    pub fn new(queue: std::sync::Arc<dyn QueueSender>, registry: std::sync::Arc<Registry>) -> Self {
        Self { queue, registry }
    }
}

#[async_trait::async_trait]
impl Outbox for Messages {
    async fn send(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let now = Utc::now();
        let mut queues: std::collections::BTreeMap<
            String,
            Vec<(String, std::time::Duration, i32)>,
        > = Default::default();
        for job in jobs {
            if let Some((queue, message)) = message_of(&self.registry, job, now) {
                queues.entry(queue).or_default().push(message);
            }
        }
        for (queue, messages) in queues {
            self.queue.send_all(&queue, &messages).await?;
        }
        Ok(())
    }
}
