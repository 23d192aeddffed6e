//! What ended per type and minute on DynamoDB (`domain::TypeMinute`), folded from the table's
//! stream with the counts (`counts.rs`), in the same transactions: a job's end costs no write
//! of its own; a group of changes adds to each (tenant, type, minute) it ended jobs in once.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | minute | `MIN#<tenant>` | `<minute, RFC 3339>#<type>#<spread>` | `s`, `f`, `r0`…`r16` (Numbers), `ttl` |

use super::attrs::{n, s, Item};
use crate::domain::{minute_of, Tenant, TypeMinute, HISTORY_KEPT, RUN_BUCKETS};
use crate::ports::{StoreError, TypeHistory};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;

const MINUTE_PREFIX: &str = "MIN#";

/// A job's end, as a change of the stream shows it: its tenant, type and minute, and how it
/// ended and ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub key: MinuteKey,
    succeeded: bool,
    ran_ms: Option<u64>,
}

/// (tenant, minute as stored, type).
pub type MinuteKey = (String, String, String);

impl Ended {
    /// From a change's images (each attribute's string, where it has one): a job that went
    /// from unfinished to succeeded, failed or dead. A job written finished (an import) or one
    /// cancelled is no run's end here.
    pub fn of(
        old: impl Fn(&str) -> Option<String>,
        new: impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        if !new("pk").is_some_and(|pk| pk.starts_with("J#")) {
            return None;
        }
        let succeeded = match new("status")?.as_str() {
            "succeeded" => true,
            "failed" | "dead" => false,
            _ => return None,
        };
        let was = old("status")?;
        if matches!(was.as_str(), "succeeded" | "failed" | "dead" | "cancelled") {
            return None;
        }
        let at = |name: &str| new(name)?.parse::<DateTime<Utc>>().ok();
        let finished = at("finished_at")?;
        let ran_ms = at("started_at").map(|s| (finished - s).num_milliseconds().max(0) as u64);
        Some(Self {
            key: (
                new("tenant")?,
                minute_of(finished).to_rfc3339_opts(SecondsFormat::Secs, true),
                new("type")?,
            ),
            succeeded,
            ran_ms,
        })
    }

    /// Count this end into `minutes`.
    pub fn fold(&self, minutes: &mut BTreeMap<MinuteKey, TypeMinute>) {
        minutes
            .entry(self.key.clone())
            .or_default()
            .note(self.succeeded, self.ran_ms);
    }
}

/// The writes that add `minutes` to their items (spread as the counters are).
pub fn updates(
    table: &str,
    minutes: &BTreeMap<MinuteKey, TypeMinute>,
    spread: u64,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let ttl = (Utc::now() + HISTORY_KEPT).timestamp();
    let mut out = vec![];
    for ((tenant, minute, job_type), m) in minutes {
        let mut adds = vec!["#s :s".to_string(), "#f :f".to_string()];
        let mut update = Update::builder()
            .table_name(table)
            .key("pk", s(format!("{MINUTE_PREFIX}{tenant}")))
            .key("sk", s(format!("{minute}#{job_type}#{spread}")))
            .expression_attribute_names("#s", "s")
            .expression_attribute_names("#f", "f")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":s", n(m.succeeded))
            .expression_attribute_values(":f", n(m.failed))
            .expression_attribute_values(":ttl", n(ttl));
        for (i, runs) in m.runs.iter().enumerate().filter(|(_, r)| **r > 0) {
            adds.push(format!("#r{i} :r{i}"));
            update = update
                .expression_attribute_names(format!("#r{i}"), format!("r{i}"))
                .expression_attribute_values(format!(":r{i}"), n(*runs));
        }
        let update = update
            .update_expression(format!("ADD {} SET #ttl = :ttl", adds.join(", ")))
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        out.push(TransactWriteItem::builder().update(update).build());
    }
    Ok(out)
}

fn number(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

/// `TypeHistory` on DynamoDB: the minute items, read; ends are folded from the stream, so a
/// worker tells nothing.
#[derive(Clone)]
pub struct DynamoHistory {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

#[async_trait]
impl TypeHistory for DynamoHistory {
    fn ended(&self, _: &crate::domain::Job) {}

    async fn minutes(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, String, TypeMinute)>, StoreError> {
        let from = minute_of(since).to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut summed: BTreeMap<(String, String), TypeMinute> = BTreeMap::new();
        let items = super::table::query_all(
            &self.client,
            &self.table,
            format!("{MINUTE_PREFIX}{tenant}"),
            Some(from),
        )
        .await?;
        for item in &items {
            let Some(AttributeValue::S(sk)) = item.get("sk") else {
                continue;
            };
            // (`<minute>#<type>#<spread>`: each minute's items added up)
            let mut parts = sk.rsplitn(3, '#');
            let (Some(_), Some(job_type), Some(minute)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let mut m = TypeMinute {
                succeeded: number(item, "s"),
                failed: number(item, "f"),
                runs: [0; RUN_BUCKETS],
            };
            for (i, slot) in m.runs.iter_mut().enumerate() {
                *slot = number(item, &format!("r{i}"));
            }
            summed
                .entry((minute.to_string(), job_type.to_string()))
                .or_default()
                .add(&m);
        }
        Ok(summed
            .into_iter()
            .filter_map(|((minute, job_type), m)| {
                Some((minute.parse::<DateTime<Utc>>().ok()?, job_type, m))
            })
            .collect())
    }
}
