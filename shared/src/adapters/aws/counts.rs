//! A tenant's job counts on DynamoDB: counter items kept from the table's stream, so `stats`
//! is one Query of a few items, never a read of the jobs.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | count | `COUNT#<tenant>` | `<type>#<status>` | `n` (a Number) |
//! | stream position (local reader) | `STREAM` | `<shard id>` | `seq` |
//!
//! Each change of a job item's status moves one from its old counter to its new one (a new job
//! adds one, a job deleted by TTL takes one away). A batch of changes is folded into one
//! `TransactWriteItems` per (at most) [`MAX_COUNTERS`] counters, with a token derived from the
//! batch, so the same batch delivered again within DynamoDB's ten minutes does not count
//! twice; the local reader also moves its stream position in the same transaction. Counts are
//! eventually consistent: they lag the jobs by the stream's delay, and a job expired but not yet
//! deleted by TTL is still counted.
//!
//! On AWS the `stats` function reads the stream (an event-source mapping; [`handle_stream_event`]);
//! locally, and in tests, [`StreamReader`] reads it through the DynamoDB Streams API.

use super::minutes::{Ended, MinuteKey};
use super::write::classify;
use crate::domain::{JobStatus, Tenant, TypeMinute};
use crate::ports::{StatsRow, StoreError, StoreStats};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::Mutex;

/// Counters one transaction changes (DynamoDB allows 100 items; one is kept for the position).
pub const MAX_COUNTERS: usize = 99;

const COUNT_PREFIX: &str = "COUNT#";
const STREAM_PK: &str = "STREAM";

/// What a job item counts toward.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Counted {
    tenant: String,
    job_type: String,
    status: String,
}

impl Counted {
    /// From an item's string attributes; `None` for items that are not jobs.
    fn of(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        if !get("pk").is_some_and(|pk| pk.starts_with("J#")) {
            return None;
        }
        Some(Self {
            tenant: get("tenant")?,
            job_type: get("type")?,
            status: get("status")?,
        })
    }
}

/// One record of the table's stream, as far as counts go.
#[derive(Debug, Clone)]
pub struct Change {
    pub sequence: String,
    old: Option<Counted>,
    new: Option<Counted>,
    /// The job's end, when this change ended it (`minutes.rs`).
    ended: Option<Ended>,
}

impl Change {
    /// A record as Lambda delivers it (attribute values in DynamoDB JSON).
    pub fn from_lambda(record: &Value) -> Option<Self> {
        let d = record.get("dynamodb")?;
        let image = |name: &'static str| {
            move |f: &str| Some(d.get(name)?.get(f)?.get("S")?.as_str()?.to_string())
        };
        let (old, new) = (image("OldImage"), image("NewImage"));
        Some(Self {
            sequence: d.get("SequenceNumber")?.as_str()?.to_string(),
            old: Counted::of(old),
            new: Counted::of(new),
            ended: Ended::of(old, new),
        })
    }

    fn from_stream(record: &aws_sdk_dynamodbstreams::types::Record) -> Option<Self> {
        use aws_sdk_dynamodbstreams::types::AttributeValue as A;
        let d = record.dynamodb()?;
        fn attribute(image: Option<&HashMap<String, A>>, f: &str) -> Option<String> {
            match image?.get(f)? {
                A::S(s) => Some(s.clone()),
                _ => None,
            }
        }
        let old = |f: &str| attribute(d.old_image(), f);
        let new = |f: &str| attribute(d.new_image(), f);
        Some(Self {
            sequence: d.sequence_number()?.to_string(),
            old: Counted::of(old),
            new: Counted::of(new),
            ended: Ended::of(old, new),
        })
    }

    /// What the change does to the counters: nothing unless the status (or the item) changed.
    fn deltas(&self) -> Vec<(Counted, i64)> {
        if self.old == self.new {
            return vec![];
        }
        let mut out = vec![];
        if let Some(old) = &self.old {
            out.push((old.clone(), -1));
        }
        if let Some(new) = &self.new {
            out.push((new.clone(), 1));
        }
        out
    }
}

/// Where the local reader is in one shard, written in the same transaction as the counts.
#[derive(Debug, Clone)]
struct Position {
    shard: String,
    /// The last sequence number counted, as stored (`None`: nothing stored yet).
    stored: Option<String>,
}

/// The counter items of one table.
#[derive(Clone)]
pub struct Counters {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Where the write units of counting go (the bench).
    meter: Option<super::meter::CapacityMeter>,
}

/// Items each counter is spread over: a group of changes adds to one of them (chosen by the
/// group), so readers of the stream running at once (one a stream shard) seldom write the same
/// item; a read adds them up.
const COUNTER_SPREAD: u64 = 4;

/// Changes not applied: the first one's sequence number (from there the batch is retried).
#[derive(Debug, thiserror::Error)]
#[error("counting from {from}: {error}")]
pub struct NotCounted {
    pub from: String,
    pub error: StoreError,
}

impl Counters {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            meter: None,
        }
    }

    /// Also add up the write units counting costs on `meter`.
    pub fn with_meter(self, meter: super::meter::CapacityMeter) -> Self {
        Self {
            meter: Some(meter),
            ..self
        }
    }

    /// Count `changes`, in order, a transaction per [`MAX_COUNTERS`] counters.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), NotCounted> {
        self.apply_at(changes, None).await.map(|_| ())
    }

    /// `apply`, moving `position` to the last change counted (in the same transactions).
    async fn apply_at(
        &self,
        changes: &[Change],
        mut position: Option<&mut Position>,
    ) -> Result<(), NotCounted> {
        let mut start = 0;
        while start < changes.len() {
            let mut deltas: BTreeMap<Counted, i64> = BTreeMap::new();
            let mut minutes: BTreeMap<MinuteKey, TypeMinute> = BTreeMap::new();
            let mut end = start;
            while end < changes.len() {
                let d = changes[end].deltas();
                let ended = changes[end].ended.as_ref();
                let new_keys = d.iter().filter(|(k, _)| !deltas.contains_key(k)).count()
                    + ended.is_some_and(|e| !minutes.contains_key(&e.key)) as usize;
                if end > start && deltas.len() + minutes.len() + new_keys > MAX_COUNTERS {
                    break;
                }
                for (k, v) in d {
                    *deltas.entry(k).or_default() += v;
                }
                if let Some(e) = ended {
                    e.fold(&mut minutes);
                }
                end += 1;
            }
            deltas.retain(|_, v| *v != 0);
            let group = &changes[start..end];
            self.write(&deltas, &minutes, group, position.as_deref_mut())
                .await
                .map_err(|error| NotCounted {
                    from: changes[start].sequence.clone(),
                    error,
                })?;
            start = end;
        }
        Ok(())
    }

    async fn write(
        &self,
        deltas: &BTreeMap<Counted, i64>,
        minutes: &BTreeMap<MinuteKey, TypeMinute>,
        group: &[Change],
        position: Option<&mut Position>,
    ) -> Result<(), StoreError> {
        // A group that changes no count moves nothing, not even the position: the reader goes
        // on from memory, and after a restart reads those changes again, to no effect.
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        if deltas.is_empty() && minutes.is_empty() {
            return Ok(());
        }
        let mut items = vec![];
        let spread = first
            .sequence
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
            % COUNTER_SPREAD;
        let mut keys = vec![];
        for (c, n) in deltas {
            keys.push(format!("{COUNT_PREFIX}{}", c.tenant));
            let update = Update::builder()
                .table_name(&self.table)
                .key(
                    "pk",
                    AttributeValue::S(format!("{COUNT_PREFIX}{}", c.tenant)),
                )
                .key(
                    "sk",
                    AttributeValue::S(format!("{}#{}#{spread}", c.job_type, c.status)),
                )
                .update_expression("ADD #n :d")
                .expression_attribute_names("#n", "n")
                .expression_attribute_values(":d", AttributeValue::N(n.to_string()))
                .build()
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        items.extend(super::minutes::updates(&self.table, minutes, spread)?);
        if let Some(p) = &position {
            let mut update = Update::builder()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(STREAM_PK.into()))
                .key("sk", AttributeValue::S(p.shard.clone()))
                .update_expression("SET #seq = :seq")
                .expression_attribute_names("#seq", "seq")
                .expression_attribute_values(":seq", AttributeValue::S(last.sequence.clone()));
            update = match &p.stored {
                Some(prev) => update
                    .condition_expression("#seq = :prev")
                    .expression_attribute_values(":prev", AttributeValue::S(prev.clone())),
                None => update.condition_expression("attribute_not_exists(#seq)"),
            };
            let update = update
                .build()
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        // The same group delivered again (a retried batch) carries the same token: DynamoDB
        // answers it without applying it twice.
        let token = hex::encode(Sha256::digest(format!(
            "{}|{}|{}",
            self.table, first.sequence, last.sequence
        )));
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(&token[..36])
            .set_return_consumed_capacity(
                self.meter
                    .as_ref()
                    .map(|_| aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total),
            )
            .send()
            .await
            .map_err(classify)?;
        if let Some(meter) = &self.meter {
            for c in out.consumed_capacity() {
                meter.record("counts", &keys, &[], Some(c));
            }
        }
        if let Some(p) = position {
            p.stored = Some(last.sequence.clone());
        }
        Ok(())
    }

    /// A tenant's counts (those above zero), by type and status.
    pub async fn read(&self, tenant: &Tenant) -> Result<StoreStats, StoreError> {
        // (by `<type>#<status>`, the order the items are read in)
        let mut summed: BTreeMap<(String, String), (JobStatus, i64)> = BTreeMap::new();
        let items = super::table::query_all(
            &self.client,
            &self.table,
            format!("{COUNT_PREFIX}{tenant}"),
            None,
        )
        .await?;
        for item in &items {
            let (Some(AttributeValue::S(sk)), Some(AttributeValue::N(n))) =
                (item.get("sk"), item.get("n"))
            else {
                continue;
            };
            // (`<type>#<status>#<spread>`: each counter's items added up)
            let mut parts = sk.rsplitn(3, '#');
            let (Some(_), Some(status), Some(job_type)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Some(status), Ok(count)) = (JobStatus::parse(status), n.parse::<i64>()) else {
                continue;
            };
            summed
                .entry((job_type.to_string(), status.as_str().to_string()))
                .or_insert((status, 0))
                .1 += count;
        }
        let rows = summed
            .into_iter()
            .filter(|(_, (_, count))| *count > 0)
            .map(|((job_type, _), (status, count))| StatsRow {
                job_type,
                status,
                count: count as u64,
            })
            .collect();
        Ok(StoreStats {
            rows,
            quarantined: 0,
        })
    }
}

/// The `stats` function's handler: a batch of stream records from the event-source mapping,
/// counted; the answer reports the first record not counted (and so every one after it) as
/// failed, for the mapping's `ReportBatchItemFailures`.
///
/// First, the messages of the jobs the records show queued go out through `outbox` (the
/// table's outbox: see `Dispatch::FromStream`); if they cannot, the whole batch is reported
/// failed, to come again (a message sent twice starts its job once).
pub async fn handle_stream_event(
    counters: &Counters,
    outbox: Option<&dyn crate::ports::Outbox>,
    event: &Value,
) -> Value {
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(outbox) = outbox {
        let queued: Vec<crate::domain::Job> = records
            .iter()
            .filter_map(|r| {
                let (old, new) = super::live::images_of_lambda_record(r);
                super::layout::queued_by(old.as_ref(), new.as_ref())
            })
            .collect();
        if let Err(e) = outbox.send(&queued).await {
            tracing::warn!(error = %e, "queued jobs' messages not sent; the batch comes again");
            let first = records
                .first()
                .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
                .unwrap_or_default();
            return json!({ "batchItemFailures": [{ "itemIdentifier": first }] });
        }
    }
    let changes: Vec<Change> = records.iter().filter_map(Change::from_lambda).collect();
    match counters.apply(&changes).await {
        Ok(()) => json!({ "batchItemFailures": [] }),
        Err(e) => {
            tracing::warn!(error = %e, "stream records not counted; the batch is retried from there");
            json!({ "batchItemFailures": [{ "itemIdentifier": e.from }] })
        }
    }
}

/// Reads the table's stream through the DynamoDB Streams API and counts what it reads: what
/// the event-source mapping does on AWS, for the local runtime and the tests. Its position in
/// each shard is kept in the table, so a restart neither skips nor recounts; each read starts
/// from that position with a new iterator (an iterator lives 15 minutes, and one kept across
/// reads would outlive a table an emulator restores after a failed transaction).
pub struct StreamReader {
    counters: Counters,
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    /// Per shard: the stored position, as last read or written.
    shards: Mutex<HashMap<String, Position>>,
    /// The stream's ARN and shards, as last described (again after `DESCRIBED_FOR`, or a
    /// failed read): what every read would otherwise ask for twice.
    described: std::sync::Mutex<Option<(String, Vec<String>, std::time::Instant)>>,
    /// Where the job changes read are announced (the local runtime's live updates).
    feed: Option<std::sync::Arc<crate::live::ChangeFeed>>,
    /// Per shard, the last record announced: a read again from an older stored position (the
    /// position moves only with counts) announces nothing twice.
    announced: std::sync::Mutex<HashMap<String, String>>,
    /// Where the messages of jobs the records show queued are sent (the table's outbox).
    outbox: Option<std::sync::Arc<dyn crate::ports::Outbox>>,
    /// Per shard, the last record whose messages went out (likewise, none are sent twice by
    /// this reader; after a restart, those past the stored position are sent again).
    dispatched: std::sync::Mutex<HashMap<String, String>>,
}

/// How long a description of the stream (its shards) is used before it is asked for again.
const DESCRIBED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// `a` comes after `b` in a shard (sequence numbers are decimal strings of any length).
fn later(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

impl StreamReader {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: impl Into<String>,
    ) -> Self {
        let table = table.into();
        Self {
            counters: Counters::new(dynamodb.clone(), table.clone()),
            dynamodb,
            streams,
            table,
            shards: Mutex::new(HashMap::new()),
            feed: None,
            announced: Default::default(),
            outbox: None,
            dispatched: Default::default(),
            described: Default::default(),
        }
    }

    /// Also add up the write units counting costs on `meter` (the bench).
    pub fn with_meter(self, meter: super::meter::CapacityMeter) -> Self {
        Self {
            counters: self.counters.clone().with_meter(meter),
            ..self
        }
    }

    /// Also send the messages of the jobs the records show queued, through `outbox`, before
    /// counting them.
    pub fn with_outbox(self, outbox: std::sync::Arc<dyn crate::ports::Outbox>) -> Self {
        Self {
            outbox: Some(outbox),
            ..self
        }
    }

    /// Also announce each job change read on `feed`, once counted.
    pub fn with_feed(self, feed: std::sync::Arc<crate::live::ChangeFeed>) -> Self {
        Self {
            feed: Some(feed),
            ..self
        }
    }

    /// Read and count every record there is now; how many records were read. Where reading
    /// fails (an iterator expired, another reader moved the stored position), it starts once
    /// more from the stored positions.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut shards = self.shards.lock().await;
        match self.read_all(&mut shards).await {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::debug!(error = %e, "reading the stream again from the stored positions");
                shards.clear();
                *self.described.lock().unwrap() = None;
                let again = self.read_all(&mut shards).await;
                if again.is_err() {
                    shards.clear();
                }
                again
            }
        }
    }

    /// The stream's ARN and shard ids: described again when the last description is older
    /// than `DESCRIBED_FOR`.
    async fn describe(&self) -> Result<(String, Vec<String>), StoreError> {
        if let Some((arn, ids, at)) = self.described.lock().unwrap().clone() {
            if at.elapsed() < DESCRIBED_FOR {
                return Ok((arn, ids));
            }
        }
        let table = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(classify)?;
        let Some(arn) = table.table().and_then(|t| t.latest_stream_arn()) else {
            return Err(StoreError::Rejected(format!(
                "table {} has no stream",
                self.table
            )));
        };
        let stream = self
            .streams
            .describe_stream()
            .stream_arn(arn)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(stream_error(e)))?;
        let ids: Vec<String> = stream
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        *self.described.lock().unwrap() =
            Some((arn.to_string(), ids.clone(), std::time::Instant::now()));
        Ok((arn.to_string(), ids))
    }

    async fn read_all(&self, shards: &mut HashMap<String, Position>) -> Result<usize, StoreError> {
        let (arn, ids) = self.describe().await?;
        let arn = arn.as_str();
        let mut read = 0;
        for shard in ids {
            if !shards.contains_key(&shard) {
                let stored = self.stored_position(&shard).await?;
                shards.insert(
                    shard.clone(),
                    Position {
                        shard: shard.clone(),
                        stored,
                    },
                );
            }
            let Some(position) = shards.get_mut(&shard) else {
                continue;
            };
            let mut iterator = self
                .iterator(arn, &shard, position.stored.as_deref())
                .await?;
            while let Some(it) = iterator.take() {
                let out = self
                    .streams
                    .get_records()
                    .shard_iterator(it)
                    .limit(1000)
                    .send()
                    .await
                    .map_err(|e| StoreError::Unavailable(stream_error(e)))?;
                self.dispatch(&shard, out.records()).await?;
                let changes: Vec<Change> = out
                    .records()
                    .iter()
                    .filter_map(Change::from_stream)
                    .collect();
                self.counters
                    .apply_at(&changes, Some(position))
                    .await
                    .map_err(|e| e.error)?;
                if let Some(feed) = &self.feed {
                    let mut announced = self.announced.lock().unwrap();
                    for record in out.records() {
                        let Some(seq) = record.dynamodb().and_then(|d| d.sequence_number()) else {
                            continue;
                        };
                        if announced.get(&shard).is_some_and(|last| !later(seq, last)) {
                            continue;
                        }
                        announced.insert(shard.clone(), seq.to_string());
                        if let Some(change) = super::live::change_of_stream_record(record) {
                            feed.publish(change);
                        }
                    }
                }
                read += out.records().len();
                if !out.records().is_empty() {
                    iterator = out.next_shard_iterator().map(str::to_string);
                }
            }
        }
        Ok(read)
    }

    /// Send the messages of the jobs `records` show queued (those not sent from this shard
    /// before); an error leaves them to the next read.
    async fn dispatch(
        &self,
        shard: &str,
        records: &[aws_sdk_dynamodbstreams::types::Record],
    ) -> Result<(), StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let last = self.dispatched.lock().unwrap().get(shard).cloned();
        let mut queued = vec![];
        let mut newest = None;
        for record in records {
            let Some(seq) = record.dynamodb().and_then(|d| d.sequence_number()) else {
                continue;
            };
            if last.as_deref().is_some_and(|l| !later(seq, l)) {
                continue;
            }
            newest = Some(seq.to_string());
            if let Some((old, new)) = super::live::images_of_stream_record(record) {
                queued.extend(super::layout::queued_by(old.as_ref(), new.as_ref()));
            }
        }
        outbox
            .send(&queued)
            .await
            .map_err(|e| StoreError::Unavailable(format!("sending queued jobs' messages: {e}")))?;
        if let Some(seq) = newest {
            self.dispatched
                .lock()
                .unwrap()
                .insert(shard.to_string(), seq);
        }
        Ok(())
    }

    async fn stored_position(&self, shard: &str) -> Result<Option<String>, StoreError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(STREAM_PK.into()))
            .key("sk", AttributeValue::S(shard.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(match out.item().and_then(|i| i.get("seq")) {
            Some(AttributeValue::S(seq)) => Some(seq.clone()),
            _ => None,
        })
    }

    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        after: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType;
        let mut request = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard);
        request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(stream_error(e)))?;
        Ok(out.shard_iterator().map(str::to_string))
    }
}

fn stream_error<E: std::error::Error + 'static>(e: E) -> String {
    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: &str, old: Option<&str>, new: Option<&str>) -> Value {
        let image = |status: &str| {
            json!({ "pk": {"S": "J#0001#00"}, "sk": {"S": "01J0000000000000000000000A"}, "tenant": {"S": "acme"},
                    "type": {"S": "noop"}, "status": {"S": status} })
        };
        let mut d = json!({ "SequenceNumber": seq });
        if let Some(s) = old {
            d["OldImage"] = image(s);
        }
        if let Some(s) = new {
            d["NewImage"] = image(s);
        }
        json!({ "eventName": "MODIFY", "dynamodb": d })
    }

    fn deltas(v: &Value) -> Vec<(String, i64)> {
        Change::from_lambda(v)
            .unwrap()
            .deltas()
            .into_iter()
            .map(|(c, n)| (c.status, n))
            .collect()
    }

    #[test]
    fn a_status_change_moves_one_count_and_other_changes_move_none() {
        assert_eq!(
            deltas(&record("1", None, Some("queued"))),
            [("queued".into(), 1)]
        );
        assert_eq!(
            deltas(&record("2", Some("queued"), Some("running"))),
            [("queued".into(), -1), ("running".into(), 1)]
        );
        assert!(deltas(&record("3", Some("running"), Some("running"))).is_empty());
        assert_eq!(
            deltas(&record("4", Some("succeeded"), None)),
            [("succeeded".into(), -1)]
        );
    }

    #[test]
    fn items_that_are_not_jobs_count_for_nothing() {
        let mut v = record("1", Some("queued"), Some("running"));
        v["dynamodb"]["OldImage"]["pk"] = json!({"S": "L#01J0000000000000000000000A"});
        v["dynamodb"]["NewImage"]["pk"] = json!({"S": "L#01J0000000000000000000000A"});
        assert!(deltas(&v).is_empty());
        assert!(Change::from_lambda(&json!({"dynamodb": {}})).is_none());
    }
}
