//! Lifecycle events within one process: a broadcast channel anyone can subscribe to.

use crate::domain::LifecycleEvent;
use crate::ports::{EventPublisher, QueueError};
use async_trait::async_trait;
use tokio::sync::broadcast;

pub struct InProcessEvents {
    tx: broadcast::Sender<LifecycleEvent>,
}

impl InProcessEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.tx.subscribe()
    }
}

#[async_trait]
impl EventPublisher for InProcessEvents {
    async fn publish(&self, event: &LifecycleEvent) -> Result<(), QueueError> {
        tracing::debug!(job_id = %event.job_id, kind = ?event.kind, "lifecycle event");
        // No subscriber is not an error: events are fire-and-forget here.
        let _ = self.tx.send(event.clone());
        Ok(())
    }
}
