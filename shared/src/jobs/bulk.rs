//! `conveyor.bulk`: one action (retry or cancel) on every job of a tenant that a filter
//! matches, as a job of its own: the request that asks for it returns at once with this job,
//! whose progress says how far it got and whose result says what it did. A million jobs never
//! hold a request open, and a bulk job cut short (a crash, a timeout) is retried and carries
//! on: what it already changed no longer matches or is refused as a no-op.

use super::{JobContext, JobHandler};
use crate::domain::{JobError, JobId, JobStatus, JobType, ValidationError};
use crate::ports::ListQuery;
use crate::ports::{JobStore, ServiceError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The type's name.
pub const BULK_TYPE: &str = "conveyor.bulk";
/// Changes applied at once.
const AT_ONCE: usize = 32;
const PAGE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Failed, dead or cancelled jobs run again with fresh attempts.
    Retry,
    /// Waiting jobs end cancelled; running ones are asked to stop.
    Cancel,
}

/// Which of the tenant's jobs: all given conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobType>,
    /// Created at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Members of this batch (only unfinished ones are looked at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<JobId>,
}

/// A bulk job's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    #[serde(default)]
    pub filter: JobFilter,
}

impl BulkRequest {
    pub fn parse(payload: &Value) -> Result<Self, ValidationError> {
        let request: Self = serde_json::from_value(payload.clone())
            .map_err(|e| ValidationError::new("payload", format!("not a bulk request: {e}")))?;
        if let (Some(a), Some(b)) = (request.filter.created_after, request.filter.created_before) {
            if b <= a {
                return Err(ValidationError::new(
                    "filter.created_before",
                    "must be after filter.created_after",
                ));
            }
        }
        Ok(request)
    }
}

/// Every job of the tenant `filter` matches, newest first (never bulk jobs, unless the filter
/// names their type).
async fn matching(
    store: &dyn JobStore,
    tenant: &crate::domain::Tenant,
    filter: &JobFilter,
    ctx: &JobContext,
) -> Result<Vec<JobId>, JobError> {
    if let Some(batch) = filter.batch {
        // A batch's unfinished members, read from its member list a page at a time.
        let mut members = vec![];
        let mut from = None;
        loop {
            let page = store
                .batch_members(batch, from, PAGE)
                .await
                .map_err(|e| JobError::retryable(format!("listing batch {batch}: {e}")))?;
            members.extend(
                page.jobs
                    .iter()
                    .filter(|j| &j.tenant == tenant && !j.status.is_terminal())
                    .map(|j| j.id),
            );
            match page.next {
                Some(next) => from = Some(next),
                None => return Ok(members),
            }
            ctx.heartbeat().await;
        }
    }
    let mut ids = vec![];
    let mut before = None;
    loop {
        let page = store
            .list(&ListQuery {
                tenant: tenant.clone(),
                status: filter.status,
                job_type: filter.job_type.clone(),
                before,
                limit: PAGE,
            })
            .await
            .map_err(|e| JobError::retryable(format!("listing jobs: {e}")))?;
        let Some(last) = page.last() else {
            return Ok(ids);
        };
        before = Some(last.id);
        let full = page.len() == PAGE;
        for job in page {
            if filter.created_before.is_some_and(|b| job.created_at >= b) {
                continue;
            }
            if filter.created_after.is_some_and(|a| job.created_at < a) {
                return Ok(ids);
            }
            let bulk = job.job_type.as_str() == BULK_TYPE && filter.job_type.is_none();
            if job.id != ctx.job_id() && !bulk {
                ids.push(job.id);
            }
        }
        if !full {
            return Ok(ids);
        }
        ctx.heartbeat().await;
    }
}

pub struct Bulk;

#[async_trait]
impl JobHandler for Bulk {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        BulkRequest::parse(payload).map(|_| ())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let request = BulkRequest::parse(&payload).map_err(|e| JobError::permanent(e.message))?;
        let (service, tenant) = match (ctx.jobs(), ctx.tenant()) {
            (Some(s), Some((t, _))) => (s, t.clone()),
            _ => return Err(JobError::permanent("a bulk action runs only in a worker")),
        };
        ctx.progress(0, "finding the jobs").await;
        let ids = matching(ctx.store().as_ref(), &tenant, &request.filter, &ctx).await?;
        let total = ids.len();
        let (mut done, mut changed, mut skipped, mut reported) = (0usize, 0u64, 0u64, 0u8);
        let mut results = futures::stream::iter(ids)
            .map(|id| {
                let tenant = &tenant;
                async move {
                    match request.action {
                        BulkAction::Retry => service.retry(tenant, id).await,
                        BulkAction::Cancel => service.cancel(tenant, id).await,
                    }
                }
            })
            .buffer_unordered(AT_ONCE);
        while let Some(result) = results.next().await {
            done += 1;
            match result {
                Ok(_) => changed += 1,
                // Not in a state the action applies to (any more), or gone.
                Err(ServiceError::Illegal(_) | ServiceError::NotFound(_)) => skipped += 1,
                Err(e) => return Err(JobError::retryable(format!("after {done} of {total}: {e}"))),
            }
            let percent = (done * 100 / total.max(1)) as u8;
            if percent > reported || done == total {
                reported = percent;
                ctx.progress(percent, format!("{done} of {total}")).await;
                if ctx.is_cancelled() {
                    return Err(JobError::cancelled());
                }
            }
        }
        Ok(json!({
            "action": request.action,
            "matched": total,
            "changed": changed,
            "skipped": skipped,
        }))
    }
}
