//! `JobQueue` with SQS semantics on the embedded database. Messages are durable rows; which
//! message is ready, delayed or in flight is kept in memory (rebuilt from the rows at open), so
//! a receive is a pop, not a scan, and a waiting receiver is woken the moment a message is
//! sent — no sleep-polling.

use super::db::{Db, DbError};
use crate::ports::{JobQueue, QueueError, ReceivedMessage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    priority INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL
);
";

/// A queue's redrive policy: after `max_receive_count` receives, a message moves to
/// `dead_letter_queue` instead of being delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub max_receive_count: u32,
    pub dead_letter_queue: Option<String>,
}

struct Message {
    body: Arc<str>,
    priority: i32,
    sent_at: i64,
    visible_at: i64,
    receive_count: u32,
    /// Changes at every receive, so a stale receipt handle cannot delete a re-delivered message.
    receipt: u64,
}

#[derive(Default)]
struct QueueState {
    messages: HashMap<i64, Message>,
    /// Visible now: highest priority first, then oldest.
    ready: BTreeSet<(Reverse<i32>, i64)>,
    /// Delayed or in flight: by the time they become visible.
    waiting: BTreeSet<(i64, i64)>,
    notify: Arc<Notify>,
}

impl QueueState {
    fn insert(&mut self, id: i64, m: Message, now: i64) {
        if m.visible_at <= now {
            self.ready.insert((Reverse(m.priority), id));
        } else {
            self.waiting.insert((m.visible_at, id));
        }
        self.messages.insert(id, m);
    }

    fn remove(&mut self, id: i64) -> Option<Message> {
        let m = self.messages.remove(&id)?;
        self.ready.remove(&(Reverse(m.priority), id));
        self.waiting.remove(&(m.visible_at, id));
        Some(m)
    }

    fn promote(&mut self, now: i64) {
        while let Some(&(at, id)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(m) = self.messages.get(&id) {
                self.ready.insert((Reverse(m.priority), id));
            }
        }
    }
}

enum Persist {
    Received {
        id: i64,
        visible_at: i64,
        receive_count: u32,
    },
    DeadLettered {
        id: i64,
        queue: String,
    },
}

pub struct EmbeddedQueue {
    db: Db,
    settings: HashMap<String, QueueSettings>,
    state: Mutex<HashMap<String, QueueState>>,
    receipts: std::sync::atomic::AtomicU64,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn dur_micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

fn qerr(e: DbError) -> QueueError {
    QueueError(e.to_string())
}

fn receipt_handle(id: i64, receipt: u64) -> String {
    format!("{id}.{receipt}")
}

fn parse_receipt(handle: &str) -> Option<(i64, u64)> {
    let (id, r) = handle.split_once('.')?;
    Some((id.parse().ok()?, r.parse().ok()?))
}

impl EmbeddedQueue {
    /// Load every message. Messages a previous process had in flight become visible at once:
    /// the data directory has one owner, so their consumer is gone.
    pub fn open(db: Db, settings: Vec<(String, QueueSettings)>) -> Result<Self, DbError> {
        let rows: Vec<(i64, String, String, i32, i64, i64, u32)> = db.read_blocking(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, queue, body, priority, sent_at, visible_at, receive_count FROM messages",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })?;
        let now = now_micros();
        let mut state: HashMap<String, QueueState> = HashMap::new();
        for (id, queue, body, priority, sent_at, visible_at, receive_count) in rows {
            let visible_at = if receive_count > 0 {
                visible_at.min(now)
            } else {
                visible_at
            };
            let m = Message {
                body: body.into(),
                priority,
                sent_at,
                visible_at,
                receive_count,
                receipt: 0,
            };
            state.entry(queue).or_default().insert(id, m, now);
        }
        Ok(Self {
            db,
            settings: settings.into_iter().collect(),
            state: Mutex::new(state),
            receipts: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Messages in a queue (all, whether visible or not): SQS's ApproximateNumberOfMessages
    /// plus NotVisible plus Delayed.
    pub fn depth(&self, queue: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .get(queue)
            .map_or(0, |q| q.messages.len())
    }

    fn notify_of(&self, queue: &str) -> Arc<Notify> {
        self.state
            .lock()
            .unwrap()
            .entry(queue.to_string())
            .or_default()
            .notify
            .clone()
    }

    /// Take up to `max` visible messages, mark them in flight, and say what to persist.
    fn take(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> (Vec<ReceivedMessage>, Vec<Persist>, Option<i64>) {
        let now = now_micros();
        let settings = self.settings.get(queue);
        let mut all = self.state.lock().unwrap();
        let mut out = vec![];
        let mut persist = vec![];
        let mut dead = vec![];
        {
            let q = all.entry(queue.to_string()).or_default();
            q.promote(now);
            while out.len() < max {
                let Some((_, id)) = q.ready.pop_first() else {
                    break;
                };
                let Some(m) = q.messages.get_mut(&id) else {
                    continue;
                };
                if let Some(s) = settings.filter(|s| m.receive_count >= s.max_receive_count) {
                    if let Some(dlq) = &s.dead_letter_queue {
                        let m = q.messages.remove(&id).expect("present");
                        persist.push(Persist::DeadLettered {
                            id,
                            queue: dlq.clone(),
                        });
                        dead.push((dlq.clone(), id, m));
                        continue;
                    }
                }
                m.receive_count += 1;
                m.visible_at = now + dur_micros(visibility);
                m.receipt = self
                    .receipts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                q.waiting.insert((m.visible_at, id));
                persist.push(Persist::Received {
                    id,
                    visible_at: m.visible_at,
                    receive_count: m.receive_count,
                });
                out.push(ReceivedMessage {
                    message_id: id.to_string(),
                    receipt_handle: receipt_handle(id, m.receipt),
                    body: m.body.to_string(),
                    receive_count: m.receive_count,
                    sent_at: DateTime::from_timestamp_micros(m.sent_at).unwrap_or_default(),
                });
            }
        }
        let next_visible = all.get(queue).and_then(|q| q.waiting.first().map(|w| w.0));
        for (dlq, id, mut m) in dead {
            m.receive_count = 0;
            m.visible_at = now;
            let q = all.entry(dlq).or_default();
            q.insert(id, m, now);
            q.notify.notify_waiters();
        }
        (out, persist, next_visible)
    }
}

#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn send(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        priority: i32,
    ) -> Result<String, QueueError> {
        let now = now_micros();
        let visible_at = now + dur_micros(delay);
        let (q, b) = (queue.to_string(), body.to_string());
        let id = self
            .db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO messages (queue, body, priority, sent_at, visible_at, receive_count)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                )?
                .execute(params![q, b, priority, now, visible_at])?;
                Ok(conn.last_insert_rowid())
            })
            .await
            .map_err(qerr)?;
        let message = Message {
            body: body.into(),
            priority,
            sent_at: now,
            visible_at,
            receive_count: 0,
            receipt: 0,
        };
        let notify = {
            let mut all = self.state.lock().unwrap();
            let q = all.entry(queue.to_string()).or_default();
            q.insert(id, message, now_micros());
            q.notify.clone()
        };
        notify.notify_waiters();
        Ok(id.to_string())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.notify_of(queue);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (out, persist, next_visible) = self.take(queue, max.max(1), visibility);
            if !persist.is_empty() {
                self.db
                    .write(move |conn| {
                        for p in persist {
                            match p {
                                Persist::Received {
                                    id,
                                    visible_at,
                                    receive_count,
                                } => conn
                                    .prepare_cached(
                                        "UPDATE messages SET visible_at = ?1, receive_count = ?2 WHERE id = ?3",
                                    )?
                                    .execute(params![visible_at, receive_count, id])?,
                                Persist::DeadLettered { id, queue } => conn
                                    .prepare_cached(
                                        "UPDATE messages SET queue = ?1, receive_count = 0 WHERE id = ?2",
                                    )?
                                    .execute(params![queue, id])?,
                            };
                        }
                        Ok(())
                    })
                    .await
                    .map_err(qerr)?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(vec![]);
            }
            let mut until = deadline;
            if let Some(at) = next_visible {
                let micros = (at - now_micros()).max(0) as u64;
                until = until.min(now + Duration::from_micros(micros));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, queue: &str, receipt_handles: &[String]) -> Result<(), QueueError> {
        let ids: Vec<i64> = {
            let mut all = self.state.lock().unwrap();
            let Some(q) = all.get_mut(queue) else {
                return Ok(());
            };
            let matching: Vec<i64> = receipt_handles
                .iter()
                .filter_map(|h| parse_receipt(h))
                .filter(|(id, r)| q.messages.get(id).is_some_and(|m| m.receipt == *r))
                .map(|(id, _)| id)
                .collect();
            matching
                .into_iter()
                .filter(|id| q.remove(*id).is_some())
                .collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        self.db
            .write(move |conn| {
                for id in ids {
                    conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                        .execute([id])?;
                }
                Ok(())
            })
            .await
            .map_err(qerr)
    }

    async fn change_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let Some((id, receipt)) = parse_receipt(receipt_handle) else {
            return Err(QueueError(format!(
                "invalid receipt handle '{receipt_handle}'"
            )));
        };
        let now = now_micros();
        let visible_at = now + dur_micros(visibility);
        let notify = {
            let mut all = self.state.lock().unwrap();
            let Some(q) = all.get_mut(queue) else {
                return Err(QueueError(format!(
                    "no in-flight message for '{receipt_handle}'"
                )));
            };
            match q.remove(id) {
                Some(mut m) if m.receipt == receipt => {
                    m.visible_at = visible_at;
                    q.insert(id, m, now);
                }
                Some(m) => {
                    q.insert(id, m, now);
                    return Err(QueueError(format!(
                        "stale receipt handle '{receipt_handle}'"
                    )));
                }
                None => return Err(QueueError(format!("no message for '{receipt_handle}'"))),
            }
            q.notify.clone()
        };
        notify.notify_waiters();
        self.db
            .write(move |conn| {
                conn.prepare_cached("UPDATE messages SET visible_at = ?1 WHERE id = ?2")?
                    .execute(params![visible_at, id])?;
                Ok(())
            })
            .await
            .map_err(qerr)
    }
}
