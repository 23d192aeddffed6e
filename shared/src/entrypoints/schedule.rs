//! The maintenance entrypoint: what an EventBridge schedule rule (or the local timer) fires.

use crate::jobs::Registry;
use crate::maintenance::{sweep, MaintenanceSettings, SweepReport};
use crate::ports::{Ports, StoreError};
use chrono::Utc;

pub async fn handle_maintenance(
    ports: &Ports,
    registry: &Registry,
    settings: MaintenanceSettings,
) -> Result<SweepReport, StoreError> {
    let report = sweep(ports, registry, settings, Utc::now()).await?;
    if report != SweepReport::default() {
        tracing::info!(?report, "maintenance sweep");
    }
    Ok(report)
}

/// What EventBridge Scheduler sends the `scheduler` function at a tick of a user's schedule
/// (the input `EventBridgeScheduler` arms it with; `tick` filled in from
/// `<aws.scheduler.scheduled-time>`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ScheduleTickEvent {
    pub schedule_tick: ScheduleTick,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ScheduleTick {
    pub tenant: crate::domain::Tenant,
    pub name: crate::domain::ScheduleName,
    pub tick: chrono::DateTime<Utc>,
}

/// Fire one tick. An error fails the invocation, and EventBridge Scheduler delivers the tick
/// again (its retry policy); the tick's idempotency key keeps that to one job.
pub async fn handle_tick(
    service: &crate::service::JobService,
    event: ScheduleTickEvent,
) -> Result<Option<crate::domain::ScheduleRun>, crate::ports::ServiceError> {
    let t = event.schedule_tick;
    crate::schedules::fire(service, &t.tenant, &t.name, t.tick, Utc::now()).await
}

/// Maintenance's share of schedules on AWS (EventBridge Scheduler fires the ticks): submit the
/// ticks waiting for a run that has ended (`overlap: queue_one`).
pub async fn release_waiting_ticks(
    service: &crate::service::JobService,
) -> Result<crate::schedules::Evaluated, crate::ports::ServiceError> {
    crate::schedules::evaluate(service, Utc::now(), false).await
}

/// Ticks the scheduler function failed after Lambda's retries, as Lambda records them on the
/// function's on-failure destination (`queue`: an SQS queue of invocation records, each with the
/// tick it was given as `requestPayload`): each fired again. A tick fired is deleted from the
/// queue (its idempotency key makes it one job however often it fires); one that fails again
/// comes back after the queue's visibility timeout, for a later sweep. A record that holds no
/// tick is deleted, logged. Answers how many ticks fired.
pub async fn refire_failed_ticks(
    service: &crate::service::JobService,
    failures: &dyn crate::ports::QueueConsumer,
    queue: &str,
) -> Result<u64, crate::ports::ServiceError> {
    const PAGES: usize = 10;
    let unavailable = |e: crate::ports::QueueError| {
        crate::ports::ServiceError::from(crate::ports::StoreError::Unavailable(e.to_string()))
    };
    let mut fired = 0;
    for _ in 0..PAGES {
        let records = failures
            .receive(
                queue,
                10,
                std::time::Duration::from_secs(300),
                std::time::Duration::ZERO,
            )
            .await
            .map_err(unavailable)?;
        if records.is_empty() {
            break;
        }
        let mut done = vec![];
        for record in &records {
            let tick = serde_json::from_str::<serde_json::Value>(&record.body)
                .ok()
                .and_then(|r| {
                    serde_json::from_value::<ScheduleTickEvent>(r["requestPayload"].clone()).ok()
                });
            let Some(tick) = tick else {
                tracing::error!(message_id = %record.message_id, "an on-failure record with no schedule tick; deleted");
                done.push(record.receipt_handle.clone());
                continue;
            };
            let (tenant, name, at) = (
                tick.schedule_tick.tenant.clone(),
                tick.schedule_tick.name.clone(),
                tick.schedule_tick.tick,
            );
            match handle_tick(service, tick).await {
                Ok(_) => {
                    tracing::info!(%tenant, schedule = %name, tick = %at, "a failed schedule tick fired again");
                    fired += 1;
                    done.push(record.receipt_handle.clone());
                }
                Err(e) => {
                    tracing::warn!(%tenant, schedule = %name, tick = %at, error = %e, "a failed schedule tick failed again; a later sweep tries it");
                }
            }
        }
        if !done.is_empty() {
            failures.delete(queue, &done).await.map_err(unavailable)?;
        }
    }
    Ok(fired)
}

/// What one maintenance tick does, as the `maintenance` function runs it on each EventBridge
/// schedule event: a sweep, then the schedule ticks that waited for a run to end, then (where
/// `failures` names the scheduler function's on-failure queue) the ticks it failed on. A part
/// that fails is logged and tried again on the next tick; only the sweep's failure is returned.
pub async fn maintenance_tick(
    service: &crate::service::JobService,
    settings: MaintenanceSettings,
    failures: Option<&str>,
) -> Result<SweepReport, StoreError> {
    let report = handle_maintenance(service.ports(), service.registry(), settings).await;
    if let Err(e) = release_waiting_ticks(service).await {
        tracing::warn!(error = %e, "waiting schedule ticks not released; next sweep tries again");
    }
    let refired = match failures {
        Some(queue) => refire_failed_ticks(service, service.ports().dead_letters.as_ref(), queue)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "failed schedule ticks not read; next sweep tries again");
                0
            }),
        None => 0,
    };
    let mut report = report?;
    report.ticks_refired = refired;
    Ok(report)
}
