//! The `notify` Lambda: the jobs table's stream (an event-source mapping with
//! `ReportBatchItemFailures`) pushed to the WebSocket connections subscribed to each change,
//! through API Gateway's `PostToConnection`; connections found gone are removed.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::adapters::aws::{notify_stream_event, open_live};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let live = &open_live(&config).await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(notify_stream_event(live, &event.payload).await)
    }))
    .await
}
