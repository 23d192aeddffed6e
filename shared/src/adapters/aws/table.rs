//! The handle on the table every part of the DynamoDB store goes through: the client, the
//! table's name and layout, capacity metering, and the reads of a job's state item.

use super::attrs::{get_s, Item};
use super::layout::{decode_with, expired, part_key, Layout, INDEX_DUE};
use super::meter::CapacityMeter;
use super::write::classify;
use crate::domain::{Job, JobId, JobStatus};
use crate::ports::StoreError;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) layout: Layout,
    meter: Option<CapacityMeter>,
}

/// Every item under `pk` (from sort key `from` on, when given), page after page: for the small
/// partitions read whole (a tenant's counters, its minutes).
pub(super) async fn query_all(
    client: &Client,
    table: &str,
    pk: String,
    from: Option<String>,
) -> Result<Vec<Item>, StoreError> {
    let mut items = vec![];
    let mut start = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(pk.clone()),
            )
            .set_exclusive_start_key(start.take());
        query = match &from {
            Some(from) => query
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(
                    ":from",
                    aws_sdk_dynamodb::types::AttributeValue::S(from.clone()),
                ),
            None => query.key_condition_expression("pk = :pk"),
        };
        let out = query.send().await.map_err(classify)?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => return Ok(items),
        }
    }
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
    pub(super) fn due_keys(
        &self,
        id: JobId,
        statuses: &[JobStatus],
    ) -> Vec<(&'static str, String)> {
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
    pub(super) async fn job_of(
        &self,
        item: &Item,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
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
}
