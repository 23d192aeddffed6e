//! `KeyStore` and `AuditLog` on the jobs table.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | API key | `KEYS` | `KEY#<id>` | `doc` (the key as JSON, its secret only as a digest), `revoked` |
//! | audit entry | `AUDIT#<tenant or ->#<yyyy-mm-dd>` | `<entry id, a ULID>` | `doc`, `ttl` |
//! | tenant limits | `LIMITS` | `<tenant>` | `doc` |
//! | webhook key generations | `WEBHOOK` | `<tenant>` | `doc` (generation numbers; no secret) |
//! | active jobs | `QUOTA#<tenant>` | `ACTIVE` | `active`: unfinished jobs holding a slot |
//! | submissions in a second | `RATE#<tenant>` | `<unix second>` | `n`, `ttl` (a minute on) |
//! | paused type | `PAUSES` | `<tenant or *>#<type>` | `since`, `by` (`pauses.rs`) |
//!
//! Neither carries `tenant` or `id` as attributes of their own, so no job index ever holds them.
//! Keys share one partition: they are few, read by key (strongly consistent, so a revoked key
//! is refused at once) and listed by an admin. The audit trail has a partition per tenant and
//! day, read from `since` to today.

use super::attrs::{get_s, s, Item};
use super::write::classify;
use crate::domain::{Admission, ApiKey, AuditEntry, Tenant, TenantLimits, WebhookGenerations};
use crate::ports::{AuditLog, AuditQuery, Created, KeyStore, StoreError, TenantStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;

const KEYS_PK: &str = "KEYS";

fn key_sk(id: &str) -> String {
    format!("KEY#{id}")
}

fn audit_pk(tenant: Option<&Tenant>, day: NaiveDate) -> String {
    let tenant = tenant.map_or("-".to_string(), |t| t.to_string());
    format!("AUDIT#{tenant}#{}", day.format("%Y-%m-%d"))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Rejected(format!("encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let doc =
        get_s(item, "doc").ok_or_else(|| StoreError::Unavailable("item has no doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Unavailable(format!("unreadable item: {e}")))
}

/// An audit entry's item (also written by a job's creation, in its transaction).
pub(super) fn audit_item(entry: &AuditEntry) -> Result<Item, StoreError> {
    Ok(HashMap::from([
        (
            "pk".to_string(),
            s(audit_pk(entry.tenant.as_ref(), entry.at.date_naive())),
        ),
        ("sk".to_string(), s(entry.id.clone())),
        ("doc".to_string(), s(encode(entry)?)),
        (
            "ttl".to_string(),
            AttributeValue::N(entry.expires_at.timestamp().to_string()),
        ),
    ]))
}

fn key_item(key: &ApiKey) -> Result<Item, StoreError> {
    Ok(HashMap::from([
        ("pk".to_string(), s(KEYS_PK)),
        ("sk".to_string(), s(key_sk(&key.id))),
        ("doc".to_string(), s(encode(key)?)),
        (
            "revoked".to_string(),
            AttributeValue::Bool(key.revoked_at.is_some()),
        ),
    ]))
}

fn quota_key(tenant: &Tenant) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("QUOTA#{tenant}"))),
        ("sk".to_string(), s("ACTIVE")),
    ])
}

fn num(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The limit a transaction item stands for: what a creation refused by it answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Limit {
    Active(u64),
    Rate(u32),
}

impl Limit {
    pub(super) fn refusal(self) -> Created {
        match self {
            Limit::Active(max) => Created::OverQuota { max },
            Limit::Rate(per_second) => Created::RateLimited { per_second },
        }
    }
}

/// The writes that admit a job within its tenant's limits, each conditioned on room: the
/// active count below `max_active` (then one more), this second's submissions below
/// `per_second` (then one more).
pub(super) fn admission_writes(
    table: &str,
    tenant: &Tenant,
    admission: &Admission,
) -> Vec<(TransactWriteItem, Limit)> {
    let update = |key: Item,
                  expression: &str,
                  condition: &str,
                  names: &[(&str, &str)],
                  values: Vec<(&str, AttributeValue)>| {
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression(expression)
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(
                        names
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ))
                    .set_expression_attribute_values(Some(
                        values
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    ))
                    .build()
                    .expect("table, key and expression are set"),
            )
            .build()
    };
    let mut writes = vec![];
    if let Some(max) = admission.max_active {
        writes.push((
            update(
                quota_key(tenant),
                "SET #a = if_not_exists(#a, :zero) + :one",
                "attribute_not_exists(#a) OR #a < :max",
                &[("#a", "active")],
                vec![(":zero", num(0)), (":one", num(1)), (":max", num(max))],
            ),
            Limit::Active(max),
        ));
    }
    if let Some(per_second) = admission.per_second {
        let key = HashMap::from([
            ("pk".to_string(), s(format!("RATE#{tenant}"))),
            ("sk".to_string(), s(admission.window.to_string())),
        ]);
        writes.push((
            update(
                key,
                "SET #n = if_not_exists(#n, :zero) + :one, #t = :ttl",
                "attribute_not_exists(#n) OR #n < :rate",
                &[("#n", "n"), ("#t", "ttl")],
                vec![
                    (":zero", num(0)),
                    (":one", num(1)),
                    (":rate", num(per_second)),
                    (":ttl", num(admission.window + 60)),
                ],
            ),
            Limit::Rate(per_second),
        ));
    }
    writes
}

/// Move `tenant`'s active count by `delta` (a job holding a slot finished, or came back).
pub(super) fn slot_write(table: &str, tenant: &Tenant, delta: i64) -> TransactWriteItem {
    TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(table)
                .set_key(Some(quota_key(tenant)))
                .update_expression("SET #a = if_not_exists(#a, :zero) + :delta")
                .expression_attribute_names("#a", "active")
                .expression_attribute_values(":zero", num(0))
                .expression_attribute_values(":delta", num(delta))
                .build()
                .expect("table, key and expression are set"),
        )
        .build()
}

pub struct DynamoAccess {
    pub(super) client: Client,
    pub(super) table: String,
}

impl DynamoAccess {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Write `after` over the key only if it is still `before` (else `Conflict`).
    async fn replace_key(&self, before: &ApiKey, after: &ApiKey) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(after)?))
            .condition_expression("doc = :before")
            .expression_attribute_values(":before", s(encode(before)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn key(id: &str) -> Item {
        HashMap::from([
            ("pk".to_string(), s(KEYS_PK)),
            ("sk".to_string(), s(key_sk(id))),
        ])
    }

    /// Every item of a partition (following pages), optionally from a sort key on.
    async fn query_all(
        &self,
        pk: &str,
        sk_from: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = vec![];
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start.take());
            q = match sk_from {
                Some(from) => q
                    .key_condition_expression("pk = :pk AND sk >= :from")
                    .expression_attribute_values(":from", s(from)),
                None => q.key_condition_expression("pk = :pk"),
            };
            let out = q.send().await.map_err(classify)?;
            items.extend(out.items.unwrap_or_default());
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }
}

#[async_trait]
impl KeyStore for DynamoAccess {
    async fn put_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(key)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.as_ref().map(decode).transpose()
    }

    async fn list_keys(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys: Vec<ApiKey> = self
            .query_all(KEYS_PK, None, None)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?;
        keys.retain(|k| tenant.is_none_or(|t| &k.tenant == t));
        keys.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(keys)
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>, StoreError> {
        for _ in 0..5 {
            let Some(mut key) = self.get_key(id).await? else {
                return Ok(None);
            };
            if key.revoked_at.is_some() {
                return Ok(Some(key));
            }
            let before = key.clone();
            key.revoked_at = Some(at);
            match self.replace_key(&before, &key).await {
                Ok(_) => return Ok(Some(key)),
                Err(StoreError::Conflict) => continue, // used meanwhile: read again
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Busy("the key kept changing; try again".into()))
    }

    async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let Some(mut key) = self.get_key(id).await? else {
            return Ok(());
        };
        let before = key.clone();
        key.last_used_at = Some(at);
        // A lost race (a revoke, another touch) is fine: the other write stands.
        match self.replace_key(&before, &key).await {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn any_live_key(&self) -> Result<bool, StoreError> {
        Ok(self
            .query_all(KEYS_PK, None, None)
            .await?
            .iter()
            .any(|item| matches!(item.get("revoked"), Some(AttributeValue::Bool(false)))))
    }
}

#[async_trait]
impl AuditLog for DynamoAccess {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let now = Utc::now();
        let from_id =
            ulid::Ulid::from_parts(query.since.timestamp_millis().max(0) as u64, 0).to_string();
        let mut entries: Vec<AuditEntry> = vec![];
        let mut day = query.since.date_naive();
        while day <= now.date_naive() && entries.len() < query.limit {
            let items = self
                .query_all(
                    &audit_pk(query.tenant.as_ref(), day),
                    Some(&from_id),
                    Some(query.limit - entries.len()),
                )
                .await?;
            for item in &items {
                let entry: AuditEntry = decode(item)?;
                if entry.expires_at > now && entry.at >= query.since {
                    entries.push(entry);
                }
            }
            day = day.succ_opt().unwrap_or(day);
            if day == NaiveDate::MAX {
                break;
            }
        }
        entries.truncate(query.limit);
        Ok(entries)
    }
}

#[async_trait]
impl TenantStore for DynamoAccess {
    async fn count_submit(
        &self,
        tenant: &Tenant,
        per_second: u32,
        window: i64,
    ) -> Result<bool, StoreError> {
        let admission = Admission {
            max_active: None,
            per_second: Some(per_second),
            window,
        };
        let Some((write, _)) = admission_writes(&self.table, tenant, &admission).pop() else {
            return Ok(true);
        };
        let update = write.update.expect("the rate's write is an update");
        let counted = self
            .client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .condition_expression(update.condition_expression.unwrap_or_default())
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .send()
            .await;
        match counted {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn limits(&self, tenant: &Tenant) -> Result<TenantLimits, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("LIMITS"))
            .key("sk", s(tenant.to_string()))
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .item
            .as_ref()
            .map(decode)
            .transpose()?
            .unwrap_or_default())
    }

    async fn set_limits(&self, tenant: &Tenant, limits: &TenantLimits) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("LIMITS"))
            .item("sk", s(tenant.to_string()))
            .item("doc", s(encode(limits)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn webhook_generations(&self, tenant: &Tenant) -> Result<WebhookGenerations, StoreError> {
        let key = HashMap::from([
            ("pk".to_string(), s("WEBHOOK")),
            ("sk".to_string(), s(tenant.to_string())),
        ]);
        let read = |consistent: bool| {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .consistent_read(consistent)
                .send()
        };
        if let Some(item) = read(false).await.map_err(classify)?.item {
            return decode(&item);
        }
        let mut item = key.clone();
        item.insert("doc".into(), s(encode(&WebhookGenerations::default())?));
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) => Ok(WebhookGenerations::default()),
            // Made meanwhile by another process: that one stands.
            Err(StoreError::Conflict) => match read(true).await.map_err(classify)?.item {
                Some(item) => decode(&item),
                None => Err(StoreError::Unavailable("webhook key vanished".into())),
            },
            Err(e) => Err(e),
        }
    }

    async fn rotate_webhook_key(
        &self,
        tenant: &Tenant,
        overlap_until: DateTime<Utc>,
    ) -> Result<WebhookGenerations, StoreError> {
        for _ in 0..5 {
            let now = self.webhook_generations(tenant).await?;
            let next = now.rotated(overlap_until);
            let written = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s("WEBHOOK"))
                .item("sk", s(tenant.to_string()))
                .item("doc", s(encode(&next)?))
                .condition_expression("doc = :before")
                .expression_attribute_values(":before", s(encode(&now)?))
                .send()
                .await
                .map_err(classify);
            match written {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Busy(
            "the webhook key kept changing; try again".into(),
        ))
    }

    async fn active_jobs(&self, tenant: &Tenant) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(quota_key(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| match i.get("active") {
                Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
                _ => None,
            })
            .unwrap_or(0)
            .max(0) as u64)
    }
}
