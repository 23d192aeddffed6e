//! The `maintenance` Lambda: each EventBridge schedule event runs one sweep (reap stalled jobs,
//! release scheduled ones, re-dispatch orphans) and submits users' schedule ticks that waited
//! for a run to end. Reserved concurrency 1 in the template, so sweeps never overlap.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::schedule::{handle_maintenance, release_waiting_ticks};
use shared::maintenance::{MaintenanceSettings, SweepReport};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let settings = MaintenanceSettings {
        stall_after: config.stall_after,
        orphan_after: config.orphan_after,
    };
    let service = &shared::service::JobService::new(
        ports.clone(),
        registry.clone(),
        config.max_payload_bytes,
    )
    .with_tenant_defaults(config.tenant_defaults.clone());
    let (ports, registry) = (&ports, &registry);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = handle_maintenance(ports, registry, settings).await;
            if let Err(e) = release_waiting_ticks(service).await {
                tracing::warn!(error = %e, "waiting schedule ticks not released; next sweep tries again");
            }
            shared::metrics::flush_emf();
            Ok::<SweepReport, lambda_runtime::Error>(report?)
        },
    ))
    .await
}
