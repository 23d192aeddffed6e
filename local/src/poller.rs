//! The local stand-in for Lambda's SQS event-source mapping: long-polls one queue, builds a real
//! `SqsEvent` from up to `batch_size` messages, hands it to the worker entrypoint, and deletes
//! the messages the partial-batch response does not name. At most `concurrency` batches run at
//! once (Lambda's MaximumConcurrency); failed records reappear after the visibility timeout.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shared::domain::JobType;
use shared::entrypoints::sqs::handle_sqs_batch;
use shared::health::Health;
use shared::ports::{PauseStore, QueueConsumer, ReceivedMessage};
use shared::worker::Worker;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Clone)]
pub struct PollerSettings {
    pub queue: String,
    /// The type's high-priority queue, and how many batches are taken from it for each one from
    /// `queue` while both have messages.
    pub high: Option<(String, u32)>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub visibility: Duration,
    /// Receive for this long instead, and keep extending it while the batch runs (a third of
    /// it before it ends): a runtime that dies leaves its messages to come back within it,
    /// not after the queue's visibility timeout (six times the handler's timeout, which Lambda
    /// needs, where a crashed invocation ends with its own timeout). On the AWS backend, whose
    /// stalled runs are found only by their messages coming back.
    pub lease: Option<Duration>,
    /// How long in-flight batches get to finish once stop is signalled.
    pub grace: Duration,
    /// Where to ask whether the queue's type is paused for every tenant, and the type: while it
    /// is, nothing is received (its messages wait untouched).
    pub paused: Option<PausedLook>,
}

/// Where a poller asks whether its type is paused for every tenant.
#[derive(Clone)]
pub struct PausedLook {
    pub pauses: Arc<dyn PauseStore>,
    pub job_type: JobType,
}

impl std::fmt::Debug for PausedLook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PausedLook({})", self.job_type)
    }
}

/// How often a poller whose type is paused everywhere looks again.
const PAUSED_LOOK: Duration = Duration::from_millis(250);

/// Resolves once stop is signalled (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

const LONG_POLL: Duration = Duration::from_secs(20);
/// With two queues, how long each is long-polled in turn while both are empty.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Build the event Lambda would receive for these messages.
pub fn sqs_event(queue: &str, messages: &[ReceivedMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt_handle.clone());
            record.body = Some(m.body.clone());
            record.attributes = HashMap::from([
                (
                    "ApproximateReceiveCount".to_string(),
                    m.receive_count.to_string(),
                ),
                (
                    "SentTimestamp".to_string(),
                    m.sent_at.timestamp_millis().to_string(),
                ),
            ]);
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(format!("arn:aws:sqs:local:000000000000:{queue}"));
            record.aws_region = Some("local".into());
            record
        })
        .collect();
    event
}

/// The name a poller goes by in `/healthz`.
pub fn health_name(queue: &str) -> String {
    format!("poller:{queue}")
}

/// The next batch, and the queue it came from. One queue: long-polled. With a high-priority
/// queue: `ratio` turns in `ratio + 1` look there first, the others at the normal queue first;
/// the other is looked at when the first is empty, and when both are, each is long-polled
/// briefly in turn.
/// `waiting` false: only what is there now (no long poll).
async fn next_batch(
    queue: &dyn QueueConsumer,
    settings: &PollerSettings,
    turn: u64,
    waiting: bool,
) -> Result<(String, Vec<ReceivedMessage>), shared::ports::QueueError> {
    let max = settings.batch_size.max(1);
    let visibility = settings.lease.unwrap_or(settings.visibility);
    let Some((high, ratio)) = &settings.high else {
        let wait = if waiting { LONG_POLL } else { Duration::ZERO };
        let got = queue
            .receive(&settings.queue, max, visibility, wait)
            .await?;
        return Ok((settings.queue.clone(), got));
    };
    let ratio = u64::from((*ratio).max(1));
    let order = if turn % (ratio + 1) < ratio {
        [high, &settings.queue]
    } else {
        [&settings.queue, high]
    };
    let waits: &[Duration] = if waiting {
        &[Duration::ZERO, IDLE_POLL]
    } else {
        &[Duration::ZERO]
    };
    for &wait in waits {
        for name in order {
            let got = queue.receive(name, max, visibility, wait).await?;
            if !got.is_empty() {
                return Ok((name.clone(), got));
            }
        }
    }
    Ok((settings.queue.clone(), vec![]))
}

pub async fn run_poller(
    queue: Arc<dyn QueueConsumer>,
    worker: Worker,
    settings: PollerSettings,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) {
    let concurrency = settings.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let taker = Arc::new(Taker {
        name: health_name(&settings.queue),
        queue,
        worker,
        settings,
        health,
        turn: AtomicU64::new(0),
        long_poll: tokio::sync::Mutex::new(()),
    });
    // Each permit takes a batch, runs it and deletes the messages it is done with, so no batch
    // waits for another's receive to be written. Only one of them long-polls an empty queue
    // at a time (`Taker::long_poll`): a long poll cut short by a stop may still take messages
    // on the queue's side, which then wait out their visibility timeout.
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = stopped(&mut stop) => break,
        };
        let (taker, stop) = (taker.clone(), stop.clone());
        tokio::spawn(async move {
            taker.take_and_run(stop).await;
            drop(permit);
        });
    }
    // Wait for in-flight batches; what does not finish returns to the queue on its own.
    let all = permits.acquire_many(concurrency as u32);
    if tokio::time::timeout(taker.settings.grace, all)
        .await
        .is_err()
    {
        tracing::warn!(queue = %taker.settings.queue, "in-flight batches did not finish in time; their messages return to the queue");
    }
}

/// What each of a poller's batches needs.
struct Taker {
    name: String,
    queue: Arc<dyn QueueConsumer>,
    worker: Worker,
    settings: PollerSettings,
    health: Arc<Health>,
    /// Batches taken so far (for the high-priority queue's turns).
    turn: AtomicU64,
    /// Held by the one that long-polls while the queue is empty.
    long_poll: tokio::sync::Mutex<()>,
}

impl Taker {
    /// Take one batch (waiting for one while the queue is empty, until stop), run it, and
    /// delete the messages it is done with.
    async fn take_and_run(&self, mut stop: watch::Receiver<bool>) {
        let settings = &self.settings;
        if let Some(look) = &settings.paused {
            // (a store that cannot say is taken as not paused: the worker asks again per job)
            if look
                .pauses
                .pauses()
                .await
                .is_ok_and(|p| p.everywhere(look.job_type.as_str()))
            {
                tokio::select! {
                    _ = tokio::time::sleep(PAUSED_LOOK) => {}
                    _ = stopped(&mut stop) => {}
                }
                return;
            }
        }
        let turn = self.turn.load(Ordering::Relaxed);
        let queue = self.queue.as_ref();
        let received = match next_batch(queue, settings, turn, false).await {
            Ok((_, m)) if m.is_empty() => tokio::select! {
                r = async {
                    let _turn = self.long_poll.lock().await;
                    next_batch(queue, settings, turn, true).await
                } => r,
                _ = stopped(&mut stop) => return,
            },
            other => other,
        };
        let (name, messages) = match received {
            Ok((from, m)) => {
                self.health.up(&self.name);
                if m.is_empty() {
                    return;
                }
                self.turn.fetch_add(1, Ordering::Relaxed);
                (from, m)
            }
            Err(e) => {
                tracing::error!(queue = %settings.queue, error = %e, "receive failed; backing off");
                self.health.down(&self.name, format!("receive failed: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let extending = settings.lease.map(|lease| {
            let (queue, name) = (self.queue.clone(), name.clone());
            let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
            tokio::spawn(extend_while_running(queue, name, handles, lease))
        });
        let response = handle_sqs_batch(&self.worker, sqs_event(&name, &messages)).await;
        if let Some(extending) = extending {
            extending.abort();
        }
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let done: Vec<String> = messages
            .into_iter()
            .filter(|m| !failed.contains(&m.message_id))
            .map(|m| m.receipt_handle)
            .collect();
        if let Err(e) = self.queue.delete(&name, &done).await {
            tracing::error!(queue = %name, error = %e, "could not delete processed messages; they will be redelivered");
        }
    }
}

/// Keep `handles` invisible for another `lease` every third of it, until aborted.
async fn extend_while_running(
    queue: Arc<dyn QueueConsumer>,
    name: String,
    handles: Vec<String>,
    lease: Duration,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        for handle in &handles {
            if let Err(e) = queue.change_visibility(&name, handle, lease).await {
                tracing::warn!(queue = %name, error = %e, "could not extend a message's visibility; it may be delivered again while its job runs");
            }
        }
    }
}
