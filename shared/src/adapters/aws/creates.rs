//! Creating jobs in the DynamoDB store: one job (with its idempotency key, the tenant's
//! admission and its audit entry, in one transaction when there are several items), and a
//! batch of them (atomic or each on its own).

use super::attrs::{get_s, n, s, Item};
use super::batches::{CountChange, BATCH_SPREAD};
use super::layout::item_size;
use super::puts::{
    backoff, chunk_for_transactions, is_transaction_conflict, TRANSACTION_BYTES, TRANSACTION_MAX,
};
use super::write::classify;
use crate::domain::{tenant_bucket, AuditEntry, BatchId, IdempotencyKey, Job, JobId, Tenant};
use crate::ports::{CreateWith, Created, JobStore, StoreError};
use aws_sdk_dynamodb::types::TransactWriteItem;
use futures::StreamExt;
use std::collections::HashMap;

use super::table::DynamoStore;

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

impl DynamoStore {
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
        for chunk in chunk_for_transactions(items, BATCH_SPREAD as usize + 1) {
            let members = new_members(&chunk);
            let mut writes: Vec<TransactWriteItem> =
                chunk.into_iter().map(|item| self.put_new(item)).collect();
            writes.extend(self.batch_writes(batch, &members));
            writes.extend(self.members_write(batch, members.iter().map(|(id, _)| *id)));
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
        let count = items.len() + batch.map_or(0, |_| BATCH_SPREAD as usize + 1);
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
            writes.extend(self.members_write(batch, members.iter().map(|(id, _)| *id)));
        }
        self.transact_retrying(writes).await?;
        Ok(created)
    }

    pub(super) async fn create_one(
        &self,
        job: &Job,
        with: &CreateWith,
    ) -> Result<Created, StoreError> {
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
                // (counted in its batch, and listed among its members, in the same write)
                writes.extend(self.batch_writes(batch, &[(job.id, CountChange::new_member())]));
                writes.extend(self.members_write(batch, [job.id]));
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

    pub(super) async fn create_many(
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
}
