//! What a submit asks for, parsed into valid values (the wire forms are in `entrypoints`).

use super::{
    Backoff, BatchId, ConcurrencyKey, Debounce, DependencyFailure, IdempotencyKey, JobId, JobType,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// A submit, already parsed into valid values (see `entrypoints::http` for the wire form).
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub job_type: JobType,
    pub payload: Value,
    pub priority: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// What the type's per-key limits count the job under.
    pub concurrency_key: Option<ConcurrencyKey>,
    /// Later submits with this key replace the job while it waits (never with an idempotency
    /// key).
    pub debounce: Option<Debounce>,
    /// Jobs of the same tenant this one waits for (`waiting` until they end; at most
    /// `DEPENDS_ON_MAX`).
    pub depends_on: Vec<JobId>,
    pub on_dependency_failure: DependencyFailure,
    /// The (unfinished) batch of the tenant's this job joins as a member.
    pub batch_id: Option<BatchId>,
}

impl SubmitRequest {
    /// A submit of `job_type` with `payload` and every option left to the type's defaults.
    pub fn new(job_type: JobType, payload: Value) -> Self {
        Self {
            job_type,
            payload,
            priority: 0,
            run_at: None,
            delay: None,
            max_attempts: None,
            backoff: None,
            idempotency_key: None,
            concurrency_key: None,
            debounce: None,
            depends_on: vec![],
            on_dependency_failure: DependencyFailure::Cancel,
            batch_id: None,
        }
    }

    /// A digest of what the request asks for, as given (a relative delay stays relative), in a
    /// canonical form: the same request always gives the same digest, whatever its key order.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let described = serde_json::json!({
            "type": self.job_type.as_str(),
            "payload": &self.payload,
            "priority": self.priority,
            "run_at": self.run_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            "delay_ms": self.delay.map(|d| d.as_millis() as u64),
            "max_attempts": self.max_attempts,
            "backoff": self.backoff.map(|b| [b.base_ms, b.cap_ms]),
            "concurrency_key": self.concurrency_key.as_ref().map(|k| k.as_str()),
            "depends_on": self.depends_on.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
            "on_dependency_failure": self.on_dependency_failure,
            "batch_id": self.batch_id.map(|b| b.to_string()),
        });
        let mut canonical = String::new();
        write_canonical(&described, &mut canonical);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// JSON with object keys sorted at every depth.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
