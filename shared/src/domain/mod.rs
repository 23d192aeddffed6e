//! The job domain: identifiers, the job record, its lifecycle and the retry policy. No I/O here.

mod access;
mod backoff;
mod batch;
mod external;
mod history;
mod ids;
mod job;
mod message;
mod pause;
mod rate;
mod schedule;
mod submit;
mod zones;

pub use access::{
    parse_roles, Actor, Admission, ApiKey, AuditEntry, KeyRefusal, Role, TenantLimits,
    WebhookGenerations, KEY_PREFIX,
};
pub use backoff::Backoff;
pub use batch::{
    batch_count_change, Batch, BatchId, CallbackSpec, MemberPosition, MembersPage, BATCH_KEY_PREFIX,
};
pub use external::{
    ExternalType, HandlerTarget, EXTERNAL_ATTEMPTS_MAX, EXTERNAL_CONCURRENCY_MAX,
    EXTERNAL_TIMEOUT_MAX, RESERVED_PREFIX,
};
pub use history::{
    ended as job_ended, minute_of, MinuteView, TypeMinute, HISTORY_KEPT, RUN_BUCKETS,
};
pub use ids::{
    tenant_bucket, ConcurrencyKey, IdempotencyKey, JobId, JobType, Tenant, Topic, ValidationError,
};
pub use job::{
    slot_change, DependencyFailure, EventSelection, Expected, Job, JobError, JobStatus, JobSummary,
    LifecycleEvent, LifecycleKind, NewJob, Outcome, Progress, TransitionError, MAX_QUEUE_DELAY,
};
pub use message::JobMessage;
pub use pause::{Pause, PauseScope, PauseView, Pauses};
pub use rate::{gcra, parse_duration, Debounce, Limit, Rate, TypeLimit, MAX_DEBOUNCE};
pub use schedule::{
    check_year, parse_timezone, Cadence, CatchUp, Cron, Overlap, RateUnit, RunOutcome, Schedule,
    ScheduleName, ScheduleRun, MAX_RATE, ON_TIME, RUNS_KEPT, TICK_KEY_PREFIX, YEARS,
};
pub use submit::SubmitRequest;
pub use zones::{Zone, ZONES_TABLE};
