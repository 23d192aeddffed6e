//! The `stats` Lambda: the jobs table's stream (an event-source mapping with
//! `ReportBatchItemFailures`) kept as per-tenant counter items, which `GET /v1/stats` reads.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::adapters::aws::{handle_stream_event, open_counters};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let counters = &open_counters(&config).await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(handle_stream_event(counters, &event.payload).await)
    }))
    .await
}
