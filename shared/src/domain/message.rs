//! The message a job's queue carries.

use super::{Job, JobId, JobType, Tenant};
use serde::{Deserialize, Serialize};

/// The queue message: the job's id, and its type so a worker can wait for the type's start
/// slot before it starts the job; the job's state lives in the store.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: JobId,
    /// Absent in messages from earlier versions.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobType>,
    /// `<tenant>/<concurrency key>`, so the job's per-key rate is known before it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The job's tenant and its running limit, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_running: Option<(Tenant, u32)>,
    /// The job's priority (0 left out), so a held job goes back to the queue it came from.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Times maintenance sent this message back from the dead-letter queue because its job had
    /// never started (0 left out; see `maintenance::settle_dead_letters`).
    #[serde(default, skip_serializing_if = "is_none_resent")]
    pub resent: u32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_none_resent(n: &u32) -> bool {
    *n == 0
}

impl JobMessage {
    pub fn of(job: &Job) -> Self {
        Self {
            job_id: job.id,
            job_type: Some(job.job_type.clone()),
            key: job
                .concurrency_key
                .as_ref()
                .map(|k| format!("{}/{}", job.tenant, k)),
            tenant_running: job.tenant_max_running.map(|max| (job.tenant.clone(), max)),
            priority: job.priority,
            resent: 0,
        }
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}
