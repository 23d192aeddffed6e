//! `JobQueue` on SQS: one queue (and dead-letter queue) per job type, found by name.

use crate::ports::{QueueConsumer, QueueError, QueueSender, ReceivedMessage};
use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// SQS's limits: a delay of at most 15 minutes, 10 messages a receive, 20 s of long polling,
/// a visibility timeout of at most 12 hours.
const MAX_DELAY_SECS: u64 = 900;
const MAX_BATCH: usize = 10;
const MAX_WAIT_SECS: u64 = 20;
const MAX_VISIBILITY_SECS: u64 = 12 * 3600;

pub struct SqsQueue {
    client: Client,
    /// Each queue's URL, asked for once however many callers need it at the same moment.
    urls: Mutex<HashMap<String, Arc<OnceCell<String>>>>,
}

fn qerr<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> QueueError {
    QueueError(DisplayErrorContext(&e).to_string())
}

/// Whole seconds, rounded up (a delay is never shortened), at most `max`.
fn whole_secs(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(max) as i32
}

impl SqsQueue {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            urls: Mutex::default(),
        }
    }

    /// A queue's URL by its name (asked once, then remembered).
    pub async fn url(&self, queue: &str) -> Result<String, QueueError> {
        let cell = self
            .urls
            .lock()
            .unwrap()
            .entry(queue.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            self.client
                .get_queue_url()
                .queue_name(queue)
                .send()
                .await
                .map_err(qerr)?
                .queue_url
                .ok_or_else(|| QueueError(format!("queue {queue} has no URL")))
        })
        .await
        .cloned()
    }
}

#[async_trait]
impl QueueSender for SqsQueue {
    /// SQS has no priorities: `priority` is not used (a type that needs them gets a
    /// high-priority queue of its own).
    async fn send(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        _priority: i32,
    ) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(self.url(queue).await?)
            .message_body(body)
            .delay_seconds(whole_secs(delay, MAX_DELAY_SECS))
            .send()
            .await
            .map_err(qerr)?;
        Ok(out.message_id.unwrap_or_default())
    }

    async fn send_all(
        &self,
        queue: &str,
        messages: &[(String, Duration, i32)],
    ) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let url = self.url(queue).await?;
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (body, delay, _))| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .delay_seconds(whole_secs(*delay, MAX_DELAY_SECS))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(qerr)?;
            if let Some(failed) = out.failed.first() {
                return Err(QueueError(format!(
                    "{} of {} messages not sent: {}",
                    out.failed.len(),
                    chunk.len(),
                    failed.message.as_deref().unwrap_or(&failed.code)
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QueueConsumer for SqsQueue {
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(self.url(queue).await?)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(whole_secs(visibility, MAX_VISIBILITY_SECS))
            .wait_time_seconds(whole_secs(wait, MAX_WAIT_SECS))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(qerr)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes()
                        .and_then(|a| a.get(&name))
                        .and_then(|v| v.parse::<i64>().ok())
                };
                ReceivedMessage {
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .unwrap_or(1) as u32,
                    sent_at: attr(MessageSystemAttributeName::SentTimestamp)
                        .and_then(DateTime::<Utc>::from_timestamp_millis)
                        .unwrap_or_default(),
                    message_id: m.message_id.unwrap_or_default(),
                    receipt_handle: m.receipt_handle.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn delete(&self, queue: &str, receipt_handles: &[String]) -> Result<(), QueueError> {
        if receipt_handles.is_empty() {
            return Ok(());
        }
        let url = self.url(queue).await?;
        for chunk in receipt_handles.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(qerr)?;
            // A batch call succeeds as a whole even when entries fail: look at each.
            if let Some(failed) = out.failed.first() {
                return Err(QueueError(format!(
                    "{} of {} deletes failed ({}: {})",
                    out.failed.len(),
                    chunk.len(),
                    failed.code,
                    failed.message.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(self.url(queue).await?)
            .receipt_handle(receipt_handle)
            .visibility_timeout(whole_secs(visibility, MAX_VISIBILITY_SECS))
            .send()
            .await
            .map_err(qerr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds_within_the_limit() {
        assert_eq!(whole_secs(Duration::ZERO, 900), 0);
        assert_eq!(whole_secs(Duration::from_millis(1), 900), 1);
        assert_eq!(whole_secs(Duration::from_millis(1500), 900), 2);
        assert_eq!(whole_secs(Duration::from_secs(3600), 900), 900);
    }
}
