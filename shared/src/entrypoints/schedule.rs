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
