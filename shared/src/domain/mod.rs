//! The job domain: identifiers, the job record, its lifecycle and the retry policy. No I/O here.

mod access;
mod backoff;
mod ids;
mod job;

pub use access::{
    parse_roles, Actor, Admission, ApiKey, AuditEntry, KeyRefusal, Role, TenantLimits,
    WebhookGenerations, KEY_PREFIX,
};
pub use backoff::Backoff;
pub use ids::{IdempotencyKey, JobId, JobType, Tenant, ValidationError};
pub use job::{
    slot_change, Expected, Job, JobError, JobStatus, JobSummary, LifecycleEvent, LifecycleKind,
    NewJob, Outcome, Progress, TransitionError, MAX_QUEUE_DELAY,
};
