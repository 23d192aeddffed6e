//! Processing one queue message: load the job, start it (conditionally), run its handler in its
//! own task with a timeout and a heartbeat, and record the outcome (conditionally). The SQS
//! entrypoint (`entrypoints::sqs`) runs this for every record of a batch at once.

use crate::domain::JobMessage;
use crate::domain::{JobError, JobStatus, Outcome};
use crate::jobs::{Execution, JobContext, Registry};
use crate::lifecycle::{Change, EventBatch, Followed, Lifecycle};
use crate::maintenance::recover_stalled;
use crate::ports::{Ports, RateDecision, SlotTake, Started, StoreError};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What to do with the message once processing is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Delete it: the job's state is recorded (or the message is a harmless duplicate).
    Done,
    /// Keep it: the outcome could not be recorded, so let the queue deliver it again.
    Redeliver,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub heartbeat_interval: Duration,
    /// A running job without a heartbeat for this long is taken as lost.
    pub stall_after: Duration,
    /// What a job submitted from a job is held to, as every submit is: the payload limit and
    /// the limits of tenants with none stored.
    pub max_payload_bytes: usize,
    pub tenant_defaults: crate::domain::TenantLimits,
    /// A paused type's job goes back to its queue for this long, then is looked at again.
    pub pause_recheck: Duration,
    /// How long the paused types read are kept (zero: asked for every job).
    pub pause_cache: Duration,
}

impl WorkerSettings {
    pub fn from_config(c: &crate::Config) -> Self {
        Self {
            heartbeat_interval: c.heartbeat_interval,
            stall_after: c.stall_after,
            max_payload_bytes: c.max_payload_bytes,
            tenant_defaults: c.tenant_defaults.clone(),
            pause_recheck: c.pause_recheck,
            pause_cache: c.pause_cache,
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    ports: Ports,
    registry: Arc<Registry>,
    /// The use cases the jobs this worker runs submit through (`JobContext::submit`).
    service: Arc<crate::service::JobService>,
    settings: WorkerSettings,
    /// The runs this process is executing now, for `interrupt_in_flight` at shutdown.
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<crate::domain::JobId, JobContext>>>,
    /// How many deliveries of each job this process is working now: a delivery refused
    /// because its job runs, while another delivery of it is worked here, is a duplicate of
    /// this process's live run (SQS delivers at least once), dropped.
    claimed: Arc<std::sync::Mutex<std::collections::HashMap<crate::domain::JobId, usize>>>,
    /// Where lifecycle events go while a queue batch is processed (`collecting`).
    events: Option<Arc<EventBatch>>,
    /// One task of this process at a time asks the store for a rate's next start; the others
    /// held for that rate wait their turn here (the store is not asked by every one at once).
    rate_gates: RateGates,
    /// When the invocation running this worker ends (Lambda): no attempt may run past it less
    /// `DEADLINE_MARGIN`, so its outcome is always recorded.
    deadline: Option<tokio::time::Instant>,
    /// The paused types as last read, and when (see `WorkerSettings::pause_cache`).
    pauses: Arc<std::sync::Mutex<Option<(tokio::time::Instant, crate::domain::Pauses)>>>,
}

/// Time kept back before an invocation's end to record the outcome of an attempt cut short.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// Early messages (a retry sent before its time, a capped delay) within this are run anyway.
const EARLY_TOLERANCE: chrono::Duration = chrono::Duration::milliseconds(20);
const CONFLICT_RETRIES: usize = 8;
type RateGates =
    Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// What the running slots a job needs gave it.
enum Slot {
    NotNeeded,
    /// These slot keys, to give back when the run ends.
    Taken(Vec<String>),
    /// Every slot is held: the message went back to wait.
    Busy,
}

/// A running slot's lease beyond the job's timeout.
const SLOT_MARGIN: Duration = Duration::from_secs(30);
/// How often a worker asks again for a running slot while it holds the message.
const SLOT_POLL: Duration = Duration::from_millis(100);
/// The delay of a message sent back to wait for a running slot.
const SLOT_RETRY: Duration = Duration::from_secs(1);

/// Waits for a rate's next slot up to this are waited in the worker; longer ones send the
/// message back with the wait as its delay.
const RATE_HOLD: Duration = Duration::from_secs(2);
/// Tries to record an outcome through a store outage: 0.1 + 0.2 + … + 1.6 s, about 3 s.
const OUTAGE_RETRIES: usize = 5;

impl Worker {
    pub fn new(ports: Ports, registry: Arc<Registry>, settings: WorkerSettings) -> Self {
        let service = crate::service::JobService::new(
            ports.clone(),
            registry.clone(),
            settings.max_payload_bytes,
        )
        .with_tenant_defaults(settings.tenant_defaults.clone());
        Self {
            ports,
            registry,
            service: Arc::new(service),
            settings,
            in_flight: Default::default(),
            claimed: Default::default(),
            events: None,
            rate_gates: Default::default(),
            deadline: None,
            pauses: Default::default(),
        }
    }

    /// This worker, ending every attempt by `deadline` less `DEADLINE_MARGIN` (a Lambda
    /// invocation's end): an attempt cut short fails as a timeout, recorded in time.
    pub fn until(&self, deadline: tokio::time::Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// This worker, holding its lifecycle events back in `batch` (see `publish_events`).
    pub fn collecting(&self, batch: Arc<EventBatch>) -> Self {
        Self {
            events: Some(batch),
            ..self.clone()
        }
    }

    /// Publish the events a batch collected, together.
    pub async fn publish_events(&self, batch: &EventBatch) {
        batch.publish(&self.ports).await;
    }

    /// At shutdown, for runs that did not finish in the grace period: put their jobs back in the
    /// queue without using up an attempt, and tell their handlers to stop. Returns how many.
    pub async fn interrupt_in_flight(&self) -> usize {
        let runs: Vec<JobContext> = self.in_flight.lock().unwrap().values().cloned().collect();
        let mut interrupted = 0;
        for ctx in runs {
            let now = Utc::now();
            let Ok(Some(job)) = self.ports.store.get(ctx.job_id()).await else {
                continue;
            };
            if job.status != JobStatus::Running || job.runs != ctx.run() {
                continue;
            }
            let Ok(next) = job.interrupt(now) else {
                continue;
            };
            let line = format!(
                "attempt {} interrupted by a shutdown; back in the queue (it does not count)",
                job.attempt
            );
            let change = Change::of(&job, next).with_log(Some(line));
            if self.lifecycle().apply(&change, now).await.is_ok() {
                interrupted += 1;
            }
            ctx.mark_cancelled();
        }
        interrupted
    }

    /// Process one message body. Never panics on bad input: a body that is not a job message
    /// is kept for redelivery, so it ends in the dead-letter queue where it can be inspected.
    pub async fn process_message(&self, body: &str) -> Disposition {
        let Ok(message) = serde_json::from_str::<JobMessage>(body) else {
            tracing::error!(body = %body.chars().take(200).collect::<String>(), "not a job message");
            return Disposition::Redeliver;
        };
        let span = tracing::info_span!("job", job_id = %message.job_id);
        let id = message.job_id;
        *self.claimed.lock().unwrap().entry(id).or_default() += 1;
        let result = self.process(message).instrument(span).await;
        {
            let mut claimed = self.claimed.lock().unwrap();
            if let Some(n) = claimed.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    claimed.remove(&id);
                }
            }
        }
        match result {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the job's state; the message will be redelivered");
                Disposition::Redeliver
            }
        }
    }

    async fn process(&self, message: JobMessage) -> Result<Disposition, StoreError> {
        let store = &self.ports.store;
        let id = message.job_id;
        // The type names the start slot to wait for (a message from an earlier version has no
        // type: the job has it).
        let job_type = match message.job_type.clone() {
            Some(t) => t,
            None => match store.get(id).await? {
                Some(job) => job.job_type,
                None => return Ok(self.missing()),
            },
        };
        let registration = match self.registry.get(job_type.as_str()) {
            Some(builtin) => Some(builtin.clone()),
            // An external type's: declared for the job's tenant (or for all).
            None => match store.get(id).await? {
                Some(job) => self.registry.resolve(&job.tenant, &job_type).await?,
                None => return Ok(self.missing()),
            },
        };
        let Some(registration) = registration else {
            return self.fail_unhandled(id).await;
        };
        // A paused type's job goes back to wait, untouched (no attempt used): as a new message,
        // so no number of rechecks brings it nearer its dead-letter queue.
        if self.paused(&job_type, &message).await? {
            tracing::debug!("its type is paused; sent back to wait");
            return self
                .send_back(&registration, &message, self.settings.pause_recheck)
                .await
                .map(|()| Disposition::Done);
        }
        // The running slots of its key and its tenant, or sent back to wait for them.
        let slots = match self.take_slots(&registration, &message).await? {
            Slot::Taken(keys) => keys,
            Slot::NotNeeded => vec![],
            Slot::Busy => return Ok(Disposition::Done),
        };
        // Within the job's key's and type's rates (shared by every worker), or sent back; the
        // moment of admission is its start.
        let result = match self.admit_start(&registration, &message).await {
            Ok(Some(now)) => self.start_and_run(id, now, registration).await,
            Ok(None) => Ok(Disposition::Done),
            Err(e) => Err(e),
        };
        self.release_slots(&slots, id).await;
        result
    }

    async fn start_and_run(
        &self,
        id: crate::domain::JobId,
        now: chrono::DateTime<Utc>,
        registration: Arc<crate::jobs::Registration>,
    ) -> Result<Disposition, StoreError> {
        // Start in one conditional write; a refusal says what the job is instead.
        let running = match self
            .ports
            .store
            .start(id, now, now + EARLY_TOLERANCE)
            .await?
        {
            Started::Running(job) => *job,
            Started::Missing => return Ok(self.missing()),
            Started::Refused(job) => return self.refused(&job, now).await,
        };
        tracing::debug!(job_type = %running.job_type, attempt = running.attempt, "started");
        let outcome = self.run_handler(&running, registration).await;
        self.record(running, outcome).await
    }

    /// The running slots a job needs: one of its key's, where its type limits running jobs per
    /// key, and one of its tenant's, where the tenant limits running jobs.
    fn slots_needed(
        registration: &crate::jobs::Registration,
        message: &JobMessage,
    ) -> Vec<(String, u32)> {
        let mut needed = vec![];
        if let (Some(max), Some(key)) = (registration.options.max_running_per_key, &message.key) {
            needed.push((format!("type:{}#key:{key}", registration.job_type), max));
        }
        if let Some((tenant, max)) = &message.tenant_running {
            needed.push((format!("tenant:{tenant}"), *max));
        }
        if let Some((tenant, max)) = &registration.tenant {
            // (an external type's most running at once, for its tenant)
            needed.push((format!("type:{tenant}/{}", registration.job_type), *max));
        }
        needed
    }

    /// The running slots the job needs (`slots_needed`). While one is not free (held, or kept
    /// for a job ahead in line) it asks again for a moment, then sends the message back with a
    /// short delay (`Slot::Busy`): the job is untouched and uses no attempt, and keeps its place
    /// in line. A slot's lease is the job's timeout and a margin, so one a dead worker held
    /// frees by then.
    async fn take_slots(
        &self,
        registration: &crate::jobs::Registration,
        message: &JobMessage,
    ) -> Result<Slot, StoreError> {
        let needed = Self::slots_needed(registration, message);
        if needed.is_empty() {
            return Ok(Slot::NotNeeded);
        }
        let lease = chrono::Duration::from_std(registration.options.timeout + SLOT_MARGIN)
            .unwrap_or(chrono::Duration::MAX);
        let asking = tokio::time::Instant::now();
        loop {
            let mut taken = vec![];
            let mut full = false;
            for (key, max) in &needed {
                // (One task of this process asks the store for a key's slots at a time.)
                let gate = self
                    .rate_gates
                    .lock()
                    .unwrap()
                    .entry(format!("slots:{key}"))
                    .or_default()
                    .clone();
                let _turn = gate.lock().await;
                let now = Utc::now();
                match self
                    .ports
                    .slots
                    .take(key, message.job_id, *max, now + lease, now)
                    .await
                {
                    Ok(SlotTake::Taken) => taken.push(key.clone()),
                    // A duplicate delivery of a job whose run holds the slot: it goes on (and
                    // is refused at its start); only the run gives its slots back.
                    Ok(SlotTake::AlreadyHeld) => {
                        self.release_slots(&taken, message.job_id).await;
                        return Ok(Slot::NotNeeded);
                    }
                    Ok(SlotTake::Full) => {
                        full = true;
                        break;
                    }
                    Err(e) => {
                        self.release_slots(&taken, message.job_id).await;
                        return Err(e);
                    }
                }
            }
            if !full {
                return Ok(Slot::Taken(taken));
            }
            // Not every slot: none is kept while waiting for the others.
            self.release_slots(&taken, message.job_id).await;
            if asking.elapsed() >= RATE_HOLD {
                break;
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::time::sleep(SLOT_POLL + jitter).await;
        }
        tracing::debug!("a running slot it needs is not free; sent back to wait");
        self.send_back(registration, message, SLOT_RETRY)
            .await
            .map(|()| Slot::Busy)
    }

    /// Whether a pause holds this job: its type paused for every tenant, or for the job's.
    async fn paused(
        &self,
        job_type: &crate::domain::JobType,
        message: &JobMessage,
    ) -> Result<bool, StoreError> {
        let pauses = self.pauses_now().await?;
        if !pauses.names(job_type.as_str()) {
            return Ok(false);
        }
        if pauses.everywhere(job_type.as_str()) {
            return Ok(true);
        }
        // Paused for some tenant: whose job is this? (The message says, where it carries a
        // tenant running limit or a key; else the job does.)
        let tenant = match (&message.tenant_running, &message.key) {
            (Some((tenant, _)), _) => Some(tenant.clone()),
            (None, Some(key)) => key
                .split_once('/')
                .and_then(|(t, _)| crate::domain::Tenant::parse(t).ok()),
            (None, None) => None,
        };
        let tenant = match tenant {
            Some(t) => t,
            None => match self.ports.store.get(message.job_id).await? {
                Some(job) => job.tenant,
                None => return Ok(false),
            },
        };
        Ok(pauses.holds(&tenant, job_type.as_str()))
    }

    /// The paused types, read again once `pause_cache` has passed since the last read.
    async fn pauses_now(&self) -> Result<crate::domain::Pauses, StoreError> {
        let now = tokio::time::Instant::now();
        if let Some((at, known)) = self.pauses.lock().unwrap().as_ref() {
            if now.duration_since(*at) < self.settings.pause_cache {
                return Ok(known.clone());
            }
        }
        let read = self.ports.pauses.pauses().await?;
        *self.pauses.lock().unwrap() = Some((now, read.clone()));
        Ok(read)
    }

    async fn release_slots(&self, keys: &[String], holder: crate::domain::JobId) {
        for key in keys.iter().rev() {
            if let Err(e) = self.ports.slots.release(key, holder).await {
                tracing::warn!(error = %e, key, "a running slot was not given back; it frees when its lease ends");
            }
        }
    }

    /// The moment this start is admitted under its key's and its type's rates (now, for a
    /// job with neither). A short wait is waited here; a longer one sends the message back with
    /// that delay and answers `None`: the job is untouched (no attempt used) and comes back
    /// when it may start.
    async fn admit_start(
        &self,
        registration: &crate::jobs::Registration,
        message: &JobMessage,
    ) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        let mut rates = vec![];
        if let (Some(rate), Some(key)) = (registration.options.rate_per_key, &message.key) {
            let (interval, burst) = rate.interval_and_burst();
            rates.push((
                format!("type:{}#key:{key}", registration.job_type),
                interval,
                burst,
            ));
        }
        if let Some((interval, burst)) = registration.start_rate() {
            let key = match &registration.tenant {
                // (an external type's rate is its tenant's alone)
                Some((tenant, _)) => format!("type:{tenant}/{}", registration.job_type),
                None => format!("type:{}", registration.job_type),
            };
            rates.push((key, interval, burst));
        }
        let mut now = Utc::now();
        for (key, interval, burst) in rates {
            let gate = self
                .rate_gates
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            let Ok(_turn) = tokio::time::timeout(RATE_HOLD, gate.lock()).await else {
                // Others of this process are ahead for this rate: come back after a while.
                let later = interval.max(Duration::from_secs(1));
                return self
                    .send_back(registration, message, later)
                    .await
                    .map(|()| None);
            };
            loop {
                now = Utc::now();
                let at = match self.ports.rates.admit(&key, interval, burst, now).await? {
                    RateDecision::Admitted => break,
                    RateDecision::WaitUntil(at) => at,
                };
                let wait = (at - now).to_std().unwrap_or_default();
                if wait <= RATE_HOLD {
                    // (A little jitter: workers held for the same slot do not all ask at once.)
                    let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                    tokio::time::sleep(wait + jitter).await;
                    continue;
                }
                tracing::debug!(?wait, rate = %key, "held by a rate; sent back to wait");
                return self
                    .send_back(registration, message, wait)
                    .await
                    .map(|()| None);
            }
        }
        Ok(Some(now))
    }

    /// Send a held job's message back to its queue, delivered again after `delay` (at most the
    /// queue's limit); the job itself is untouched.
    async fn send_back(
        &self,
        registration: &crate::jobs::Registration,
        message: &JobMessage,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let queue = self
            .registry
            .queue_for(&registration.job_type, message.priority);
        let delay = delay.min(crate::domain::MAX_QUEUE_DELAY);
        self.ports
            .queue
            .send(&queue, &message.to_body(), delay, 0)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("sending a held job back: {e}")))
    }

    fn missing(&self) -> Disposition {
        tracing::warn!("message for a job that does not exist (expired?); dropped");
        Disposition::Done
    }

    /// A message whose job did not start: early (sent on), a running job's duplicate (a silent
    /// run is recovered), or a stale delivery (dropped).
    async fn refused(
        &self,
        job: &crate::domain::Job,
        now: chrono::DateTime<Utc>,
    ) -> Result<Disposition, StoreError> {
        match job.status {
            JobStatus::Queued => Ok(self.redispatch_early(job).await),
            JobStatus::Running => {
                let silent = now - job.due_at();
                if silent.to_std().unwrap_or_default() > self.settings.stall_after {
                    recover_stalled(&self.ports, &self.registry, job, now).await?;
                    Ok(Disposition::Done)
                } else if self.claimed.lock().unwrap().get(&job.id).copied() > Some(1) {
                    tracing::debug!("duplicate delivery of a job this process runs; dropped");
                    Ok(Disposition::Done)
                } else {
                    // A run of this process may have ended (and let go of its claim) since
                    // the refused start read the job: read it again. Still that run: another
                    // process's, alive or not; if its worker died, this message is all that
                    // brings the job back, so it is kept (delivered again after its
                    // visibility timeout, when the run has ended or stalled).
                    match self.ports.store.get(job.id).await? {
                        Some(now) if now.status == JobStatus::Running && now.runs == job.runs => {
                            tracing::debug!("delivery of a job running elsewhere; kept for later");
                            Ok(Disposition::Redeliver)
                        }
                        _ => {
                            tracing::debug!("duplicate delivery of a run that has ended; dropped");
                            Ok(Disposition::Done)
                        }
                    }
                }
            }
            other => {
                tracing::debug!(status = %other, "duplicate or stale delivery; dropped");
                Ok(Disposition::Done)
            }
        }
    }

    /// A job of a type this worker has no handler for ends `failed` (permanent), if still queued.
    async fn fail_unhandled(&self, id: crate::domain::JobId) -> Result<Disposition, StoreError> {
        let Some(job) = self.ports.store.get(id).await? else {
            return Ok(self.missing());
        };
        let now = Utc::now();
        let error = JobError::permanent(format!(
            "no handler for job type '{}' in this worker",
            job.job_type
        ));
        let next = job
            .start(now)
            .and_then(|r| r.finish(Outcome::Failed(error), now, 0.0));
        if let Ok(next) = next {
            // Written only if still queued; a conflict means someone else has it.
            match self.lifecycle().apply(&Change::of(&job, next), now).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Disposition::Done)
    }

    /// The job's timeout, or less when the invocation ends sooner.
    fn time_for(&self, job: &crate::domain::Job) -> Duration {
        let left = self.deadline.map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .saturating_sub(DEADLINE_MARGIN)
        });
        left.map_or(job.timeout(), |left| left.min(job.timeout()))
    }

    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle::new(&self.ports, &self.registry).collecting(self.events.as_deref())
    }

    /// A message that came before the job's run time: send it on with the remaining delay.
    async fn redispatch_early(&self, job: &crate::domain::Job) -> Disposition {
        match self.lifecycle().dispatch(job, Utc::now()).await {
            Ok(()) => Disposition::Done,
            Err(e) => {
                tracing::warn!(error = %e, "could not send an early message on");
                Disposition::Redeliver
            }
        }
    }

    /// Run the handler in a task of its own (a panic fails only this job) under the job's
    /// timeout, with a heartbeat on a timer.
    async fn run_handler(
        &self,
        job: &crate::domain::Job,
        registration: Arc<crate::jobs::Registration>,
    ) -> Outcome {
        let ctx = JobContext::new(
            job.id,
            job.job_type.clone(),
            job.attempt,
            job.runs,
            self.ports.store.clone(),
        )
        .for_tenant(job.tenant.clone(), self.ports.tenants.clone())
        .with_jobs(self.service.clone())
        .depending_on(job.depends_on.clone(), job.batch_id)
        .keeping_logs(Duration::from_secs(job.retention_secs));
        self.in_flight.lock().unwrap().insert(job.id, ctx.clone());
        // By default the handler runs on a thread of the blocking pool, driving its future there:
        // a handler that blocks its thread (a sleep, a CPU-bound loop) costs that thread only,
        // never the threads that serve HTTP, heartbeats and every other job; a type that only
        // awaits may run as a plain task instead (`Execution`). `abortable` stops a handler
        // that awaits at its timeout; one that never yields keeps its thread until it returns,
        // but its attempt ends at the timeout all the same.
        let execution = registration.options.execution;
        let started = std::time::Instant::now();
        let (handler, abort) = futures::future::abortable({
            let ctx = ctx.clone();
            let payload = job.payload.clone();
            async move { registration.handler.run(ctx, payload).await }
                .instrument(tracing::Span::current())
        });
        let mut task = match execution {
            Execution::Thread => {
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || runtime.block_on(handler))
            }
            Execution::Task => tokio::spawn(handler),
        };
        // The heartbeat task starts at the first beat: a job shorter than that needs none.
        let every = self.settings.heartbeat_interval;
        let timeout = self.time_for(job);
        let deadline = tokio::time::sleep(timeout);
        let first_beat = tokio::time::sleep(every);
        tokio::pin!(deadline, first_beat);
        let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
        let joined = loop {
            tokio::select! {
                biased;
                joined = &mut task => break Some(joined),
                () = &mut deadline => break None,
                () = &mut first_beat, if heartbeat.is_none() => {
                    let ctx = ctx.clone();
                    heartbeat = Some(tokio::spawn(async move {
                        let mut tick = tokio::time::interval(every);
                        loop {
                            tick.tick().await; // the first tick is at once: this is the first beat
                            ctx.heartbeat().await;
                        }
                    }));
                }
            }
        };
        let ran = started.elapsed().as_secs_f64();
        let outcome = match joined {
            Some(Ok(Ok(Ok(result)))) => Outcome::Succeeded(result),
            Some(Ok(Ok(Err(error)))) => Outcome::Failed(error),
            Some(Ok(Err(futures::future::Aborted))) => Outcome::Failed(JobError::cancelled()),
            Some(Err(join)) if join.is_panic() => Outcome::Failed(JobError::with_kind(
                "panic",
                crate::health::panic_message(join.into_panic()),
                true,
            )),
            Some(Err(_)) => Outcome::Failed(JobError::cancelled()),
            None => {
                abort.abort();
                Outcome::Failed(JobError::with_kind(
                    "timeout",
                    if timeout < job.timeout() {
                        format!("the invocation's time ran out after {timeout:?}")
                    } else {
                        format!("timed out after {:?}", job.timeout())
                    },
                    true,
                ))
            }
        };
        if let Some(heartbeat) = heartbeat {
            heartbeat.abort();
        }
        self.in_flight.lock().unwrap().remove(&job.id);
        let ended = match &outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed(_) => "failed",
        };
        crate::metrics::global().observe(
            "conveyor_job_run_seconds",
            &[("type", job.job_type.as_str()), ("outcome", ended)],
            ran,
        );
        outcome
    }

    /// Record the attempt's outcome; on a lost race re-read and re-decide (a cancel request
    /// arriving meanwhile turns a failure into `cancelled`).
    async fn record(
        &self,
        mut job: crate::domain::Job,
        mut outcome: Outcome,
    ) -> Result<Disposition, StoreError> {
        let attempt = job.attempt;
        let mut unavailable = 0;
        for _ in 0..CONFLICT_RETRIES + OUTAGE_RETRIES {
            let now = Utc::now();
            // (Progress and the last heartbeat are the run's own fields, already stored by its
            // heartbeats; a transition from running keeps them.)
            let next = job
                .finish(outcome.clone(), now, rand::random::<f64>())
                .expect("a running job can finish");
            let log = match &outcome {
                Outcome::Failed(e) => Some(next.failure_log_line(e, now)),
                Outcome::Succeeded(_) => None,
            };
            let change = Change::of(&job, next).with_log(log);
            match self.lifecycle().apply(&change, now).await {
                Ok(followed) => {
                    tracing::debug!(status = %change.next.status, "recorded");
                    return Ok(match followed {
                        Followed::Complete => Disposition::Done,
                        // The retry's message is not sent: keep this one, so it comes back.
                        Followed::NotDispatched => Disposition::Redeliver,
                    });
                }
                Err(StoreError::Conflict) => match self.ports.store.get(job.id).await? {
                    Some(fresh) if fresh.status == JobStatus::Running && fresh.runs == job.runs => {
                        job = fresh;
                    }
                    _ => {
                        tracing::warn!("attempt {attempt} lost the job to another change; its outcome is dropped");
                        return Ok(Disposition::Done);
                    }
                },
                // The outcome exists only here: ride out a short outage rather than lose it
                // (a lost outcome means the job runs again).
                Err(StoreError::Unavailable(e) | StoreError::Busy(e))
                    if unavailable < OUTAGE_RETRIES =>
                {
                    unavailable += 1;
                    tracing::warn!(error = %e, "outcome not recorded yet; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << unavailable)).await;
                }
                // A result the store refuses for good (too large) ends the job failed, with why.
                Err(StoreError::Rejected(e)) if matches!(outcome, Outcome::Succeeded(_)) => {
                    tracing::warn!(error = %e, "result refused by the store; the job fails");
                    outcome = Outcome::Failed(JobError::permanent(format!(
                        "the result could not be stored: {e}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }
}
