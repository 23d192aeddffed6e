//! Batches on the jobs table: the batch as opened, and its counts spread over items of their own.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | batch | `BATCH#<id>` | `BATCH` | `doc` (as opened), `callbacks`, `finished_at`; in the `due` index (`batch#<shard>`) until it ends |
//! | its counts | `BATCH#<id>` | `C#<k>`, k < `BATCH_SPREAD` | `total`, `pending`, and a number per status |
//! | a group of its members | `BM#<id>` | `<first member's id>` | `ids` (the members written together, in id order, separated by spaces), `ttl` |
//!
//! A member's creation and its end each add to the count item its id names, in the write that
//! creates or ends it: members ending at once write different items (DynamoDB cancels
//! transactions that change one item at the same moment), and the batch's counts are the sum
//! of its count items, read in one Query.
//!
//! A member is listed in the write that creates it too: the members one transaction creates
//! make one group item (about 27 bytes a member, written once: a batch of 1,000 adds about 30
//! write units in all, not one per member), read back group by group in `batch_members`.

use super::attrs::{get_n, get_s, n, s, Item};
use super::layout::{decode, expired, micros};
use super::table::DynamoStore;
use super::write::{classify, rfc3339, Update};
use crate::domain::{Batch, BatchId, JobId, JobStatus, JobSummary, MemberPosition, MembersPage};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::TransactWriteItem;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};

/// Items a batch's counts are spread over.
pub const BATCH_SPREAD: u64 = 8;
/// How long a batch is kept after it was opened.
const BATCH_KEPT: chrono::Duration = chrono::Duration::days(30);
const STATUSES: &[&str] = &["succeeded", "failed", "dead", "cancelled"];

fn batch_pk(id: BatchId) -> String {
    format!("BATCH#{id}")
}

fn key(id: BatchId, sk: String) -> Item {
    HashMap::from([("pk".into(), s(batch_pk(id))), ("sk".into(), s(sk))])
}

pub fn batch_key(id: BatchId) -> Item {
    key(id, "BATCH".into())
}

fn members_pk(id: BatchId) -> String {
    format!("BM#{id}")
}

/// Members' state items read at once by `batch_members`.
const MEMBERS_READ_AT_ONCE: usize = 16;

/// The count item a member adds to.
fn count_key(id: BatchId, member: JobId) -> Item {
    key(id, format!("C#{}", member.spread() % BATCH_SPREAD))
}

/// A batch from its items: the batch as opened, with the sum of its counts.
fn decode_batch(items: &[Item]) -> Option<Batch> {
    let main = items.iter().find(|i| get_s(i, "sk") == Some("BATCH"))?;
    let mut b: Batch = serde_json::from_str(get_s(main, "doc")?).ok()?;
    let sum = |attr: &str| {
        items
            .iter()
            .filter(|i| get_s(i, "sk").is_some_and(|sk| sk.starts_with("C#")))
            .map(|i| get_n(i, attr).unwrap_or(0))
            .sum::<i64>()
            .max(0) as u64
    };
    (
        b.total,
        b.pending,
        b.succeeded,
        b.failed,
        b.dead,
        b.cancelled,
    ) = (
        sum("total"),
        sum("pending"),
        sum("succeeded"),
        sum("failed"),
        sum("dead"),
        sum("cancelled"),
    );
    if let Some(c) = get_s(main, "callbacks").and_then(|c| serde_json::from_str(c).ok()) {
        b.callbacks = c;
    }
    b.finished_at = get_s(main, "finished_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(b)
}

/// A change of a batch's counts: members added (`pending`, `total`) or ended (`pending`, and
/// one more of their status).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountChange {
    pub pending: i64,
    pub total: i64,
    pub ended: Option<(JobStatus, i64)>,
}

impl CountChange {
    /// A member added to its batch.
    pub fn new_member() -> Self {
        Self {
            pending: 1,
            total: 1,
            ended: None,
        }
    }
}

impl DynamoStore {
    /// The writes that count `members` in `batch` (in the transaction that writes them): one
    /// to each count item their ids name.
    pub(super) fn batch_writes(
        &self,
        batch: BatchId,
        members: &[(JobId, CountChange)],
    ) -> Vec<TransactWriteItem> {
        let mut by_item: BTreeMap<u64, (JobId, CountChange)> = BTreeMap::new();
        for (member, change) in members {
            let entry = by_item
                .entry(member.spread() % BATCH_SPREAD)
                .or_insert((*member, CountChange::default()));
            entry.1.pending += change.pending;
            entry.1.total += change.total;
            if let Some((status, by)) = change.ended {
                let (_, n) = entry.1.ended.get_or_insert((status, 0));
                *n += by;
            }
        }
        by_item
            .into_values()
            .map(|(member, change)| self.count_write(batch, member, change))
            .collect()
    }

    /// The write that lists `members`, new in the same transaction, among `batch`'s: one group
    /// item (`None` for none).
    pub(super) fn members_write(
        &self,
        batch: BatchId,
        members: impl IntoIterator<Item = JobId>,
    ) -> Option<TransactWriteItem> {
        let mut ids: Vec<JobId> = members.into_iter().collect();
        ids.sort();
        let first = *ids.first()?;
        let mut item = HashMap::from([
            ("pk".to_string(), s(members_pk(batch))),
            ("sk".to_string(), s(first.to_string())),
        ]);
        let joined: Vec<String> = ids.iter().map(JobId::to_string).collect();
        item.insert("ids".into(), s(joined.join(" ")));
        item.insert("ttl".into(), n((Utc::now() + BATCH_KEPT).timestamp()));
        Some(self.put_new(item))
    }

    /// Up to `limit` members from `from`: the group items from `from`'s on, then each member's
    /// state item (read 16 at once).
    pub(super) async fn member_page(
        &self,
        id: BatchId,
        from: Option<MemberPosition>,
        limit: usize,
    ) -> Result<MembersPage, StoreError> {
        let (limit, now) = (limit.max(1), Utc::now());
        let mut ids = vec![];
        let mut next = None;
        let mut start = None;
        'groups: loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(members_pk(id)))
                .set_exclusive_start_key(start.take());
            query = match from {
                Some(p) => query
                    .key_condition_expression("pk = :pk AND sk >= :g")
                    .expression_attribute_values(":g", s(p.group.to_string())),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query.send().await.map_err(classify)?;
            for item in out.items().iter().filter(|i| !expired(i, now)) {
                let Some(group) = get_s(item, "sk").and_then(|g| JobId::parse(g).ok()) else {
                    continue;
                };
                let skip = from.filter(|p| p.group == group).map_or(0, |p| p.taken);
                let members = get_s(item, "ids").unwrap_or_default().split(' ');
                for (taken, member) in members.enumerate().skip(skip as usize) {
                    if ids.len() == limit {
                        next = Some(MemberPosition {
                            group,
                            taken: taken as u32,
                        });
                        break 'groups;
                    }
                    ids.extend(JobId::parse(member).ok());
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        let items: Vec<_> = futures::stream::iter(ids)
            .map(|member| self.get_item(self.layout.job_key(member)))
            .buffered(MEMBERS_READ_AT_ONCE)
            .collect()
            .await;
        let mut jobs = vec![];
        for item in items {
            let Some(item) = item?.filter(|i| !expired(i, now)) else {
                continue; // (expired, and gone)
            };
            match decode::<JobSummary>(&item) {
                Ok(job) => jobs.push(job),
                Err(reason) => {
                    tracing::error!(pk = super::table::pk_of(&item), %reason, "a job item cannot be read; left out");
                }
            }
        }
        Ok(MembersPage { jobs, next })
    }

    fn count_write(&self, batch: BatchId, member: JobId, change: CountChange) -> TransactWriteItem {
        let mut u = Update::default();
        let mut adds = vec![];
        for (attr, by) in [("pending", change.pending), ("total", change.total)]
            .into_iter()
            .chain(change.ended.map(|(status, by)| (status.as_str(), by)))
        {
            if by != 0 {
                let (name, value) = (u.name(attr), u.value(n(by)));
                adds.push(format!("{name} {value}"));
            }
        }
        // (the count items are made with the batch: a batch that was never opened refuses)
        u.when(|u| format!("attribute_exists({})", u.name("pk")));
        let mut update = u.into_transact(&self.table, count_key(batch, member));
        if let Some(up) = update.update.as_mut() {
            up.update_expression = format!("ADD {}", adds.join(", "));
        }
        update
    }

    /// The batch and its count items, made at once.
    pub(super) async fn open_batch_items(&self, batch: &Batch) -> Result<(), StoreError> {
        let doc = serde_json::to_string(batch).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let ttl = (batch.created_at + BATCH_KEPT).timestamp();
        let mut main = batch_key(batch.id);
        for (attr, value) in [
            ("tenant", s(batch.tenant.as_str())),
            ("doc", s(doc)),
            ("due_pk", s(self.layout.batch_due_pk(batch.id))),
            (
                "due_us",
                n(micros(batch.created_at + crate::ports::BATCH_LOOK_AFTER)),
            ),
            ("ttl", n(ttl)),
        ] {
            main.insert(attr.into(), value);
        }
        let mut items = vec![main];
        for k in 0..BATCH_SPREAD {
            let mut count = key(batch.id, format!("C#{k}"));
            count.insert("total".into(), n(0));
            count.insert("pending".into(), n(0));
            for status in STATUSES {
                count.insert(status.to_string(), n(0));
            }
            count.insert("ttl".into(), n(ttl));
            items.push(count);
        }
        let writes = items.into_iter().map(|i| self.put_new(i)).collect();
        self.transact_retrying(writes).await
    }

    /// The batch with its counts summed, read consistently.
    pub(super) async fn read_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(batch_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(decode_batch(out.items()))
    }

    pub(super) async fn finish_batch_item(
        &self,
        id: BatchId,
        callbacks: &BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let callbacks =
            serde_json::to_string(callbacks).map_err(|e| StoreError::Rejected(e.to_string()))?;
        self.update_open_batch(
            id,
            "SET callbacks = :c, finished_at = :f REMOVE due_pk",
            vec![(":c", s(callbacks)), (":f", s(rfc3339(at)))],
        )
        .await
    }

    /// `expression` on a batch that has not ended (one that has is left as it is).
    async fn update_open_batch(
        &self,
        id: BatchId,
        expression: &str,
        values: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(batch_key(id)))
            .update_expression(expression)
            .condition_expression("attribute_exists(due_pk)");
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        match update.send().await.map_err(classify) {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Unfinished batches due a look before `before` (from every shard of the `due` index).
    pub(super) async fn due_batch_list(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        let pks: Vec<String> = (0..self.layout.shards)
            .map(|shard| self.layout.batch_due_pk_of(shard))
            .collect();
        let keys = self.due_keys_before(pks, before, limit).await?;
        let mut batches = vec![];
        for key in keys {
            let Some(id) = get_s(&key, "pk")
                .and_then(|pk| pk.strip_prefix("BATCH#"))
                .and_then(|id| BatchId::parse(id).ok())
            else {
                continue;
            };
            if let Some(b) = self.read_batch(id).await? {
                if b.finished_at.is_none() {
                    batches.push(b);
                }
            }
        }
        Ok(batches)
    }

    pub(super) async fn recheck_batch_item(
        &self,
        id: BatchId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_open_batch(id, "SET due_us = :t", vec![(":t", n(micros(at)))])
            .await
    }
}
