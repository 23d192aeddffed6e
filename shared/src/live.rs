//! Live updates: what a subscriber is told when a job changes, the in-process feed of changes,
//! and the one path from stored changes to subscribers ([`notify`]), the same locally (fed by
//! the embedded store's commits) and on AWS (fed by the table's stream).
//!
//! The protocol, on the local runtime's `/ws` and on the API Gateway WebSocket API alike:
//! - the client sends `{"action":"subscribe","job_id":"…"}` or `{"action":"subscribe","all":true}`
//!   (every job of the caller's tenant), and `{"action":"unsubscribe",…}` likewise;
//! - the server answers `{"type":"subscribed",…}` / `{"type":"unsubscribed",…}`, then sends
//!   `{"type":"job","job":{…summary…}}` on every change of state or progress and
//!   `{"type":"log","job_id","seq","at","attempt","line"}` for each log line, in order per job;
//!   several messages for one connection may come in one frame as `{"type":"batch","messages":[…]}`;
//! - a bad frame gets `{"type":"error","code","message"}`.

pub use crate::domain::Topic;
use crate::domain::{JobId, JobSummary, Tenant};
use crate::ports::{ClientPusher, ConnectionStore, PushError, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What a subscriber is told of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// The job's state or progress changed: here it is now.
    Job { job: Box<JobSummary> },
    /// A line was added to the job's log.
    Log {
        job_id: JobId,
        seq: u64,
        at: DateTime<Utc>,
        attempt: u32,
        line: String,
    },
}

/// One stored change of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    pub tenant: Tenant,
    pub job_id: JobId,
    pub update: Update,
}

impl JobChange {
    pub fn job(job: JobSummary) -> Self {
        Self {
            tenant: job.tenant.clone(),
            job_id: job.id,
            update: Update::Job { job: Box::new(job) },
        }
    }

    /// The message as sent to a client.
    pub fn message(&self) -> String {
        serde_json::to_string(&self.update).unwrap_or_default()
    }
}

/// A change with its place in the feed.
#[derive(Debug)]
pub struct Sequenced {
    pub seq: u64,
    pub change: JobChange,
}

/// The changes one process committed, in commit order: a broadcast to live readers, and the
/// last `replay` of them kept for readers that come back (`since`, SSE's `Last-Event-ID`).
/// Publishing never blocks and never waits for a reader: one that falls behind the broadcast's
/// room misses changes and is told so (`Lagged`).
///
/// Changes are kept only while someone may read them: while a live-update client is connected
/// (a [`Watcher`] is held), and for [`KEEP_AFTER_LAST_READER`] after the last one left (for it
/// to resume). The rest of the time a change costs one atomic read; when watching starts again
/// the kept changes are dropped, so a reader from before learns that some are gone.
pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<Sequenced>>,
    kept: Mutex<Kept>,
    replay: usize,
    /// Readers now.
    watchers: std::sync::atomic::AtomicUsize,
    /// Until when (epoch ms) changes are kept with no reader: the last reader's leaving plus
    /// `KEEP_AFTER_LAST_READER`.
    kept_until_ms: std::sync::atomic::AtomicI64,
    /// A change went by unkept since watching last started.
    missed: std::sync::atomic::AtomicBool,
    /// The caps on this process's live readers, streams and sockets alike.
    limits: Mutex<Arc<LiveLimits>>,
}

/// Live readers a process holds at most, and of one tenant (`CONVEYOR_LIVE_MAX_CONNECTIONS`,
/// `CONVEYOR_LIVE_MAX_PER_TENANT`).
pub const LIVE_MAX: usize = 10_000;
pub const LIVE_MAX_PER_TENANT: usize = 1_000;

/// Most subscriptions one live connection holds (a subscribe past it is refused with
/// `too_many_subscriptions`; subscribing to what it already follows is no new one).
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// Caps on a process's live readers (server-sent-event streams and WebSockets): in all, and of
/// one tenant, so that no tenant, and no one without a credential, holds them all.
pub struct LiveLimits {
    max: usize,
    per_tenant: usize,
    open: Mutex<(usize, std::collections::HashMap<Tenant, usize>)>,
}

/// One live reader's place, given back when it is dropped.
pub struct LiveSlot {
    limits: Arc<LiveLimits>,
    tenant: Option<Tenant>,
}

impl LiveLimits {
    pub fn new(max: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_tenant,
            open: Mutex::new((0, Default::default())),
        })
    }

    /// A place for one more reader (of `tenant`, where it is known already), or why not.
    pub fn open(self: &Arc<Self>, tenant: Option<&Tenant>) -> Result<LiveSlot, String> {
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if open.0 >= self.max {
                return Err(format!(
                    "this server holds {} live connections, its most (CONVEYOR_LIVE_MAX_CONNECTIONS); try again later",
                    self.max
                ));
            }
            open.0 += 1;
        }
        let mut slot = LiveSlot {
            limits: self.clone(),
            tenant: None,
        };
        if let Some(tenant) = tenant {
            slot.of(tenant)?;
        }
        Ok(slot)
    }
}

impl LiveSlot {
    /// Count the reader as `tenant`'s, now that it is known, or say why it may not be.
    pub fn of(&mut self, tenant: &Tenant) -> Result<(), String> {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.1.entry(tenant.clone()).or_default();
        if *n >= self.limits.per_tenant {
            return Err(format!(
                "tenant {tenant} holds {} live connections, its most (CONVEYOR_LIVE_MAX_PER_TENANT)",
                self.limits.per_tenant
            ));
        }
        *n += 1;
        self.tenant = Some(tenant.clone());
        Ok(())
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(tenant) = self.tenant.take() {
            if let Some(n) = open.1.get_mut(&tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.1.remove(&tenant);
                }
            }
        }
    }
}

/// How long changes are still kept after the last reader left (for it to come back).
pub const KEEP_AFTER_LAST_READER: std::time::Duration = std::time::Duration::from_secs(600);

/// A reader of a feed, for as long as it is held.
#[derive(Debug)]
pub struct Watcher(Arc<ChangeFeed>);

impl Drop for Watcher {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.0.kept_until_ms.store(
            Utc::now().timestamp_millis() + KEEP_AFTER_LAST_READER.as_millis() as i64,
            Ordering::Relaxed,
        );
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Kept {
    next_seq: u64,
    recent: VecDeque<Arc<Sequenced>>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("replay", &self.replay)
            .finish()
    }
}

/// Changes a process's feed keeps for readers that resume (SSE's `Last-Event-ID`).
pub const REPLAY: usize = 10_000;

/// Changes a live reader may fall behind by before it misses some.
const BROADCAST_ROOM: usize = 16 * 1024;

impl ChangeFeed {
    /// A feed keeping the last `replay` changes for readers that resume.
    pub fn new(replay: usize) -> Arc<Self> {
        Arc::new(Self {
            tx: broadcast::channel(BROADCAST_ROOM).0,
            kept: Mutex::new(Kept {
                next_seq: 1,
                recent: VecDeque::with_capacity(replay.min(1024)),
            }),
            replay,
            watchers: Default::default(),
            kept_until_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            missed: Default::default(),
            limits: Mutex::new(LiveLimits::new(LIVE_MAX, LIVE_MAX_PER_TENANT)),
        })
    }

    /// Cap this process's live readers with `limits`.
    pub fn set_limits(&self, limits: Arc<LiveLimits>) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The caps on this process's live readers.
    pub fn limits(&self) -> Arc<LiveLimits> {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether changes are wanted now (someone reads, or may come back for them).
    pub fn watched(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.watchers.load(Ordering::Relaxed) > 0
            || self.kept_until_ms.load(Ordering::Relaxed) > Utc::now().timestamp_millis()
    }

    /// Start reading: changes are kept from now until the returned `Watcher` is dropped (and a
    /// while after). If they were not kept until now, what was kept is dropped and a number is
    /// skipped, so no reader can resume across the time nothing was kept.
    pub fn watch(self: &Arc<Self>) -> Watcher {
        use std::sync::atomic::Ordering;
        if self.missed.swap(false, Ordering::Relaxed) {
            let mut kept = self.kept.lock().unwrap();
            kept.recent.clear();
            kept.next_seq += 1;
        }
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher(self.clone())
    }

    /// Add a committed change (call in commit order). Cheap, never blocks on readers; nothing
    /// at all when no one watches (see `watched`).
    pub fn publish(&self, change: JobChange) {
        if !self.watched() {
            self.missed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut kept = self.kept.lock().unwrap();
        let item = Arc::new(Sequenced {
            seq: kept.next_seq,
            change,
        });
        kept.next_seq += 1;
        if self.replay > 0 {
            if kept.recent.len() == self.replay {
                kept.recent.pop_front();
            }
            kept.recent.push_back(item.clone());
        }
        // Sent under the lock, so readers see the feed's order. No reader: nothing to do.
        let _ = self.tx.send(item);
    }

    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sequenced>> {
        self.tx.subscribe()
    }

    /// Live changes from now on, and the kept ones after `seq` (in order, none missing
    /// between them); `None` in place of the kept ones when some after `seq` are no longer kept.
    pub fn resume(&self, seq: u64) -> (Option<Vec<Arc<Sequenced>>>, Receiver) {
        let kept = self.kept.lock().unwrap();
        let rx = self.tx.subscribe();
        let oldest = kept.recent.front().map_or(kept.next_seq, |c| c.seq);
        let replay = (seq + 1 >= oldest && seq < kept.next_seq).then(|| {
            kept.recent
                .iter()
                .filter(|c| c.seq > seq)
                .cloned()
                .collect()
        });
        (replay, rx)
    }

    /// `resume`, and the number of the last change before the live ones.
    pub fn resume_at(&self, seq: Option<u64>) -> (Option<Vec<Arc<Sequenced>>>, Receiver, u64) {
        let last = self.last_seq();
        let (kept, rx) = match seq {
            Some(seq) => self.resume(seq),
            None => (None, self.subscribe()),
        };
        // (A change published between the two reads comes both kept and live: the reader
        // skips what it has seen by number.)
        (kept, rx, last)
    }

    /// The last change's number (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.kept.lock().unwrap().next_seq - 1
    }
}

/// A live reader of a feed.
pub type Receiver = broadcast::Receiver<Arc<Sequenced>>;

/// Follows a process's changes for one server-sent-event reader (the local runtime's feed;
/// a trait, so that what has no feed, the `api` function, carries none of this code).
pub trait FollowChanges: Send + Sync {
    /// The events after `last` for `topic` in `tenant`, then each change as it commits, until
    /// the client leaves; `current` is the followed job as it is now. Refused (why) past the
    /// process's caps on live readers.
    fn follow(
        &self,
        tenant: Tenant,
        topic: Topic,
        current: Option<JobSummary>,
        last: Option<String>,
    ) -> Result<axum::body::Body, String>;
}

/// Events from the process's feed: the kept ones after `last` (or, when those are gone, the
/// job as it is now), then each change as it commits, until the client leaves.
impl FollowChanges for Arc<ChangeFeed> {
    fn follow(
        &self,
        tenant: Tenant,
        topic: Topic,
        current: Option<JobSummary>,
        last: Option<String>,
    ) -> Result<axum::body::Body, String> {
        let slot = self.limits().open(Some(&tenant))?;
        // (Watching first: if nothing was kept until now, `resume_at` then says so.)
        let watcher = self.watch();
        let (kept, mut rx, start) = self.resume_at(last.as_deref().and_then(|l| l.parse().ok()));
        let (tx, out) = tokio::sync::mpsc::channel::<String>(64);
        tokio::spawn(async move {
            let (_watcher, _slot) = (watcher, slot);
            let mut seen = start;
            let mut first = String::new();
            match kept {
                Some(kept) => {
                    for c in kept {
                        if c.change.tenant == tenant && topic.covers(&c.change) {
                            first.push_str(&sse_event(
                                &c.seq.to_string(),
                                Some(&c.change.message()),
                            ));
                        }
                        seen = seen.max(c.seq);
                    }
                }
                None => {
                    let message = current.map(|j| JobChange::job(j).message());
                    first.push_str(&sse_event(&start.to_string(), message.as_deref()));
                }
            }
            if tx.send(first).await.is_err() {
                return;
            }
            let mut keep_alive = tokio::time::interval(std::time::Duration::from_secs(15));
            keep_alive.tick().await;
            loop {
                let event = tokio::select! {
                    got = rx.recv() => match got {
                        Ok(c) if c.seq > seen && c.change.tenant == tenant && topic.covers(&c.change) => {
                            seen = c.seq;
                            sse_event(&c.seq.to_string(), Some(&c.change.message()))
                        }
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            "data: {\"type\":\"reset\"}\n\n".to_string()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = keep_alive.tick() => ": keep-alive\n\n".to_string(),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(axum::body::Body::from_stream(futures::stream::unfold(
            out,
            |mut out| async move {
                out.recv()
                    .await
                    .map(|s| (Ok::<_, std::convert::Infallible>(s), out))
            },
        )))
    }
}

/// What one round of [`notify`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Notified {
    /// Push calls made (one per subscribed connection).
    pub pushes: usize,
    /// Connections found gone (closed, or too slow to keep), and removed.
    pub gone: usize,
    /// Pushes that failed for another reason (the connection is kept).
    pub failed: usize,
}

/// Pushes made at once.
const PUSHES_AT_ONCE: usize = 64;

/// Tell every subscriber of `changes` about them: per connection, its changes in their order
/// in one push. A connection found gone is removed with its subscriptions. Store errors
/// finding the subscribers come back (nothing was pushed for that tenant then).
pub async fn notify(
    connections: &dyn ConnectionStore,
    pusher: &dyn ClientPusher,
    changes: &[JobChange],
) -> Result<Notified, StoreError> {
    // Per connection, the messages in order (messages are made once, shared by all).
    let mut outbox: BTreeMap<String, Vec<Arc<str>>> = BTreeMap::new();
    let mut by_tenant: BTreeMap<&Tenant, Vec<&JobChange>> = BTreeMap::new();
    for c in changes {
        by_tenant.entry(&c.tenant).or_default().push(c);
    }
    let none = vec![];
    for (tenant, changes) in by_tenant {
        // One read per tenant for the whole batch.
        let mut all = vec![];
        let mut per_job: BTreeMap<JobId, Vec<String>> = BTreeMap::new();
        for (topic, conn) in connections.subscriptions(tenant).await? {
            match topic {
                Topic::All => all.push(conn),
                Topic::Job(id) => per_job.entry(id).or_default().push(conn),
            }
        }
        for c in changes {
            let subs = per_job.get(&c.job_id).unwrap_or(&none);
            if subs.is_empty() && all.is_empty() {
                continue;
            }
            let message: Arc<str> = c.message().into();
            let mut seen = std::collections::BTreeSet::new();
            for conn in subs.iter().chain(all.iter()) {
                if seen.insert(conn) {
                    outbox
                        .entry(conn.clone())
                        .or_default()
                        .push(message.clone());
                }
            }
        }
    }
    let mut report = Notified::default();
    let mut outcomes =
        futures::stream::iter(outbox.into_iter().map(|(conn, messages)| async move {
            let outcome = pusher.push(&conn, &messages).await;
            (conn, outcome)
        }))
        .buffer_unordered(PUSHES_AT_ONCE);
    let mut gone = vec![];
    while let Some((conn, outcome)) = outcomes.next().await {
        report.pushes += 1;
        match outcome {
            Ok(()) => {}
            Err(PushError::Gone) => gone.push(conn),
            Err(PushError::Unavailable(e)) => {
                report.failed += 1;
                tracing::debug!(connection = %conn, error = %e, "push failed");
            }
        }
    }
    for conn in gone {
        report.gone += 1;
        if let Err(e) = connections.disconnect(&conn).await {
            tracing::warn!(connection = %conn, error = %e, "a gone connection was not removed; its TTL ends it");
        }
    }
    Ok(report)
}

impl Topic {
    /// Whether `change` is about this topic (the tenant being checked apart).
    pub fn covers(&self, change: &JobChange) -> bool {
        match self {
            Topic::All => true,
            Topic::Job(id) => change.job_id == *id,
        }
    }
}

/// One server-sent event: `id`, and the message as `data` (`None`: an id alone, which moves
/// the client's last event id without an event).
pub fn sse_event(id: &str, message: Option<&str>) -> String {
    match message {
        Some(m) => format!("id: {id}\ndata: {m}\n\n"),
        None => format!("id: {id}\n\n"),
    }
}

/// A frame as the client sends it; routed by `action`, as API Gateway routes on
/// `$request.body.action`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeFrame {
    pub action: String,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub all: Option<bool>,
}

/// A message the server sends for a frame.
pub fn error_message(code: &str, message: &str) -> String {
    serde_json::json!({ "type": "error", "code": code, "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u32) -> JobChange {
        JobChange {
            tenant: Tenant::parse("t").unwrap(),
            job_id: JobId::new(),
            update: Update::Log {
                job_id: JobId::new(),
                seq: n as u64,
                at: Utc::now(),
                attempt: 1,
                line: format!("line {n}"),
            },
        }
    }

    #[test]
    fn a_reader_resumes_from_the_kept_changes_or_is_told_they_are_gone() {
        let feed = ChangeFeed::new(3);
        let _reading = feed.watch();
        for n in 1..=5 {
            feed.publish(change(n));
        }
        assert_eq!(feed.last_seq(), 5);
        let (kept, _) = feed.resume(3);
        let seqs: Vec<u64> = kept.unwrap().iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [4, 5]);
        let (kept, _) = feed.resume(2);
        assert_eq!(kept.unwrap().len(), 3, "3, 4 and 5 are kept");
        assert!(feed.resume(1).0.is_none(), "2 is no longer kept");
        assert_eq!(feed.resume(5).0.unwrap().len(), 0);
        assert!(feed.resume(9).0.is_none(), "a number never given out");
    }

    #[test]
    fn nothing_is_kept_unwatched_and_a_reader_from_before_a_gap_is_told() {
        let feed = ChangeFeed::new(10);
        feed.publish(change(1));
        assert_eq!(feed.last_seq(), 0, "no one watches: nothing kept");
        let reading = feed.watch();
        feed.publish(change(2));
        assert_eq!(feed.resume(1).0.unwrap().len(), 1);
        drop(reading);
        assert!(feed.watched(), "kept a while for the reader to come back");
        feed.kept_until_ms
            .store(0, std::sync::atomic::Ordering::Relaxed); // (that while is over)
        feed.publish(change(3));
        let _again = feed.watch();
        feed.publish(change(4));
        assert!(
            feed.resume(2).0.is_none(),
            "change 3 was never kept: no resuming across it"
        );
    }

    #[tokio::test]
    async fn live_readers_get_changes_in_order() {
        let feed = ChangeFeed::new(0);
        let _reading = feed.watch();
        let mut rx = feed.subscribe();
        for n in 1..=3 {
            feed.publish(change(n));
        }
        for want in 1..=3 {
            assert_eq!(rx.recv().await.unwrap().seq, want);
        }
    }
}
