//! The `worker` Lambda: SQS batches (one event source per job-type queue) into the shared
//! worker entrypoint, answering with a partial-batch failure report.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::sqs::handle_sqs_batch;
use shared::worker::{Worker, WorkerSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .without_time()
        .init();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let worker = Worker::new(ports, registry, WorkerSettings::from_config(&config));
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(handle_sqs_batch(worker, event.payload).await)
    }))
    .await
}
