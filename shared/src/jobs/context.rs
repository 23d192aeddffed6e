//! What a running handler can do and learn: its progress, log lines, heartbeats, steps, the
//! jobs it depended on, submits of its own, and whether it was asked to stop.

use super::*;

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
    jobs: Option<Arc<dyn TenantJobs>>,
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
                jobs: None,
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

    /// The same context, with the deployment's use cases on other jobs (the worker sets this).
    pub fn with_jobs(self, jobs: Arc<dyn TenantJobs>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| unreachable!("a context is given its service before it is shared"));
        Self {
            inner: Arc::new(ContextInner {
                jobs: Some(jobs),
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
    pub async fn submit(&self, job: crate::domain::SubmitRequest) -> Result<JobId, JobError> {
        let (jobs, tenant) = match (self.jobs(), self.tenant()) {
            (Some(s), Some((t, _))) => (s, t.clone()),
            _ => {
                return Err(JobError::permanent(
                    "jobs are submitted from a job only in a worker",
                ))
            }
        };
        let made = jobs.submit(tenant, job).await.map_err(|e| match e {
            ServiceError::Invalid(e) => {
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
        jobs: Vec<crate::domain::SubmitRequest>,
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

    /// The use cases on other jobs of the tenant, for a shipped type that changes them through
    /// the one lifecycle path.
    pub(crate) fn jobs(&self) -> Option<&dyn TenantJobs> {
        self.inner.jobs.as_deref()
    }

    /// The store the job is kept in.
    pub(crate) fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
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

    /// The steps the job has recorded so far, read now.
    pub async fn recorded_steps(&self) -> Result<Vec<crate::ports::StepRecord>, JobError> {
        self.inner
            .store
            .steps(self.inner.job_id)
            .await
            .map_err(|e| JobError::retryable(format!("the job's steps could not be read: {e}")))
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
