//! Batches: a batch object opened, read and cancelled, and many jobs submitted in one request
//! (atomic, or each on its own).

use super::*;

impl JobService {
    /// Open a batch of `tenant`'s with `spec`'s callbacks (checked as submits are): its members
    /// are the jobs then submitted with its id (`submit_batch` with it, or `batch_id`).
    pub async fn open_batch(
        &self,
        tenant: &Tenant,
        spec: BatchSpec,
    ) -> Result<crate::domain::Batch, ServiceError> {
        for (field, callback) in [
            ("batch.on_complete", &spec.on_complete),
            ("batch.on_success", &spec.on_success),
        ] {
            let Some(callback) = callback else { continue };
            let registration = self
                .registry
                .get(callback.job_type.as_str())
                .ok_or_else(|| {
                    ValidationError::new(
                        format!("{field}.type"),
                        format!("unknown job type '{}'", callback.job_type),
                    )
                })?;
            registration
                .handler
                .validate(&callback.payload)
                .map_err(|e| ValidationError::new(format!("{field}.{}", e.field), e.message))?;
        }
        let batch = crate::domain::Batch::new(
            tenant.clone(),
            spec.on_complete,
            spec.on_success,
            Utc::now(),
        );
        self.ports.store.open_batch(&batch).await?;
        Ok(batch)
    }

    /// A batch of `tenant`'s, as it stands.
    pub async fn get_batch(
        &self,
        tenant: &Tenant,
        id: crate::domain::BatchId,
    ) -> Result<crate::domain::Batch, ServiceError> {
        match self.ports.store.get_batch(id).await? {
            Some(b) if &b.tenant == tenant => Ok(b),
            _ => Err(ServiceError::BatchNotFound(id)),
        }
    }

    /// A page of a batch of `tenant`'s members (1 to 500), in the order they joined, from
    /// `cursor`; and the next page's cursor, when there are more.
    pub async fn batch_members(
        &self,
        tenant: &Tenant,
        id: crate::domain::BatchId,
        cursor: Option<MemberCursor>,
        limit: usize,
    ) -> Result<Page, ServiceError> {
        self.get_batch(tenant, id).await?;
        let page = self
            .ports
            .store
            .batch_members(id, cursor.map(|c| c.0), limit.clamp(1, 500))
            .await?;
        Ok(Page {
            jobs: page.jobs,
            next_cursor: page.next.map(|p| MemberCursor(p).encode(tenant)),
        })
    }

    /// A batch a job may join: the tenant's, and not ended.
    pub(super) async fn open_batch_of(
        &self,
        tenant: &Tenant,
        id: crate::domain::BatchId,
    ) -> Result<crate::domain::Batch, ServiceError> {
        let batch = self.get_batch(tenant, id).await.map_err(|e| match e {
            ServiceError::BatchNotFound(_) => {
                ValidationError::new("batch_id", format!("no batch {id} of this tenant")).into()
            }
            e => e,
        })?;
        if batch.finished_at.is_some() {
            return Err(ValidationError::new(
                "batch_id",
                format!("batch {id} has ended: its callbacks ran; open a new one"),
            )
            .into());
        }
        Ok(batch)
    }

    /// Cancel every unfinished member of a batch: a `conveyor.bulk` job does it (202 and that
    /// job); members added later are not cancelled.
    pub async fn cancel_batch(
        &self,
        tenant: &Tenant,
        id: crate::domain::BatchId,
    ) -> Result<(Job, bool), ServiceError> {
        self.get_batch(tenant, id).await?;
        let request = crate::jobs::BulkRequest {
            action: crate::jobs::BulkAction::Cancel,
            filter: crate::jobs::JobFilter {
                batch: Some(id),
                ..Default::default()
            },
        };
        self.submit(
            tenant.clone(),
            SubmitRequest::new(
                crate::domain::JobType::parse(crate::jobs::BULK_TYPE).expect("a valid type"),
                serde_json::to_value(request).expect("serializable"),
            ),
        )
        .await
    }

    /// Accept up to `BATCH_MAX` jobs at once: each item's outcome in order (its job, new or an
    /// idempotency key's earlier one, or why it was refused), with the new ones written together
    /// (one commit on SQLite; batch writes on DynamoDB) and their messages sent together. With
    /// `atomic`, either every valid item is written or, if any item is refused,
    /// `InvalidBatch` and nothing. `audit` is one entry for the whole batch.
    pub async fn submit_batch(
        &self,
        tenant: Tenant,
        items: Vec<SubmitRequest>,
        atomic: bool,
        audit: Option<AuditEntry>,
    ) -> Result<Vec<Result<(Job, bool), ServiceError>>, ServiceError> {
        self.submit_batch_in(tenant, items, atomic, audit, None)
            .await
    }

    /// `submit_batch`, each new job a member of `batch` (opened by `open_batch`).
    pub async fn submit_batch_in(
        &self,
        tenant: Tenant,
        items: Vec<SubmitRequest>,
        atomic: bool,
        audit: Option<AuditEntry>,
        batch: Option<crate::domain::BatchId>,
    ) -> Result<Vec<Result<(Job, bool), ServiceError>>, ServiceError> {
        let limits = self.limits_of(&tenant).await?;
        let now = Utc::now();
        let mut prepared = self.prepare_batch(&tenant, items, &limits, now).await?;
        for (job, _) in prepared.iter_mut().flatten() {
            job.batch_id = batch;
        }
        if atomic && prepared.iter().any(Result::is_err) {
            return Err(ServiceError::InvalidBatch(
                prepared
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.err().map(|e| (i, e)))
                    .collect(),
            ));
        }
        let with_quota = limits.max_active.is_some() || limits.submits_per_second.is_some();
        if with_quota {
            // Each job within the tenant's quota, one after the other, as single submits are.
            if atomic {
                return Err(ValidationError::new(
                    "atomic",
                    "an atomic batch is not available to a tenant with a quota (max_active or \
                     submits_per_second): send the batch without atomic",
                )
                .into());
            }
            let admission = Admission {
                max_active: limits.max_active,
                per_second: limits.submits_per_second,
                window: now.timestamp(),
            };
            if let Some(entry) = &audit {
                if let Err(e) = self.ports.audit.record(entry).await {
                    tracing::warn!(error = %e, "a batch submit's audit entry was not written");
                }
            }
            let mut out = Vec::with_capacity(prepared.len());
            for p in prepared {
                out.push(match p {
                    Ok((job, fingerprint)) => {
                        let with = CreateWith {
                            admission,
                            ..Default::default()
                        };
                        self.create(job, &with, fingerprint).await
                    }
                    Err(e) => Err(e),
                });
            }
            return Ok(out);
        }
        let jobs: Vec<Job> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(job, _)| job.clone()))
            .collect();
        let created = self
            .ports
            .store
            .create_batch(&jobs, audit.as_ref(), atomic)
            .await?;
        let mut created = created.into_iter().zip(jobs);
        let mut new = vec![];
        let out = prepared
            .into_iter()
            .map(|p| {
                let (_, fingerprint) = p?;
                match created.next().expect("one outcome a job") {
                    (Created::New, job) => {
                        new.push(job.clone());
                        Ok((job, true))
                    }
                    (Created::Existing(existing), _) => {
                        same_request(*existing, fingerprint.as_deref())
                    }
                    (Created::OverQuota { max }, _) => Err(ServiceError::QuotaExceeded { max }),
                    (Created::RateLimited { per_second }, _) => {
                        Err(ServiceError::RateLimited { per_second })
                    }
                }
            })
            .collect();
        // The jobs are durable now; a message not sent is re-dispatched by maintenance.
        self.lifecycle().follow_new(&new, now).await;
        Ok(out)
    }

    /// Each job of a batch prepared (`prepare`), or why it is refused.
    async fn prepare_batch(
        &self,
        tenant: &Tenant,
        items: Vec<SubmitRequest>,
        limits: &TenantLimits,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(Job, Option<String>), ServiceError>>, ServiceError> {
        // (each type the batch names resolved once)
        let mut registrations = std::collections::HashMap::new();
        for req in &items {
            if !registrations.contains_key(&req.job_type) {
                let found = self.registration(tenant, &req.job_type).await?;
                registrations.insert(req.job_type.clone(), found);
            }
        }
        Ok(items
            .into_iter()
            .map(|req| {
                if req.debounce.is_some() {
                    return Err(ValidationError::new(
                        "debounce",
                        "is not available in a batch: submit a debounced job on its own",
                    )
                    .into());
                }
                if !req.depends_on.is_empty() {
                    return Err(ValidationError::new(
                        "depends_on",
                        "is not available in a batch: submit a job with dependencies on its own",
                    )
                    .into());
                }
                if req.batch_id.is_some() {
                    return Err(ValidationError::new(
                        "batch_id",
                        "is not available in a batch submit: its batch (\"batch\") holds its jobs",
                    )
                    .into());
                }
                let registration = registrations.get(&req.job_type).cloned().flatten();
                self.prepare(tenant.clone(), req, registration.as_deref(), limits, now)
            })
            .collect())
    }

    /// Which jobs of a batch would be refused before anything is stored (by index, with why).
    pub async fn batch_refusals(
        &self,
        tenant: &Tenant,
        items: Vec<SubmitRequest>,
    ) -> Result<Vec<(usize, ServiceError)>, ServiceError> {
        let limits = self.limits_of(tenant).await?;
        Ok(self
            .prepare_batch(tenant, items, &limits, Utc::now())
            .await?
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.err().map(|e| (i, e)))
            .collect())
    }
}

/// Where a listing of a batch's members goes on, as handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberCursor(pub crate::domain::MemberPosition);

impl MemberCursor {
    /// The position (its group's id, and how many of the group were listed) and a digest of the
    /// tenant it was listed for, so a cursor is refused for another tenant.
    pub fn encode(&self, tenant: &Tenant) -> String {
        format!(
            "m1{}{:08x}{}",
            self.0.group,
            self.0.taken,
            tenant_tag(tenant)
        )
    }

    /// `None` for anything this API did not hand out to `tenant`.
    pub fn decode(s: &str, tenant: &Tenant) -> Option<Self> {
        let rest = s.strip_prefix("m1")?;
        let (group, rest) = rest.split_at_checked(26)?;
        let (taken, tag) = rest.split_at_checked(8)?;
        if tag != tenant_tag(tenant) {
            return None;
        }
        Some(Self(crate::domain::MemberPosition {
            group: JobId::parse(group).ok()?,
            taken: u32::from_str_radix(taken, 16).ok()?,
        }))
    }
}
