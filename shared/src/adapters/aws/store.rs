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
use super::layout::{
    decode, decode_with, expired, item_size, log_pk, log_sk, micros, part_key, step_key, Layout,
    IMMUTABLE, INDEX_DUE,
};
use super::meter::CapacityMeter;
use super::write::{classify, classify_transaction, rfc3339, Update};
use crate::domain::{
    batch_count_change, slot_change, tenant_bucket, AuditEntry, Batch, BatchId, Expected,
    IdempotencyKey, Job, JobId, JobStatus, JobSummary, Progress, Tenant,
};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, NewLogLine, Started, StepRecord,
    StoreError, StoreStats, Transitioned, LOG_CAP,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnValue, TransactWriteItem, WriteRequest,
};
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
    client: Client,
    table: String,
    layout: Layout,
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

/// Most items in one TransactWriteItems, and most bytes (DynamoDB's limit is 4 MB; a margin is
/// kept for the request's own keys and expressions).
const TRANSACTION_MAX: usize = 100;
const TRANSACTION_BYTES: usize = 3_500_000;
/// Most items in one BatchWriteItem.
const BATCH_WRITE_MAX: usize = 25;
/// A batch's jobs with idempotency keys written at once (a transaction each).
const KEYED_AT_ONCE: usize = 16;
/// Shards queried at once by a listing.
const SHARDS_AT_ONCE: usize = 32;

fn batch_key(id: BatchId) -> Item {
    HashMap::from([
        ("pk".into(), s(format!("BATCH#{id}"))),
        ("sk".into(), s("BATCH")),
    ])
}

/// How long a batch item is kept after it was opened.
const BATCH_KEPT: chrono::Duration = chrono::Duration::days(30);

/// A batch from its item: the batch as opened (`doc`), with its counts and callbacks.
fn decode_batch(item: &Item) -> Option<Batch> {
    let mut b: Batch = serde_json::from_str(get_s(item, "doc")?).ok()?;
    let n = |a: &str| get_n(item, a).unwrap_or(0).max(0) as u64;
    (
        b.total,
        b.pending,
        b.succeeded,
        b.failed,
        b.dead,
        b.cancelled,
    ) = (
        n("total"),
        n("pending"),
        n("succeeded"),
        n("failed"),
        n("dead"),
        n("cancelled"),
    );
    if let Some(c) = get_s(item, "callbacks").and_then(|c| serde_json::from_str(c).ok()) {
        b.callbacks = c;
    }
    b.finished_at = get_s(item, "finished_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(b)
}

/// The partition key of an item.
fn pk_of(item: &Item) -> String {
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
    fn capacity(&self) -> Option<aws_sdk_dynamodb::types::ReturnConsumedCapacity> {
        self.meter
            .as_ref()
            .map(|_| aws_sdk_dynamodb::types::ReturnConsumedCapacity::Indexes)
    }

    fn used(
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

    async fn get_item(&self, key: Item) -> Result<Option<Item>, StoreError> {
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

    /// Put an item that stands alone (a payload or result part), counting its capacity.
    async fn put_part(&self, item: Item) -> Result<(), StoreError> {
        let key = pk_of(&item);
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await
            .map_err(classify)?;
        self.used("part", &[key], &[], out.consumed_capacity());
        Ok(())
    }

    /// Put a new item (refused if its key is taken), counting its capacity.
    async fn put_new_item(&self, kind: &'static str, item: Item) -> Result<(), StoreError> {
        let (key, due) = (pk_of(&item), get_s(&item, "due_pk").map(str::to_string));
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await
            .map_err(classify)?;
        let due: Vec<_> = due.into_iter().map(|k| (INDEX_DUE, k)).collect();
        self.used(kind, &[key], &due, out.consumed_capacity());
        Ok(())
    }

    /// A write of a transaction putting a new item (refused if the key is taken).
    fn put_new(&self, item: Item) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("table, item and condition are set"),
            )
            .build()
    }

    /// Send one transaction, counting its capacity (shared evenly by the keys it wrote).
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> Result<(), SdkTransactError> {
        let keys: Vec<String> = writes.iter().map(written_pk).collect();
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await?;
        for c in out.consumed_capacity() {
            self.used("transaction", &keys, &[], Some(c));
        }
        Ok(())
    }

    /// `transact`, sent again (with jittered backoff) while DynamoDB cancels it for a
    /// conflicting transaction on one of its items; other errors as `classify_transaction`.
    async fn transact_retrying(&self, writes: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match self.transact(writes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 6 && is_transaction_conflict(&e) => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(e) => return Err(classify_transaction(e)),
            }
        }
    }

    /// Put new items (fresh ids, no conditions needed) in batch writes of 25, each written on
    /// its own: no transaction, so each costs its size and no more. Unprocessed items are sent
    /// again with backoff.
    async fn put_plain(&self, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(BATCH_WRITE_MAX) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build()
                                .expect("item is set"),
                        )
                        .build()
                })
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let keys: Vec<String> = pending
                    .iter()
                    .filter_map(|w| w.put_request().map(|p| pk_of(p.item())))
                    .collect();
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .set_return_consumed_capacity(self.capacity())
                    .send()
                    .await
                    .map_err(classify)?;
                for c in out.consumed_capacity() {
                    self.used("create", &keys, &[], Some(c));
                }
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError::Busy(
                            "the table kept leaving writes unprocessed".into(),
                        ));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
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

    /// The write that counts a change of `batch`'s members in it (in the transaction of the
    /// change): `pending` and `total` added, and `count` to the status's count; its next look
    /// by maintenance pushed back.
    fn batch_write(
        &self,
        batch: BatchId,
        pending: i64,
        total: i64,
        count: Option<(JobStatus, i64)>,
        at: DateTime<Utc>,
    ) -> TransactWriteItem {
        let mut u = Update::default();
        u.set("due_us", n(micros(at + crate::ports::BATCH_LOOK_AFTER)));
        let mut adds = vec![];
        for (attr, by) in [("pending", pending), ("total", total)]
            .into_iter()
            .chain(count.map(|(status, by)| (status.as_str(), by)))
        {
            if by != 0 {
                let (name, value) = (u.name(attr), u.value(n(by)));
                adds.push(format!("{name} {value}"));
            }
        }
        u.when(|u| format!("attribute_exists({})", u.name("pk")));
        let mut update = u.into_transact(&self.table, batch_key(batch));
        if let Some(up) = update.update.as_mut() {
            if !adds.is_empty() {
                up.update_expression = format!("{} ADD {}", up.update_expression, adds.join(", "));
            }
        }
        update
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
        for chunk in chunk_for_transactions(items, 1) {
            let jobs = chunk
                .iter()
                .filter(|i| super::layout::is_job_state(i))
                .count() as i64;
            let mut writes: Vec<TransactWriteItem> =
                chunk.into_iter().map(|item| self.put_new(item)).collect();
            writes.push(self.batch_write(batch, jobs, jobs, None, Utc::now()));
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
        let count = items.len() + usize::from(batch.is_some());
        if count > TRANSACTION_MAX || bytes > TRANSACTION_BYTES {
            return Err(StoreError::Rejected(format!(
                "an atomic batch on DynamoDB is one transaction of at most {TRANSACTION_MAX} \
                 items and 4 MB (its new jobs, their large payloads, their idempotency keys and \
                 one audit entry); this one needs {count} items and {bytes} bytes: send it in \
                 parts, or without atomic"
            )));
        }
        let mut writes: Vec<TransactWriteItem> =
            items.into_iter().map(|item| self.put_new(item)).collect();
        if let Some(batch) = batch {
            let new = created.iter().filter(|c| matches!(c, Created::New)).count() as i64;
            writes.push(self.batch_write(batch, new, new, None, Utc::now()));
        }
        self.transact_retrying(writes).await?;
        Ok(created)
    }

    /// Query every shard of `bucket` newest first (each from below `before`, with `filter`),
    /// merged by id: the first `limit` readable summaries. Each shard is read a page at a time,
    /// only while its next item could be among them.
    async fn list_shards(
        &self,
        bucket: u16,
        before: Option<JobId>,
        filter: &Update,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        struct Shard {
            pk: String,
            buffered: std::collections::VecDeque<JobSummary>,
            next: Option<Item>,
            done: bool,
        }
        let mut shards: Vec<Shard> = (0..self.layout.shards)
            .map(|shard| Shard {
                pk: self.layout.job_pk_of(bucket, shard),
                buffered: Default::default(),
                next: None,
                done: false,
            })
            .collect();
        let page = (limit / self.layout.shards as usize + 2).clamp(4, 1000) as i32;
        let now = Utc::now();
        let mut out = Vec::new();
        while out.len() < limit {
            // Every shard with nothing buffered and more to read reads its next page.
            let wanted: Vec<usize> = (0..shards.len())
                .filter(|i| shards[*i].buffered.is_empty() && !shards[*i].done)
                .collect();
            let pages = futures::stream::iter(wanted.into_iter().map(|i| {
                let (pk, start) = (shards[i].pk.clone(), shards[i].next.clone());
                async move {
                    let mut u = Update::default();
                    let (p, v) = (u.name("pk"), u.value(s(pk)));
                    let mut key = format!("{p} = {v}");
                    if let Some(before) = before {
                        let (k, b) = (u.name("sk"), u.value(s(before.to_string())));
                        key = format!("{key} AND {k} < {b}");
                    }
                    let mut names = u.names.clone();
                    let mut values = u.values.clone();
                    let offset = values.len();
                    let (filter_names, filter_values, condition) =
                        renumbered(filter, names.len(), offset);
                    names.extend(filter_names);
                    values.extend(filter_values);
                    let out = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression(key)
                        .set_filter_expression(condition)
                        .set_expression_attribute_names(Some(names))
                        .set_expression_attribute_values(Some(values))
                        .scan_index_forward(false)
                        .limit(page)
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(classify)?;
                    Ok::<_, StoreError>((i, out.items.unwrap_or_default(), out.last_evaluated_key))
                }
            }))
            .buffer_unordered(SHARDS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
            for page in pages {
                let (i, items, next) = page?;
                let shard = &mut shards[i];
                shard.buffered.extend(items.iter().filter(|item| !expired(item, now)).filter_map(
                    |item| match decode::<JobSummary>(item) {
                        Ok(j) => Some(j),
                        Err(reason) => {
                            tracing::error!(pk = pk_of(item), %reason, "a job item cannot be read; left out");
                            None
                        }
                    },
                ));
                shard.done = next.is_none();
                shard.next = next;
            }
            // Take the newest head while no shard that could hold a newer one is unread.
            loop {
                if out.len() >= limit {
                    break;
                }
                if shards.iter().any(|sh| sh.buffered.is_empty() && !sh.done) {
                    break; // read more first
                }
                let newest = shards
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sh)| sh.buffered.front().map(|j| (i, j.id)))
                    .max_by_key(|(_, id)| *id);
                match newest {
                    Some((i, _)) => out.extend(shards[i].buffered.pop_front()),
                    None => return Ok(out), // every shard read to its end
                }
            }
        }
        Ok(out)
    }
}

/// A filter's expression with its placeholders renumbered after `names` names and `values`
/// values already taken (so it can join a key condition built on its own).
fn renumbered(
    filter: &Update,
    names: usize,
    values: usize,
) -> (
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
    Option<String>,
) {
    let mut condition = filter.condition();
    let mut out_names = HashMap::new();
    let mut out_values = HashMap::new();
    // (longest placeholders first, so `#n1` is not taken for the start of `#n10`)
    let mut olds: Vec<(&String, &String)> = filter.names.iter().collect();
    olds.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (i, (old, name)) in olds.into_iter().enumerate() {
        let new = format!("#f{}", names + i);
        condition = condition.map(|c| c.replace(old.as_str(), &new));
        out_names.insert(new, name.clone());
    }
    let mut olds: Vec<(&String, &AttributeValue)> = filter.values.iter().collect();
    olds.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (i, (old, value)) in olds.into_iter().enumerate() {
        let new = format!(":f{}", values + i);
        condition = condition.map(|c| c.replace(old.as_str(), &new));
        out_values.insert(new, value.clone());
    }
    (out_names, out_values, condition)
}

type SdkTransactError = aws_sdk_dynamodb::error::SdkError<
    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    aws_sdk_dynamodb::config::http::HttpResponse,
>;

/// Whether DynamoDB cancelled a transaction because another one was changing one of its items
/// at the same moment (worth sending again).
fn is_transaction_conflict(e: &SdkTransactError) -> bool {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e.as_service_error() {
        Some(E::TransactionCanceledException(tc)) => {
            let reasons = tc.cancellation_reasons();
            reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
                && !reasons
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
        }
        Some(E::TransactionInProgressException(_)) => true,
        Some(other) => other.code() == Some("TransactionConflictException"),
        None => false,
    }
}

async fn backoff(attempt: u32) {
    let cap = 10u64 << attempt.min(8);
    let ms = rand::random::<u64>() % cap.max(1) + 1;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// The partition key a transaction's write touches.
fn written_pk(w: &TransactWriteItem) -> String {
    if let Some(p) = w.put() {
        return pk_of(p.item());
    }
    if let Some(u) = w.update() {
        return pk_of(u.key());
    }
    if let Some(c) = w.condition_check() {
        return pk_of(c.key());
    }
    if let Some(d) = w.delete() {
        return pk_of(d.key());
    }
    "?".into()
}

/// Items in transactions of at most 100 items (less `reserved`, for writes added to each)
/// and 3.5 MB.
fn chunk_for_transactions(items: Vec<Item>, reserved: usize) -> Vec<Vec<Item>> {
    let mut chunks: Vec<Vec<Item>> = vec![];
    let mut bytes = 0;
    for item in items {
        let size = item_size(&item);
        let full = chunks.last().is_none_or(|c| {
            c.len() + reserved >= TRANSACTION_MAX || bytes + size > TRANSACTION_BYTES
        });
        if full {
            chunks.push(vec![]);
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("pushed").push(item);
    }
    chunks
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
        for attempt in 0..6 {
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
                writes.push(self.batch_write(batch, 1, 1, None, Utc::now()));
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
        let doc = serde_json::to_string(batch).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let mut item = batch_key(batch.id);
        for (attr, value) in [
            ("tenant", s(batch.tenant.as_str())),
            ("doc", s(doc)),
            ("total", n(0)),
            ("pending", n(0)),
            ("due_pk", s(self.layout.batch_due_pk(batch.id))),
            (
                "due_us",
                n(micros(batch.created_at + crate::ports::BATCH_LOOK_AFTER)),
            ),
            ("ttl", n((batch.created_at + BATCH_KEPT).timestamp())),
        ] {
            item.insert(attr.into(), value);
        }
        self.put_new_item("batch", item).await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        Ok(self
            .get_item(batch_key(id))
            .await?
            .as_ref()
            .and_then(decode_batch))
    }

    async fn finish_batch(
        &self,
        id: BatchId,
        callbacks: &std::collections::BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let callbacks =
            serde_json::to_string(callbacks).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(batch_key(id)))
            .update_expression("SET callbacks = :c, finished_at = :f REMOVE due_pk")
            .condition_expression("attribute_exists(due_pk)")
            .expression_attribute_values(":c", s(callbacks))
            .expression_attribute_values(":f", s(rfc3339(at)))
            .send()
            .await
            .map_err(classify);
        match out {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn due_batches(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        let pks: Vec<String> = (0..self.layout.shards)
            .map(|shard| format!("batch#{shard:02x}"))
            .collect();
        let keys = self.due_keys_before(pks, before, limit).await?;
        let mut batches = vec![];
        for key in keys {
            if let Some(b) = self.get_item(key).await?.as_ref().and_then(decode_batch) {
                if b.finished_at.is_none() {
                    batches.push(b);
                }
            }
        }
        Ok(batches)
    }

    async fn recheck_batch(&self, id: BatchId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(batch_key(id)))
            .update_expression("SET due_us = :t")
            .condition_expression("attribute_exists(due_pk)")
            .expression_attribute_values(":t", n(micros(at)))
            .send()
            .await
            .map_err(classify);
        match out {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
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
    /// The table keys of the `due` index's entries under `pks` due before `before`, oldest
    /// first, at most `limit`.
    async fn due_keys_before(
        &self,
        pks: Vec<String>,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let pages = futures::stream::iter(pks.into_iter().map(|pk| async move {
            self.client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_DUE)
                .key_condition_expression("due_pk = :p AND due_us < :t")
                .expression_attribute_values(":p", s(pk))
                .expression_attribute_values(":t", n(micros(before)))
                .limit(limit as i32)
                .send()
                .await
                .map_err(classify)
                .map(|out| out.items.unwrap_or_default())
        }))
        .buffer_unordered(SHARDS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
        let mut entries = vec![];
        for page in pages {
            entries.extend(page?);
        }
        entries.sort_by_key(|e| get_n(e, "due_us").unwrap_or(0));
        entries.truncate(limit);
        Ok(entries
            .into_iter()
            .map(|e| {
                e.into_iter()
                    .filter(|(k, _)| k == "pk" || k == "sk")
                    .collect()
            })
            .collect())
    }

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
                writes.push(self.batch_write(
                    b,
                    pending,
                    0,
                    Some((status, count)),
                    next.updated_at,
                ));
            }
            self.transact_retrying(writes).await?;
            let mut written = Transitioned::default();
            if let Some((b, _)) = batch.filter(|(_, (p, _, _))| *p < 0) {
                let left = self
                    .get_item(batch_key(b))
                    .await?
                    .and_then(|item| get_n(&item, "pending"));
                if left == Some(0) {
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
