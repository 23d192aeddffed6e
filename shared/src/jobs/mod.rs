//! Job types: a registry of async handlers by name, each with its options, and the context a
//! handler gets (progress, log, heartbeat, cooperative cancel). Adding a type is one file here
//! and one line in `Registry::builtin`.

mod bulk;
mod http_fetch;
mod noop;
mod outbound;
mod scan;
mod sleep;
mod webhook;

pub use bulk::{Bulk, BulkAction, BulkRequest, JobFilter, BULK_TYPE};
pub use http_fetch::HttpFetch;
pub use noop::Noop;
pub use outbound::{refusal, Network, Outbound, OutboundPolicy, Refused};
pub use scan::{ScanDomain, SCAN_TYPE};
pub use sleep::Sleep;
pub use webhook::{sign, sign_all, tenant_secret, Signed, SigningKey, WebhookDeliver, WebhookKey};

use crate::domain::{Backoff, JobError, JobId, JobType, Progress, Tenant, ValidationError};
use crate::ports::{JobStore, StoreError, TenantStore};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A job type's behaviour.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Check a payload at submit time, so a job that can never run is refused with a 400.
    fn validate(&self, _payload: &Value) -> Result<(), ValidationError> {
        Ok(())
    }

    /// Run one attempt. A retryable `JobError` retries with backoff while attempts remain.
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError>;
}

/// Per-type options. Queue-side ones (`concurrency`, `batch_size`, `visibility`) are what the
/// SQS event-source mapping (or the local poller) honours.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
    /// Batches processed at once (Lambda: the event source's MaximumConcurrency).
    pub concurrency: usize,
    pub batch_size: usize,
    /// Least time between two starts of this type (0 = no limit): a rate of one per this,
    /// held in the store like `rate`.
    pub min_interval: Duration,
    /// At most this many starts of this type per period, across every worker of the
    /// deployment (held in the store: `ports::StartRates`). A job held by it waits without
    /// using an attempt.
    pub rate: Option<crate::domain::Rate>,
    /// At most this many starts per period for each concurrency key of each tenant (a job
    /// submitted with `concurrency_key`; one without has only the type's rate).
    pub rate_per_key: Option<crate::domain::Rate>,
    /// At most this many jobs of this type running at once for each concurrency key of each
    /// tenant; one over it waits (without using an attempt) until a slot frees.
    pub max_running_per_key: Option<u32>,
    /// A queue of its own for high-priority jobs (submitted with `priority` above 0), and how
    /// many batches its workers take from it for each one from the normal queue while both have
    /// jobs (on Lambda: its event source's concurrency, as a multiple of the normal one's).
    pub high_priority_ratio: Option<u32>,
    /// How long a finished job is kept.
    pub retention: Duration,
    /// Where the handler runs: see `Execution`.
    pub execution: Execution,
}

/// Where a type's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    /// On a thread of its own (the blocking pool): a handler that blocks its thread (a
    /// `std::thread::sleep`, blocking I/O, a CPU-bound loop) costs that thread only, never the
    /// HTTP API, heartbeats or other jobs. The safe default, for any handler.
    #[default]
    Thread,
    /// As a task on the shared async threads, without the hand-over to a thread of its own
    /// (about a tenth of a no-op job's CPU): only for handlers that never block, that is, that
    /// only await (timers, network clients, the job context). One that blocks stalls others.
    Task,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(15 * 60)),
            timeout: Duration::from_secs(60),
            concurrency: 4,
            batch_size: 10,
            min_interval: Duration::ZERO,
            rate: None,
            rate_per_key: None,
            max_running_per_key: None,
            high_priority_ratio: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            execution: Execution::Thread,
        }
    }
}

/// How long a worker function outlives the longest job it runs (to record an attempt cut short:
/// the worker stops a run `worker::DEADLINE_MARGIN` before its invocation ends).
pub const FUNCTION_MARGIN: Duration = Duration::from_secs(10);
/// Lambda's longest invocation.
pub const LAMBDA_MAX: Duration = Duration::from_secs(900);

impl JobOptions {
    /// The timeout of the worker function that runs this type on AWS: the job's timeout and
    /// `FUNCTION_MARGIN` (a type's timeout leaves room for it within `LAMBDA_MAX`).
    pub fn function_timeout(&self) -> Duration {
        (self.timeout + FUNCTION_MARGIN).min(LAMBDA_MAX)
    }

    /// The queue's visibility timeout: six times the worker function's timeout, as Lambda asks
    /// of an SQS event source, so a live batch never reappears.
    pub fn visibility(&self) -> Duration {
        (self.function_timeout() * 6).max(Duration::from_secs(30))
    }
}

pub struct Registration {
    pub job_type: JobType,
    pub options: JobOptions,
    pub handler: Arc<dyn JobHandler>,
}

impl Registration {
    /// The spacing and burst of this type's starts, if it has a rate (`rate`, else
    /// `min_interval` as one per that interval).
    pub fn start_rate(&self) -> Option<(Duration, u32)> {
        match self.options.rate {
            Some(rate) => Some(rate.interval_and_burst()),
            None if !self.options.min_interval.is_zero() => Some((self.options.min_interval, 1)),
            None => None,
        }
    }
}

/// One limit on a job type, set from the environment (`CONVEYOR_TYPE_LIMITS`).
#[derive(Debug, Clone, PartialEq)]
pub struct TypeLimit {
    pub job_type: String,
    pub limit: Limit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    Rate(crate::domain::Rate),
    RatePerKey(crate::domain::Rate),
    MaxRunningPerKey(u32),
    MinInterval(Duration),
}

impl TypeLimit {
    /// `<type>:<limit>=<value>`, several separated by spaces, commas or semicolons:
    /// `rate=10/1s`, `rate_per_key=1/30s`, `max_running_per_key=2`, `min_interval=500ms`.
    pub fn parse_all(s: &str) -> Option<Vec<TypeLimit>> {
        s.split([' ', ',', ';'])
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (job_type, setting) = part.split_once(':')?;
                let (name, value) = setting.split_once('=')?;
                let rate = |v: &str| -> Option<crate::domain::Rate> {
                    let (per, period) = v.split_once('/')?;
                    let per: u32 = per.parse().ok().filter(|n| *n > 0)?;
                    let period = crate::config::parse_duration(period).filter(|d| !d.is_zero())?;
                    Some(crate::domain::Rate { per, period })
                };
                let limit = match name {
                    "rate" => Limit::Rate(rate(value)?),
                    "rate_per_key" => Limit::RatePerKey(rate(value)?),
                    "max_running_per_key" => {
                        Limit::MaxRunningPerKey(value.parse().ok().filter(|n| *n > 0)?)
                    }
                    "min_interval" => Limit::MinInterval(crate::config::parse_duration(value)?),
                    _ => return None,
                };
                JobType::parse(job_type).ok()?;
                Some(TypeLimit {
                    job_type: job_type.to_string(),
                    limit,
                })
            })
            .collect()
    }
}

/// Settings the shipped types read from the environment (through `Config`).
#[derive(Debug, Clone, Default)]
pub struct BuiltinSettings {
    pub webhook_secret: Option<WebhookKey>,
    pub fetch_max_bytes: usize,
    /// Where `http.fetch` and `webhook.deliver` may connect besides public addresses.
    pub outbound: OutboundPolicy,
}

pub struct Registry {
    types: BTreeMap<String, Arc<Registration>>,
    queue_prefix: String,
}

impl Registry {
    pub fn new(queue_prefix: impl Into<String>) -> Self {
        Self {
            types: BTreeMap::new(),
            queue_prefix: queue_prefix.into(),
        }
    }

    /// The shipped types: `noop`, `sleep`, `http.fetch`, `webhook.deliver`, and `conveyor.bulk`
    /// (bulk retry and cancel, see `bulk`). Each only awaits,
    /// so each runs as a task (`Execution::Task`).
    pub fn builtin(queue_prefix: &str, settings: &BuiltinSettings) -> Self {
        let http = JobOptions {
            timeout: Duration::from_secs(30),
            max_attempts: 5,
            execution: Execution::Task,
            ..JobOptions::default()
        };
        let outbound = Arc::new(Outbound::new(settings.outbound.clone()));
        let mut r = Self::new(queue_prefix);
        r.register(
            "noop",
            JobOptions {
                concurrency: 8,
                execution: Execution::Task,
                ..JobOptions::default()
            },
            Noop,
        );
        r.register(
            "sleep",
            JobOptions {
                // (Lambda's 15 minutes, less the worker function's margin)
                timeout: LAMBDA_MAX - FUNCTION_MARGIN,
                concurrency: 16,
                batch_size: 1,
                execution: Execution::Task,
                ..JobOptions::default()
            },
            Sleep,
        );
        r.register(
            "http.fetch",
            JobOptions {
                // (Fetches a user waits for jump the queue of a crawl's thousands.)
                high_priority_ratio: Some(4),
                ..http.clone()
            },
            runs(HttpFetch::new(settings.fetch_max_bytes, outbound.clone())),
        );
        r.register(
            "webhook.deliver",
            http,
            runs(WebhookDeliver::new(
                settings.webhook_secret.clone(),
                outbound.clone(),
            )),
        );
        r.register(
            SCAN_TYPE,
            JobOptions {
                timeout: Duration::from_secs(60),
                max_attempts: 5,
                execution: Execution::Task,
                ..JobOptions::default()
            },
            ScanDomain::new(outbound.clone()),
        );
        r.register(
            BULK_TYPE,
            JobOptions {
                timeout: Duration::from_secs(600),
                max_attempts: 5,
                concurrency: 2,
                batch_size: 1,
                execution: Execution::Task,
                ..JobOptions::default()
            },
            Bulk,
        );
        r
    }

    /// Set `limits` on the registered types (each over what the type was registered with); an
    /// error names a type that is not registered.
    pub fn limit(&mut self, limits: &[TypeLimit]) -> Result<(), String> {
        for l in limits {
            let Some(registration) = self.types.get_mut(&l.job_type) else {
                return Err(format!(
                    "CONVEYOR_TYPE_LIMITS names type '{}', which is not registered; types: {}",
                    l.job_type,
                    self.names().join(", ")
                ));
            };
            let r =
                Arc::get_mut(registration).expect("limits are set before the registry is shared");
            match l.limit.clone() {
                Limit::Rate(rate) => r.options.rate = Some(rate),
                Limit::RatePerKey(rate) => r.options.rate_per_key = Some(rate),
                Limit::MaxRunningPerKey(n) => r.options.max_running_per_key = Some(n),
                Limit::MinInterval(d) => r.options.min_interval = d,
            }
        }
        Ok(())
    }

    pub fn register(&mut self, name: &str, options: JobOptions, handler: impl JobHandler) {
        let job_type = JobType::parse(name).expect("registered type names are valid");
        self.types.insert(
            name.to_string(),
            Arc::new(Registration {
                job_type,
                options,
                handler: Arc::new(handler),
            }),
        );
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Registration>> {
        self.types.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.types.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }

    /// The queue a type's jobs go through: `<prefix><type with '.' as '-'>`.
    pub fn queue_name(&self, job_type: &JobType) -> String {
        format!(
            "{}{}",
            self.queue_prefix,
            job_type.as_str().replace('.', "-")
        )
    }

    pub fn dead_letter_queue_name(&self, job_type: &JobType) -> String {
        format!("{}-dlq", self.queue_name(job_type))
    }

    /// The high-priority queue of a type that has one (`high_priority_ratio`):
    /// `<queue>-high`, with the same dead-letter queue.
    pub fn high_queue_name(&self, job_type: &JobType) -> Option<String> {
        self.get(job_type.as_str())?
            .options
            .high_priority_ratio
            .map(|_| format!("{}-high", self.queue_name(job_type)))
    }

    /// The queue a job of `job_type` with `priority` goes through: the type's high-priority
    /// queue for a priority above 0, where it has one; else its queue.
    pub fn queue_for(&self, job_type: &JobType, priority: i32) -> String {
        match self.high_queue_name(job_type) {
            Some(high) if priority > 0 => high,
            _ => self.queue_name(job_type),
        }
    }

    /// Every queue of every type, with the type's dead-letter queue.
    pub fn all_queues(&self) -> Vec<(Arc<Registration>, String, String)> {
        self.iter()
            .flat_map(|r| {
                let dlq = self.dead_letter_queue_name(&r.job_type);
                std::iter::once(self.queue_name(&r.job_type))
                    .chain(self.high_queue_name(&r.job_type))
                    .map(move |q| (r.clone(), q, dlq.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A shipped type's handler, as it is where jobs run (`handlers`).
#[cfg(feature = "handlers")]
fn runs<H: JobHandler>(handler: H) -> H {
    handler
}

/// A shipped type's handler where jobs are only submitted (without `handlers`: every Lambda
/// function but the worker): it checks payloads as the type does, and never runs a job.
#[cfg(not(feature = "handlers"))]
fn runs<H: JobHandler>(handler: H) -> SubmitOnly<H> {
    SubmitOnly(handler)
}

#[cfg(not(feature = "handlers"))]
struct SubmitOnly<H>(H);

#[cfg(not(feature = "handlers"))]
#[async_trait]
impl<H: JobHandler> JobHandler for SubmitOnly<H> {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        self.0.validate(payload)
    }

    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        Err(JobError::retryable(
            "this process only submits jobs of this type; the worker runs them",
        ))
    }
}

/// What a running handler can do and learn.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    job_id: JobId,
    job_type: JobType,
    attempt: u32,
    run: u32,
    store: Arc<dyn JobStore>,
    /// The job's tenant and the store of tenants' settings (webhook keys), when the worker
    /// runs it (a handler tested alone has neither).
    tenant: Option<(Tenant, Arc<dyn TenantStore>)>,
    /// The deployment's use cases, as the worker was given them (its payload limit and its
    /// tenants' default limits, so a job submitted from a job is held to the same quotas as
    /// any other), for `submit` and the shipped types that change other jobs (`conveyor.bulk`).
    service: Option<Arc<crate::service::JobService>>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    last_progress: Mutex<Option<Progress>>,
    /// The job's recorded steps (read once per run, at its first `step`) and this run's.
    steps: tokio::sync::OnceCell<Mutex<HashMap<String, Value>>>,
    /// Steps done and the number the handler said it has (`plan_steps`): its progress.
    step_count: Mutex<(u32, Option<u32>)>,
    /// The jobs this one depended on (`depends_on`), in order.
    depends_on: Vec<JobId>,
    /// The batch this job is a member of.
    batch: Option<crate::domain::BatchId>,
    /// How long the job is kept once it ends: its log lines are kept that long from now.
    retention: chrono::Duration,
}

/// How long a step's record is kept past its recording: longer than any job that ran it
/// (its retention, 7 days by default, after a queue's 14 days at most).
const STEP_KEEP: chrono::Duration = chrono::Duration::days(60);

impl JobContext {
    /// The context of one run of a job: `job.attempt` and `job.runs` as the run started.
    pub fn new(
        job_id: JobId,
        job_type: JobType,
        attempt: u32,
        run: u32,
        store: Arc<dyn JobStore>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                job_id,
                job_type,
                attempt,
                run,
                store,
                tenant: None,
                service: None,
                cancelled: AtomicBool::new(false),
                cancel_notify: Notify::new(),
                last_progress: Mutex::new(None),
                steps: tokio::sync::OnceCell::new(),
                step_count: Mutex::new((0, None)),
                depends_on: vec![],
                batch: None,
                retention: chrono::Duration::days(7),
            }),
        }
    }

    /// The same context, for a job of `tenant` (the worker sets this).
    pub fn for_tenant(self, tenant: Tenant, tenants: Arc<dyn TenantStore>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| unreachable!("a context is given its tenant before it is shared"));
        Self {
            inner: Arc::new(ContextInner {
                tenant: Some((tenant, tenants)),
                ..inner
            }),
        }
    }

    /// The same context, with the deployment's use cases (the worker sets this).
    pub fn with_service(self, service: Arc<crate::service::JobService>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| unreachable!("a context is given its service before it is shared"));
        Self {
            inner: Arc::new(ContextInner {
                service: Some(service),
                ..inner
            }),
        }
    }

    /// The same context, for a job that depended on `parents` and is a member of `batch` (the
    /// worker sets this).
    pub fn depending_on(self, parents: Vec<JobId>, batch: Option<crate::domain::BatchId>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| unreachable!("a context is given its parents before it is shared"));
        Self {
            inner: Arc::new(ContextInner {
                depends_on: parents,
                batch,
                ..inner
            }),
        }
    }

    /// The same context, keeping the job's log lines for `retention` (a job's own; the
    /// worker sets this).
    pub fn keeping_logs(self, retention: std::time::Duration) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("a context is given its retention before it is shared")
        });
        Self {
            inner: Arc::new(ContextInner {
                retention: chrono::Duration::from_std(retention)
                    .unwrap_or(chrono::Duration::days(7)),
                ..inner
            }),
        }
    }

    /// The batch this job is a member of.
    pub fn batch_id(&self) -> Option<crate::domain::BatchId> {
        self.inner.batch
    }

    /// Submit a job of this job's tenant (with an idempotency key, a retry of this job finds
    /// the one it submitted before instead of making another). Its id.
    pub async fn submit(&self, job: crate::service::SubmitRequest) -> Result<JobId, JobError> {
        let (service, tenant) = match (self.service(), self.tenant()) {
            (Some(s), Some((t, _))) => (s, t.clone()),
            _ => {
                return Err(JobError::permanent(
                    "jobs are submitted from a job only in a worker",
                ))
            }
        };
        let (made, _) = service.submit(tenant, job).await.map_err(|e| match e {
            crate::service::ServiceError::Invalid(e) => {
                JobError::permanent(format!("a job it submits is refused: {e}"))
            }
            e => JobError::retryable(format!("submitting a job: {e}")),
        })?;
        Ok(made.id)
    }

    /// Submit jobs into this job's own batch, before this one ends (so the batch cannot end
    /// without them): each a member, counted in it as it is written. Their ids, in order.
    pub async fn add_to_batch(
        &self,
        jobs: Vec<crate::service::SubmitRequest>,
    ) -> Result<Vec<JobId>, JobError> {
        let batch = self
            .batch_id()
            .ok_or_else(|| JobError::permanent("this job is not a member of a batch"))?;
        let mut ids = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            job.batch_id = Some(batch);
            ids.push(self.submit(job).await?);
        }
        Ok(ids)
    }

    /// The results of the jobs this one depended on (`depends_on`), in that order: each one's
    /// result, or `None` for one that did not succeed (it ran anyway, with
    /// `on_dependency_failure: run`) or is gone.
    pub async fn dependency_results(&self) -> Result<Vec<(JobId, Option<Value>)>, JobError> {
        let mut results = Vec::with_capacity(self.inner.depends_on.len());
        for id in &self.inner.depends_on {
            let job = self.inner.store.get(*id).await.map_err(|e| {
                JobError::retryable(format!("job {id}, a dependency, could not be read: {e}"))
            })?;
            let result = job
                .filter(|j| j.status == crate::domain::JobStatus::Succeeded)
                .and_then(|j| j.result);
            results.push((*id, result));
        }
        Ok(results)
    }

    /// The use cases over the deployment's ports, for a shipped type that changes other jobs
    /// of its tenant through the one lifecycle path.
    pub(crate) fn service(&self) -> Option<&crate::service::JobService> {
        self.inner.service.as_deref()
    }

    /// The job's tenant and the store of tenants' settings.
    pub fn tenant(&self) -> Option<(&Tenant, &Arc<dyn TenantStore>)> {
        self.inner.tenant.as_ref().map(|(t, s)| (t, s))
    }

    pub fn job_id(&self) -> JobId {
        self.inner.job_id
    }

    pub fn job_type(&self) -> &JobType {
        &self.inner.job_type
    }

    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Which run of the job this is (`Job::runs` at its start).
    pub fn run(&self) -> u32 {
        self.inner.run
    }

    /// Report progress (0–100); also a heartbeat, and the moment a cancel request is noticed.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) {
        let progress = Progress {
            percent: percent.min(100),
            message: Some(message.into()).filter(|m: &String| !m.is_empty()),
        };
        *self.inner.last_progress.lock().unwrap() = Some(progress.clone());
        self.beat(Some(&progress)).await;
    }

    /// Run `work` as the durable step `name` (unique within the job): once it completes, its
    /// result is recorded with the job, and every later run of the job (a retry, or a run after
    /// a crash) gets the recorded result back without running `work` again. So a job resumes
    /// after its last completed step instead of starting over. Steps should be in the same order
    /// on every run; a result is JSON of at most `STEP_RESULT_CAP` bytes (a summary or a
    /// reference, not bulk data). Each completed step reports progress (see `plan_steps`).
    ///
    /// ```ignore
    /// let ips: Vec<String> = ctx.step("resolve", async { resolve(&domain).await }).await?;
    /// ```
    pub async fn step<T, F>(&self, name: &str, work: F) -> Result<T, JobError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = Result<T, JobError>>,
    {
        let i = &self.inner;
        let recorded = i
            .steps
            .get_or_try_init(|| async {
                let steps = i.store.steps(i.job_id).await.map_err(|e| {
                    JobError::retryable(format!("the job's steps could not be read: {e}"))
                })?;
                let done = steps.len() as u32;
                i.step_count.lock().unwrap().0 = done;
                Ok::<_, JobError>(Mutex::new(
                    steps.into_iter().map(|s| (s.name, s.result)).collect(),
                ))
            })
            .await?;
        let decode = |v: Value| {
            serde_json::from_value::<T>(v).map_err(|e| {
                JobError::permanent(format!(
                    "step '{name}': its recorded result does not fit: {e}"
                ))
            })
        };
        if let Some(done) = recorded.lock().unwrap().get(name).cloned() {
            return decode(done);
        }
        if self.is_cancelled() {
            return Err(JobError::cancelled());
        }
        let value = serde_json::to_value(work.await?)
            .map_err(|e| JobError::permanent(format!("step '{name}': result is not JSON: {e}")))?;
        let size = value.to_string().len();
        if size > crate::ports::STEP_RESULT_CAP {
            return Err(JobError::permanent(format!(
                "step '{name}': its result is {size} bytes, over the {} a step may keep",
                crate::ports::STEP_RESULT_CAP
            )));
        }
        let now = Utc::now();
        let stored = i
            .store
            .save_step(i.job_id, name, &value, now, now + STEP_KEEP)
            .await
            .map_err(|e| JobError::retryable(format!("step '{name}' not recorded: {e}")))?;
        recorded
            .lock()
            .unwrap()
            .insert(name.to_string(), stored.clone());
        let (done, total) = {
            let mut count = i.step_count.lock().unwrap();
            count.0 += 1;
            *count
        };
        let percent = match total {
            Some(total) if total > 0 => (done * 100 / total).min(100) as u8,
            _ => self.last_progress().map_or(0, |p| p.percent),
        };
        self.progress(percent, format!("step '{name}' done")).await;
        decode(stored)
    }

    /// Say how many steps the handler has, so progress follows them (steps done of `total`).
    pub fn plan_steps(&self, total: u32) {
        self.inner.step_count.lock().unwrap().1 = Some(total);
    }

    /// Tell the store this attempt is alive (the worker also does this on a timer).
    pub async fn heartbeat(&self) {
        self.beat(None).await;
    }

    /// Append a line to the job's log.
    pub async fn log(&self, line: impl AsRef<str>) {
        let i = &self.inner;
        // (a handler run alone, in a test, has no tenant: its lines go under `default`)
        let fallback = Tenant::parse("default").expect("a valid tenant");
        let tenant = i.tenant.as_ref().map_or(&fallback, |(t, _)| t);
        let now = Utc::now();
        let line = crate::ports::NewLogLine {
            tenant,
            job_id: i.job_id,
            attempt: i.attempt,
            at: now,
            line: line.as_ref(),
            keep_until: now + i.retention,
        };
        if let Err(e) = i.store.append_log(line).await {
            tracing::warn!(job_id = %i.job_id, error = %e, "could not append to the job log");
        }
    }

    /// True once a cancel was requested (or the attempt was taken away from this worker):
    /// the handler should stop and return `JobError::cancelled()`.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Resolves when `is_cancelled` becomes true.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.cancel_notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    pub fn last_progress(&self) -> Option<Progress> {
        self.inner.last_progress.lock().unwrap().clone()
    }

    pub(crate) fn mark_cancelled(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        self.inner.cancel_notify.notify_waiters();
    }

    async fn beat(&self, progress: Option<&Progress>) {
        let i = &self.inner;
        match i
            .store
            .heartbeat(i.job_id, i.run, Utc::now(), progress)
            .await
        {
            Ok(l) if l.cancel_requested => self.mark_cancelled(),
            Ok(_) => {}
            Err(StoreError::Conflict) => {
                tracing::warn!(job_id = %i.job_id, attempt = i.attempt, "this run no longer owns the job; stopping it");
                self.mark_cancelled();
            }
            Err(e) => tracing::warn!(job_id = %i.job_id, error = %e, "heartbeat not recorded"),
        }
    }
}

/// Read an optional field of a payload object.
pub(crate) fn field<'a>(payload: &'a Value, name: &str) -> Option<&'a Value> {
    payload.as_object().and_then(|o| o.get(name))
}

pub(crate) fn require_object(payload: &Value) -> Result<(), ValidationError> {
    if payload.is_object() {
        Ok(())
    } else {
        Err(ValidationError::new("payload", "must be a JSON object"))
    }
}

/// Parse and check an http(s) URL from the payload.
pub(crate) fn payload_url(payload: &Value) -> Result<reqwest::Url, ValidationError> {
    require_object(payload)?;
    let raw = field(payload, "url")
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::new("payload.url", "is required (a string)"))?;
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ValidationError::new("payload.url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new("payload.url", "must be http or https"));
    }
    Ok(url)
}

/// 429, 408 and 5xx are worth another attempt; other statuses are answers.
pub(crate) fn status_is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_prefix_and_type() {
        let r = Registry::builtin("conveyor-", &BuiltinSettings::default());
        let t = JobType::parse("http.fetch").unwrap();
        assert_eq!(r.queue_name(&t), "conveyor-http-fetch");
        assert_eq!(r.dead_letter_queue_name(&t), "conveyor-http-fetch-dlq");
        assert_eq!(
            r.names(),
            vec![
                "conveyor.bulk",
                "http.fetch",
                "noop",
                "scan.domain",
                "sleep",
                "webhook.deliver"
            ]
        );
    }
}
