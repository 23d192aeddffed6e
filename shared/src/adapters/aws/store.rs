//! `JobStore` on one DynamoDB table.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | job | `JOB#<id>` | `JOB` |
//! | log line | `JOB#<id>` | `LOG#<seq, 10 digits>` |
//! | durable step | `JOB#<id>` | `STEP#<name>` |
//! | batch | `BATCH#<id>` | `BATCH` (counts as numbers; in the `due` index, as `batch`, until it ends) |
//! | idempotency key | `IDEM#<tenant>#<key>` | `IDEM` |
//!
//! A job item carries every field of the job as an attribute of its own (the payload and the
//! result as their JSON text), so a transition is
//! one conditional `UpdateItem` that sets the transition-owned fields and leaves the
//! worker-owned ones (`heartbeat_at`, `progress`) to the run (see `JobStore`). Beside them:
//! `status_id` and `type_id` (sort keys of the `by_status` and `by_type` indexes, whose
//! partition key is `tenant`, as is `by_tenant`'s, sorted by `id`), `due_pk` (the status, only while the job is not finished: the
//! sparse `due` index maintenance reads, sorted by `due_us`), `run_at_us` (start's condition)
//! and `ttl` (epoch seconds, a Number, for DynamoDB's TTL). TTL deletes late, so every read
//! leaves out items whose `ttl` has passed. No code path scans.

use super::attrs::{get_n, get_s, item_to_object, n, object_to_item, s, to_attr, Item};
use crate::domain::{
    batch_count_change, slot_change, AuditEntry, Batch, BatchId, Expected, IdempotencyKey, Job,
    JobId, JobStatus, JobSummary, Progress, Tenant,
};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, Started, StepRecord, StoreError,
    StoreStats, Transitioned, LOG_CAP,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Attributes that are keys or index keys, not fields of the job.
const NOT_FIELDS: &[&str] = &[
    "pk",
    "sk",
    "status_id",
    "type_id",
    "due_pk",
    "due_us",
    "run_at_us",
    "updated_key",
    "ttl",
    "log_count",
    "waiters",
];

/// The user's own JSON, stored as its text (a String): kept exactly as given, whatever DynamoDB's
/// types could not hold (numbers past 38 digits or 1e125) or an emulator's stream could not
/// carry (empty maps and lists).
const AS_TEXT: &[&str] = &["payload", "result"];

/// Fields no transition changes: written once, at create, never sent again.
const IMMUTABLE: &[&str] = &[
    "id",
    "tenant",
    "type",
    "payload",
    "created_at",
    "idempotency_key",
    "request_fingerprint",
];

pub const INDEX_BY_TENANT: &str = "by_tenant";
pub const INDEX_BY_STATUS: &str = "by_status";
pub const INDEX_BY_TYPE: &str = "by_type";
pub const INDEX_DUE: &str = "due";
/// A tenant's jobs by when they last changed (`updated_key`: the time in microseconds, 20
/// digits, `#`, the id), for `updated_since`.
pub const INDEX_BY_UPDATE: &str = "by_update";

/// What the listing indexes carry besides their keys: a job's summary (no payload, no result),
/// and `ttl` so expired jobs are left out. The `due` index carries whole jobs (maintenance
/// changes them), but only while they are not finished.
pub const SUMMARY_ATTRIBUTES: &[&str] = &[
    "type",
    "status",
    "priority",
    "attempt",
    "max_attempts",
    "progress",
    "error",
    "idempotency_key",
    "cancel_requested",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "expires_at",
    "updated_at",
    "version",
    "ttl",
];

pub struct DynamoStore {
    client: Client,
    table: String,
    meter: Option<CapacityMeter>,
}

/// Write capacity units the table reported (indexes included), for the bench: each write
/// asks for its consumed capacity only while a meter is attached.
#[derive(Debug, Clone, Default)]
pub struct CapacityMeter(std::sync::Arc<std::sync::Mutex<f64>>);

impl CapacityMeter {
    pub fn write_units(&self) -> f64 {
        *self.0.lock().unwrap()
    }

    pub fn reset(&self) {
        *self.0.lock().unwrap() = 0.0;
    }

    fn add(&self, used: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        if let Some(units) = used.and_then(|c| c.capacity_units) {
            *self.0.lock().unwrap() += units;
        }
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, meter: Option<CapacityMeter>) -> Self {
        Self {
            client,
            table: table.into(),
            meter,
        }
    }

    /// Ask for consumed capacity only when metering.
    fn capacity(&self) -> Option<aws_sdk_dynamodb::types::ReturnConsumedCapacity> {
        self.meter
            .as_ref()
            .map(|_| aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
    }

    fn used(&self, c: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        if let Some(m) = &self.meter {
            m.add(c);
        }
    }
}

fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}

fn idem_pk(tenant: &Tenant, key: &IdempotencyKey) -> String {
    format!("IDEM#{tenant}#{key}")
}

/// An idempotency key lives as long as its job could: until its run time, plus the retention,
/// plus a week for the job to run.
fn idem_ttl(job: &Job) -> i64 {
    epoch_secs(job.run_at) + job.retention_secs as i64 + 7 * 24 * 3600
}

/// Most writes in one TransactWriteItems.
const TRANSACTION_MAX: usize = 100;
/// A batch's jobs with idempotency keys written at once (a transaction each).
const KEYED_AT_ONCE: usize = 16;

fn log_sk(seq: u64) -> String {
    format!("LOG#{seq:010}")
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn epoch_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// A backend error by what the caller should do about it.
pub(super) fn classify<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_string();
    let message = DisplayErrorContext(&e).to_string();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::Conflict,
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TransactionConflictException"
        | "TransactionInProgressException" => StoreError::Busy(message),
        "ValidationException" | "ItemCollectionSizeLimitExceededException" => {
            StoreError::Rejected(message)
        }
        _ => StoreError::Unavailable(message),
    }
}

/// A cancelled transaction whose first item's condition failed is a `Conflict` (the job
/// changed); anything else as `classify` says.
fn classify_transaction<R: std::fmt::Debug>(
    e: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> StoreError {
    let first_failed = e
        .as_service_error()
        .and_then(|se| match se {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc) => tc.cancellation_reasons().first().and_then(|r| r.code()).map(|c| c == "ConditionalCheckFailed"),
            _ => None,
        })
        .unwrap_or(false);
    if first_failed {
        StoreError::Conflict
    } else {
        classify(e)
    }
}

/// The job's item: its fields, its keys and the index keys its status gives it.
fn job_item(job: &Job) -> Result<Item, StoreError> {
    let value =
        serde_json::to_value(job).map_err(|e| StoreError::Rejected(format!("encode job: {e}")))?;
    let mut item = object_to_item(&value);
    for field in AS_TEXT {
        if let Some(v) = value.get(field).filter(|v| !v.is_null()) {
            item.insert(field.to_string(), s(v.to_string()));
        }
    }
    item.insert("pk".into(), s(job_pk(job.id)));
    item.insert("sk".into(), s("JOB"));
    for (k, v) in derived(job) {
        match v {
            Some(v) => item.insert(k.into(), v),
            None => item.remove(k),
        };
    }
    Ok(item)
}

/// The attributes kept beside the job's fields, from the job (`None`: absent).
fn derived(job: &Job) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("status_id", Some(s(format!("{}#{}", job.status, job.id)))),
        ("type_id", Some(s(format!("{}#{}", job.job_type, job.id)))),
        (
            "due_pk",
            (!job.status.is_terminal()).then(|| s(job.status.as_str())),
        ),
        ("due_us", Some(n(micros(job.due_at())))),
        ("run_at_us", Some(n(micros(job.run_at)))),
        ("updated_key", Some(s(updated_key(job.updated_at, job.id)))),
        ("ttl", job.expires_at.map(|t| n(epoch_secs(t)))),
    ]
}

fn updated_key(at: DateTime<Utc>, id: JobId) -> String {
    format!("{:020}#{id}", micros(at).max(0))
}

fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    get_n(item, "ttl").is_some_and(|ttl| ttl <= epoch_secs(now))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, String> {
    let mut value = item_to_object(item, NOT_FIELDS)?;
    if let Some(map) = value.as_object_mut() {
        for field in AS_TEXT {
            if let Some(text) = get_s(item, field) {
                let parsed = serde_json::from_str(text).map_err(|e| format!("{field}: {e}"))?;
                map.insert(field.to_string(), parsed);
            }
        }
    }
    // An index that is not keyed on `id` still carries the table's key, which holds it.
    if let (Some(map), Some(pk)) = (value.as_object_mut(), get_s(item, "pk")) {
        if !map.contains_key("id") {
            if let Some(id) = pk.strip_prefix("JOB#") {
                map.insert("id".into(), serde_json::Value::String(id.into()));
            }
        }
    }
    serde_json::from_value(value).map_err(|e| format!("job item: {e}"))
}

/// A stored item as a job (or its summary): `None` when it has expired (TTL deletes late) or
/// cannot be read (logged: it stays in the table for an operator, out of every answer).
fn readable<T: serde::de::DeserializeOwned>(item: &Item, now: DateTime<Utc>) -> Option<T> {
    if expired(item, now) {
        return None;
    }
    match decode(item) {
        Ok(job) => Some(job),
        Err(reason) => {
            tracing::error!(pk = get_s(item, "pk").unwrap_or("?"), %reason, "a job item cannot be read; left out");
            None
        }
    }
}

/// An update expression built attribute by attribute, with placeholders for every name and
/// value (so reserved words like `status` or `ttl` need no care).
#[derive(Default)]
struct Update {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    remove: Vec<String>,
    conditions: Vec<String>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let key = format!("#n{}", self.names.len());
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.set.push(format!("{n} = {v}"));
        self
    }

    fn set_expr(
        &mut self,
        attr: &str,
        expr: impl FnOnce(&mut Self, String) -> String,
    ) -> &mut Self {
        let n = self.name(attr);
        let e = expr(self, n.clone());
        self.set.push(format!("{n} = {e}"));
        self
    }

    fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.remove.push(n);
        self
    }

    fn when_eq(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.conditions.push(format!("{n} = {v}"));
        self
    }

    fn when(&mut self, cond: impl FnOnce(&mut Self) -> String) -> &mut Self {
        let c = cond(self);
        self.conditions.push(c);
        self
    }

    fn expression(&self) -> String {
        let mut e = String::new();
        if !self.set.is_empty() {
            e.push_str("SET ");
            e.push_str(&self.set.join(", "));
        }
        if !self.remove.is_empty() {
            e.push_str(" REMOVE ");
            e.push_str(&self.remove.join(", "));
        }
        e
    }

    fn condition(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// The same update as one item of a transaction.
    fn into_transact(self, store: &DynamoStore, key: Item) -> TransactWriteItem {
        let condition = self.condition();
        TransactWriteItem::builder()
            .update(
                aws_sdk_dynamodb::types::Update::builder()
                    .table_name(&store.table)
                    .set_key(Some(key))
                    .update_expression(self.expression())
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(Some(self.names))
                    .set_expression_attribute_values(
                        (!self.values.is_empty()).then_some(self.values),
                    )
                    .build()
                    .expect("table, key and expression are set"),
            )
            .build()
    }

    fn send(
        self,
        store: &DynamoStore,
        key: Item,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let condition = self.condition();
        store
            .client
            .update_item()
            .table_name(&store.table)
            .set_key(Some(key))
            .update_expression(self.expression())
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .set_return_consumed_capacity(store.capacity())
    }
}

fn batch_key(id: BatchId) -> Item {
    HashMap::from([
        ("pk".into(), s(format!("BATCH#{id}"))),
        ("sk".into(), s("BATCH")),
    ])
}

/// The `due` index's partition of unfinished batches.
const DUE_BATCH: &str = "batch";
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

fn job_key(id: JobId) -> Item {
    HashMap::from([("pk".into(), s(job_pk(id))), ("sk".into(), s("JOB"))])
}

impl DynamoStore {
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

    /// Query an index (or the table) page by page until `limit` readable jobs, or the end.
    async fn query_jobs<T: serde::de::DeserializeOwned>(
        &self,
        index: Option<&str>,
        update: Update,
        newest_first: bool,
        limit: usize,
        filter: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let now = Utc::now();
        let key_condition = update.conditions.join(" AND ");
        let mut jobs = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(Some(update.names.clone()))
                .set_expression_attribute_values(Some(update.values.clone()))
                .scan_index_forward(!newest_first)
                .limit((limit - jobs.len()).clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            for item in out.items() {
                if let Some(job) = readable(item, now) {
                    if filter(&job) && jobs.len() < limit {
                        jobs.push(job);
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) if jobs.len() < limit => start = Some(k),
                _ => return Ok(jobs),
            }
        }
    }

    /// The job an idempotency key made, if the key is held by a job that still exists.
    async fn idem_owner(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> Result<Option<Job>, StoreError> {
        let found = self
            .get_item(HashMap::from([
                ("pk".to_string(), s(idem_pk(tenant, key))),
                ("sk".to_string(), s("IDEM")),
            ]))
            .await?;
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
        let mut update = u.into_transact(self, batch_key(batch));
        if let Some(up) = update.update.as_mut() {
            if !adds.is_empty() {
                up.update_expression = format!("{} ADD {}", up.update_expression, adds.join(", "));
            }
        }
        update
    }

    /// Put new items (fresh job ids), up to 100 a request. (In transactions rather than batch
    /// writes: a quarter of the requests at twice the write units, and no other write operation
    /// in the API function, whose binary must stay within 8 MB.)
    async fn put_all(&self, items: Vec<Item>, batch: Option<BatchId>) -> Result<(), StoreError> {
        // (with a batch, each request also counts its jobs in it: one write fewer a request)
        let per_request = TRANSACTION_MAX - usize::from(batch.is_some());
        for chunk in items.chunks(per_request) {
            let mut writes: Vec<TransactWriteItem> = chunk
                .iter()
                .map(|item| self.put_new(item.clone()))
                .collect();
            if let Some(batch) = batch {
                let jobs = chunk
                    .iter()
                    .filter(|i| get_s(i, "sk") == Some("JOB"))
                    .count() as i64;
                writes.push(self.batch_write(batch, jobs, jobs, None, Utc::now()));
            }
            self.transact(writes).await?;
        }
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

    /// Send one transaction, counting its capacity.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await
            .map_err(classify_transaction)?;
        out.consumed_capacity()
            .iter()
            .for_each(|c| self.used(Some(c)));
        Ok(())
    }

    /// `create_batch` all in one transaction: keys found taken first are `Existing`; a key
    /// taken between that read and the write is a `Conflict` (nothing written).
    async fn create_batch_atomic(
        &self,
        jobs: &[Job],
        audit: Option<Item>,
    ) -> Result<Vec<Created>, StoreError> {
        let put = |item: Item| self.put_new(item);
        let mut created = Vec::with_capacity(jobs.len());
        let mut writes = vec![];
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
                let mut idem = HashMap::from([
                    ("pk".to_string(), s(idem_pk(&job.tenant, key))),
                    ("sk".to_string(), s("IDEM")),
                ]);
                idem.insert("job_id".into(), s(job.id.to_string()));
                idem.insert("ttl".into(), n(idem_ttl(job)));
                writes.push(put(idem));
            }
            writes.push(put(job_item(job)?));
            created.push(Created::New);
        }
        if writes.is_empty() {
            return Ok(created);
        }
        writes.extend(audit.map(put));
        if let Some(batch) = jobs.first().and_then(|j| j.batch_id) {
            let new = created.iter().filter(|c| matches!(c, Created::New)).count() as i64;
            writes.push(self.batch_write(batch, new, new, None, Utc::now()));
        }
        if writes.len() > TRANSACTION_MAX {
            return Err(StoreError::Rejected(format!(
                "an atomic batch on DynamoDB holds at most {TRANSACTION_MAX} writes (its new jobs, \
                 their idempotency keys and one audit entry); this one needs {}: send it in \
                 parts, or without atomic",
                writes.len()
            )));
        }
        self.transact(writes).await?;
        Ok(created)
    }

    async fn put_job_new(&self, item: Item) -> Result<(), StoreError> {
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
        self.used(out.consumed_capacity());
        Ok(())
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_with(&self, job: &Job, with: &CreateWith) -> Result<Created, StoreError> {
        let item = job_item(job)?;
        let audit = with
            .audit
            .as_ref()
            .map(super::access::audit_item)
            .transpose()?;
        let limits = super::access::admission_writes(&self.table, &job.tenant, &with.admission);
        let idem_key = job.idempotency_key.as_ref().map(|key| {
            HashMap::from([
                ("pk".to_string(), s(idem_pk(&job.tenant, key))),
                ("sk".to_string(), s("IDEM")),
            ])
        });
        if idem_key.is_none() && audit.is_none() && limits.is_empty() && job.batch_id.is_none() {
            self.put_job_new(item).await?;
            return Ok(Created::New);
        }
        let key_ttl = idem_ttl(job);
        for attempt in 0..5 {
            let put = |item: Item| self.put_new(item);
            let mut writes = vec![];
            if let Some(key) = &idem_key {
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
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes))
                .set_return_consumed_capacity(self.capacity())
                .send()
                .await;
            let e = match written {
                Ok(out) => {
                    out.consumed_capacity()
                        .iter()
                        .for_each(|c| self.used(Some(c)));
                    return Ok(Created::New);
                }
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
            if let (Some(0), Some(idem_key)) = (failed, &idem_key) {
                // The key is taken: its job, unless that job is gone (then the key is free).
                let Some(found) = self.get_item(idem_key.clone()).await? else {
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
                    .set_key(Some(idem_key.clone()));
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
            if reasons.iter().any(|r| r == "TransactionConflict") || reasons.is_empty() {
                let e = classify(e);
                if matches!(e, StoreError::Busy(_))
                    || reasons.iter().any(|r| r == "TransactionConflict")
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                    continue;
                }
                return Err(e);
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
        // Jobs without a key go in batch writes; each with a key claims it with its job (one
        // transaction each, several at once); a key given twice makes one job, the first's.
        use futures::StreamExt;
        let mut created: Vec<Option<Created>> = (0..jobs.len()).map(|_| None).collect();
        let mut plain = vec![];
        let mut first_of_key: HashMap<&IdempotencyKey, usize> = HashMap::new();
        let mut again = vec![];
        for (i, job) in jobs.iter().enumerate() {
            match &job.idempotency_key {
                None => {
                    plain.push(job_item(job)?);
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
        self.put_all(plain, jobs.first().and_then(|j| j.batch_id))
            .await?;
        Ok(created.into_iter().map(|c| c.expect("decided")).collect())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .get_item(job_key(id))
            .await?
            .and_then(|item| readable(&item, Utc::now())))
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
            .set("progress", AttributeValue::Null(true))
            .set("updated_at", s(rfc3339(now)))
            .set("updated_key", s(updated_key(now, id)))
            .set("status_id", s(format!("{}#{id}", JobStatus::Running)))
            .set("due_pk", s(JobStatus::Running.as_str()))
            .set("due_us", n(micros(now)))
            .when_eq("status", s(JobStatus::Queued.as_str()))
            .when(|u| {
                let (r, d) = (u.name("run_at_us"), u.value(n(micros(due_by))));
                format!("{r} <= {d}")
            });
        let sent = u
            .send(self, job_key(id))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        if let Ok(out) = &sent {
            self.used(out.consumed_capacity());
        }
        match sent {
            Ok(out) => match out.attributes.as_ref().map(decode) {
                Some(Ok(job)) => Ok(Started::Running(Box::new(job))),
                Some(Err(reason)) => Err(StoreError::Unavailable(reason)),
                None => Err(StoreError::Unavailable("start returned no item".into())),
            },
            Err(e) => {
                let old = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
                        _ => None,
                    });
                match old {
                    // Refused: the old image came with the refusal, or (an endpoint that does
                    // not return it) is read once.
                    Some(Some(item)) => Ok(match readable(&item, now) {
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
            .set_key(Some(job_key(parent)))
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
        let mut u = Update::default();
        u.set("heartbeat_at", s(rfc3339(at)))
            .set("due_us", n(micros(at)));
        if let Some(p) = progress {
            let v = serde_json::to_value(p)
                .map_err(|e| StoreError::Rejected(format!("encode progress: {e}")))?;
            u.set("progress", to_attr(&v))
                .set("updated_at", s(rfc3339(at)))
                .set("updated_key", s(updated_key(at, id)));
        }
        u.when_eq("status", s(JobStatus::Running.as_str()))
            .when_eq("runs", n(run));
        let out = u
            .send(self, job_key(id))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify)?;
        self.used(out.consumed_capacity());
        let cancel_requested = out
            .attributes
            .as_ref()
            .and_then(|a| a.get("cancel_requested"))
            .and_then(|v| v.as_bool().ok().copied())
            .unwrap_or(false);
        Ok(Liveness { cancel_requested })
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError> {
        let mut u = Update::default();
        let tenant = query.tenant.to_string();
        let (index, sort, prefix) = match (&query.status, &query.job_type) {
            (Some(status), _) => (INDEX_BY_STATUS, "status_id", format!("{status}#")),
            (None, Some(t)) => (INDEX_BY_TYPE, "type_id", format!("{t}#")),
            (None, None) => (INDEX_BY_TENANT, "id", String::new()),
        };
        u.when_eq("tenant", s(tenant));
        match query.before {
            // (an empty string is never a valid key value: no prefix, then a plain `<`)
            Some(before) if prefix.is_empty() => {
                let (k, hi) = (u.name(sort), u.value(s(before.to_string())));
                u.when(|_| format!("{k} < {hi}"));
            }
            Some(before) => {
                let (k, lo, hi) = (
                    u.name(sort),
                    u.value(s(prefix.clone())),
                    u.value(s(format!("{prefix}{before}"))),
                );
                u.when(|_| format!("{k} BETWEEN {lo} AND {hi}"));
            }
            None if !prefix.is_empty() => {
                let (k, p) = (u.name(sort), u.value(s(prefix.clone())));
                u.when(|_| format!("begins_with({k}, {p})"));
            }
            None => {}
        }
        // With both a status and a type the status index serves, and the type is checked here.
        let (before, job_type) = (query.before, query.job_type.clone());
        self.query_jobs(
            Some(index),
            u,
            true,
            query.limit,
            move |job: &JobSummary| {
                Some(job.id) != before && job_type.as_ref().is_none_or(|t| &job.job_type == t)
            },
        )
        .await
    }

    async fn updated_since(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let mut u = Update::default();
        u.when_eq("tenant", s(tenant.to_string()));
        let (k, from) = (
            u.name("updated_key"),
            u.value(s(format!("{:020}", micros(since).max(0)))),
        );
        u.when(|_| format!("{k} >= {from}"));
        self.query_jobs(
            Some(INDEX_BY_UPDATE),
            u,
            false,
            limit.max(1),
            |_: &JobSummary| true,
        )
        .await
    }

    /// From the counter items the table's stream keeps (`counts`): eventually consistent.
    async fn stats(&self, tenant: &Tenant) -> Result<StoreStats, StoreError> {
        super::counts::Counters::new(self.client.clone(), &self.table)
            .read(tenant)
            .await
    }

    async fn append_log(
        &self,
        id: JobId,
        attempt: u32,
        at: DateTime<Utc>,
        line: &str,
    ) -> Result<(), StoreError> {
        // The line's number comes from a counter on the job item (capped: past the cap one
        // marker line is written, then nothing).
        let counted = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(id)))
            .update_expression("ADD log_count :one")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(log_count) OR log_count <= :cap)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(LOG_CAP))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify);
        let job = match counted {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(StoreError::Conflict) => return Ok(()), // gone, or past the cap
            Err(e) => return Err(e),
        };
        let seq = get_n(&job, "log_count").unwrap_or(1) as u64;
        let line = if seq > LOG_CAP {
            format!("log truncated: more than {LOG_CAP} lines")
        } else {
            line.to_string()
        };
        // Kept as long as the job: its expiry if it has one, else its retention from now.
        let retention = get_n(&job, "retention_secs").unwrap_or(7 * 24 * 3600);
        let ttl = get_n(&job, "ttl").unwrap_or(epoch_secs(at)) + retention;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(id)))
            .item("sk", s(log_sk(seq)))
            .item("seq", n(seq))
            .item("at", s(rfc3339(at)))
            .item("attempt", n(attempt))
            .item("line", s(line))
            .item("ttl", n(ttl));
        // (for live updates, which read the stream: whose line it is)
        if let Some(tenant) = get_s(&job, "tenant") {
            put = put.item("tenant", s(tenant));
        }
        put.send().await.map_err(classify)?;
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
            .expression_attribute_values(":pk", s(job_pk(id)))
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
            ("due_pk", s(DUE_BATCH)),
            (
                "due_us",
                n(micros(batch.created_at + crate::ports::BATCH_LOOK_AFTER)),
            ),
            ("ttl", n(epoch_secs(batch.created_at + BATCH_KEPT))),
        ] {
            item.insert(attr.into(), value);
        }
        self.put_job_new(item).await
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
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_DUE)
            .key_condition_expression("due_pk = :b AND due_us < :t")
            .expression_attribute_values(":b", s(DUE_BATCH))
            .expression_attribute_values(":t", n(micros(before)))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.items().iter().filter_map(decode_batch).collect())
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
        let sk = format!("STEP#{name}");
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(id)))
            .item("sk", s(&sk))
            .item("at", s(rfc3339(at)))
            .item("result", s(result.to_string()))
            .item("ttl", n(epoch_secs(keep_until)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify);
        match put {
            Ok(_) => Ok(result.clone()),
            // Recorded before (by another run): that result stands.
            Err(StoreError::Conflict) => {
                let key = HashMap::from([("pk".to_string(), s(job_pk(id))), ("sk".into(), s(sk))]);
                self.get_item(key)
                    .await?
                    .as_ref()
                    .and_then(|item| get_s(item, "result"))
                    .and_then(|text| serde_json::from_str(text).ok())
                    .ok_or_else(|| {
                        StoreError::Unavailable("a recorded step could not be read".into())
                    })
            }
            Err(e) => Err(e),
        }
    }

    async fn steps(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError> {
        let mut items = vec![];
        let mut from = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :step)")
                .expression_attribute_values(":pk", s(job_pk(id)))
                .expression_attribute_values(":step", s("STEP#"))
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
                    name: get_s(item, "sk")?.strip_prefix("STEP#")?.to_string(),
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

    async fn due(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        if status.is_terminal() {
            // Finished jobs leave the due index; DynamoDB's TTL deletes them.
            return Ok(vec![]);
        }
        let mut u = Update::default();
        u.when_eq("due_pk", s(status.as_str()));
        u.when(|u| {
            let (d, b) = (u.name("due_us"), u.value(n(micros(before))));
            format!("{d} < {b}")
        });
        self.query_jobs(Some(INDEX_DUE), u, false, limit, move |j: &Job| {
            j.status == status
        })
        .await
    }

    /// DynamoDB's TTL deletes expired items (late: reads leave them out until then).
    async fn delete_expired(&self, _now: DateTime<Utc>, _limit: usize) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl DynamoStore {
    /// A transition's conditional write (and the tenant's slot with it); the payload only when
    /// `with_payload`.
    async fn write_transition(
        &self,
        expected: Expected,
        next: &Job,
        with_payload: bool,
    ) -> Result<Transitioned, StoreError> {
        let ends = next.status.is_terminal();
        let item = job_item(next)?;
        let from_running = expected.status == JobStatus::Running;
        let mut u = Update::default();
        for (attr, value) in item {
            let worker_owned = matches!(attr.as_str(), "heartbeat_at" | "progress")
                || (attr == "due_us" && from_running && next.status == JobStatus::Running);
            if attr == "pk"
                || attr == "sk"
                || (IMMUTABLE.contains(&attr.as_str()) && !(with_payload && attr == "payload"))
                || (from_running && worker_owned)
            {
                continue;
            }
            u.set(&attr, value);
        }
        for (attr, value) in derived(next) {
            if value.is_none() {
                u.remove(attr);
            }
        }
        u.when_eq("status", s(expected.status.as_str()))
            .when_eq("attempt", n(expected.attempt))
            .when_eq("version", n(expected.version));
        if let Some(last) = expected.last_heartbeat {
            u.when_eq("due_us", n(micros(last)));
        }
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
            let mut writes = vec![u.into_transact(self, job_key(next.id))];
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
            self.transact(writes).await?;
            let mut written = Transitioned::default();
            if let Some((b, (pending, _, _))) = batch.filter(|(_, (p, _, _))| *p < 0) {
                let left = self
                    .get_item(batch_key(b))
                    .await?
                    .and_then(|item| get_n(&item, "pending"));
                if left == Some(0) {
                    written.batch_ended = Some(b);
                }
                let _ = pending;
            }
            if !ends {
                return Ok(written);
            }
            let taken = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(job_key(next.id)))
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
            .send(self, job_key(next.id))
            .set_return_values(ends.then_some(ReturnValue::AllOld))
            .send()
            .await
            .map_err(classify)?;
        self.used(out.consumed_capacity());
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
