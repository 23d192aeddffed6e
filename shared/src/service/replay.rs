//! Replay: a new job made from an existing one (of any status), with its payload or another,
//! each naming the other (`replay_of`, `replayed_as`).

use super::*;

impl JobService {
    /// Submit a copy of `tenant`'s job `id` (its type, priority, attempts, backoff and key;
    /// `payload` instead of its payload where given) as a new job, checked and admitted as any
    /// submit is, with `audit` written with it; then name it on the old job. The new job, and
    /// the old one as it is then.
    pub async fn replay(
        &self,
        tenant: &Tenant,
        id: JobId,
        payload: Option<serde_json::Value>,
        audit: Option<AuditEntry>,
    ) -> Result<(Job, Job), ServiceError> {
        let old = self.get(tenant, id).await?;
        let mut req = SubmitRequest::new(
            old.job_type.clone(),
            payload.unwrap_or_else(|| old.payload.clone()),
        );
        req.priority = old.priority;
        req.max_attempts = Some(old.max_attempts);
        req.backoff = Some(old.backoff);
        req.concurrency_key = old.concurrency_key.clone();
        let limits = self.limits_of(tenant).await?;
        let registration = self.registration(tenant, &req.job_type).await?;
        let (mut job, _) = self.prepare(
            tenant.clone(),
            req,
            registration.as_deref(),
            &limits,
            Utc::now(),
        )?;
        job.replay_of = Some(old.id);
        let with = creating(&job, audit, &limits);
        let (new, _) = self.create(job, &with, None).await?;
        // (a change of no state: a queued job's message is out already)
        let old = self
            .change_keeping_message(tenant, id, |job, now| Ok(job.replayed_as(new.id, now)))
            .await?;
        Ok((new, old))
    }
}
