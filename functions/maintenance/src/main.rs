//! The `maintenance` Lambda: each EventBridge schedule event runs one maintenance tick
//! (`shared::entrypoints::schedule::maintenance_tick`): a sweep (reap stalled jobs, release
//! scheduled ones, re-dispatch orphans), users' schedule ticks that waited for a run to end, and
//! the ticks the scheduler function failed after Lambda's retries (its on-failure destination,
//! `CONVEYOR_TICK_FAILURES_QUEUE`). Two at once are safe: every change is a conditional write.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::schedule::maintenance_tick;
use shared::maintenance::{MaintenanceSettings, SweepReport};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports_with_dead_letters(&config).await?;
    let service = &shared::service::JobService::from_config(&config, ports, registry);
    let settings = MaintenanceSettings {
        stall_after: config.stall_after,
        orphan_after: config.orphan_after,
    };
    let failures = config.tick_failures_queue.as_deref();
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = maintenance_tick(service, settings, failures).await;
            shared::metrics::flush_emf();
            Ok::<SweepReport, lambda_runtime::Error>(report?)
        },
    ))
    .await
}
