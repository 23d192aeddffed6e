//! Recurring jobs: declaring, changing, pausing and deleting schedules (each stored, then armed
//! where a service fires the ticks), and the one path from a tick to a job (`fire`).
//!
//! A tick submits its job with an idempotency key made of the schedule and the tick's time, so
//! a tick delivered twice, retried, or fired again after a restart makes one job. Where the
//! ticks come from: EventBridge Scheduler on AWS (the `scheduler` function calls `fire`), the
//! local runtime's scheduler elsewhere (`evaluate`, every `CONVEYOR_SCHEDULER_INTERVAL`, with
//! the time passed in, so tests drive it with their own clock).

use crate::domain::{
    check_year, parse_timezone, Cadence, CatchUp, JobType, Overlap, RunOutcome, Schedule,
    ScheduleName, ScheduleRun, Tenant, ValidationError,
};
use crate::ports::StoreError;
use crate::service::{JobService, ServiceError, SubmitRequest};
use chrono::{DateTime, Utc};
use serde_json::Value;

const CONFLICT_RETRIES: usize = 8;

/// A schedule as a client declares it (parsed, each field valid on its own).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: ScheduleName,
    pub job_type: JobType,
    pub payload: Value,
    pub priority: i32,
    pub max_attempts: Option<u32>,
    pub expression: Cadence,
    pub timezone: String,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
}

/// Check what only the whole spec and the deployment can tell: the type exists and takes the
/// payload, the time zone exists, the window is not empty and falls in the years a schedule
/// may use, and the schedule fires at least once from `now`.
fn check(
    service: &JobService,
    tenant: &Tenant,
    spec: &ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    let registration = service
        .registry()
        .get(spec.job_type.as_str())
        .ok_or_else(|| {
            ValidationError::new(
                "type",
                format!(
                    "unknown job type '{}'; known types: {}",
                    spec.job_type,
                    service.registry().names().join(", ")
                ),
            )
        })?;
    registration.handler.validate(&spec.payload)?;
    let size = serde_json::to_vec(&spec.payload).map_or(0, |v| v.len());
    if size > service.max_payload_bytes() {
        return Err(ServiceError::PayloadTooLarge {
            size,
            limit: service.max_payload_bytes(),
        });
    }
    parse_timezone(&spec.timezone)?;
    for (field, t) in [("start_at", spec.start_at), ("end_at", spec.end_at)] {
        if let Some(t) = t {
            check_year(field, t)?;
        }
    }
    if let (Some(start), Some(end)) = (spec.start_at, spec.end_at) {
        if end <= start {
            return Err(ValidationError::new("end_at", "must be after start_at").into());
        }
    }
    if schedule_of(tenant, spec.clone(), now)
        .next_tick_after(now)
        .is_none()
    {
        let (field, why) = match (&spec.expression, spec.end_at) {
            (Cadence::At(_), _) => ("at", "is not after now (in the schedule's timezone)"),
            (_, Some(_)) => ("end_at", "comes before the schedule's first tick"),
            (Cadence::Cron(_), None) => ("cron", "matches no date"),
            (Cadence::Rate { .. }, None) => ("rate", "has no tick"),
        };
        return Err(ValidationError::new(
            field,
            format!("the schedule would never fire: it {why}"),
        )
        .into());
    }
    Ok(())
}

fn schedule_of(tenant: &Tenant, spec: ScheduleSpec, now: DateTime<Utc>) -> Schedule {
    Schedule {
        tenant: tenant.clone(),
        name: spec.name,
        job_type: spec.job_type,
        payload: spec.payload,
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        expression: spec.expression,
        timezone: spec.timezone,
        start_at: spec.start_at,
        end_at: spec.end_at,
        overlap: spec.overlap,
        catch_up: spec.catch_up,
        paused: spec.paused,
        created_at: now,
        updated_at: now,
        fires_after: now,
        last_tick: None,
        last_job: None,
        waiting_tick: None,
        runs: vec![],
        version: 1,
    }
}

/// Declare a new schedule: stored, then armed. If arming fails, the stored one is taken back
/// and the error answered (nothing half-made stays behind).
pub async fn create(
    service: &JobService,
    tenant: &Tenant,
    spec: ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<Schedule, ServiceError> {
    check(service, tenant, &spec, now)?;
    let ports = service.ports();
    if let Some(max) = service.limits_of(tenant).await?.max_schedules {
        if ports.schedules.schedules(Some(tenant)).await?.len() as u64 >= max {
            return Err(ServiceError::TooManySchedules { max });
        }
    }
    let schedule = schedule_of(tenant, spec, now);
    match ports.schedules.put_schedule(&schedule, None).await {
        Err(StoreError::Conflict) => return Err(ServiceError::ScheduleExists(schedule.name)),
        other => other?,
    }
    if let Err(e) = ports.triggers.arm(&schedule).await {
        if let Err(undo) = ports
            .schedules
            .delete_schedule(tenant, &schedule.name)
            .await
        {
            tracing::error!(schedule = %schedule.name, error = %undo, "a schedule that could not be armed stays stored");
        }
        return Err(e.into());
    }
    Ok(schedule)
}

pub async fn get(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
) -> Result<Schedule, ServiceError> {
    service
        .ports()
        .schedules
        .schedule(tenant, name)
        .await?
        .ok_or_else(|| ServiceError::ScheduleNotFound(name.clone()))
}

pub async fn list(service: &JobService, tenant: &Tenant) -> Result<Vec<Schedule>, ServiceError> {
    Ok(service.ports().schedules.schedules(Some(tenant)).await?)
}

/// Change a stored schedule with `edit` (re-read and re-applied on a lost race), then arm it
/// as it now is. A failed arm is answered as an error; the same request again arms it.
async fn change(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
    edit: impl Fn(&mut Schedule),
) -> Result<Schedule, ServiceError> {
    let ports = service.ports();
    for _ in 0..CONFLICT_RETRIES {
        let stored = get(service, tenant, name).await?;
        let mut next = stored.clone();
        edit(&mut next);
        next.version = stored.version + 1;
        match ports
            .schedules
            .put_schedule(&next, Some(stored.version))
            .await
        {
            Ok(()) => {
                ports.triggers.arm(&next).await?;
                return Ok(next);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Contended)
}

/// Replace a schedule's definition (its history stays); ticks fire from now on.
pub async fn replace(
    service: &JobService,
    tenant: &Tenant,
    spec: ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<Schedule, ServiceError> {
    check(service, tenant, &spec, now)?;
    let name = spec.name.clone();
    change(service, tenant, &name, |s| {
        let fresh = schedule_of(tenant, spec.clone(), now);
        *s = Schedule {
            created_at: s.created_at,
            last_tick: s.last_tick,
            last_job: s.last_job,
            waiting_tick: s
                .waiting_tick
                .filter(|_| fresh.overlap == Overlap::QueueOne),
            runs: std::mem::take(&mut s.runs),
            ..fresh
        };
    })
    .await
}

/// Pause (no tick fires) or resume (ticks fire again from now: the paused ones are not made up).
pub async fn set_paused(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<Schedule, ServiceError> {
    change(service, tenant, name, |s| {
        if s.paused != paused {
            s.paused = paused;
            s.updated_at = now;
            if !paused {
                s.fires_after = now;
            }
        }
    })
    .await
}

/// Delete a schedule: disarmed first (no tick comes after), then forgotten. Its jobs stay.
pub async fn delete(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
) -> Result<(), ServiceError> {
    let ports = service.ports();
    get(service, tenant, name).await?;
    ports.triggers.disarm(tenant, name).await?;
    if ports.schedules.delete_schedule(tenant, name).await? {
        Ok(())
    } else {
        Err(ServiceError::ScheduleNotFound(name.clone()))
    }
}

/// Whether the schedule's latest submitted run has not finished.
async fn previous_run_active(
    service: &JobService,
    schedule: &Schedule,
) -> Result<bool, ServiceError> {
    let Some(id) = schedule.last_job else {
        return Ok(false);
    };
    Ok(service
        .ports()
        .store
        .get(id)
        .await?
        .is_some_and(|job| !job.status.is_terminal()))
}

/// Submit the job of `tick` (or find the one a first firing of it made).
async fn submit_tick(
    service: &JobService,
    schedule: &Schedule,
    tick: DateTime<Utc>,
) -> Result<crate::domain::JobId, ServiceError> {
    let key = crate::domain::IdempotencyKey::parse(schedule.tick_key(tick))?;
    let request = SubmitRequest {
        priority: schedule.priority,
        max_attempts: schedule.max_attempts,
        idempotency_key: Some(key),
        ..SubmitRequest::new(schedule.job_type.clone(), schedule.payload.clone())
    };
    match service.submit(schedule.tenant.clone(), request).await {
        Ok((job, _)) => Ok(job.id),
        // Fired before with another definition (changed since): that job is the tick's.
        Err(ServiceError::IdempotencyConflict(_, id)) => Ok(id),
        Err(e) => Err(e),
    }
}

/// The one path from a tick to a job: what became of `tick` of `tenant`'s schedule `name`,
/// recorded in its history. `None`: there is no such schedule (deleted), it is paused, or the
/// tick is outside its window or from before it was last changed. A tick handled before is
/// answered as it was, with no new job.
pub async fn fire(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<ScheduleRun>, ServiceError> {
    let ports = service.ports();
    for _ in 0..CONFLICT_RETRIES {
        let Some(mut schedule) = ports.schedules.schedule(tenant, name).await? else {
            return Ok(None);
        };
        if let Some(run) = schedule
            .runs
            .iter()
            .find(|r| r.tick == tick && r.outcome != RunOutcome::Waiting)
        {
            return Ok(Some(run.clone()));
        }
        let outside = schedule.start_at.is_some_and(|s| tick < s)
            || schedule.end_at.is_some_and(|e| tick > e);
        if schedule.paused || outside || tick <= schedule.fires_after {
            return Ok(None);
        }
        let expected = schedule.version;
        let active =
            schedule.overlap != Overlap::Allow && previous_run_active(service, &schedule).await?;
        let run = match (schedule.overlap, active) {
            (Overlap::Skip, true) => ScheduleRun {
                tick,
                outcome: RunOutcome::Skipped,
                job_id: None,
                at: now,
            },
            (Overlap::QueueOne, true) => {
                // One tick waits; a newer one takes its place.
                if let Some(older) = schedule.waiting_tick.replace(tick) {
                    schedule.record_run(ScheduleRun {
                        tick: older,
                        outcome: RunOutcome::Skipped,
                        job_id: None,
                        at: now,
                    });
                }
                ScheduleRun {
                    tick,
                    outcome: RunOutcome::Waiting,
                    job_id: None,
                    at: now,
                }
            }
            _ => {
                // A tick still waiting is overtaken by this one.
                if let Some(older) = schedule.waiting_tick.take() {
                    schedule.record_run(ScheduleRun {
                        tick: older,
                        outcome: RunOutcome::Skipped,
                        job_id: None,
                        at: now,
                    });
                }
                ScheduleRun {
                    tick,
                    outcome: RunOutcome::Submitted,
                    job_id: Some(submit_tick(service, &schedule, tick).await?),
                    at: now,
                }
            }
        };
        schedule.record_run(run.clone());
        schedule.version = expected + 1;
        match ports
            .schedules
            .put_schedule(&schedule, Some(expected))
            .await
        {
            Ok(()) => {
                tracing::info!(schedule = %name, %tick, outcome = ?run.outcome, job_id = ?run.job_id, "schedule tick");
                return Ok(Some(run));
            }
            // (The job, if one was submitted, is found again by its key.)
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Contended)
}

/// Submit the tick waiting behind a run that has now ended (`Overlap::QueueOne`); `None` when
/// nothing waits or the run goes on.
pub async fn release_waiting(
    service: &JobService,
    tenant: &Tenant,
    name: &ScheduleName,
    now: DateTime<Utc>,
) -> Result<Option<ScheduleRun>, ServiceError> {
    let ports = service.ports();
    for _ in 0..CONFLICT_RETRIES {
        let Some(mut schedule) = ports.schedules.schedule(tenant, name).await? else {
            return Ok(None);
        };
        let Some(tick) = schedule.waiting_tick else {
            return Ok(None);
        };
        if previous_run_active(service, &schedule).await? {
            return Ok(None);
        }
        let expected = schedule.version;
        let run = ScheduleRun {
            tick,
            outcome: RunOutcome::Submitted,
            job_id: Some(submit_tick(service, &schedule, tick).await?),
            at: now,
        };
        schedule.waiting_tick = None;
        schedule.record_run(run.clone());
        schedule.version = expected + 1;
        match ports
            .schedules
            .put_schedule(&schedule, Some(expected))
            .await
        {
            Ok(()) => return Ok(Some(run)),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Contended)
}

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluated {
    pub fired: usize,
    pub released: usize,
    pub failed: usize,
}

/// One pass of the scheduler at `now`: every schedule's due tick fires (the latest missed one,
/// under `CatchUp::Latest`), and waiting ticks whose previous run ended are submitted. With
/// `ticks: false` only the waiting ticks (AWS, where EventBridge Scheduler fires the ticks and
/// maintenance runs this). A schedule that fails is logged and tried again next pass.
pub async fn evaluate(
    service: &JobService,
    now: DateTime<Utc>,
    ticks: bool,
) -> Result<Evaluated, ServiceError> {
    let mut done = Evaluated::default();
    for schedule in service.ports().schedules.due_schedules(now).await? {
        // Each schedule alone: one that fails, or panics, is logged and counted, and the pass
        // goes on to the next.
        let one = std::panic::AssertUnwindSafe(evaluate_one(service, &schedule, now, ticks));
        match futures::FutureExt::catch_unwind(one).await {
            Ok(one) => {
                done.fired += one.fired;
                done.released += one.released;
                done.failed += one.failed;
            }
            Err(panic) => {
                done.failed += 1;
                tracing::error!(schedule = %schedule.name, tenant = %schedule.tenant, panic = %crate::health::panic_message(panic), "a schedule's pass panicked; the others go on");
            }
        }
    }
    Ok(done)
}

/// One schedule's part of a pass.
async fn evaluate_one(
    service: &JobService,
    schedule: &Schedule,
    now: DateTime<Utc>,
    ticks: bool,
) -> Evaluated {
    let mut done = Evaluated::default();
    {
        let (tenant, name) = (&schedule.tenant, &schedule.name);
        if schedule.waiting_tick.is_some() {
            match release_waiting(service, tenant, name, now).await {
                Ok(Some(_)) => done.released += 1,
                Ok(None) => {}
                Err(e) => {
                    done.failed += 1;
                    tracing::warn!(schedule = %name, %tenant, error = %e, "a waiting tick was not submitted; trying again");
                }
            }
        }
        if !ticks {
            return done;
        }
        if let Some(tick) = schedule.due_tick(now) {
            match fire(service, tenant, name, tick, now).await {
                Ok(Some(_)) => done.fired += 1,
                Ok(None) => {}
                Err(e) => {
                    done.failed += 1;
                    tracing::warn!(schedule = %name, %tenant, %tick, error = %e, "a tick did not fire; trying again");
                }
            }
        }
    }
    done
}

/// The next tick a schedule would fire after `now` (for display).
pub fn next_run(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if schedule.paused {
        return None;
    }
    schedule.next_tick_after(now.max(schedule.last_tick.unwrap_or(now)))
}
