//! `JobStore` on one DynamoDB table, in the layout `layout` describes (small state items spread
//! over `<bucket>#<shard>` keys, payloads and results written once, no index on the hot path).
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | idempotency key | `IDEM#<tenant>#<key>` | `IDEM` | `job_id`, `ttl` |
//! | batch | `BATCH#<id>` | `BATCH` | counts as numbers; in the `due` index (`batch#<shard>`) until it ends |
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

use super::attrs::{get_n, get_s, n, s, to_attr, Item};
use super::batches::{CountChange, BATCH_SPREAD};
use super::layout::{
    decode_with, expired, item_size, log_pk, log_sk, micros, part_key, step_key, Layout, IMMUTABLE,
    INDEX_DUE,
};
use super::meter::CapacityMeter;
use super::puts::{
    backoff, chunk_for_transactions, is_transaction_conflict, TRANSACTION_BYTES, TRANSACTION_MAX,
};
use super::write::{classify, rfc3339, Update};
use crate::domain::{
    batch_count_change, slot_change, tenant_bucket, AuditEntry, Batch, BatchId, Expected,
    IdempotencyKey, Job, JobId, JobStatus, JobSummary, Progress, Tenant,
};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, NewLogLine, Started, StepRecord,
    StoreError, StoreStats, Transitioned, LOG_CAP,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;

/// Fields of the state item that a job may not have (absent rather than null): a transition
/// to a job without one removes it.
const MAYBE_ABSENT: &[&str] = &[
    "progress",
    "result",
    "result_ext",
    "error",
    "concurrency_key",
    "tenant_max_running",
    "batch_id",
    "depends_on",
    "on_dependency_failure",
    "holds_slot",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "expires_at",
    "due_pk",
    "ttl",
];

pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) layout: Layout,
    meter: Option<CapacityMeter>,
}

fn idem_key(tenant: &Tenant, key: &IdempotencyKey) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("IDEM#{tenant}#{key}"))),
        ("sk".to_string(), s("IDEM")),
    ])
}

/// An idempotency key lives as long as its job could: until its run time, plus the retention,
/// plus a week for the job to run.
fn idem_ttl(job: &Job) -> i64 {
    job.run_at.timestamp() + job.retention_secs as i64 + 7 * 24 * 3600
}

/// A batch's jobs with idempotency keys written at once (a transaction each).
const KEYED_AT_ONCE: usize = 16;
/// Tries of a create written in a transaction.
const CREATE_ATTEMPTS: u32 = 16;

/// The ids of the new jobs among `items` (their state items), each a new member of a batch.
fn new_members(items: &[Item]) -> Vec<(JobId, CountChange)> {
    items
        .iter()
        .filter(|i| super::layout::is_job_state(i))
        .filter_map(|i| get_s(i, "sk").and_then(|id| JobId::parse(id).ok()))
        .map(|id| (id, CountChange::new_member()))
        .collect()
}

/// The partition key of an item.
pub(super) fn pk_of(item: &Item) -> String {
    get_s(item, "pk").unwrap_or("?").to_string()
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        shards: u64,
        meter: Option<CapacityMeter>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            layout: Layout {
                shards: shards.max(1),
            },
            meter,
        }
    }

    /// Ask for consumed capacity (by index) only when metering.
    pub(super) fn capacity(&self) -> Option<aws_sdk_dynamodb::types::ReturnConsumedCapacity> {
        self.meter
            .as_ref()
            .map(|_| aws_sdk_dynamodb::types::ReturnConsumedCapacity::Indexes)
    }

    pub(super) fn used(
        &self,
        kind: &'static str,
        table_keys: &[String],
        index_keys: &[(&str, String)],
        c: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>,
    ) {
        if let Some(m) = &self.meter {
            m.record(kind, table_keys, index_keys, c);
        }
    }

    /// The `due` index keys a write from `from` to `to` touches.
    fn due_keys(&self, id: JobId, statuses: &[JobStatus]) -> Vec<(&'static str, String)> {
        statuses
            .iter()
            .filter_map(|st| self.layout.due_pk(*st, self.layout.shard_of(id)))
            .map(|k| (INDEX_DUE, k))
            .collect()
    }

    pub(super) async fn get_item(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item)
    }

    /// A state item as a job, its payload and result read from their own items where they live
    /// apart. `None` when it has expired or cannot be read (logged: it stays in the table for an
    /// operator, out of every answer).
    async fn job_of(&self, item: &Item, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        if expired(item, now) {
            return Ok(None);
        }
        let Some(id) = get_s(item, "sk").and_then(|id| JobId::parse(id).ok()) else {
            return Ok(None);
        };
        let mut parts = HashMap::new();
        for (field, flag, which) in [
            ("payload", "payload_ext", "P"),
            ("result", "result_ext", "R"),
        ] {
            if item
                .get(flag)
                .is_some_and(|v| v.as_bool().ok() == Some(&true))
            {
                match self.get_item(part_key(id, which)).await? {
                    Some(part) => {
                        parts.insert(field, get_s(&part, "v").unwrap_or("null").to_string());
                    }
                    None => {
                        tracing::error!(job_id = %id, field, "a job's {field} item is missing");
                    }
                }
            }
        }
        Ok(match decode_with(item, &parts) {
            Ok(job) => Some(job),
            Err(reason) => {
                tracing::error!(pk = pk_of(item), %reason, "a job item cannot be read; left out");
                None
            }
        })
    }

    /// The job an idempotency key made, if the key is held by a job that still exists.
    async fn idem_owner(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, StoreError> {
        let found = self.get_item(idem_key(tenant, key)).await?;
        match found
            .as_ref()
            .and_then(|f| get_s(f, "job_id"))
            .and_then(|id| JobId::parse(id).ok())
        {
            Some(owner) => self.get(owner).await,
            None => Ok(None),
        }
    }

    /// The state items (and parts) of new jobs, checked: a job's id must have been made for
    /// its tenant (`JobId::for_tenant`), or its tenant's listing would never find it.
    fn encode_new(&self, job: &Job) -> Result<(Item, Option<Item>), StoreError> {
        if job.id.bucket() != tenant_bucket(&job.tenant) {
            return Err(StoreError::Rejected(format!(
                "job {} was not given an id for its tenant {} (JobId::for_tenant)",
                job.id, job.tenant
            )));
        }
        let encoded = self.layout.encode(job)?;
        Ok((encoded.state, encoded.payload))
    }

    /// Put new jobs (and their audit entry) in transactions of up to 100 items and 3.5 MB, each
    /// also counting its jobs in `batch`.
    async fn put_counted(&self, items: Vec<Item>, batch: BatchId) -> Result<(), StoreError> {
        for chunk in chunk_for_transactions(items, BATCH_SPREAD as usize) {
            let members = new_members(&chunk);
            let mut writes: Vec<TransactWriteItem> =
                chunk.into_iter().map(|item| self.put_new(item)).collect();
            writes.extend(self.batch_writes(batch, &members));
            self.transact_retrying(writes).await?;
        }
        Ok(())
    }

    /// `create_batch` all in one transaction: keys found taken first are `Existing`; a key
    /// taken between that read and the write is a `Conflict` (nothing written).
    async fn create_batch_atomic(
        &self,
        jobs: &[Job],
        audit: Option<Item>,
    ) -> Result<Vec<Created>, StoreError> {
        let mut created = Vec::with_capacity(jobs.len());
        let mut items = vec![];
        let mut first_of_key: HashMap<&IdempotencyKey, usize> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(key) = &job.idempotency_key {
                if let Some(first) = first_of_key.get(key) {
                    created.push(Created::Existing(Box::new(jobs[*first].clone())));
                    continue;
                }
                if let Some(found) = self.idem_owner(&job.tenant, key).await? {
                    created.push(Created::Existing(Box::new(found)));
                    continue;
                }
                first_of_key.insert(key, i);
                let mut idem = idem_key(&job.tenant, key);
                idem.insert("job_id".into(), s(job.id.to_string()));
                idem.insert("ttl".into(), n(idem_ttl(job)));
                items.push(idem);
            }
            let (state, payload) = self.encode_new(job)?;
            items.push(state);
            items.extend(payload);
            created.push(Created::New);
        }
        if items.is_empty() {
            return Ok(created);
        }
        items.extend(audit);
        let batch = jobs.first().and_then(|j| j.batch_id);
        let bytes: usize = items.iter().map(item_size).sum();
        let count = items.len() + batch.map_or(0, |_| BATCH_SPREAD as usize);
        if count > TRANSACTION_MAX || bytes > TRANSACTION_BYTES {
            return Err(StoreError::Rejected(format!(
                "an atomic batch on DynamoDB is one transaction of at most {TRANSACTION_MAX} \
                 items and 4 MB (its new jobs, their large payloads, their idempotency keys and \
                 one audit entry); this one needs {count} items and {bytes} bytes: send it in \
                 parts, or without atomic"
            )));
        }
        let members = new_members(&items);
        let mut writes: Vec<TransactWriteItem> =
            items.into_iter().map(|item| self.put_new(item)).collect();
        if let Some(batch) = batch {
            writes.extend(self.batch_writes(batch, &members));
        }
        self.transact_retrying(writes).await?;
        Ok(created)
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_with(&self, job: &Job, with: &CreateWith) -> Result<Created, StoreError> {
        let (item, payload) = self.encode_new(job)?;
        let audit = with
            .audit
            .as_ref()
            .map(super::access::audit_item)
            .transpose()?;
        let limits = super::access::admission_writes(&self.table, &job.tenant, &with.admission);
        let idem = job
            .idempotency_key
            .as_ref()
            .map(|key| idem_key(&job.tenant, key));
        // A large payload first, on its own: the job never points at a payload not written.
        if let Some(payload) = payload {
            self.put_part(payload).await?;
        }
        if idem.is_none() && limits.is_empty() && job.batch_id.is_none() {
            // One write, not a transaction (which costs twice): the audit entry after it.
            self.put_new_item("create", item).await?;
            if let Some(entry) = audit {
                self.put_part(entry).await?;
            }
            return Ok(Created::New);
        }
        let key_ttl = idem_ttl(job);
        // (while other transactions hold one of its items, a quota's or a batch's count, it is
        // sent again, with a jittered backoff, up to a second or so)
        for attempt in 0..CREATE_ATTEMPTS {
            let put = |item: Item| self.put_new(item);
            let mut writes = vec![];
            if let Some(key) = &idem {
                let mut idem = key.clone();
                idem.insert("job_id".into(), s(job.id.to_string()));
                idem.insert("ttl".into(), n(key_ttl));
                writes.push(put(idem));
            }
            writes.push(put(item.clone()));
            if let Some(entry) = &audit {
                writes.push(put(entry.clone()));
            }
            let first_limit = writes.len();
            writes.extend(limits.iter().map(|(write, _)| write.clone()));
            let batch_at = writes.len();
            if let Some(batch) = job.batch_id {
                // (counted in its batch in the same write)
                writes.extend(self.batch_writes(batch, &[(job.id, CountChange::new_member())]));
            }
            let e = match self.transact(writes).await {
                Ok(()) => return Ok(Created::New),
                Err(e) => e,
            };
            let reasons: Vec<String> = e
                .as_service_error()
                .and_then(|se| match se {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc) => Some(tc),
                    _ => None,
                })
                .map(|tc| {
                    tc.cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect()
                })
                .unwrap_or_default();
            let failed = reasons.iter().position(|r| r == "ConditionalCheckFailed");
            if let (Some(0), Some(idem)) = (failed, &idem) {
                // The key is taken: its job, unless that job is gone (then the key is free).
                let Some(found) = self.get_item(idem.clone()).await? else {
                    continue; // deleted meanwhile: try again
                };
                let owner = get_s(&found, "job_id").and_then(|id| JobId::parse(id).ok());
                if let Some(owner) = owner {
                    if let Some(existing) = self.get(owner).await? {
                        return Ok(Created::Existing(Box::new(existing)));
                    }
                }
                // Free the key its gone job held (only if it still holds it), then try again.
                let mut del = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(idem.clone()));
                if let Some(owner) = get_s(&found, "job_id") {
                    del = del
                        .condition_expression("job_id = :j")
                        .expression_attribute_values(":j", s(owner));
                }
                match del.send().await.map_err(classify) {
                    Ok(_) | Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e),
                }
            }
            if failed == Some(batch_at) {
                return Err(StoreError::Rejected(format!(
                    "batch {} does not exist",
                    job.batch_id.expect("a batch write")
                )));
            }
            if let Some(i) = failed.filter(|i| *i >= first_limit) {
                // A limit refused it: nothing was written.
                return Ok(limits[i - first_limit].1.refusal());
            }
            if is_transaction_conflict(&e) {
                backoff(attempt + 1).await;
                continue;
            }
            if reasons.is_empty() {
                return Err(classify(e));
            }
            return Err(StoreError::Unavailable(format!(
                "create cancelled: {}",
                reasons.join(", ")
            )));
        }
        Err(StoreError::Busy(
            "the job's creation kept conflicting".into(),
        ))
    }

    async fn create_batch(
        &self,
        jobs: &[Job],
        audit: Option<&AuditEntry>,
        atomic: bool,
    ) -> Result<Vec<Created>, StoreError> {
        let audit = audit.map(super::access::audit_item).transpose()?;
        if atomic {
            return self.create_batch_atomic(jobs, audit).await;
        }
        // Jobs without a key go in batch writes (in transactions only to be counted in their
        // batch); each with a key claims it with its job (one transaction each, several at
        // once); a key given twice makes one job, the first's.
        let mut created: Vec<Option<Created>> = (0..jobs.len()).map(|_| None).collect();
        let mut plain = vec![];
        let mut first_of_key: HashMap<&IdempotencyKey, usize> = HashMap::new();
        let mut again = vec![];
        for (i, job) in jobs.iter().enumerate() {
            match &job.idempotency_key {
                None => {
                    let (state, payload) = self.encode_new(job)?;
                    plain.extend(payload);
                    plain.push(state);
                    created[i] = Some(Created::New);
                }
                Some(key) => match first_of_key.get(key) {
                    Some(first) => again.push((i, *first)),
                    None => {
                        first_of_key.insert(key, i);
                    }
                },
            }
        }
        let keyed: Vec<(usize, Result<Created, StoreError>)> = futures::stream::iter(
            first_of_key.values().copied(),
        )
        .map(|i| async move { (i, self.create_with(&jobs[i], &CreateWith::default()).await) })
        // (a batch's members one at a time: each write also counts it in the batch's item)
        .buffer_unordered(if jobs.iter().any(|j| j.batch_id.is_some()) {
            1
        } else {
            KEYED_AT_ONCE
        })
        .collect()
        .await;
        for (i, outcome) in keyed {
            created[i] = Some(outcome?);
        }
        for (i, first) in again {
            let made = match &created[first] {
                Some(Created::Existing(found)) => found.as_ref().clone(),
                _ => jobs[first].clone(),
            };
            created[i] = Some(Created::Existing(Box::new(made)));
        }
        plain.extend(audit);
        match jobs.first().and_then(|j| j.batch_id) {
            Some(batch) if !plain.is_empty() => self.put_counted(plain, batch).await?,
            _ => self.put_plain(plain).await?,
        }
        Ok(created.into_iter().map(|c| c.expect("decided")).collect())
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

impl DynamoStore {
    /// A transition's conditional write (and the tenant's slot and the batch's counts with
    /// it); the payload only when `with_payload`. A result or payload too large for the state
    /// item is written first, as its own item.
    async fn write_transition(
        &self,
        expected: Expected,
        next: &Job,
        with_payload: bool,
    ) -> Result<Transitioned, StoreError> {
        let ends = next.status.is_terminal();
        let encoded = self.layout.encode(next)?;
        if with_payload {
            if let Some(payload) = encoded.payload {
                self.put_part(payload).await?;
            }
        }
        if let Some(result) = encoded.result {
            self.put_part(result).await?;
        }
        let from_running = expected.status == JobStatus::Running;
        let worker_owned = |attr: &str| {
            matches!(attr, "heartbeat_at" | "progress")
                || (attr == "due_us" && from_running && next.status == JobStatus::Running)
        };
        let payload_attr = |attr: &str| matches!(attr, "payload" | "payload_ext");
        let mut u = Update::default();
        let state = encoded.state;
        for (attr, value) in &state {
            if attr == "pk"
                || attr == "sk"
                || (IMMUTABLE.contains(&attr.as_str()) && !(with_payload && payload_attr(attr)))
                || (from_running && worker_owned(attr))
            {
                continue;
            }
            u.set(attr, value.clone());
        }
        let payload_fields: &[&str] = if with_payload {
            &["payload", "payload_ext"]
        } else {
            &[]
        };
        for attr in MAYBE_ABSENT.iter().chain(payload_fields) {
            let kept = state.contains_key(*attr) || (from_running && worker_owned(attr));
            if !kept {
                u.remove(attr);
            }
        }
        u.when_eq("status", s(expected.status.as_str()))
            .when_eq("attempt", n(expected.attempt))
            .when_eq("version", n(expected.version));
        if let Some(last) = expected.last_heartbeat {
            u.when_eq("due_us", n(micros(last)));
        }
        let key = self.layout.job_key(next.id);
        let pk = pk_of(&key);
        let due = self.due_keys(next.id, &[expected.status, next.status]);
        let slot = slot_change(expected.status, next);
        let batch = next
            .batch_id
            .and_then(|b| Some((b, batch_count_change(expected.status, next.status)?)));
        if ends && slot == 0 && batch.is_none() {
            // The jobs waiting for this one, told once: taken off it as it ends.
            u.remove("waiters");
        }
        if slot != 0 || batch.is_some() {
            // The job's quota slot and its batch's counts move in the same write (one request,
            // a transaction, which returns nothing: the waiters are taken off in a second
            // request, and the batch read in a third).
            let mut writes = vec![u.into_transact(&self.table, key.clone())];
            if slot != 0 {
                writes.push(super::access::slot_write(&self.table, &next.tenant, slot));
            }
            if let Some((b, (pending, status, count))) = batch {
                let change = CountChange {
                    pending,
                    total: 0,
                    ended: Some((status, count)),
                };
                writes.extend(self.batch_writes(b, &[(next.id, change)]));
            }
            self.transact_retrying(writes).await?;
            let mut written = Transitioned::default();
            if let Some((b, _)) = batch.filter(|(_, (p, _, _))| *p < 0) {
                // (every member that ends reads the counts; more than one may see none left,
                // and the batch's end is then done more than once, to one effect)
                if self.read_batch(b).await?.is_some_and(|b| b.pending == 0) {
                    written.batch_ended = Some(b);
                }
            }
            if !ends {
                return Ok(written);
            }
            let taken = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression("REMOVE waiters")
                .condition_expression("attribute_exists(waiters)")
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(classify);
            return match taken {
                Ok(out) => Ok(Transitioned {
                    waiters: waiters_of(out.attributes.as_ref()).waiters,
                    ..written
                }),
                Err(StoreError::Conflict) => Ok(written),
                Err(e) => Err(e),
            };
        }
        let out = u
            .send(&self.client, &self.table, key)
            .set_return_consumed_capacity(self.capacity())
            .set_return_values(ends.then_some(ReturnValue::AllOld))
            .send()
            .await
            .map_err(classify)?;
        self.used(
            if ends { "finish" } else { "transition" },
            &[pk],
            &due,
            out.consumed_capacity(),
        );
        Ok(waiters_of(out.attributes.as_ref()))
    }
}

/// The waiters an ended job's old image held.
fn waiters_of(old: Option<&Item>) -> Transitioned {
    let waiters = match old.and_then(|item| item.get("waiters")) {
        Some(AttributeValue::Ss(ids)) => ids.iter().filter_map(|w| JobId::parse(w).ok()).collect(),
        _ => vec![],
    };
    Transitioned {
        waiters,
        batch_ended: None,
    }
}
