//! The worker entrypoint: an SQS batch in, a partial-batch failure report out.

use crate::lifecycle::EventBatch;
use crate::worker::{Disposition, Worker};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::sync::Arc;

/// Process every record of the batch at once, each in a task of its own, and report the ones
/// whose message must be delivered again. A record that panics fails only itself. The jobs'
/// lifecycle events go out together when the batch is over.
pub async fn handle_sqs_batch(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
    handle_sqs_batch_until(worker, event, None).await
}

/// `handle_sqs_batch` inside an invocation that ends at `deadline` (Lambda's): every attempt
/// ends in time for its outcome to be recorded.
pub async fn handle_sqs_batch_until(
    worker: &Worker,
    event: SqsEvent,
    deadline: Option<tokio::time::Instant>,
) -> SqsBatchResponse {
    let batch = Arc::new(EventBatch::default());
    let mut collecting = worker.collecting(batch.clone());
    if let Some(deadline) = deadline {
        collecting = collecting.until(deadline);
    }
    let worker = &collecting;
    let tasks: Vec<_> = event
        .records
        .into_iter()
        .map(|record| {
            let worker = worker.clone();
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.unwrap_or_default();
            (
                id,
                tokio::spawn(async move { worker.process_message(&body).await }),
            )
        })
        .collect();
    let mut response = SqsBatchResponse::default();
    for (id, task) in tasks {
        let disposition = task.await.unwrap_or_else(|e| {
            tracing::error!(message_id = %id, error = %e, "record processing failed");
            Disposition::Redeliver
        });
        if disposition == Disposition::Redeliver {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    worker.publish_events(&batch).await;
    response
}
