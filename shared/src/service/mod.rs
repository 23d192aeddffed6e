//! The use cases behind the HTTP API: submit, read, list, cancel, retry, logs, stats.
//! Also `dispatch`, the one way a queued job's message is sent.

use crate::domain::{
    Admission, AuditEntry, Job, JobId, JobStatus, JobSummary, JobType, NewJob, Tenant,
    TenantLimits, TransitionError, ValidationError,
};
pub use crate::domain::{JobMessage, SubmitRequest};
use crate::jobs::Registry;
use crate::lifecycle::{Change, Lifecycle};
pub use crate::ports::ServiceError;
use crate::ports::{CreateWith, Created, ListQuery, LogLine, Ports, StoreError, StoreStats};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

mod batches;
mod replay;
mod transfer;
pub use batches::MemberCursor;
pub use transfer::{ExportFilter, ExportPage, ExportedJob, Imported};

/// What a new job of a submit is written with: `audit` (its job id filled in) and its
/// tenant's `limits`, checked in the same write.
fn creating(job: &Job, audit: Option<AuditEntry>, limits: &TenantLimits) -> CreateWith {
    CreateWith {
        audit: audit.map(|mut entry| {
            entry.job_id = Some(job.id);
            entry
        }),
        admission: Admission {
            max_active: limits.max_active,
            per_second: limits.submits_per_second,
            window: job.created_at.timestamp(),
        },
        ..Default::default()
    }
}

/// Conditional writes that lose a race are re-read and re-applied this many times.
const CONFLICT_RETRIES: usize = 8;
/// How long a debounced submit waits for the job another submit claimed the key for.
const DEBOUNCE_CLAIM_PATIENCE: Duration = Duration::from_secs(5);

/// What a batch object is opened with: the jobs it submits when every member has ended.
#[derive(Debug, Clone, Default)]
pub struct BatchSpec {
    pub on_complete: Option<crate::domain::CallbackSpec>,
    pub on_success: Option<crate::domain::CallbackSpec>,
}

/// The most a job's payload may be where no deployment setting says (a handler's submits).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Most jobs one job may depend on.
pub const DEPENDS_ON_MAX: usize = 100;

/// The job an earlier submit with the same idempotency key made, if that submit asked for the
/// same (`fingerprint`); else the conflict. (A job stored before fingerprints were kept has
/// none: taken as the same request.)
fn same_request(existing: Job, fingerprint: Option<&str>) -> Result<(Job, bool), ServiceError> {
    match &existing.request_fingerprint {
        Some(f) if Some(f.as_str()) != fingerprint => Err(ServiceError::IdempotencyConflict(
            existing.idempotency_key.clone().expect("found by its key"),
            existing.id,
        )),
        _ => Ok((existing, false)),
    }
}

/// Most jobs one batch submit may carry.
pub const BATCH_MAX: usize = 1000;

/// Most bytes of jobs one list page carries; past it the page ends early with a cursor (a job
/// larger than this still goes alone on its page).
pub const LIST_MAX_BYTES: usize = 1024 * 1024;

pub struct JobService {
    ports: Ports,
    registry: Arc<Registry>,
    max_payload_bytes: usize,
    /// Limits of a tenant with none stored (`CONVEYOR_TENANT_*`).
    tenant_defaults: TenantLimits,
    /// Each tenant's stored limits, read at most every `LIMITS_KEPT`.
    limits: std::sync::Mutex<std::collections::HashMap<Tenant, (std::time::Instant, TenantLimits)>>,
    /// Held while limits are read from the store, so concurrent misses make one read.
    limits_loading: tokio::sync::Mutex<()>,
}

/// How long a tenant's stored limits are used before they are read again: a change by an admin
/// applies everywhere within this.
pub const LIMITS_KEPT: Duration = Duration::from_secs(5);

/// Where a list page ends, as the client sees it: an opaque token (`c1` and the position,
/// hex-encoded), so what it holds can change without breaking clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub JobId);

impl Cursor {
    /// The cursor as handed out: the job id and a digest of the tenant it was listed for, so a
    /// cursor is refused for another tenant.
    pub fn encode(&self, tenant: &Tenant) -> String {
        format!(
            "c2{}{}",
            hex::encode(self.0.to_string()),
            tenant_tag(tenant)
        )
    }

    /// `None` for anything this API did not hand out to `tenant`.
    pub fn decode(s: &str, tenant: &Tenant) -> Option<Self> {
        let rest = s.strip_prefix("c2")?;
        let (id, tag) = rest.split_at_checked(rest.len().checked_sub(16)?)?;
        if tag != tenant_tag(tenant) {
            return None;
        }
        let bytes = hex::decode(id).ok()?;
        JobId::parse(std::str::from_utf8(&bytes).ok()?)
            .ok()
            .map(Self)
    }
}

fn tenant_tag(tenant: &Tenant) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(tenant.as_str().as_bytes())[..8])
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub jobs: Vec<JobSummary>,
    pub next_cursor: Option<String>,
}

impl JobService {
    pub fn new(ports: Ports, registry: Arc<Registry>, max_payload_bytes: usize) -> Self {
        Self {
            ports,
            registry,
            max_payload_bytes,
            tenant_defaults: TenantLimits::default(),
            limits: Default::default(),
            limits_loading: Default::default(),
        }
    }

    /// The use cases over `ports` and `registry` with the payload limit and tenants' default
    /// limits `config` gives (every runtime builds them this way).
    pub fn from_config(
        config: &crate::config::Config,
        ports: Ports,
        registry: Arc<Registry>,
    ) -> Self {
        Self::new(ports, registry, config.max_payload_bytes)
            .with_tenant_defaults(config.tenant_defaults.clone())
    }

    /// With the limits of tenants that have none stored.
    pub fn with_tenant_defaults(mut self, defaults: TenantLimits) -> Self {
        self.tenant_defaults = defaults;
        self
    }

    /// The limits that apply to `tenant`: its stored ones, the defaults where it has none, and
    /// never a payload above the deployment's.
    pub async fn limits_of(&self, tenant: &Tenant) -> Result<TenantLimits, ServiceError> {
        let cached = || {
            let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .get(tenant)
                .filter(|(at, _)| at.elapsed() < LIMITS_KEPT)
                .map(|(_, l)| l.clone())
        };
        let stored = match cached() {
            Some(l) => l,
            None => {
                let _loading = self.limits_loading.lock().await;
                match cached() {
                    Some(l) => l, // read by another request meanwhile
                    None => {
                        let l = self.ports.tenants.limits(tenant).await?;
                        self.limits
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(tenant.clone(), (std::time::Instant::now(), l.clone()));
                        l
                    }
                }
            }
        };
        let mut effective = stored.or(&self.tenant_defaults);
        effective.max_payload_bytes = Some(
            effective
                .max_payload_bytes
                .unwrap_or(self.max_payload_bytes)
                .min(self.max_payload_bytes),
        );
        Ok(effective)
    }

    /// Store `tenant`'s limits (an admin's call); this process uses them at once.
    pub async fn set_limits(
        &self,
        tenant: &Tenant,
        limits: TenantLimits,
    ) -> Result<(), ServiceError> {
        self.ports.tenants.set_limits(tenant, &limits).await?;
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
        Ok(())
    }

    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle::new(&self.ports, &self.registry)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Accept a job. `Ok((job, true))` is a new job, durable before this returns;
    /// `Ok((job, false))` is the job an earlier submit with the same idempotency key made.
    pub async fn submit(
        &self,
        tenant: Tenant,
        req: SubmitRequest,
    ) -> Result<(Job, bool), ServiceError> {
        self.submit_audited(tenant, req, None).await
    }

    /// `submit`, with the audit entry of who submitted it (its job id filled in here), written
    /// atomically with the job, within the tenant's limits (checked in the same write).
    pub async fn submit_audited(
        &self,
        tenant: Tenant,
        req: SubmitRequest,
        audit: Option<AuditEntry>,
    ) -> Result<(Job, bool), ServiceError> {
        let limits = self.limits_of(&tenant).await?;
        let debounce = req.debounce.clone();
        let parents = req.depends_on.clone();
        let on_failure = req.on_dependency_failure;
        let batch = req.batch_id;
        let registration = self.registration(&tenant, &req.job_type).await?;
        let (mut job, fingerprint) =
            self.prepare(tenant, req, registration.as_deref(), &limits, Utc::now())?;
        if let Some(batch) = batch {
            self.open_batch_of(&job.tenant, batch).await?;
            job.batch_id = Some(batch);
        }
        if !parents.is_empty() {
            // (checked before anything is written: each must be a job of this tenant)
            for (i, parent) in parents.iter().enumerate() {
                match self.ports.store.get(*parent).await? {
                    Some(p) if p.tenant == job.tenant => {}
                    _ => {
                        return Err(ValidationError::new(
                            format!("depends_on[{i}]"),
                            format!("no job {parent} (a job may depend only on existing jobs of its tenant)"),
                        )
                        .into())
                    }
                }
            }
            job = job.waiting_for(parents, on_failure);
        }
        let with = creating(&job, audit, &limits);
        match debounce {
            Some(d) => self.submit_debounced(job, &with, &d).await,
            None => {
                let made = self.create(job, &with, fingerprint).await?;
                if made.1 && !made.0.depends_on.is_empty() {
                    self.wait_for_dependencies(&made.0).await;
                }
                Ok(made)
            }
        }
    }

    /// A new waiting job is noted on each job it depends on (so their ends decide it); any that
    /// had ended already, or is gone, decides it now. (A crash before this ends leaves it to
    /// maintenance, which decides waiting jobs from their dependencies itself.)
    async fn wait_for_dependencies(&self, job: &Job) {
        let mut ended = false;
        for parent in &job.depends_on {
            match self
                .ports
                .store
                .add_waiter(*parent, &job.tenant, job.id)
                .await
            {
                Ok(status) => ended |= status.is_none_or(JobStatus::is_terminal),
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "a dependency not noted; maintenance decides the job");
                    return;
                }
            }
        }
        if ended {
            self.lifecycle()
                .settle_waiting(vec![job.id], None, Utc::now())
                .await;
        }
    }

    /// The registration `tenant`'s jobs of `job_type` run under (a shipped type's, or an
    /// external type declared for the tenant or for all); `None` for a type neither.
    pub(crate) async fn registration(
        &self,
        tenant: &Tenant,
        job_type: &JobType,
    ) -> Result<Option<Arc<crate::jobs::Registration>>, ServiceError> {
        Ok(self.registry.resolve(tenant, job_type).await?)
    }

    /// A submit's job, checked against its type's `registration` (`None`: a type unknown to
    /// the tenant) and the tenant's limits but not stored, and the request's fingerprint (with
    /// an idempotency key).
    fn prepare(
        &self,
        tenant: Tenant,
        req: SubmitRequest,
        registration: Option<&crate::jobs::Registration>,
        limits: &TenantLimits,
        now: DateTime<Utc>,
    ) -> Result<(Job, Option<String>), ServiceError> {
        let registration = registration.ok_or_else(|| {
            ValidationError::new(
                "type",
                format!(
                    "unknown job type '{}'; known types: {} (and the external types declared for the tenant: GET /v1/types)",
                    req.job_type,
                    self.registry
                        .names()
                        .into_iter()
                        .filter(|n| !n.starts_with(crate::domain::RESERVED_PREFIX))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let max_payload = limits.max_payload_bytes.unwrap_or(self.max_payload_bytes);
        let size = serde_json::to_vec(&req.payload).map_or(0, |v| v.len());
        if size > max_payload {
            return Err(ServiceError::PayloadTooLarge {
                size,
                limit: max_payload,
            });
        }
        registration.handler.validate(&req.payload)?;
        let run_at = match (&req.debounce, req.run_at, req.delay) {
            (Some(d), _, _) => d.run_at(now, now),
            (None, Some(at), _) => at,
            (None, None, Some(d)) => {
                now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
            }
            (None, None, None) => now,
        };
        let options = &registration.options;
        let fingerprint = req.idempotency_key.as_ref().map(|_| req.fingerprint());
        let mut job = Job::create(
            NewJob {
                tenant,
                job_type: req.job_type,
                priority: req.priority,
                payload: req.payload,
                max_attempts: req.max_attempts.unwrap_or(options.max_attempts),
                backoff: req.backoff.unwrap_or(options.backoff),
                timeout: options.timeout,
                retention: options.retention,
                idempotency_key: req.idempotency_key,
                request_fingerprint: fingerprint.clone(),
                run_at,
            },
            now,
        );
        job.holds_slot = limits.max_active.is_some();
        job.concurrency_key = req.concurrency_key;
        job.tenant_max_running = limits.max_running;
        Ok((job, fingerprint))
    }

    /// Write a new job (within its tenant's limits; an idempotency key's earlier job instead),
    /// then what follows.
    async fn create(
        &self,
        job: Job,
        with: &CreateWith,
        fingerprint: Option<String>,
    ) -> Result<(Job, bool), ServiceError> {
        let now = job.created_at;
        // Its message in the job's own commit, where the store can write it there.
        let message = self
            .ports
            .store
            .writes_messages()
            .then(|| self.lifecycle().message_for(&job, now))
            .flatten();
        let sent = message.is_some();
        let with = &CreateWith {
            message,
            ..with.clone()
        };
        match self.ports.store.create_with(&job, with).await? {
            Created::OverQuota { max } => return Err(ServiceError::QuotaExceeded { max }),
            Created::RateLimited { per_second } => {
                return Err(ServiceError::RateLimited { per_second })
            }
            Created::Existing(existing) => return same_request(*existing, fingerprint.as_deref()),
            Created::New => {}
        }
        // The job is durable now. If the message cannot be sent, maintenance re-dispatches it
        // (outbox rule), so the submit still succeeds.
        if sent {
            self.lifecycle().follow_sent(&job, now).await;
        } else {
            self.lifecycle().follow(&job, 0, None, now).await;
        }
        Ok((job, true))
    }

    /// A debounced submit: the job its key holds, if that one still waits and never ran, takes
    /// this payload and a later run time (`Ok((job, false))`); otherwise `job` is made and the
    /// key holds it. The key is claimed before the job is written, so concurrent submits make
    /// one job between them.
    async fn submit_debounced(
        &self,
        job: Job,
        with: &CreateWith,
        debounce: &crate::domain::Debounce,
    ) -> Result<(Job, bool), ServiceError> {
        let key = format!("{}/{}/{}", job.tenant, job.job_type, debounce.key);
        let patience = std::time::Instant::now() + DEBOUNCE_CLAIM_PATIENCE;
        // A replacement is a submission like any other: counted against the tenant's rate
        // (once, however often this tries), and a job made after it is then not counted again.
        let mut counted: Option<CreateWith> = None;
        for _ in 0..CONFLICT_RETRIES * 64 {
            let held = self.ports.debounces.debounced(&key).await?;
            if let Some(id) = held {
                match self.ports.store.get(id).await? {
                    Some(waiting)
                        if waiting.tenant == job.tenant && waiting.job_type == job.job_type =>
                    {
                        let now = Utc::now();
                        let run_at = debounce.run_at(waiting.created_at, now);
                        if let Ok(next) = waiting.debounce(job.payload.clone(), run_at, now) {
                            if let (None, Some(per_second)) = (&counted, with.admission.per_second)
                            {
                                let window = with.admission.window;
                                if !self
                                    .ports
                                    .tenants
                                    .count_submit(&job.tenant, per_second, window)
                                    .await?
                                {
                                    return Err(ServiceError::RateLimited { per_second });
                                }
                                let mut rest = with.clone();
                                rest.admission.per_second = None;
                                counted = Some(rest);
                            }
                            // Its message is out already, and comes at or before the new run
                            // time: the worker sends it on (no second message).
                            let change = Change::of(&waiting, next)
                                .keeping_message()
                                .with_new_payload();
                            match self.lifecycle().apply(&change, now).await {
                                Ok(_) => return Ok((change.next, false)),
                                Err(StoreError::Conflict) => continue,
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    // Claimed by a submit still writing its job (or one that died before):
                    // wait for it a moment rather than make a second job.
                    None if std::time::Instant::now() < patience
                        && id.created_at() + chrono::Duration::seconds(5) > Utc::now() =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    _ => {}
                }
            }
            // Nothing waits under the key: this job, claimed first.
            let forget_after = job.run_at
                + chrono::Duration::from_std(debounce.max_wait.unwrap_or(debounce.window))
                    .unwrap_or(chrono::Duration::MAX)
                + chrono::Duration::hours(1);
            match self
                .ports
                .debounces
                .hold(&key, job.id, held, forget_after)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            let made = self
                .create(job.clone(), counted.as_ref().unwrap_or(with), None)
                .await;
            if made.is_err() {
                let _ = self.ports.debounces.forget(&key, job.id).await;
            }
            return made;
        }
        Err(ServiceError::Contended)
    }

    pub async fn get(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        match self.ports.store.get(id).await? {
            Some(job) if &job.tenant == tenant => Ok(job),
            _ => Err(ServiceError::NotFound(id)),
        }
    }

    pub async fn list(
        &self,
        tenant: &Tenant,
        status: Option<JobStatus>,
        job_type: Option<JobType>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, ServiceError> {
        let limit = limit.clamp(1, 500);
        let mut jobs = self
            .ports
            .store
            .list(&ListQuery {
                tenant: tenant.clone(),
                status,
                job_type,
                before: cursor.map(|c| c.0),
                limit: limit + 1,
            })
            .await?;
        let mut more = jobs.len() > limit;
        jobs.truncate(limit);
        // Cap the page in bytes, too: a page of large jobs ends early, and the cursor goes on.
        let mut bytes = 0;
        if let Some(fits) = jobs.iter().position(|j| {
            bytes += serde_json::to_vec(j).map_or(0, |v| v.len());
            bytes > LIST_MAX_BYTES
        }) {
            let keep = fits.max(1);
            more |= keep < jobs.len();
            jobs.truncate(keep);
        }
        let next_cursor = more
            .then(|| jobs.last().map(|j| Cursor(j.id).encode(tenant)))
            .flatten();
        Ok(Page { jobs, next_cursor })
    }

    /// A tenant's jobs changed at or after `since`, oldest change first, and where the next
    /// poll starts (the last one's `updated_at`; `since` again when nothing changed).
    pub async fn changed_since(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<JobSummary>, DateTime<Utc>), ServiceError> {
        let jobs = self
            .ports
            .store
            .updated_since(tenant, since, limit.clamp(1, 500))
            .await?;
        let next = jobs.last().map_or(since, |j| j.updated_at);
        Ok((jobs, next))
    }

    /// Apply `change` to the job with optimistic concurrency: re-read and re-apply on a lost race.
    async fn change(
        &self,
        tenant: &Tenant,
        id: JobId,
        change: impl Fn(&Job, DateTime<Utc>) -> Result<Job, TransitionError>,
    ) -> Result<Job, ServiceError> {
        self.change_with(tenant, id, change, true).await
    }

    /// `change`, for a change that sends no message (the job's is out already, if any).
    async fn change_keeping_message(
        &self,
        tenant: &Tenant,
        id: JobId,
        change: impl Fn(&Job, DateTime<Utc>) -> Result<Job, TransitionError>,
    ) -> Result<Job, ServiceError> {
        self.change_with(tenant, id, change, false).await
    }

    async fn change_with(
        &self,
        tenant: &Tenant,
        id: JobId,
        change: impl Fn(&Job, DateTime<Utc>) -> Result<Job, TransitionError>,
        dispatch: bool,
    ) -> Result<Job, ServiceError> {
        for _ in 0..CONFLICT_RETRIES {
            let job = self.get(tenant, id).await?;
            let now = Utc::now();
            let next = change(&job, now)?;
            if next.version == job.version {
                return Ok(next); // nothing to change (e.g. a cancel asked twice)
            }
            let mut change = Change::of(&job, next);
            if !dispatch {
                change = change.keeping_message();
            }
            match self.lifecycle().apply(&change, now).await {
                Ok(_) => return Ok(change.next),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contended)
    }

    /// Cancel: a waiting job ends `cancelled` now; a running one is asked to stop.
    pub async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        self.change(tenant, id, |job, now| match job.cancel(now) {
            // Asking twice is not an error.
            Err(_) if job.status == JobStatus::Running && job.cancel_requested => Ok(job.clone()),
            other => other,
        })
        .await
    }

    /// Run a failed, dead or cancelled job again with a fresh set of attempts.
    pub async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        self.change(tenant, id, |job, now| job.retry(now)).await
    }

    pub async fn logs(
        &self,
        tenant: &Tenant,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, ServiceError> {
        self.get(tenant, id).await?;
        Ok(self
            .ports
            .store
            .logs(id, after, limit.clamp(1, 1000))
            .await?)
    }

    pub async fn stats(&self, tenant: &Tenant) -> Result<StoreStats, ServiceError> {
        Ok(self.ports.store.stats(tenant).await?)
    }
}

#[async_trait::async_trait]
impl crate::ports::TenantJobs for JobService {
    async fn submit(&self, tenant: Tenant, job: SubmitRequest) -> Result<Job, ServiceError> {
        JobService::submit(self, tenant, job)
            .await
            .map(|(job, _)| job)
    }

    async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        JobService::retry(self, tenant, id).await
    }

    async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        JobService::cancel(self, tenant, id).await
    }
}
