//! The dead-letter queues of a process that never reads them.

use super::{QueueConsumer, QueueError, ReceivedMessage};
use async_trait::async_trait;
use std::time::Duration;

/// No dead-letter queue to read: the ports of a function that never settles dead letters (all
/// but maintenance), which then carries no code that receives from a queue.
pub struct NoDeadLetters;

#[async_trait]
impl QueueConsumer for NoDeadLetters {
    async fn receive(
        &self,
        _: &str,
        _: usize,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        Err(QueueError("this process reads no dead-letter queue".into()))
    }
    async fn delete(&self, _: &str, _: &[String]) -> Result<(), QueueError> {
        Err(QueueError("this process reads no dead-letter queue".into()))
    }
    async fn change_visibility(&self, _: &str, _: &str, _: Duration) -> Result<(), QueueError> {
        Err(QueueError("this process reads no dead-letter queue".into()))
    }
}
