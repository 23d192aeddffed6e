//! How the store reads across shards: a tenant's listing, every shard of its bucket merged by
//! id, and the `due` index's entries, every shard merged by when they are due.

use super::attrs::{get_n, n, s, Item};
use super::layout::{decode, expired, micros, INDEX_DUE};
use super::table::{pk_of, DynamoStore};
use super::write::{classify, Update};
use crate::domain::{JobId, JobSummary};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;

/// Shards queried at once by a listing.
const SHARDS_AT_ONCE: usize = 32;

impl DynamoStore {
    /// Query every shard of `bucket` newest first (each from below `before`, with `filter`),
    /// merged by id: the first `limit` readable summaries. Each shard is read a page at a time,
    /// only while its next item could be among them.
    pub(super) async fn list_shards(
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
        let page = (limit / self.layout.shards as usize)
            .saturating_add(2)
            .clamp(4, 1000) as i32;
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
    /// The table keys of the `due` index's entries under `pks` due before `before`, oldest
    /// first, at most `limit`.
    pub(super) async fn due_keys_before(
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
