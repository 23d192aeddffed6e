//! The `scheduler` Lambda: EventBridge Scheduler invokes it at each tick of a user's schedule
//! (`{"schedule_tick": {tenant, name, tick}}`); it submits the tick's job, once per tick however
//! often the tick is delivered.

use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::schedule::{handle_tick, ScheduleTickEvent};
use shared::service::JobService;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let service = &JobService::from_config(&config, ports, registry);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ScheduleTickEvent>| async move {
            let run = handle_tick(service, event.payload).await;
            shared::metrics::flush_emf();
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(run?)?)
        },
    ))
    .await
}
