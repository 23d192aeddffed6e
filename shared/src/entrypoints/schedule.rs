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
) -> Result<Option<crate::domain::ScheduleRun>, crate::service::ServiceError> {
    let t = event.schedule_tick;
    crate::schedules::fire(service, &t.tenant, &t.name, t.tick, Utc::now()).await
}

/// Maintenance's share of schedules on AWS (EventBridge Scheduler fires the ticks): submit the
/// ticks waiting for a run that has ended (`overlap: queue_one`).
pub async fn release_waiting_ticks(
    service: &crate::service::JobService,
) -> Result<crate::schedules::Evaluated, crate::service::ServiceError> {
    crate::schedules::evaluate(service, Utc::now(), false).await
}
