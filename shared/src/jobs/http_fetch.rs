//! `http.fetch`: GET a URL and record its status, size and timing.
//! Payload: `{"url": "https://…", "timeout_ms": 10000, "max_bytes": 1048576}` (last two optional).
//! 408, 429, 5xx and network errors are retryable; any other answer is the result.

use super::{field, payload_url, status_is_retryable, JobContext, JobHandler};
use crate::domain::{JobError, ValidationError};
use crate::outbound::{refusal, Outbound};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The longest `timeout_ms` a payload may ask for (Lambda's longest run).
const MAX_TIMEOUT_MS: u64 = 900_000;

pub struct HttpFetch {
    max_bytes: usize,
    outbound: Arc<Outbound>,
}

impl HttpFetch {
    pub fn new(max_bytes: usize, outbound: Arc<Outbound>) -> Self {
        Self {
            max_bytes: max_bytes.max(1),
            outbound,
        }
    }
}

fn optional_u64(payload: &Value, name: &str) -> Result<Option<u64>, ValidationError> {
    match field(payload, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
            ValidationError::new(format!("payload.{name}"), "must be a positive whole number")
        }),
    }
}

/// A connection the outbound policy refused: permanent (no attempt would be let through).
pub(crate) fn refused(url: &reqwest::Url, r: &super::Refused) -> JobError {
    JobError::with_kind("outbound_refused", format!("{url}: {r}"), false)
}

#[async_trait]
impl JobHandler for HttpFetch {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        payload_url(payload)?;
        if optional_u64(payload, "timeout_ms")?.is_some_and(|t| t > MAX_TIMEOUT_MS) {
            return Err(ValidationError::new(
                "payload.timeout_ms",
                format!("must be at most {MAX_TIMEOUT_MS}"),
            ));
        }
        if optional_u64(payload, "max_bytes")?.is_some_and(|m| m > self.max_bytes as u64) {
            return Err(ValidationError::new(
                "payload.max_bytes",
                format!(
                    "must be at most {} (CONVEYOR_FETCH_MAX_BYTES)",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let url = payload_url(&payload).map_err(|e| JobError::permanent(e.to_string()))?;
        let timeout = optional_u64(&payload, "timeout_ms")
            .ok()
            .flatten()
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let limit = optional_u64(&payload, "max_bytes")
            .ok()
            .flatten()
            .map_or(self.max_bytes, |m| (m as usize).min(self.max_bytes));
        self.outbound
            .policy()
            .check_url(&url)
            .map_err(|r| refused(&url, &r))?;
        let started = Instant::now();
        let mut response = self
            .outbound
            .client()
            .get(url.clone())
            .timeout(Duration::from_millis(timeout.min(MAX_TIMEOUT_MS)))
            .send()
            .await
            .map_err(|e| match refusal(&e) {
                Some(r) => refused(&url, &r),
                None => JobError::retryable(format!("GET {url}: {e}")),
            })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = 0usize;
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| JobError::retryable(format!("reading {url}: {e}")))?
        {
            if bytes + chunk.len() > limit {
                // More body than we read: stop at the limit and say so.
                bytes = limit;
                truncated = true;
                break;
            }
            bytes += chunk.len();
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if status_is_retryable(status) {
            return Err(JobError::retryable(format!("GET {url}: HTTP {status}")));
        }
        ctx.log(format!(
            "GET {url} -> {status}, {bytes} bytes in {elapsed_ms} ms"
        ))
        .await;
        Ok(json!({
            "url": url.as_str(),
            "status": status,
            "bytes": bytes,
            "truncated": truncated,
            "elapsed_ms": elapsed_ms,
            "content_type": content_type,
        }))
    }
}
