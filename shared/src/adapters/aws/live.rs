//! Live updates on AWS: connections and subscriptions in the table, pushes through API
//! Gateway's management API, and the table's stream records read as job changes.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | connection | `CONN#<connection id>` | `CONN` | tenant, subject, `topics` (string set), `ttl` |
//! | subscription | `SUB#<tenant>` | `<job id or *>#<connection id>` | `ttl` |
//!
//! A tenant's subscriptions are one partition: one Query finds every subscriber of a batch of
//! the tenant's changes.
//!
//! Both expire with the connection (API Gateway's 2-hour limit): TTL deletes them, and every
//! read leaves out what has expired.

use super::attrs::{get_n, get_s, s, Item};
use super::layout::{decode, is_job_state, log_line_job};
use super::write::classify;
use crate::domain::{JobSummary, Tenant};
use crate::live::{JobChange, Topic, Update};
use crate::ports::{ClientPusher, Connection, ConnectionStore, PushError, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

const CONN_SK: &str = "CONN";

fn conn_key(id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("CONN#{id}"))),
        ("sk".to_string(), s(CONN_SK)),
    ])
}

fn sub_pk(tenant: &Tenant) -> String {
    format!("SUB#{tenant}")
}

fn sub_sk(topic: Topic, connection: &str) -> String {
    format!("{}#{connection}", topic.key())
}

fn ttl_of(t: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(t.timestamp().to_string())
}

fn live(item: &Item, now: DateTime<Utc>) -> bool {
    get_n(item, "ttl").is_none_or(|ttl| ttl > now.timestamp())
}

/// `ConnectionStore` on the table.
#[derive(Clone)]
pub struct DynamoConnections {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoConnections {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnections {
    async fn connect(&self, c: &Connection) -> Result<(), StoreError> {
        let mut item = conn_key(&c.id);
        item.insert("tenant".into(), s(c.tenant.to_string()));
        item.insert("subject".into(), s(&c.subject));
        item.insert("connected_at".into(), s(c.connected_at.to_rfc3339()));
        item.insert("expires_at".into(), s(c.expires_at.to_rfc3339()));
        item.insert("ttl".into(), ttl_of(c.expires_at));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(conn_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        let Some(item) = out.item.filter(|i| live(i, Utc::now())) else {
            return Ok(None);
        };
        let time = |name: &str| {
            get_s(&item, name)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let (Some(tenant), Some(connected_at), Some(expires_at)) = (
            get_s(&item, "tenant").and_then(|t| Tenant::parse(t).ok()),
            time("connected_at"),
            time("expires_at"),
        ) else {
            return Ok(None);
        };
        Ok(Some(Connection {
            id: id.to_string(),
            tenant,
            subject: get_s(&item, "subject").unwrap_or_default().to_string(),
            connected_at,
            expires_at,
        }))
    }

    async fn disconnect(&self, id: &str) -> Result<(), StoreError> {
        // The connection item says what it subscribed to: those go, then it does.
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(conn_key(id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        let Some(item) = out.attributes else {
            return Ok(());
        };
        let Some(tenant) = get_s(&item, "tenant").and_then(|t| Tenant::parse(t).ok()) else {
            return Ok(());
        };
        let topics: Vec<Topic> = match item.get("topics") {
            Some(AttributeValue::Ss(keys)) => {
                keys.iter().filter_map(|k| Topic::parse_key(k)).collect()
            }
            _ => vec![],
        };
        for topic in topics {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(sub_pk(&tenant)))
                .key("sk", s(sub_sk(topic, id)))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn subscribe(&self, c: &Connection, topic: Topic) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        let sub = Put::builder()
            .table_name(&self.table)
            .item("pk", s(sub_pk(&c.tenant)))
            .item("sk", s(sub_sk(topic, &c.id)))
            .item("ttl", ttl_of(c.expires_at))
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        // Noted on the connection (which must still exist, and follow fewer than the most, or
        // this already), for its disconnect.
        let noted = Update::builder()
            .table_name(&self.table)
            .set_key(Some(conn_key(&c.id)))
            .update_expression("ADD topics :t")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(topics) OR size(topics) < :most OR contains(topics, :k))",
            )
            .expression_attribute_values(":t", AttributeValue::Ss(vec![topic.key()]))
            .expression_attribute_values(":k", s(topic.key()))
            .expression_attribute_values(
                ":most",
                AttributeValue::N(crate::live::MAX_SUBSCRIPTIONS.to_string()),
            )
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(sub).build())
            .transact_items(TransactWriteItem::builder().update(noted).build())
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) if super::write::refused_by_condition(&e) => Err(StoreError::Rejected(format!(
                "a connection follows at most {} subscriptions (or it is gone)",
                crate::live::MAX_SUBSCRIPTIONS
            ))),
            Err(e) => Err(StoreError::Unavailable(
                aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
            )),
        }
    }

    async fn unsubscribe(&self, c: &Connection, topic: Topic) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(sub_pk(&c.tenant)))
            .key("sk", s(sub_sk(topic, &c.id)))
            .send()
            .await
            .map_err(classify)?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(conn_key(&c.id)))
            .update_expression("DELETE topics :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Ss(vec![topic.key()]))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match classify(e) {
                StoreError::Conflict => Ok(()),
                e => Err(e),
            })
    }

    async fn subscriptions(&self, tenant: &Tenant) -> Result<Vec<(Topic, String)>, StoreError> {
        let now = Utc::now();
        let mut out = vec![];
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(sub_pk(tenant)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            out.extend(
                page.items()
                    .iter()
                    .filter(|i| live(i, now))
                    .filter_map(|i| {
                        let (topic, conn) = get_s(i, "sk")?.split_once('#')?;
                        Some((Topic::parse_key(topic)?, conn.to_string()))
                    }),
            );
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }
}

/// Largest message API Gateway passes to a client (128 KB), with room to spare.
const MAX_POST_BYTES: usize = 120 * 1024;

/// `ClientPusher` through API Gateway's management API (`PostToConnection`): one call per
/// connection per batch of changes (several messages as one `batch` message), split only
/// where a batch would pass API Gateway's message size.
#[derive(Clone)]
pub struct ApiGatewayPusher {
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ApiGatewayPusher {
    /// A pusher for the WebSocket API stage at `endpoint` (`https://<api>.execute-api.<region>.amazonaws.com/<stage>`).
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        Self {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }
}

/// `messages` as posts: each one message, or a `batch` of several, under the size limit.
pub fn frames(messages: &[Arc<str>]) -> Vec<String> {
    if messages.len() == 1 {
        return vec![messages[0].to_string()];
    }
    let mut frames = vec![];
    let mut current: Vec<&str> = vec![];
    let mut size = 0;
    let close = |current: &mut Vec<&str>, frames: &mut Vec<String>| {
        if !current.is_empty() {
            frames.push(format!(
                "{{\"type\":\"batch\",\"messages\":[{}]}}",
                current.join(",")
            ));
            current.clear();
        }
    };
    for m in messages {
        if size + m.len() + 1 > MAX_POST_BYTES {
            close(&mut current, &mut frames);
            size = 0;
        }
        current.push(m);
        size += m.len() + 1;
    }
    close(&mut current, &mut frames);
    frames
}

#[async_trait]
impl ClientPusher for ApiGatewayPusher {
    async fn push(&self, connection: &str, messages: &[Arc<str>]) -> Result<(), PushError> {
        for frame in frames(messages) {
            let sent = self
                .client
                .post_to_connection()
                .connection_id(connection)
                .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(
                    frame.into_bytes(),
                ))
                .send()
                .await;
            if let Err(e) = sent {
                let gone = e
                    .as_service_error()
                    .is_some_and(|se| se.is_gone_exception())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 410);
                return Err(if gone {
                    PushError::Gone
                } else {
                    PushError::Unavailable(
                        aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&e).to_string(),
                    )
                });
            }
        }
        Ok(())
    }
}

/// A stream record's images as job changes: a job item's new state (not a change of its
/// heartbeat alone), or a new log line. `None` for anything else (a deletion, other items).
pub fn change_of(old: Option<&Item>, new: Option<&Item>) -> Option<JobChange> {
    let new = new?;
    if is_job_state(new) {
        let job: JobSummary = decode(new).ok()?;
        if let Some(old) = old.and_then(|o| decode::<JobSummary>(o).ok()) {
            let seen = |j: &JobSummary| {
                (
                    j.status,
                    j.version,
                    j.progress.clone(),
                    j.cancel_requested,
                    j.attempt,
                )
            };
            if seen(&old) == seen(&job) {
                return None;
            }
        }
        return Some(JobChange::job(job));
    }
    if old.is_none() {
        let job_id = log_line_job(new)?;
        return Some(JobChange {
            tenant: Tenant::parse(get_s(new, "tenant")?).ok()?,
            job_id,
            update: Update::Log {
                job_id,
                seq: get_n(new, "seq")? as u64,
                at: DateTime::parse_from_rfc3339(get_s(new, "at")?)
                    .ok()?
                    .with_timezone(&Utc),
                attempt: get_n(new, "attempt")? as u32,
                line: get_s(new, "line")?.to_string(),
            },
        });
    }
    None
}

/// The `notify` function's handler: a batch of the table's stream records (an event-source
/// mapping with `ReportBatchItemFailures`) pushed to their subscribers through `notify`. When
/// the subscribers cannot be read the whole batch is reported failed, to come again; a push
/// that fails is not retried (the client has the job's state on its next change, or asks).
pub async fn notify_stream_event(live: &crate::ports::LivePorts, event: &Value) -> Value {
    let changes = changes_from_lambda(event);
    match crate::live::notify(live.connections.as_ref(), live.pusher.as_ref(), &changes).await {
        Ok(done) => {
            tracing::info!(
                changes = changes.len(),
                pushes = done.pushes,
                gone = done.gone,
                failed = done.failed,
                "pushed"
            );
            serde_json::json!({ "batchItemFailures": [] })
        }
        Err(e) => {
            tracing::warn!(error = %e, "subscribers not read; the batch comes again");
            let first = event["Records"][0]["dynamodb"]["SequenceNumber"].clone();
            serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": first }] })
        }
    }
}

/// Records as Lambda delivers them (images in DynamoDB JSON) as job changes, in order.
pub fn changes_from_lambda(event: &Value) -> Vec<JobChange> {
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        return vec![];
    };
    records
        .iter()
        .filter_map(|r| {
            let d = r.get("dynamodb")?;
            let image = |name: &str| d.get(name).and_then(item_from_json);
            change_of(image("OldImage").as_ref(), image("NewImage").as_ref())
        })
        .collect()
}

/// An item in DynamoDB JSON (`{"attr": {"S": "…"}}`).
pub fn item_from_json(v: &Value) -> Option<Item> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), attr_from_json(v)?)))
        .collect()
}

fn attr_from_json(v: &Value) -> Option<AttributeValue> {
    let (kind, value) = v.as_object()?.iter().next()?;
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    Some(match kind.as_str() {
        "S" => AttributeValue::S(value.as_str()?.to_string()),
        "N" => AttributeValue::N(value.as_str()?.to_string()),
        "BOOL" => AttributeValue::Bool(value.as_bool()?),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(strings(value)?),
        "NS" => AttributeValue::Ns(strings(value)?),
        "L" => AttributeValue::L(
            value
                .as_array()?
                .iter()
                .map(attr_from_json)
                .collect::<Option<_>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(value)?),
        _ => return None,
    })
}

/// A record read through the DynamoDB Streams API as a job change.
pub fn change_of_stream_record(
    record: &aws_sdk_dynamodbstreams::types::Record,
) -> Option<JobChange> {
    let (old, new) = images_of_stream_record(record)?;
    change_of(old.as_ref(), new.as_ref())
}

/// A record's old and new images, as items.
pub(super) fn images_of_stream_record(
    record: &aws_sdk_dynamodbstreams::types::Record,
) -> Option<(Option<Item>, Option<Item>)> {
    let d = record.dynamodb()?;
    let image = |i: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
        i.map(|i| {
            i.iter()
                .filter_map(|(k, v)| Some((k.clone(), attr_from_stream(v)?)))
                .collect::<Item>()
        })
    };
    Some((image(d.old_image()), image(d.new_image())))
}

/// A record as Lambda delivers it: its old and new images, as items.
pub(super) fn images_of_lambda_record(record: &Value) -> (Option<Item>, Option<Item>) {
    let d = record.get("dynamodb");
    let image = |name: &str| d.and_then(|d| d.get(name)).and_then(item_from_json);
    (image("OldImage"), image("NewImage"))
}

fn attr_from_stream(v: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Option<AttributeValue> {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    Some(match v {
        A::S(x) => AttributeValue::S(x.clone()),
        A::N(x) => AttributeValue::N(x.clone()),
        A::Bool(x) => AttributeValue::Bool(*x),
        A::Null(_) => AttributeValue::Null(true),
        A::Ss(x) => AttributeValue::Ss(x.clone()),
        A::Ns(x) => AttributeValue::Ns(x.clone()),
        A::L(x) => AttributeValue::L(x.iter().map(attr_from_stream).collect::<Option<_>>()?),
        A::M(x) => AttributeValue::M(
            x.iter()
                .map(|(k, v)| Some((k.clone(), attr_from_stream(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_messages_go_as_one_batch_and_a_large_batch_is_split() {
        let one: Vec<Arc<str>> = vec![r#"{"type":"job"}"#.into()];
        assert_eq!(frames(&one), [r#"{"type":"job"}"#]);
        let two: Vec<Arc<str>> = vec![r#"{"a":1}"#.into(), r#"{"b":2}"#.into()];
        assert_eq!(
            frames(&two),
            [r#"{"type":"batch","messages":[{"a":1},{"b":2}]}"#]
        );
        let big: Arc<str> = format!("\"{}\"", "x".repeat(50 * 1024)).into();
        let many = vec![big.clone(), big.clone(), big.clone()];
        let out = frames(&many);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|f| f.len() <= MAX_POST_BYTES + 64));
        let parsed: Vec<Value> = out
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        let count: usize = parsed
            .iter()
            .map(|p| p["messages"].as_array().unwrap().len())
            .sum();
        assert_eq!(count, 3);
    }

    #[test]
    fn a_heartbeat_alone_is_no_change_and_a_log_line_is_one() {
        let image = |status: &str, heartbeat: &str| {
            serde_json::json!({
                "pk": {"S": "J#0001#00"}, "sk": {"S": "01J0000000000000000000000A"},
                "tenant": {"S": "acme"},
                "type": {"S": "noop"}, "status": {"S": status}, "priority": {"N": "0"},
                "attempt": {"N": "1"}, "max_attempts": {"N": "3"}, "progress": {"NULL": true},
                "error": {"NULL": true}, "idempotency_key": {"NULL": true},
                "cancel_requested": {"BOOL": false}, "created_at": {"S": "2026-01-01T00:00:00Z"},
                "run_at": {"S": "2026-01-01T00:00:00Z"}, "started_at": {"NULL": true},
                "finished_at": {"NULL": true}, "heartbeat_at": {"S": heartbeat},
                "expires_at": {"NULL": true}, "updated_at": {"S": "2026-01-01T00:00:00Z"},
                "version": {"N": "2"}
            })
        };
        let record = |old: Value, new: Value| serde_json::json!({ "Records": [{ "dynamodb": { "OldImage": old, "NewImage": new } }] });
        let beat = record(
            image("running", "2026-01-01T00:00:01Z"),
            image("running", "2026-01-01T00:00:02Z"),
        );
        assert!(changes_from_lambda(&beat).is_empty());
        let mut done = image("succeeded", "2026-01-01T00:00:02Z");
        done["version"] = serde_json::json!({"N": "3"});
        let changes = changes_from_lambda(&record(image("running", "2026-01-01T00:00:01Z"), done));
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0].update, Update::Job { job } if job.version == 3));
        let log = serde_json::json!({ "Records": [{ "dynamodb": { "NewImage": {
            "pk": {"S": "L#01J0000000000000000000000A"}, "sk": {"S": "0000000001"},
            "tenant": {"S": "acme"}, "seq": {"N": "1"}, "at": {"S": "2026-01-01T00:00:00Z"},
            "attempt": {"N": "1"}, "line": {"S": "hello"} } } }] });
        let changes = changes_from_lambda(&log);
        assert!(matches!(&changes[0].update, Update::Log { line, seq: 1, .. } if line == "hello"));
    }
}
