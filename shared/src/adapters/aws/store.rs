//! `JobStore` on one DynamoDB table, in the layout `layout` describes (small state items spread
//! over `<bucket>#<shard>` keys, payloads and results written once, no index on the hot path).
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | idempotency key | `IDEM#<tenant>#<key>` | `IDEM` | `job_id`, `ttl` |
//! | batch | `BATCH#<id>` | `BATCH` | counts as numbers; in the `due` index (`batch#<shard>`) until it ends |
//! | a batch's members | `BM#<id>` | `<first member's id>` | the ids a create wrote (see `batches`) |
//!
//! A transition is one conditional `UpdateItem` of the state item that sets the
//! transition-owned fields and leaves the worker-owned ones (`heartbeat_at`, `progress`) to the
//! run (see `JobStore`). TTL deletes late, so every read leaves out items whose `ttl` has
//! passed. No code path scans.
//!
//! Jobs `queued` or `running` are in no index: a queued job's message is sent before the write
//! that queues it (see `lifecycle`), so a write that landed always has its message; a running
//! job's message stays on its queue until the run ends, so a worker that dies leaves it to be
//! delivered again, and the next delivery recovers the silent run (`Worker::refused`). `due`
//! therefore answers only for `scheduled` and `waiting` jobs here.

use super::attrs::{get_n, get_s, n, s, to_attr};
use super::layout::{expired, log_pk, log_sk, micros, step_key};
use super::write::{classify, rfc3339, Update};
use crate::domain::{
    tenant_bucket, AuditEntry, Batch, BatchId, Expected, Job, JobId, JobStatus, JobSummary,
    MemberPosition, MembersPage, Progress, Tenant,
};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, NewLogLine, Started, StepRecord,
    StoreError, StoreStats, Transitioned, LOG_CAP,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};

use super::table::{pk_of, DynamoStore};

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_with(&self, job: &Job, with: &CreateWith) -> Result<Created, StoreError> {
        self.create_one(job, with).await
    }

    async fn create_batch(
        &self,
        jobs: &[Job],
        audit: Option<&AuditEntry>,
        atomic: bool,
    ) -> Result<Vec<Created>, StoreError> {
        self.create_many(jobs, audit, atomic).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.get_item(self.layout.job_key(id)).await? {
            Some(item) => self.job_of(&item, Utc::now()).await,
            None => Ok(None),
        }
    }

    async fn start(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<Started, StoreError> {
        // `Job::start`, as one conditional update that returns the new image, or the old one
        // when the condition fails.
        let mut u = Update::default();
        u.set("status", s(JobStatus::Running.as_str()))
            .set_expr("attempt", |u, a| format!("{a} + {}", u.value(n(1))))
            .set_expr("runs", |u, r| {
                format!("if_not_exists({r}, {}) + {}", u.value(n(0)), u.value(n(1)))
            })
            .set_expr("version", |u, v| format!("{v} + {}", u.value(n(1))))
            .set("started_at", s(rfc3339(now)))
            .set("heartbeat_at", s(rfc3339(now)))
            .remove("progress")
            .set("updated_at", s(rfc3339(now)))
            .set("upd_us", n(micros(now)))
            .set("due_us", n(micros(now)))
            .when_eq("status", s(JobStatus::Queued.as_str()))
            .when(|u| {
                let (r, d) = (u.name("run_at_us"), u.value(n(micros(due_by))));
                format!("{r} <= {d}")
            });
        let key = self.layout.job_key(id);
        let pk = pk_of(&key);
        let sent = u
            .send(&self.client, &self.table, key)
            .set_return_consumed_capacity(self.capacity())
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.used("start", &[pk], &[], out.consumed_capacity());
                match out.attributes.as_ref() {
                    Some(item) => match self.job_of(item, now).await? {
                        Some(job) => Ok(Started::Running(Box::new(job))),
                        None => Err(StoreError::Unavailable(
                            "a started job cannot be read".into(),
                        )),
                    },
                    None => Err(StoreError::Unavailable("start returned no item".into())),
                }
            }
            Err(e) => {
                let old = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
                    _ => None,
                });
                match old {
                    // Refused: the old image came with the refusal, or (an endpoint that does
                    // not return it) is read once.
                    Some(Some(item)) => Ok(match self.job_of(&item, now).await? {
                        Some(job) => Started::Refused(Box::new(job)),
                        None => Started::Missing,
                    }),
                    Some(None) => Ok(match self.get(id).await? {
                        Some(job) => Started::Refused(Box::new(job)),
                        None => Started::Missing,
                    }),
                    None => Err(classify(e)),
                }
            }
        }
    }

    async fn transition(&self, expected: Expected, next: &Job) -> Result<Transitioned, StoreError> {
        self.write_transition(expected, next, false).await
    }

    async fn transition_with_payload(
        &self,
        expected: Expected,
        next: &Job,
    ) -> Result<Transitioned, StoreError> {
        self.write_transition(expected, next, true).await
    }

    async fn add_waiter(
        &self,
        parent: JobId,
        tenant: &Tenant,
        waiter: JobId,
    ) -> Result<Option<JobStatus>, StoreError> {
        // (A note left on a job that has ended is never read: harmless.)
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.layout.job_key(parent)))
            .update_expression("ADD waiters :w")
            .condition_expression("attribute_exists(pk) AND #t = :t")
            .expression_attribute_names("#t", "tenant")
            .expression_attribute_values(":w", AttributeValue::Ss(vec![waiter.to_string()]))
            .expression_attribute_values(":t", s(tenant.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify);
        match out {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|item| get_s(item, "status"))
                .and_then(JobStatus::parse)),
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn heartbeat(
        &self,
        id: JobId,
        run: u32,
        at: DateTime<Utc>,
        progress: Option<&Progress>,
    ) -> Result<Liveness, StoreError> {
        // Only the state item, and no indexed attribute: one write unit.
        let mut u = Update::default();
        u.set("heartbeat_at", s(rfc3339(at)))
            .set("due_us", n(micros(at)));
        if let Some(p) = progress {
            let v = serde_json::to_value(p)
                .map_err(|e| StoreError::Rejected(format!("encode progress: {e}")))?;
            u.set("progress", to_attr(&v))
                .set("updated_at", s(rfc3339(at)))
                .set("upd_us", n(micros(at)));
        }
        u.when_eq("status", s(JobStatus::Running.as_str()))
            .when_eq("runs", n(run));
        let key = self.layout.job_key(id);
        let pk = pk_of(&key);
        let out = u
            .send(&self.client, &self.table, key)
            .set_return_consumed_capacity(self.capacity())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify)?;
        self.used("heartbeat", &[pk], &[], out.consumed_capacity());
        let cancel_requested = out
            .attributes
            .as_ref()
            .and_then(|a| a.get("cancel_requested"))
            .and_then(|v| v.as_bool().ok().copied())
            .unwrap_or(false);
        Ok(Liveness { cancel_requested })
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError> {
        let mut filter = Update::default();
        filter.when_eq("tenant", s(query.tenant.as_str()));
        if let Some(status) = query.status {
            filter.when_eq("status", s(status.as_str()));
        }
        if let Some(t) = &query.job_type {
            filter.when_eq("type", s(t.as_str()));
        }
        self.list_shards(
            tenant_bucket(&query.tenant),
            query.before,
            &filter,
            query.limit,
        )
        .await
    }

    /// Every shard of the tenant's bucket read through (DynamoDB keeps no index of changes:
    /// one would be rewritten by every transition), the changed jobs ordered by their change.
    async fn updated_since(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let mut filter = Update::default();
        filter.when_eq("tenant", s(tenant.as_str()));
        filter.when(|u| {
            let (k, v) = (u.name("upd_us"), u.value(n(micros(since).max(0))));
            format!("{k} >= {v}")
        });
        let mut all = self
            .list_shards(tenant_bucket(tenant), None, &filter, usize::MAX)
            .await?;
        all.sort_by_key(|j| (j.updated_at, j.id));
        all.truncate(limit.max(1));
        Ok(all)
    }

    /// From the counter items the table's stream keeps (`counts`): eventually consistent.
    async fn stats(&self, tenant: &Tenant) -> Result<StoreStats, StoreError> {
        super::counts::Counters::new(self.client.clone(), &self.table)
            .read(tenant)
            .await
    }

    async fn append_log(&self, new: NewLogLine<'_>) -> Result<(), StoreError> {
        // The line's number comes from a counter item of the job's log (capped: past the cap
        // one marker line is written, then nothing); the job's state item is not touched.
        let (tenant, id, attempt, at, line) =
            (new.tenant, new.job_id, new.attempt, new.at, new.line);
        let ttl = new.keep_until.timestamp();
        let counted = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(log_pk(id)))
            .key("sk", s("#"))
            .update_expression("ADD n :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(n) OR n <= :cap")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(LOG_CAP))
            .expression_attribute_values(":ttl", n(ttl))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify);
        let seq = match counted {
            Ok(out) => out
                .attributes
                .as_ref()
                .and_then(|a| get_n(a, "n"))
                .unwrap_or(1) as u64,
            Err(StoreError::Conflict) => return Ok(()), // past the cap
            Err(e) => return Err(e),
        };
        let line = if seq > LOG_CAP {
            format!("log truncated: more than {LOG_CAP} lines")
        } else {
            line.to_string()
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(log_pk(id)))
            .item("sk", s(log_sk(seq)))
            .item("seq", n(seq))
            .item("at", s(rfc3339(at)))
            .item("attempt", n(attempt))
            .item("line", s(line))
            // (for live updates, which read the stream: whose line it is)
            .item("tenant", s(tenant.as_str()))
            .item("ttl", n(ttl))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn logs(
        &self,
        id: JobId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        let now = Utc::now();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(log_pk(id)))
            .expression_attribute_values(":lo", s(log_sk(after_seq + 1)))
            .expression_attribute_values(":hi", s(log_sk(9_999_999_999)))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .items()
            .iter()
            .filter(|item| !expired(item, now))
            .filter_map(|item| {
                Some(LogLine {
                    seq: get_n(item, "seq")? as u64,
                    at: DateTime::parse_from_rfc3339(get_s(item, "at")?)
                        .ok()?
                        .with_timezone(&Utc),
                    attempt: get_n(item, "attempt")? as u32,
                    line: get_s(item, "line")?.to_string(),
                })
            })
            .collect())
    }

    async fn open_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        self.open_batch_items(batch).await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        self.read_batch(id).await
    }

    async fn batch_members(
        &self,
        id: BatchId,
        from: Option<MemberPosition>,
        limit: usize,
    ) -> Result<MembersPage, StoreError> {
        self.member_page(id, from, limit).await
    }

    async fn finish_batch(
        &self,
        id: BatchId,
        callbacks: &std::collections::BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.finish_batch_item(id, callbacks, at).await
    }

    async fn due_batches(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        self.due_batch_list(before, limit).await
    }

    async fn recheck_batch(&self, id: BatchId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.recheck_batch_item(id, at).await
    }

    async fn save_step(
        &self,
        id: JobId,
        name: &str,
        result: &serde_json::Value,
        at: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError> {
        let mut item = step_key(id, name);
        item.insert("at".into(), s(rfc3339(at)));
        item.insert("result".into(), s(result.to_string()));
        item.insert("ttl".into(), n(keep_until.timestamp()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify);
        match put {
            Ok(_) => Ok(result.clone()),
            // Recorded before (by another run): that result stands.
            Err(StoreError::Conflict) => self
                .get_item(step_key(id, name))
                .await?
                .as_ref()
                .and_then(|item| get_s(item, "result"))
                .and_then(|text| serde_json::from_str(text).ok())
                .ok_or_else(|| StoreError::Unavailable("a recorded step could not be read".into())),
            Err(e) => Err(e),
        }
    }

    async fn steps(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError> {
        let pk = get_s(&step_key(id, "-"), "pk")
            .unwrap_or_default()
            .to_string();
        let mut items = vec![];
        let mut from = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .set_exclusive_start_key(from)
                .consistent_read(true)
                .send()
                .await
                .map_err(classify)?;
            items.extend(out.items.unwrap_or_default());
            from = out.last_evaluated_key;
            if from.is_none() {
                break;
            }
        }
        let mut steps: Vec<StepRecord> = items
            .iter()
            .filter_map(|item| {
                Some(StepRecord {
                    name: get_s(item, "sk")?.to_string(),
                    at: DateTime::parse_from_rfc3339(get_s(item, "at")?)
                        .ok()?
                        .with_timezone(&Utc),
                    result: serde_json::from_str(get_s(item, "result")?).ok()?,
                })
            })
            .collect();
        steps.sort_by(|a, b| (a.at, &a.name).cmp(&(b.at, &b.name)));
        Ok(steps)
    }

    /// `scheduled` and `waiting` jobs from the sparse `due` index (every shard). Jobs `queued`
    /// or `running` are in no index (see the module's notes): none are returned for them.
    async fn due(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let pks: Vec<String> = (0..self.layout.shards)
            .filter_map(|shard| self.layout.due_pk(status, shard))
            .collect();
        if pks.is_empty() {
            return Ok(vec![]);
        }
        let keys = self.due_keys_before(pks, before, limit).await?;
        let now = Utc::now();
        let mut jobs = vec![];
        for key in keys {
            if let Some(item) = self.get_item(key).await? {
                if let Some(job) = self.job_of(&item, now).await? {
                    if job.status == status {
                        jobs.push(job);
                    }
                }
            }
        }
        Ok(jobs)
    }

    /// DynamoDB's TTL deletes expired items (late: reads leave them out until then).
    async fn delete_expired(&self, _now: DateTime<Utc>, _limit: usize) -> Result<u64, StoreError> {
        Ok(0)
    }
}
