//! The worker entrypoint: an SQS batch in, a partial-batch failure report out.

use crate::worker::{Disposition, Worker};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

/// Process every record of the batch at once, each in a task of its own, and report the ones
/// whose message must be delivered again. A record that panics fails only itself.
pub async fn handle_sqs_batch(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
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
    response
}
