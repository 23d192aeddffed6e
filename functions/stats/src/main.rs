//! The `stats` Lambda: the jobs table's stream (an event-source mapping with
//! `ReportBatchItemFailures`): the messages of the jobs its records show queued sent (the
//! table's outbox), and the records kept as per-tenant counter items, which `GET /v1/stats`
//! reads.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::adapters::aws::{handle_stream_event, open_counters};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let counters = &open_counters(&config).await;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let outbox = &shared::lifecycle::Messages::new(ports.queue, registry);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let answer = handle_stream_event(counters, Some(outbox), &event.payload).await;
        Ok::<Value, lambda_runtime::Error>(answer)
    }))
    .await
}
