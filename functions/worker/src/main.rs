//! The `worker` Lambda: SQS batches (one event source per job-type queue) into the shared
//! worker entrypoint, answering with a partial-batch failure report.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::sqs::handle_sqs_batch_until;
use shared::worker::{Worker, WorkerSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let worker = Worker::new(ports, registry, WorkerSettings::from_config(&config));
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // The invocation's end (epoch ms), as an instant: no attempt may outlive it.
        let left = event
            .context
            .deadline
            .saturating_sub(chrono::Utc::now().timestamp_millis() as u64);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(left);
        let response = handle_sqs_batch_until(worker, event.payload, Some(deadline)).await;
        // This invocation's figures, as CloudWatch embedded-metric-format log lines.
        shared::metrics::flush_emf();
        Ok::<SqsBatchResponse, lambda_runtime::Error>(response)
    }))
    .await
}
