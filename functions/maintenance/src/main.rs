//! The `maintenance` Lambda: each EventBridge schedule event runs one sweep (reap stalled jobs,
//! release scheduled ones, re-dispatch orphans) and submits users' schedule ticks that waited
//! for a run to end, and fires again the ticks the scheduler function failed after Lambda's
//! retries (its on-failure destination, `CONVEYOR_TICK_FAILURES_QUEUE`). Two sweeps at once are
//! safe: every change is a conditional write.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::schedule::{
    handle_maintenance, refire_failed_ticks, release_waiting_ticks,
};
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
    let failures = config.tick_failures_queue.as_deref();
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = handle_maintenance(ports, registry, settings).await;
            if let Err(e) = release_waiting_ticks(service).await {
                tracing::warn!(error = %e, "waiting schedule ticks not released; next sweep tries again");
            }
            let refired = match failures {
                Some(queue) => refire_failed_ticks(service, ports.dead_letters.as_ref(), queue)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "failed schedule ticks not read; next sweep tries again");
                        0
                    }),
                None => 0,
            };
            shared::metrics::flush_emf();
            let mut report = report?;
            report.ticks_refired = refired;
            Ok::<SweepReport, lambda_runtime::Error>(report)
        },
    ))
    .await
}
