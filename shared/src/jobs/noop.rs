//! `noop`: does nothing and succeeds; for benchmarks and smoke tests.

use super::{JobContext, JobHandler};
use crate::domain::JobError;
use async_trait::async_trait;
use serde_json::{json, Value};

pub struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        Ok(json!({ "ok": true }))
    }
}
