//! Where a job's items live in the table, and how a job becomes items and back.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | job state | `J#<bucket>#<shard>` | `<job id>` | every field but the id, each an attribute; the payload and result inline (as JSON text) when small |
//! | payload | `P#<job id>` | `P` | `v` (JSON text), `ttl`: written once, when too large to keep inline |
//! | result | `P#<job id>` | `R` | `v`, `ttl`: likewise |
//! | log count | `L#<job id>` | `#` | `n` (lines written) |
//! | log line | `L#<job id>` | `<seq, 10 digits>` | `seq`, `at`, `attempt`, `line`, `tenant`, `ttl` |
//! | durable step | `S#<job id>` | `<name>` | `at`, `result`, `ttl` |
//! | model | `META` | `MODEL` | `version`, `shards`: what wrote the table |
//!
//! The state item is what every transition, heartbeat and progress report rewrites, so it stays
//! within 1 KB: the payload and result stay in it only while small (`INLINE_PAYLOAD`,
//! `INLINE_RESULT`); larger ones are items of their own, written once. Log lines never touch it.
//!
//! Partition keys spread in proportion to the job rate: a job's key comes from its id alone
//! (`JobId::for_tenant` puts the tenant's bucket and a counter in it), `<bucket>#<shard>` with the
//! shard the counter modulo the deployment's shard count, so one tenant's jobs spread over every
//! shard, dealt in turn. A tenant's listing queries its bucket's shards at once and merges them
//! by id (leaving out other tenants that share the bucket). No index holds a job while it is
//! queued, running or finished: the sparse `due` index holds only `scheduled` and `waiting` jobs
//! (`<status>#<shard>`), and unfinished batches, as keys.

use super::attrs::{get_n, get_s, item_to_object, n, object_to_item, s, Item};
use crate::domain::{BatchId, Job, JobId, JobStatus};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What the table's layout is called: a table written by another layout is refused.
pub const MODEL_VERSION: i64 = 2;
pub const INDEX_DUE: &str = "due";

/// Largest payload (as JSON text) kept in the state item; a larger one is an item of its own.
pub const INLINE_PAYLOAD: usize = 256;
/// Largest result kept in the state item.
pub const INLINE_RESULT: usize = 128;

/// Attributes of the state item that are not fields of the job.
const NOT_FIELDS: &[&str] = &[
    "pk",
    "sk",
    "due_pk",
    "due_us",
    "run_at_us",
    "upd_us",
    "ttl",
    "waiters",
    "payload_ext",
    "result_ext",
];

/// The user's own JSON, stored as its text: kept exactly as given.
const AS_TEXT: &[&str] = &["payload", "result"];

/// Fields no transition changes: written once, at create.
pub const IMMUTABLE: &[&str] = &[
    "tenant",
    "type",
    "payload",
    "payload_ext",
    "created_at",
    "idempotency_key",
    "request_fingerprint",
];

/// The table's layout for one deployment: how many shards a tenant's jobs spread over.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub shards: u64,
}

impl Layout {
    pub fn shard_of(&self, id: JobId) -> u64 {
        id.spread() % self.shards
    }

    pub fn job_pk_of(&self, bucket: u16, shard: u64) -> String {
        format!("J#{bucket:04x}#{shard:02x}")
    }

    pub fn job_pk(&self, id: JobId) -> String {
        self.job_pk_of(id.bucket(), self.shard_of(id))
    }

    pub fn job_key(&self, id: JobId) -> Item {
        HashMap::from([
            ("pk".to_string(), s(self.job_pk(id))),
            ("sk".to_string(), s(id.to_string())),
        ])
    }

    /// The `due` index partition of jobs in `status` in `shard`; only `scheduled` and `waiting`
    /// jobs are in it.
    pub fn due_pk(&self, status: JobStatus, shard: u64) -> Option<String> {
        matches!(status, JobStatus::Scheduled | JobStatus::Waiting)
            .then(|| format!("{status}#{shard:02x}"))
    }

    pub fn batch_due_pk(&self, id: BatchId) -> String {
        let spread = id
            .to_string()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        self.batch_due_pk_of(spread % self.shards)
    }

    /// The `due` index partition of the unfinished batches in `shard`.
    pub fn batch_due_pk_of(&self, shard: u64) -> String {
        format!("batch#{shard:02x}")
    }

    /// The job as items: its state, and its payload and result where too large to keep inline.
    pub fn encode(&self, job: &Job) -> Result<Encoded, StoreError> {
        let value = serde_json::to_value(job)
            .map_err(|e| StoreError::Rejected(format!("encode job: {e}")))?;
        let mut state: Item = object_to_item(&value)
            .into_iter()
            .filter(|(k, v)| k != "id" && !matches!(v, AttributeValue::Null(_)))
            .collect();
        state.remove("payload");
        state.remove("result");
        state.extend(self.job_key(job.id));
        for (k, v) in self.derived(job) {
            if let Some(v) = v {
                state.insert(k.into(), v);
            }
        }
        let ttl = ttl_of_parts(job);
        let mut encoded = Encoded {
            state,
            payload: None,
            result: None,
        };
        let payload = job.payload.to_string();
        if payload.len() <= INLINE_PAYLOAD {
            encoded.state.insert("payload".into(), s(payload));
        } else {
            encoded
                .state
                .insert("payload_ext".into(), AttributeValue::Bool(true));
            encoded.payload = Some(part_item(job.id, "P", payload, ttl));
        }
        if let Some(result) = job.result.as_ref().filter(|r| !r.is_null()) {
            let result = result.to_string();
            if result.len() <= INLINE_RESULT {
                encoded.state.insert("result".into(), s(result));
            } else {
                encoded
                    .state
                    .insert("result_ext".into(), AttributeValue::Bool(true));
                encoded.result = Some(part_item(job.id, "R", result, ttl));
            }
        }
        Ok(encoded)
    }

    /// The attributes kept beside the job's fields (`None`: absent).
    pub fn derived(&self, job: &Job) -> Vec<(&'static str, Option<AttributeValue>)> {
        vec![
            (
                "due_pk",
                self.due_pk(job.status, self.shard_of(job.id)).map(s),
            ),
            ("due_us", Some(n(micros(job.due_at())))),
            ("run_at_us", Some(n(micros(job.run_at)))),
            (
                "upd_us",
                Some(n(micros(job.updated_at.max(job.created_at)))),
            ),
            ("ttl", job.expires_at.map(|t| n(t.timestamp()))),
        ]
    }
}

/// A job as items (see `Layout::encode`).
pub struct Encoded {
    pub state: Item,
    pub payload: Option<Item>,
    pub result: Option<Item>,
}

/// How long a payload or result item is kept: as long as its job can be. A payload's job may
/// wait for its run time, run for a week, then be kept for its retention; it is kept 30 days
/// past that run time and the retention, whichever the job ends up needing less of.
fn ttl_of_parts(job: &Job) -> i64 {
    match job.expires_at {
        Some(t) => t.timestamp(),
        None => job.run_at.timestamp() + job.retention_secs as i64 + 30 * 24 * 3600,
    }
}

pub fn part_key(id: JobId, which: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("P#{id}"))),
        ("sk".to_string(), s(which)),
    ])
}

fn part_item(id: JobId, which: &str, text: String, ttl: i64) -> Item {
    let mut item = part_key(id, which);
    item.insert("v".into(), s(text));
    item.insert("ttl".into(), n(ttl));
    item
}

pub fn log_pk(id: JobId) -> String {
    format!("L#{id}")
}

pub fn log_sk(seq: u64) -> String {
    format!("{seq:010}")
}

pub fn step_key(id: JobId, name: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("S#{id}"))),
        ("sk".to_string(), s(name)),
    ])
}

pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Whether an item is a job's state (for the stream's readers).
pub fn is_job_state(item: &Item) -> bool {
    get_s(item, "pk").is_some_and(|pk| pk.starts_with("J#"))
}

/// Whether an item is a log line, and whose.
pub fn log_line_job(item: &Item) -> Option<JobId> {
    let id = get_s(item, "pk")?.strip_prefix("L#")?;
    item.contains_key("line").then_some(())?;
    JobId::parse(id).ok()
}

/// The job a stream record shows queued by a write that asks for its message: one that made
/// it `queued` (new, or from another status) or queued it again (a new `queued_at`). A write
/// that keeps a queued job queued with the same `queued_at` (a debounce) keeps its message.
pub fn queued_by(old: Option<&Item>, new: Option<&Item>) -> Option<Job> {
    let new = new.filter(|n| is_job_state(n))?;
    if get_s(new, "status") != Some(JobStatus::Queued.as_str()) {
        return None;
    }
    let again = |old: &Item| {
        get_s(old, "status") == Some(JobStatus::Queued.as_str())
            && get_s(old, "queued_at") == get_s(new, "queued_at")
    };
    if old.is_some_and(again) {
        return None;
    }
    match decode(new) {
        Ok(job) => Some(job),
        Err(reason) => {
            tracing::error!(pk = get_s(new, "pk").unwrap_or("?"), %reason, "a queued job's item cannot be read; no message sent");
            None
        }
    }
}

pub fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    get_n(item, "ttl").is_some_and(|ttl| ttl <= now.timestamp())
}

/// A state item (with its payload and result put back in, when they live apart: `parts`) as a
/// job or a summary.
pub fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, String> {
    decode_with(item, &HashMap::new())
}

pub fn decode_with<T: serde::de::DeserializeOwned>(
    item: &Item,
    parts: &HashMap<&str, String>,
) -> Result<T, String> {
    let mut value = item_to_object(item, NOT_FIELDS)?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| "job item: not a map".to_string())?;
    for field in AS_TEXT {
        let text = get_s(item, field).or_else(|| parts.get(field).map(String::as_str));
        if let Some(text) = text {
            let parsed = serde_json::from_str(text).map_err(|e| format!("{field}: {e}"))?;
            map.insert(field.to_string(), parsed);
        } else {
            map.entry(field.to_string())
                .or_insert(serde_json::Value::Null);
        }
    }
    if let Some(id) = get_s(item, "sk") {
        map.insert("id".into(), serde_json::Value::String(id.into()));
    }
    serde_json::from_value(value).map_err(|e| format!("job item: {e}"))
}

/// DynamoDB's size of an item, as it bills it: each attribute's name and value.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        _ => 0,
    }
}

/// Write units a write of an item of `size` bytes costs (1 a KB, rounded up).
pub fn write_units(size: usize) -> f64 {
    size.max(1).div_ceil(1024) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Backoff, NewJob, Tenant};
    use chrono::Utc;

    fn job(payload: serde_json::Value) -> Job {
        let now = Utc::now();
        Job::create(
            NewJob {
                tenant: Tenant::parse("tenant-with-a-long-name").unwrap(),
                job_type: crate::domain::JobType::parse("report.daily").unwrap(),
                priority: 0,
                payload,
                max_attempts: 5,
                backoff: Backoff::new(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                ),
                timeout: std::time::Duration::from_secs(300),
                retention: std::time::Duration::from_secs(7 * 86400),
                run_at: now,
                idempotency_key: None,
                request_fingerprint: None,
            },
            now,
        )
    }

    #[test]
    fn a_finished_job_with_a_small_payload_and_result_stays_within_one_write_unit() {
        let layout = Layout { shards: 64 };
        let mut j = job(serde_json::json!({ "pad": "x".repeat(INLINE_PAYLOAD - 12) }));
        let now = Utc::now();
        j = j.start(now).unwrap();
        let result = serde_json::json!({ "r": "y".repeat(INLINE_RESULT - 10) });
        j = j
            .finish(crate::domain::Outcome::Succeeded(result), now, 0.5)
            .unwrap();
        let encoded = layout.encode(&j).unwrap();
        assert!(encoded.payload.is_none() && encoded.result.is_none());
        let size = item_size(&encoded.state);
        assert!(size <= 1024, "{size} bytes");
        let back: Job = decode(&encoded.state).unwrap();
        assert_eq!(back.payload, j.payload);
        assert_eq!(back.result, j.result);
        assert_eq!(back.id, j.id);
    }

    #[test]
    fn a_large_payload_is_an_item_of_its_own() {
        let layout = Layout { shards: 64 };
        let j = job(serde_json::json!({ "pad": "x".repeat(100_000) }));
        let encoded = layout.encode(&j).unwrap();
        let part = encoded.payload.expect("apart");
        assert!(item_size(&encoded.state) <= 1024);
        let text = get_s(&part, "v").unwrap().to_string();
        let back: Job = decode_with(&encoded.state, &HashMap::from([("payload", text)])).unwrap();
        assert_eq!(back.payload, j.payload);
    }
}
