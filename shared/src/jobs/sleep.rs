//! `sleep`: waits `ms` milliseconds in ten steps, reporting progress at each and stopping early
//! when cancelled. Payload: `{"ms": 1500}`.

use super::{field, require_object, JobContext, JobHandler};
use crate::domain::{JobError, ValidationError};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest sleep a job may ask for: well inside the type's 15-minute timeout.
pub const MAX_SLEEP_MS: u64 = 10 * 60 * 1000;
const STEPS: u64 = 10;

pub struct Sleep;

fn millis(payload: &Value) -> Result<u64, ValidationError> {
    require_object(payload)?;
    let ms = field(payload, "ms")
        .ok_or_else(|| ValidationError::new("payload.ms", "is required"))?
        .as_u64()
        .ok_or_else(|| {
            ValidationError::new("payload.ms", "must be a whole number of milliseconds")
        })?;
    if ms > MAX_SLEEP_MS {
        return Err(ValidationError::new(
            "payload.ms",
            format!("must be at most {MAX_SLEEP_MS}"),
        ));
    }
    Ok(ms)
}

#[async_trait]
impl JobHandler for Sleep {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        millis(payload).map(|_| ())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let ms = millis(&payload).map_err(|e| JobError::permanent(e.to_string()))?;
        let step = Duration::from_millis(ms / STEPS);
        let started = tokio::time::Instant::now();
        for i in 1..=STEPS {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = ctx.cancelled() => {}
            }
            if ctx.is_cancelled() {
                return Err(JobError::cancelled());
            }
            ctx.progress(
                (i * 100 / STEPS) as u8,
                format!("slept {} of {ms} ms", i * ms / STEPS),
            )
            .await;
            if ctx.is_cancelled() {
                return Err(JobError::cancelled());
            }
        }
        Ok(json!({ "slept_ms": started.elapsed().as_millis() as u64 }))
    }
}
