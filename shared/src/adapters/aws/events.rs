//! `EventPublisher` on an EventBridge bus: each lifecycle event is one entry, `source`
//! `conveyor`, `detail-type` the event's kind (`JobSucceeded`, …), `detail` the event. Only
//! the events the deployment selected (`CONVEYOR_EVENTS`) are sent: each one is billed.

use crate::domain::{EventSelection, LifecycleEvent};
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
    selection: EventSelection,
}

impl BusEvents {
    pub fn new(client: Client, bus: impl Into<String>, selection: EventSelection) -> Self {
        Self {
            client,
            bus: bus.into(),
            selection,
        }
    }
}

/// EventBridge takes at most ten entries a request.
const MAX_ENTRIES: usize = 10;

impl BusEvents {
    fn entry(&self, event: &LifecycleEvent) -> Result<PutEventsRequestEntry, QueueError> {
        let detail = serde_json::to_string(event).map_err(|e| QueueError(e.to_string()))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(format!("{:?}", event.kind))
            .detail(detail)
            .build())
    }

    /// Up to ten entries in one request; the ones that fail are sent again (PutEvents answers
    /// 200 even when entries failed: each entry's result says).
    async fn put(&self, mut entries: Vec<PutEventsRequestEntry>) -> Result<(), QueueError> {
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match self
                .client
                .put_events()
                .set_entries(Some(entries.clone()))
                .send()
                .await
            {
                Ok(out) if out.failed_entry_count == 0 => return Ok(()),
                Ok(out) => {
                    let results = out.entries();
                    last = results
                        .iter()
                        .filter_map(|e| e.error_message())
                        .collect::<Vec<_>>()
                        .join("; ");
                    entries = entries
                        .into_iter()
                        .zip(results.iter().map(|r| r.error_code().is_some()))
                        .filter_map(|(entry, failed)| failed.then_some(entry))
                        .collect();
                }
                Err(e) => last = DisplayErrorContext(&e).to_string(),
            }
        }
        Err(QueueError(format!(
            "{} events not published: {last}",
            entries.len()
        )))
    }
}

#[async_trait]
impl EventPublisher for BusEvents {
    async fn publish(&self, event: &LifecycleEvent) -> Result<(), QueueError> {
        if !self.selection.wants(event) {
            return Ok(());
        }
        self.put(vec![self.entry(event)?]).await
    }

    async fn publish_all(&self, events: &[LifecycleEvent]) -> Result<(), QueueError> {
        let events: Vec<&LifecycleEvent> =
            events.iter().filter(|e| self.selection.wants(e)).collect();
        let mut failed = vec![];
        for chunk in events.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .map(|e| self.entry(e))
                .collect::<Result<_, _>>()?;
            if let Err(e) = self.put(entries).await {
                failed.push(e.0);
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(QueueError(failed.join("; "))),
        }
    }
}
