//! Job types: a registry of async handlers by name, each with its options, and the context a
//! handler gets (progress, log, heartbeat, cooperative cancel). Adding a type is one file here
//! and one line in `Registry::builtin`.

mod bulk;
mod context;
mod external;
mod http_fetch;
mod noop;
mod scan;
mod sleep;
mod webhook;

pub use crate::domain::{Limit, TypeLimit};
pub use crate::outbound::{refusal, Network, Outbound, OutboundPolicy, Refused};
pub use bulk::{Bulk, BulkAction, BulkRequest, JobFilter, BULK_TYPE};
pub use context::JobContext;
pub use external::{
    handler_error, ExternalCalls, ExternalHandler, FunctionAnswer, FunctionCaller, JobToken,
    LambdaHandlers, EXTERNAL_QUEUE_TYPE, RESULT_STEP,
};
pub use http_fetch::HttpFetch;
pub use noop::Noop;
pub use scan::{ScanDomain, SCAN_TYPE};
pub use sleep::Sleep;
pub use webhook::{sign, sign_all, tenant_secret, Signed, SigningKey, WebhookDeliver, WebhookKey};

use crate::domain::{Backoff, JobError, JobId, JobType, Progress, Tenant, ValidationError};
use crate::ports::{JobStore, ServiceError, StoreError, TenantJobs, TenantStore};
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
    /// For an external type, the tenant it runs for and its most running at once there (its
    /// limits are that tenant's alone).
    pub tenant: Option<(Tenant, u32)>,
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

/// Settings the shipped types read from the environment (through `Config`).
#[derive(Debug, Clone, Default)]
pub struct BuiltinSettings {
    pub webhook_secret: Option<WebhookKey>,
    pub fetch_max_bytes: usize,
    /// Where `http.fetch` and `webhook.deliver` may connect besides public addresses.
    pub outbound: OutboundPolicy,
}

impl BuiltinSettings {
    /// The settings as the deployment's configuration gives them.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            webhook_secret: config.webhook_secret.clone().map(WebhookKey::value),
            fetch_max_bytes: config.fetch_max_bytes,
            outbound: config.outbound_allow.clone(),
        }
    }
}

pub struct Registry {
    types: BTreeMap<String, Arc<Registration>>,
    queue_prefix: String,
    /// The declared external types (`external`), once the store is known.
    external: std::sync::OnceLock<Arc<ExternalCalls>>,
}

impl Registry {
    pub fn new(queue_prefix: impl Into<String>) -> Self {
        Self {
            types: BTreeMap::new(),
            queue_prefix: queue_prefix.into(),
            external: std::sync::OnceLock::new(),
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
                concurrency: 32,
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
            runs(Sleep),
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
            runs(ScanDomain::new(outbound.clone())),
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
            runs(Bulk),
        );
        // Every external type's jobs, each run under its declaration (`external`): as long as
        // the longest an external type may take.
        r.register(
            EXTERNAL_QUEUE_TYPE,
            JobOptions {
                timeout: crate::domain::EXTERNAL_TIMEOUT_MAX,
                concurrency: 16,
                execution: Execution::Task,
                ..JobOptions::default()
            },
            external::ExternalQueue,
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
                tenant: None,
                handler: Arc::new(handler),
            }),
        );
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Registration>> {
        self.types.get(name)
    }

    /// Call the external types through `calls` (declared in its store): once, when the store
    /// is open (a later call changes nothing).
    pub fn with_external(&self, calls: Arc<ExternalCalls>) {
        let _ = self.external.set(calls);
    }

    pub fn external(&self) -> Option<&Arc<ExternalCalls>> {
        self.external.get()
    }

    /// The registration `tenant`'s jobs of `name` run under: a shipped type's, else the external
    /// type declared for the tenant (or for every tenant), if any.
    pub async fn resolve(
        &self,
        tenant: &Tenant,
        name: &JobType,
    ) -> Result<Option<Arc<Registration>>, StoreError> {
        if let Some(builtin) = self.types.get(name.as_str()) {
            return Ok(Some(builtin.clone()));
        }
        match self.external.get() {
            Some(calls) => calls.registration(tenant, name).await,
            None => Ok(None),
        }
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
        if !self.types.contains_key(job_type.as_str()) {
            // (every external type's jobs go through one queue)
            let external = JobType::parse(EXTERNAL_QUEUE_TYPE).expect("a valid type");
            return self.queue_name(&external);
        }
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
                "conveyor.external",
                "http.fetch",
                "noop",
                "scan.domain",
                "sleep",
                "webhook.deliver"
            ]
        );
        // (a type the deployment does not ship goes through the external types' queue)
        let external = JobType::parse("py.echo").unwrap();
        assert_eq!(r.queue_for(&external, 5), "conveyor-conveyor-external");
        assert_eq!(r.queue_for(&t, 5), "conveyor-http-fetch-high");
    }
}
