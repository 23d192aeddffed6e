//! `EventPublisher` on an EventBridge bus: each lifecycle event is one entry, `source`
//! `conveyor`, `detail-type` the event's kind (`JobSucceeded`, …), `detail` the event.

use crate::domain::LifecycleEvent;
use crate::ports::{EventPublisher, QueueError};
use async_trait::async_trait;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use std::time::Duration;

pub const SOURCE: &str = "conveyor";
const TRIES: u32 = 3;

pub struct BusEvents {
    client: Client,
    bus: String,
}

impl BusEvents {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl EventPublisher for BusEvents {
    async fn publish(&self, event: &LifecycleEvent) -> Result<(), QueueError> {
        let detail = serde_json::to_string(event).map_err(|e| QueueError(e.to_string()))?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(format!("{:?}", event.kind))
            .detail(detail)
            .build();
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match self.client.put_events().entries(entry.clone()).send().await {
                // PutEvents answers 200 even when an entry failed: the count says.
                Ok(out) if out.failed_entry_count == 0 => return Ok(()),
                Ok(out) => {
                    last = out
                        .entries()
                        .iter()
                        .filter_map(|e| e.error_message())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                Err(e) => last = DisplayErrorContext(&e).to_string(),
            }
        }
        Err(QueueError(format!("event not published: {last}")))
    }
}
