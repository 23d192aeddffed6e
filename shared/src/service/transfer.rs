//! Moving a tenant's jobs between deployments (`conveyor export`, `conveyor import`): each job
//! goes with everything it holds (payload, result, error, log, steps) and keeps its id and
//! history where it is taken in. A finished job never runs again there; a queued or running
//! one is queued again (`Job::imported`).

use super::*;
use crate::ports::StepRecord;
use serde::Deserialize;

/// A job as exported: the job, its log and its steps, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedJob {
    pub job: Job,
    #[serde(default)]
    pub logs: Vec<LogLine>,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
}

/// Which of a tenant's jobs an export takes: all given conditions hold.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only these jobs (those of the tenant that still exist).
    pub ids: Option<Vec<JobId>>,
}

impl ExportFilter {
    fn holds(&self, job: &Job) -> bool {
        self.status.is_none_or(|s| job.status == s)
            && self.job_type.as_ref().is_none_or(|t| &job.job_type == t)
            && self.created_after.is_none_or(|t| job.created_at >= t)
            && self.created_before.is_none_or(|t| job.created_at < t)
    }
}

/// A page of an export: newest first, and where the next page starts.
#[derive(Debug, Clone, Serialize)]
pub struct ExportPage {
    pub jobs: Vec<ExportedJob>,
    pub next_cursor: Option<String>,
}

/// What an import did with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Imported {
    /// Stored, with its log and steps (and queued again, if it was queued or running).
    Imported,
    /// A job with its id is here already: left as it is (an import runs again harmlessly).
    Exists,
    /// Its retention ran out: nothing stored.
    Expired,
}

/// Log lines read a request while a job's log is exported.
const LOG_PAGE: usize = 1000;

impl JobService {
    /// A page of `tenant`'s jobs that `filter` takes, newest first, each with its log and
    /// steps: at most `limit` (1 to 500) and about `LIST_MAX_BYTES`, from below `cursor`.
    pub async fn export(
        &self,
        tenant: &Tenant,
        filter: &ExportFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<ExportPage, ServiceError> {
        let limit = limit.clamp(1, 500);
        let store = &self.ports.store;
        let mut jobs = vec![];
        let mut bytes = 0;
        if let Some(ids) = &filter.ids {
            let mut ids = ids.clone();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            for id in ids {
                match store.get(id).await? {
                    Some(job) if &job.tenant == tenant && filter.holds(&job) => {
                        jobs.push(self.exported(job).await?)
                    }
                    _ => {}
                }
            }
            return Ok(ExportPage {
                jobs,
                next_cursor: None,
            });
        }
        // (ids grow with creation time: the created range bounds the listing itself)
        let bound = filter.created_before.map(JobId::first_at);
        let before = match (cursor.map(|c| c.0), bound) {
            (Some(c), Some(b)) => Some(c.min(b)),
            (c, b) => c.or(b),
        };
        let mut page = store
            .list(&ListQuery {
                tenant: tenant.clone(),
                status: filter.status,
                job_type: filter.job_type.clone(),
                before,
                limit: limit + 1,
            })
            .await?;
        let mut more = page.len() > limit;
        page.truncate(limit);
        if let Some(after) = filter.created_after {
            if let Some(older) = page.iter().position(|s| s.created_at < after) {
                page.truncate(older);
                more = false;
            }
        }
        // (a job that ended and expired since the listing is passed)
        let mut read = Vec::with_capacity(page.len());
        for summary in &page {
            let job = store.get(summary.id).await?.filter(|j| filter.holds(j));
            let exported = match job {
                Some(job) => Some(self.exported(job).await?),
                None => None,
            };
            read.push((summary.id, exported));
        }
        let mut last = None;
        for (id, exported) in read {
            if bytes > LIST_MAX_BYTES {
                more = true;
                break;
            }
            last = Some(id);
            if let Some(exported) = exported {
                bytes += serde_json::to_vec(&exported).map_or(0, |v| v.len());
                jobs.push(exported);
            }
        }
        let next_cursor = more
            .then(|| last.map(|id| Cursor(id).encode(tenant)))
            .flatten();
        Ok(ExportPage { jobs, next_cursor })
    }

    /// A job with its whole log and its steps.
    async fn exported(&self, job: Job) -> Result<ExportedJob, ServiceError> {
        let store = &self.ports.store;
        let mut logs: Vec<LogLine> = vec![];
        loop {
            let after = logs.last().map_or(0, |l| l.seq);
            let page = store.logs(job.id, after, LOG_PAGE).await?;
            let more = page.len() == LOG_PAGE;
            logs.extend(page);
            if !more {
                break;
            }
        }
        let steps = store.steps(job.id).await?;
        Ok(ExportedJob { job, logs, steps })
    }

    /// Take in a job exported from `tenant` (on any deployment) under its id, with its log and
    /// steps (`Job::imported`): a finished job as it ended, a waiting one waiting for the jobs
    /// it depends on here, a queued or running one queued again. A job of a type this
    /// deployment does not have is refused unless it has ended.
    pub async fn import(
        &self,
        tenant: &Tenant,
        exported: ExportedJob,
        now: DateTime<Utc>,
    ) -> Result<Imported, ServiceError> {
        let ExportedJob { job, logs, steps } = exported;
        if &job.tenant != tenant {
            return Err(ValidationError::new(
                "job.tenant",
                format!(
                    "the job is tenant '{}''s; import it into that tenant (its id was made for it)",
                    job.tenant
                ),
            )
            .into());
        }
        if !job.status.is_terminal()
            && self
                .registration(&job.tenant, &job.job_type)
                .await?
                .is_none()
        {
            return Err(ValidationError::new(
                "job.type",
                format!(
                    "unknown job type '{}' for a job that is {}: it could never run here",
                    job.job_type, job.status
                ),
            )
            .into());
        }
        if job.expires_at.is_some_and(|t| t <= now) {
            return Ok(Imported::Expired);
        }
        let store = &self.ports.store;
        let job = job.imported(now);
        let message = if store.writes_messages() {
            self.lifecycle().message_for(&job, now)
        } else {
            None
        };
        let sent = message.is_some();
        let with = CreateWith {
            message,
            ..Default::default()
        };
        // (a job already here refuses the write: then it is told apart from a failed one)
        let created = match store.create_with(&job, &with).await {
            Ok(created) => created,
            Err(e) => {
                return match store.get(job.id).await? {
                    Some(_) => Ok(Imported::Exists),
                    None => Err(e.into()),
                }
            }
        };
        match created {
            Created::New => {}
            Created::Existing(holder) if holder.id == job.id => return Ok(Imported::Exists),
            Created::Existing(holder) => {
                return Err(ServiceError::IdempotencyConflict(
                    job.idempotency_key.clone().expect("found by its key"),
                    holder.id,
                ))
            }
            Created::OverQuota { max } => return Err(ServiceError::QuotaExceeded { max }),
            Created::RateLimited { per_second } => {
                return Err(ServiceError::RateLimited { per_second })
            }
        }
        let keep_until = job
            .expires_at
            .unwrap_or(now + chrono::Duration::seconds(job.retention_secs as i64));
        for line in &logs {
            store
                .append_log(crate::ports::NewLogLine {
                    tenant,
                    job_id: job.id,
                    attempt: line.attempt,
                    at: line.at,
                    line: &line.line,
                    keep_until,
                })
                .await?;
        }
        for step in &steps {
            store
                .save_step(job.id, &step.name, &step.result, step.at, keep_until)
                .await?;
        }
        // (a finished job is history here: no event, no message)
        match job.status {
            JobStatus::Queued if sent => {
                self.lifecycle().follow_sent(&job, now).await;
            }
            JobStatus::Queued => {
                self.lifecycle().follow(&job, 0, None, now).await;
            }
            JobStatus::Waiting => self.wait_for_dependencies(&job).await,
            _ => {}
        }
        Ok(Imported::Imported)
    }
}
