//! The job record and its lifecycle. Every change of status is a pure function from one `Job`
//! to the next; the store then writes it only if the job still is what the change was computed
//! from (`Expected`: status, attempt, version), so a duplicate delivery or a late worker can
//! never move a job twice or overwrite a newer state.

use super::{Backoff, IdempotencyKey, JobId, JobType, Tenant};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// The longest delay a queue message can carry (SQS: 15 minutes). Jobs due later are
/// `scheduled` and released by maintenance when they come within reach.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waits for the jobs it depends on (`depends_on`) to end.
    Waiting,
    Scheduled,
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Waiting,
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress a running handler reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why an attempt did not succeed. `retryable` decides between another attempt and the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct JobError {
    /// `retryable`, `permanent`, `timeout`, `panic`, `stalled`, `cancelled`.
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: "retryable".into(),
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: "permanent".into(),
            message: message.into(),
            retryable: false,
        }
    }

    pub fn cancelled() -> Self {
        Self {
            kind: "cancelled".into(),
            message: "cancelled on request".into(),
            retryable: false,
        }
    }

    pub fn with_kind(kind: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// How a handler run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(JobError),
}

/// What a conditional write expects the stored job to still be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub status: JobStatus,
    pub attempt: u32,
    pub version: u64,
    /// Also require the stored job's last sign of life (`Job::due_at` of a running job) to be
    /// this: no heartbeat came since the read. Set when declaring a job stalled.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// A change the job's current status does not allow (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a job that is {from}")]
pub struct TransitionError {
    pub action: &'static str,
    pub from: JobStatus,
}

/// How many of a job's replays it names (`Job::replayed_as`): the newest.
pub const REPLAYS_KEPT: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub tenant: Tenant,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub status: JobStatus,
    pub priority: i32,
    pub payload: Value,
    /// Attempts started so far (0 until the first start); a manual retry starts over.
    pub attempt: u32,
    /// Starts ever, never reset: identifies one run of the job (heartbeats, late outcomes).
    #[serde(default)]
    pub runs: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    pub retention_secs: u64,
    pub progress: Option<Progress>,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// With an idempotency key: a digest of the request that made the job, so the same key
    /// with a different request is told apart from a repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    /// What per-key limits count this job under (none: only its type's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<super::ConcurrencyKey>,
    /// Its tenant's running limit when it was submitted (`TenantLimits::max_running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_max_running: Option<u32>,
    /// The batch this job is a member of: its end is counted there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<super::BatchId>,
    /// The jobs this one waits for (`waiting` until they end): it runs once all succeed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<JobId>,
    /// What a failed, dead or cancelled job it depends on does to it.
    #[serde(default, skip_serializing_if = "DependencyFailure::is_cancel")]
    pub on_dependency_failure: DependencyFailure,
    pub cancel_requested: bool,
    /// The job this one replays (`POST /v1/jobs/{id}/replay`): made from it, maybe with
    /// another payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<JobId>,
    /// The jobs made by replaying this one, oldest first (the last `REPLAYS_KEPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replayed_as: Vec<JobId>,
    /// The job counts against its tenant's active-job quota (it was submitted while one
    /// applied): the store takes a slot while it is unfinished and gives it back when it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holds_slot: bool,
    pub created_at: DateTime<Utc>,
    /// When the job last entered `queued` (or was re-dispatched): the outbox rule's clock.
    pub queued_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When anything about the job last changed (a transition, or its run's progress): what
    /// `updated_since` polls by. Jobs stored before it existed read as changed at their creation.
    #[serde(default = "unknown_time")]
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

/// What a job does when one it depends on ends without succeeding (or is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyFailure {
    /// It ends `cancelled`, its error naming the job and how it ended.
    #[default]
    Cancel,
    /// It runs anyway once every job it depends on has ended.
    Run,
}

impl DependencyFailure {
    fn is_cancel(&self) -> bool {
        *self == DependencyFailure::Cancel
    }
}

/// How long maintenance leaves a waiting job before it looks at its dependencies itself (the
/// net under a notification lost to a crash): doubling with the time it has waited.
const DEPENDENCY_RECHECK_MIN: chrono::Duration = chrono::Duration::seconds(10);

fn unknown_time() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// What a listing shows of a job: all but its payload and result (read the job for those),
/// so a page stays small and an index can hold it without the job's bulk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: JobId,
    pub tenant: Tenant,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub status: JobStatus,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    pub progress: Option<Progress>,
    pub error: Option<JobError>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Counts the job's transitions: of two copies of one job, the higher is the newer.
    pub version: u64,
}

impl From<&Job> for JobSummary {
    fn from(j: &Job) -> Self {
        Self {
            id: j.id,
            tenant: j.tenant.clone(),
            job_type: j.job_type.clone(),
            status: j.status,
            priority: j.priority,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            progress: j.progress.clone(),
            error: j.error.clone(),
            idempotency_key: j.idempotency_key.clone(),
            cancel_requested: j.cancel_requested,
            created_at: j.created_at,
            run_at: j.run_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            heartbeat_at: j.heartbeat_at,
            expires_at: j.expires_at,
            updated_at: j.updated_at.max(j.created_at),
            version: j.version,
        }
    }
}

/// Everything a new job needs; the service fills it from the request and the type's options.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: Tenant,
    pub job_type: JobType,
    pub priority: i32,
    pub payload: Value,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub retention: Duration,
    pub idempotency_key: Option<IdempotencyKey>,
    pub request_fingerprint: Option<String>,
    pub run_at: DateTime<Utc>,
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// How a change moves a job's tenant's count of active jobs: `-1` when a job holding a slot
/// finishes, `+1` when one comes back from finished (a retry), else `0`.
pub fn slot_change(from: JobStatus, next: &Job) -> i64 {
    match (
        next.holds_slot,
        from.is_terminal(),
        next.status.is_terminal(),
    ) {
        (true, false, true) => -1,
        (true, true, false) => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleKind {
    JobSucceeded,
    JobFailed,
    JobDead,
    JobCancelled,
}

/// What the event bus hears when a job ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub kind: LifecycleKind,
    pub job_id: JobId,
    pub tenant: Tenant,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: Option<JobError>,
}

/// Which jobs' lifecycle events a deployment publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EventSelection {
    #[default]
    None,
    All,
    Types(Vec<JobType>),
}

impl EventSelection {
    /// `none`, `all`, or job type names separated by commas.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim() {
            "none" | "" => Some(Self::None),
            "all" => Some(Self::All),
            list => list
                .split(',')
                .map(|t| JobType::parse(t.trim()).ok())
                .collect::<Option<Vec<_>>>()
                .map(Self::Types),
        }
    }

    pub fn wants(&self, event: &LifecycleEvent) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Types(types) => types.contains(&event.job_type),
        }
    }
}

mod transitions;

#[cfg(test)]
mod tests;
