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

impl Job {
    /// A fresh job: `queued`, or `scheduled` when its run time is beyond the queue's delay limit.
    pub fn create(new: NewJob, now: DateTime<Utc>) -> Job {
        let status = if new.run_at > after(now, MAX_QUEUE_DELAY) {
            JobStatus::Scheduled
        } else {
            JobStatus::Queued
        };
        Job {
            id: JobId::for_tenant(&new.tenant),
            tenant: new.tenant,
            job_type: new.job_type,
            status,
            priority: new.priority,
            payload: new.payload,
            attempt: 0,
            runs: 0,
            max_attempts: new.max_attempts,
            backoff: new.backoff,
            timeout_ms: new.timeout.as_millis() as u64,
            retention_secs: new.retention.as_secs(),
            progress: None,
            result: None,
            error: None,
            idempotency_key: new.idempotency_key,
            request_fingerprint: new.request_fingerprint,
            concurrency_key: None,
            tenant_max_running: None,
            batch_id: None,
            depends_on: vec![],
            on_dependency_failure: DependencyFailure::Cancel,
            cancel_requested: false,
            holds_slot: false,
            created_at: now,
            queued_at: now,
            run_at: new.run_at.max(now),
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            expires_at: None,
            updated_at: now,
            version: 1,
        }
    }

    pub fn expected(&self) -> Expected {
        Expected {
            status: self.status,
            attempt: self.attempt,
            version: self.version,
            last_heartbeat: None,
        }
    }

    /// `expected`, and also that no heartbeat arrived since this copy was read.
    pub fn expected_silent(&self) -> Expected {
        Expected {
            last_heartbeat: Some(self.due_at()),
            ..self.expected()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The time the maintenance index sorts this job by in its status: when a queued job's
    /// message is due, when a scheduled job runs, when maintenance next looks at a waiting job's
    /// dependencies, a running job's last heartbeat, and when a finished job expires.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self.status {
            JobStatus::Waiting => self.run_at,
            JobStatus::Queued => self.run_at.max(self.queued_at),
            JobStatus::Scheduled => self.run_at,
            JobStatus::Running => self
                .heartbeat_at
                .or(self.started_at)
                .unwrap_or(self.queued_at),
            _ => self.expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The delay to give the queue message for a `queued` job, `None` for any other status.
    pub fn dispatch_delay(&self, now: DateTime<Utc>) -> Option<Duration> {
        (self.status == JobStatus::Queued)
            .then(|| (self.run_at - now).to_std().unwrap_or(Duration::ZERO))
    }

    fn next(&self, status: JobStatus, now: DateTime<Utc>) -> Job {
        Job {
            status,
            version: self.version + 1,
            updated_at: now,
            ..self.clone()
        }
    }

    fn finished(&self, status: JobStatus, now: DateTime<Utc>) -> Job {
        Job {
            finished_at: Some(now),
            expires_at: Some(after(now, Duration::from_secs(self.retention_secs))),
            ..self.next(status, now)
        }
    }

    /// A new job that waits for `parents` to end (`waiting`; maintenance first looks at it
    /// after `DEPENDENCY_RECHECK_MIN`).
    pub fn waiting_for(self, parents: Vec<JobId>, on_failure: DependencyFailure) -> Job {
        Job {
            status: JobStatus::Waiting,
            run_at: self.created_at + DEPENDENCY_RECHECK_MIN,
            depends_on: parents,
            on_dependency_failure: on_failure,
            ..self
        }
    }

    /// A waiting job, decided from how the jobs it depends on stand (`None`: gone): `queued`
    /// once all succeeded (with `DependencyFailure::Run`, once all ended); `cancelled` as soon as
    /// one failed, died, was cancelled or is gone (with `Cancel`). `None` while it must wait.
    pub fn settle_dependencies(
        &self,
        parents: &[(JobId, Option<JobStatus>)],
        now: DateTime<Utc>,
    ) -> Option<Job> {
        if self.status != JobStatus::Waiting {
            return None;
        }
        let unsuccessful = parents
            .iter()
            .find(|(_, s)| s.is_none_or(|s| s.is_terminal() && s != JobStatus::Succeeded));
        if let (Some((id, status)), DependencyFailure::Cancel) =
            (unsuccessful, self.on_dependency_failure)
        {
            let how = status.map_or("is gone".to_string(), |s| format!("ended {s}"));
            return Some(Job {
                error: Some(JobError::with_kind(
                    "dependency",
                    format!("job {id}, which this one depends on, {how}"),
                    false,
                )),
                ..self.finished(JobStatus::Cancelled, now)
            });
        }
        if parents
            .iter()
            .all(|(_, s)| s.is_none_or(|s| s.is_terminal()))
        {
            return Some(Job {
                run_at: now,
                queued_at: now,
                ..self.next(JobStatus::Queued, now)
            });
        }
        None
    }

    /// A waiting job maintenance looked at and found still waiting: it looks again after as long
    /// as the job has waited (at least `DEPENDENCY_RECHECK_MIN`).
    pub fn recheck_later(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Waiting {
            return Err(TransitionError {
                action: "recheck",
                from: self.status,
            });
        }
        Ok(Job {
            run_at: now + (now - self.created_at).max(DEPENDENCY_RECHECK_MIN),
            ..self.next(JobStatus::Waiting, now)
        })
    }

    /// queued → running: a worker takes the job for attempt `attempt + 1`.
    pub fn start(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Queued {
            return Err(TransitionError {
                action: "start",
                from: self.status,
            });
        }
        Ok(Job {
            attempt: self.attempt + 1,
            runs: self.runs + 1,
            started_at: Some(now),
            heartbeat_at: Some(now),
            progress: None,
            ..self.next(JobStatus::Running, now)
        })
    }

    /// running → succeeded | cancelled | queued/scheduled (retry) | failed | dead.
    /// `jitter` is a uniform sample in `[0, 1)` for the retry delay.
    pub fn finish(
        &self,
        outcome: Outcome,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(TransitionError {
                action: "finish",
                from: self.status,
            });
        }
        Ok(match outcome {
            Outcome::Succeeded(result) => Job {
                result: Some(result),
                error: None,
                ..self.finished(JobStatus::Succeeded, now)
            },
            Outcome::Failed(_) if self.cancel_requested => Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            },
            Outcome::Failed(error) if error.kind == "cancelled" => Job {
                error: Some(error),
                ..self.finished(JobStatus::Cancelled, now)
            },
            Outcome::Failed(error) if error.retryable && self.attempt < self.max_attempts => {
                let run_at = after(now, self.backoff.delay(self.attempt, jitter));
                let status = if run_at > after(now, MAX_QUEUE_DELAY) {
                    JobStatus::Scheduled
                } else {
                    JobStatus::Queued
                };
                Job {
                    error: Some(error),
                    run_at,
                    queued_at: now,
                    heartbeat_at: None,
                    ..self.next(status, now)
                }
            }
            Outcome::Failed(error) => {
                let status = if error.retryable {
                    JobStatus::Dead
                } else {
                    JobStatus::Failed
                };
                Job {
                    error: Some(error),
                    ..self.finished(status, now)
                }
            }
        })
    }

    /// Cancel on request: a waiting job ends at once; a running one is asked to stop
    /// (`cancel_requested`) and ends `cancelled` when its handler notices.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Waiting | JobStatus::Queued | JobStatus::Scheduled => Ok(Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            }),
            JobStatus::Running if !self.cancel_requested => Ok(Job {
                cancel_requested: true,
                ..self.next(JobStatus::Running, now)
            }),
            from => Err(TransitionError {
                action: "cancel",
                from,
            }),
        }
    }

    /// A waiting job that never ran takes a later submit's payload and run time (debounce);
    /// it stays `queued` (its message comes early and is sent on) or `scheduled`.
    pub fn debounce(
        &self,
        payload: Value,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Queued | JobStatus::Scheduled if self.runs == 0 => {
                let status = if run_at > after(now, MAX_QUEUE_DELAY) {
                    JobStatus::Scheduled
                } else {
                    JobStatus::Queued
                };
                Ok(Job {
                    payload,
                    run_at: run_at.max(self.run_at),
                    ..self.next(status, now)
                })
            }
            from => Err(TransitionError {
                action: "debounce",
                from,
            }),
        }
    }

    /// failed | dead | cancelled → queued, with a fresh set of attempts.
    pub fn retry(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled => Ok(Job {
                attempt: 0,
                progress: None,
                result: None,
                cancel_requested: false,
                queued_at: now,
                run_at: now,
                started_at: None,
                finished_at: None,
                heartbeat_at: None,
                expires_at: None,
                ..self.next(JobStatus::Queued, now)
            }),
            from => Err(TransitionError {
                action: "retry",
                from,
            }),
        }
    }

    /// scheduled → queued, when its run time comes within the queue's delay limit.
    pub fn release(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Scheduled {
            return Err(TransitionError {
                action: "release",
                from: self.status,
            });
        }
        Ok(Job {
            queued_at: now,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// queued → queued with a new message: the outbox rule for a job whose message was lost.
    pub fn redispatch(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Queued {
            return Err(TransitionError {
                action: "re-dispatch",
                from: self.status,
            });
        }
        Ok(Job {
            queued_at: now,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// running → queued: the run was stopped by a shutdown, not by anything about the job, so
    /// it does not use up an attempt. (A crash does: a job that kills its worker must end.)
    pub fn interrupt(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(TransitionError {
                action: "interrupt",
                from: self.status,
            });
        }
        if self.cancel_requested {
            return Ok(Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            });
        }
        Ok(Job {
            attempt: self.attempt.saturating_sub(1),
            error: Some(JobError::with_kind(
                "interrupted",
                format!(
                    "attempt {} was stopped by a shutdown; it does not count",
                    self.attempt
                ),
                true,
            )),
            run_at: now,
            queued_at: now,
            heartbeat_at: None,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// A running job whose worker stopped sending heartbeats: that attempt counts as failed.
    pub fn stalled(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        let since = self.due_at();
        self.finish(
            Outcome::Failed(JobError::with_kind(
                "stalled",
                format!("worker lost: no heartbeat since {}", since.to_rfc3339()),
                true,
            )),
            now,
            0.0,
        )
        .map(|job| Job {
            // A stalled attempt is re-dispatched at once: the silence already was its delay.
            run_at: if job.status == JobStatus::Queued {
                now
            } else {
                job.run_at
            },
            ..job
        })
    }

    /// Its queue message went to the dead-letter queue, every delivery having ended without an
    /// outcome (each run took its worker down, or the message could not be worked): the job
    /// ends `dead` at once, whatever attempts it had left, so a poison job stops.
    pub fn dead_lettered(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError {
                action: "dead-letter",
                from: self.status,
            });
        }
        Ok(Job {
            error: Some(JobError::with_kind(
                "dead_letter",
                "its message went to the dead-letter queue: every delivery ended without an outcome (the run took its worker down, or timed out, each time)",
                false,
            )),
            heartbeat_at: None,
            ..self.finished(JobStatus::Dead, now)
        })
    }

    /// `dead_lettered`, for a job that never started: its message reached the dead-letter
    /// queue `times` times without one start (every receive throttled, or held).
    pub fn dead_lettered_unstarted(
        &self,
        now: DateTime<Utc>,
        times: u32,
    ) -> Result<Job, TransitionError> {
        let mut dead = self.dead_lettered(now)?;
        dead.error = Some(JobError::with_kind(
            "dead_letter",
            format!("its message went to the dead-letter queue {times} times without the job ever starting (its receives throttled, or held for a running slot or a rate, each time)"),
            false,
        ));
        Ok(dead)
    }

    /// The job-log line for the attempt that failed with `error` and led to this state.
    pub fn failure_log_line(&self, error: &JobError, now: DateTime<Utc>) -> String {
        let what = match self.status {
            JobStatus::Queued | JobStatus::Scheduled => format!(
                "; retrying in {} ms",
                (self.run_at - now).num_milliseconds().max(0)
            ),
            s => format!("; job {s}"),
        };
        format!(
            "attempt {} failed ({}): {}{what}",
            self.attempt, error.kind, error.message
        )
    }

    /// The lifecycle event a transition into this job's status announces, if any.
    pub fn lifecycle_event(&self) -> Option<LifecycleEvent> {
        let kind = match self.status {
            JobStatus::Succeeded => LifecycleKind::JobSucceeded,
            JobStatus::Failed => LifecycleKind::JobFailed,
            JobStatus::Dead => LifecycleKind::JobDead,
            JobStatus::Cancelled => LifecycleKind::JobCancelled,
            _ => return None,
        };
        Some(LifecycleEvent {
            kind,
            job_id: self.id,
            tenant: self.tenant.clone(),
            job_type: self.job_type.clone(),
            attempt: self.attempt,
            at: self.finished_at.unwrap_or(self.queued_at),
            error: self.error.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_job(max_attempts: u32) -> Job {
        Job::create(
            NewJob {
                tenant: Tenant::parse("t").unwrap(),
                job_type: JobType::parse("noop").unwrap(),
                priority: 0,
                payload: json!({}),
                max_attempts,
                backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(3600)),
                timeout: Duration::from_secs(30),
                retention: Duration::from_secs(60),
                idempotency_key: None,
                request_fingerprint: None,
                run_at: Utc::now(),
            },
            Utc::now(),
        )
    }

    #[test]
    fn a_job_runs_once_and_succeeds() {
        let now = Utc::now();
        let job = new_job(3);
        assert_eq!(job.status, JobStatus::Queued);
        let running = job.start(now).unwrap();
        assert_eq!((running.attempt, running.version), (1, 2));
        assert!(
            running.start(now).is_err(),
            "a running job cannot start again"
        );
        let done = running
            .finish(Outcome::Succeeded(json!(1)), now, 0.5)
            .unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
        assert!(done.expires_at.unwrap() > now);
        assert!(done.finish(Outcome::Succeeded(json!(2)), now, 0.5).is_err());
    }

    #[test]
    fn retryable_failures_requeue_with_growing_delay_then_die() {
        let now = Utc::now();
        let mut job = new_job(3);
        let mut ceilings = vec![];
        for attempt in 1..=3 {
            job = job.start(now).unwrap();
            assert_eq!(job.attempt, attempt);
            job = job
                .finish(Outcome::Failed(JobError::retryable("boom")), now, 0.999)
                .unwrap();
            if attempt < 3 {
                assert_eq!(job.status, JobStatus::Queued);
                ceilings.push((job.run_at - now).num_milliseconds());
            }
        }
        assert_eq!(job.status, JobStatus::Dead);
        assert_eq!(job.error.unwrap().message, "boom");
        assert!(ceilings[0] < ceilings[1], "delays grow: {ceilings:?}");
    }

    #[test]
    fn a_dead_lettered_job_ends_dead_with_attempts_left_and_only_once() {
        let now = Utc::now();
        let running = new_job(5).start(now).unwrap();
        let dead = running.dead_lettered(now).unwrap();
        assert_eq!(dead.status, JobStatus::Dead);
        let error = dead.error.clone().unwrap();
        assert_eq!(error.kind, "dead_letter");
        assert!(
            error.message.contains("dead-letter queue"),
            "{}",
            error.message
        );
        assert!(dead.expires_at.is_some());
        assert!(
            dead.dead_lettered(now).is_err(),
            "a finished job stays as it is"
        );
        assert_eq!(
            new_job(1).dead_lettered(now).unwrap().status,
            JobStatus::Dead
        );
    }

    #[test]
    fn permanent_failure_ends_failed_and_cancel_wins_over_a_failure() {
        let now = Utc::now();
        let running = new_job(5).start(now).unwrap();
        let failed = running
            .finish(Outcome::Failed(JobError::permanent("bad input")), now, 0.0)
            .unwrap();
        assert_eq!(failed.status, JobStatus::Failed);

        let asked = running.cancel(now).unwrap();
        assert!(asked.cancel_requested && asked.status == JobStatus::Running);
        let ended = asked
            .finish(
                Outcome::Failed(JobError::retryable("interrupted")),
                now,
                0.0,
            )
            .unwrap();
        assert_eq!(ended.status, JobStatus::Cancelled);
    }

    #[test]
    fn long_retry_delays_become_scheduled() {
        let now = Utc::now();
        let mut job = new_job(5);
        job.backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(7200));
        let next = job
            .start(now)
            .unwrap()
            .finish(Outcome::Failed(JobError::retryable("later")), now, 0.9)
            .unwrap();
        assert_eq!(next.status, JobStatus::Scheduled);
        assert_eq!(next.dispatch_delay(now), None);
        let released = next.release(now).unwrap();
        assert!(released.dispatch_delay(now).unwrap() > MAX_QUEUE_DELAY);
    }

    #[test]
    fn cancel_retry_and_stall_follow_the_lifecycle() {
        let now = Utc::now();
        let job = new_job(1);
        let cancelled = job.cancel(now).unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert!(cancelled.cancel(now).is_err());
        let again = cancelled.retry(now).unwrap();
        assert_eq!((again.status, again.attempt), (JobStatus::Queued, 0));
        assert!(again.retry(now).is_err());
        let stalled = again.start(now).unwrap().stalled(now).unwrap();
        assert_eq!(stalled.status, JobStatus::Dead, "no attempts left");
        assert_eq!(stalled.error.unwrap().kind, "stalled");
    }

    #[test]
    fn a_shutdown_interrupt_gives_the_attempt_back_unless_a_cancel_was_asked() {
        let now = Utc::now();
        let running = new_job(1).start(now).unwrap();
        let back = running.interrupt(now).unwrap();
        assert_eq!((back.status, back.attempt), (JobStatus::Queued, 0));
        assert_eq!(back.runs, 1, "runs never go back");
        assert_eq!(back.start(now).unwrap().runs, 2);
        let asked = running.cancel(now).unwrap();
        assert_eq!(asked.interrupt(now).unwrap().status, JobStatus::Cancelled);
        assert!(
            back.interrupt(now).is_err(),
            "only a running job is interrupted"
        );
    }
}
