//! The `maintenance` Lambda: each EventBridge schedule event runs one sweep (reap stalled jobs,
//! release scheduled ones, re-dispatch orphans). Reserved concurrency 1 in the template, so
//! sweeps never overlap.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::schedule::handle_maintenance;
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
    let (ports, registry) = (&ports, &registry);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = handle_maintenance(ports, registry, settings).await;
            shared::metrics::flush_emf();
            Ok::<SweepReport, lambda_runtime::Error>(report?)
        },
    ))
    .await
}
