//! `JobQueue` with SQS semantics on the embedded database. Messages are durable rows; which
//! message is ready, delayed or in flight is kept in memory (rebuilt from the rows at open), so
//! a receive is a pop, not a scan, and a waiting receiver is woken the moment a message is
//! sent — no sleep-polling. The index holds ids and ordering keys only (16 bytes of state per
//! message, whatever its body): bodies are read from the rows when messages are received.
//! Dead letters are kept for their queue's retention, then deleted.

use super::by_id::ById;
use super::db::{Db, DbError};
use crate::ports::{QueueConsumer, QueueError, QueueSender, ReceivedMessage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A queue's redrive policy: after `max_receive_count` receives, a message moves to
/// `dead_letter_queue` instead of being delivered again, and is kept there for
/// `dead_letter_retention` (counted from the moment it moved), then deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub max_receive_count: u32,
    pub dead_letter_queue: Option<String>,
    pub dead_letter_retention: Duration,
}

/// What the index keeps of a message: when it is visible, its priority, how often it was
/// received (which is also its receipt: a stale receipt handle names an older count).
#[derive(Debug, Clone, Copy, Default)]
struct Message {
    visible_at: i64,
    priority: i16,
    receive_count: u16,
}

#[derive(Default)]
struct QueueState {
    /// By id, in chunks of consecutive ids (`ById`): about 18 bytes a message.
    messages: ById<Message>,
    /// Visible messages, highest priority first, then in the order they became visible. An
    /// entry is a hint, checked when popped (the message may have gone or moved since).
    ready: BTreeMap<Reverse<i16>, VecDeque<i64>>,
    /// Delayed or in flight: by the time they become visible.
    waiting: BTreeSet<(i64, i64)>,
    notify: Arc<Notify>,
}

impl QueueState {
    fn insert(&mut self, id: i64, m: Message, now: i64) {
        if m.visible_at <= now {
            self.ready
                .entry(Reverse(m.priority))
                .or_default()
                .push_back(id);
        } else {
            self.waiting.insert((m.visible_at, id));
        }
        self.messages.insert(id, m);
    }

    /// Take a message out of the index (its ready hint, if any, is skipped when popped).
    fn remove(&mut self, id: i64) -> Option<Message> {
        let m = self.messages.remove(&id)?;
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
                self.ready
                    .entry(Reverse(m.priority))
                    .or_default()
                    .push_back(id);
            }
        }
    }

    /// The next visible message, if any. A hint is stale when its message is gone or waiting
    /// again (in flight or delayed); that is decided by the index, never by comparing clocks (a
    /// message sent while a receive was starting would look "not yet visible" and be lost).
    fn pop_ready(&mut self) -> Option<i64> {
        while let Some(mut entry) = self.ready.first_entry() {
            let Some(id) = entry.get_mut().pop_front() else {
                entry.remove();
                continue;
            };
            if self
                .messages
                .get(&id)
                .is_some_and(|m| !self.waiting.contains(&(m.visible_at, id)))
            {
                return Some(id);
            }
        }
        None
    }

    /// Bytes the index holds for this queue: entries times their sizes (capacity included).
    fn index_bytes(&self) -> usize {
        use std::mem::size_of;
        let ready: usize = self
            .ready
            .values()
            .map(|d| d.capacity() * size_of::<i64>())
            .sum();
        // (a B-tree node holds up to 11 entries: count a third more for partly full nodes)
        self.messages.bytes() + ready + self.waiting.len() * size_of::<(i64, i64)>() * 4 / 3
    }
}

/// A message taken from the index by a receive: what to persist and what to hand out.
struct Taken {
    id: i64,
    visible_at: i64,
    receive_count: u32,
}

pub struct EmbeddedQueue {
    db: Db,
    settings: HashMap<String, QueueSettings>,
    state: Mutex<HashMap<String, QueueState>>,
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

fn receipt_handle(id: i64, receive_count: u32) -> String {
    format!("{id}.{receive_count}")
}

fn parse_receipt(handle: &str) -> Option<(i64, u16)> {
    let (id, r) = handle.split_once('.')?;
    Some((id.parse().ok()?, r.parse().ok()?))
}

impl EmbeddedQueue {
    /// Load every message's ordering keys. Messages a previous process had in flight become
    /// visible at once: the data directory has one owner, so their consumer is gone.
    pub fn open(db: Db, settings: Vec<(String, QueueSettings)>) -> Result<Self, DbError> {
        let now = now_micros();
        let mut state: HashMap<String, QueueState> = HashMap::new();
        db.read_blocking(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, queue, priority, visible_at, receive_count FROM messages")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (id, queue, priority, visible_at, receive_count): (i64, String, i64, i64, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                let visible_at = if receive_count > 0 {
                    visible_at.min(now)
                } else {
                    visible_at
                };
                let m = Message {
                    visible_at,
                    priority: priority.clamp(i16::MIN.into(), i16::MAX.into()) as i16,
                    receive_count: receive_count.clamp(0, u16::MAX.into()) as u16,
                };
                match state.get_mut(queue.as_str()) {
                    Some(q) => q.insert(id, m, now),
                    None => state.entry(queue).or_default().insert(id, m, now),
                }
            }
            Ok(())
        })?;
        Ok(Self {
            db,
            settings: settings.into_iter().collect(),
            state: Mutex::new(state),
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

    /// Per queue: messages in it (as `depth`), and how long the oldest has been there.
    pub async fn depths(&self) -> Result<Vec<(String, usize, Option<Duration>)>, DbError> {
        let oldest: Vec<(String, usize, Option<i64>)> = {
            let state = self.state.lock().unwrap();
            let mut v: Vec<_> = state
                .iter()
                .map(|(name, q)| (name.clone(), q.messages.len(), q.messages.first_id()))
                .collect();
            v.sort();
            v
        };
        let mut out = Vec::with_capacity(oldest.len());
        for (name, depth, id) in oldest {
            let sent_at: Option<i64> = match id {
                Some(id) => {
                    self.db
                        .read(move |conn| {
                            Ok(conn
                                .prepare_cached("SELECT sent_at FROM messages WHERE id = ?1")?
                                .query_row([id], |r| r.get(0))
                                .optional()?)
                        })
                        .await?
                }
                None => None,
            };
            let age = sent_at.map(|t| Duration::from_micros((now_micros() - t).max(0) as u64));
            out.push((name, depth, age));
        }
        Ok(out)
    }

    /// Bytes the in-memory index holds, all queues together (for tests and the bench).
    pub fn index_bytes(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .values()
            .map(QueueState::index_bytes)
            .sum()
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

    /// Delete dead letters older than their queue's retention (at most `limit`), from the rows
    /// and the index. Returns how many went.
    pub async fn delete_expired_dead_letters(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, QueueError> {
        let expiries: Vec<(String, i64)> = self
            .settings
            .values()
            .filter_map(|s| {
                let dlq = s.dead_letter_queue.clone()?;
                Some((
                    dlq,
                    now.timestamp_micros() - dur_micros(s.dead_letter_retention),
                ))
            })
            .collect();
        let deleted: Vec<(String, Vec<i64>)> = self
            .db
            .write(move |conn| {
                let mut out = vec![];
                for (dlq, before) in expiries {
                    let ids = conn
                        .prepare_cached(
                            "DELETE FROM messages WHERE id IN (
                                 SELECT id FROM messages
                                 WHERE queue = ?1 AND dead_since IS NOT NULL AND dead_since < ?2
                                 LIMIT ?3)
                             RETURNING id",
                        )?
                        .query_map(params![dlq, before, limit as i64], |r| r.get::<_, i64>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push((dlq, ids));
                }
                Ok(out)
            })
            .await
            .map_err(qerr)?;
        let mut all = self.state.lock().unwrap();
        let mut n = 0;
        for (dlq, ids) in deleted {
            if let Some(q) = all.get_mut(&dlq) {
                for id in ids {
                    n += q.remove(id).is_some() as u64;
                }
            }
        }
        Ok(n)
    }

    /// Take up to `max` visible messages, mark them in flight, and say what to persist: the
    /// received ones, and those that move to the dead-letter queue instead.
    fn take(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> (Vec<Taken>, Vec<(i64, String)>, Option<i64>) {
        let settings = self.settings.get(queue);
        let mut all = self.state.lock().unwrap();
        let now = now_micros();
        let mut taken = vec![];
        let mut dead = vec![];
        {
            let q = all.entry(queue.to_string()).or_default();
            q.promote(now);
            while taken.len() < max {
                let Some(id) = q.pop_ready() else {
                    break;
                };
                let m = q.messages.get(&id).copied().expect("popped messages exist");
                if let Some(s) =
                    settings.filter(|s| u32::from(m.receive_count) >= s.max_receive_count)
                {
                    if let Some(dlq) = &s.dead_letter_queue {
                        q.messages.remove(&id);
                        dead.push((id, dlq.clone(), m));
                        continue;
                    }
                }
                let m = Message {
                    visible_at: now + dur_micros(visibility),
                    receive_count: m.receive_count.saturating_add(1),
                    ..m
                };
                q.waiting.insert((m.visible_at, id));
                q.messages.insert(id, m);
                taken.push(Taken {
                    id,
                    visible_at: m.visible_at,
                    receive_count: m.receive_count.into(),
                });
            }
        }
        let next_visible = all.get(queue).and_then(|q| q.waiting.first().map(|w| w.0));
        let mut moved = vec![];
        for (id, dlq, m) in dead {
            let q = all.entry(dlq.clone()).or_default();
            q.insert(
                id,
                Message {
                    visible_at: now,
                    receive_count: 0,
                    ..m
                },
                now,
            );
            q.notify.notify_waiters();
            moved.push((id, dlq));
        }
        (taken, moved, next_visible)
    }
}

/// A message as its row, made on the caller's thread: written by a write of its own (`send`)
/// or inside another (a new job's, in the job's own commit), then `noted` once committed.
pub(super) struct NewMessage {
    queue: String,
    body: String,
    priority: i16,
    sent_at: i64,
    visible_at: i64,
}

impl NewMessage {
    pub(super) fn of(queue: &str, body: &str, delay: Duration, priority: i32) -> Self {
        let now = now_micros();
        Self {
            queue: queue.to_string(),
            body: body.to_string(),
            priority: priority.clamp(i16::MIN.into(), i16::MAX.into()) as i16,
            sent_at: now,
            visible_at: now + dur_micros(delay),
        }
    }

    /// Write its row (inside the writer's transaction); its id.
    pub(super) fn insert(&self, conn: &rusqlite::Connection) -> Result<i64, DbError> {
        conn.prepare_cached(
            "INSERT INTO messages (queue, body, priority, sent_at, visible_at, receive_count)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
        )?
        .execute(params![
            self.queue,
            self.body,
            self.priority,
            self.sent_at,
            self.visible_at
        ])?;
        Ok(conn.last_insert_rowid())
    }
}

impl EmbeddedQueue {
    /// Index a message whose row `id` is committed, and wake its queue's receivers.
    pub(super) fn noted(&self, message: &NewMessage, id: i64) {
        let notify = {
            let mut all = self.state.lock().unwrap();
            let q = all.entry(message.queue.clone()).or_default();
            let m = Message {
                visible_at: message.visible_at,
                priority: message.priority,
                receive_count: 0,
            };
            q.insert(id, m, now_micros());
            q.notify.clone()
        };
        notify.notify_waiters();
    }
}

#[async_trait]
impl QueueSender for EmbeddedQueue {
    async fn send(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        priority: i32,
    ) -> Result<String, QueueError> {
        let message = Arc::new(NewMessage::of(queue, body, delay, priority));
        let row = message.clone();
        let id = self
            .db
            .write(move |conn| row.insert(conn))
            .await
            .map_err(qerr)?;
        self.noted(&message, id);
        Ok(id.to_string())
    }

    /// All in one write (one commit for a batch submit's messages, not one each), then one
    /// wake-up of the queue's receivers.
    async fn send_all(
        &self,
        queue: &str,
        messages: &[(String, Duration, i32)],
    ) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = now_micros();
        let rows: Vec<(String, i16, i64)> = messages
            .iter()
            .map(|(body, delay, priority)| {
                (
                    body.clone(),
                    (*priority).clamp(i16::MIN.into(), i16::MAX.into()) as i16,
                    now + dur_micros(*delay),
                )
            })
            .collect();
        let q = queue.to_string();
        let (ids, rows) = self
            .db
            .write(move |conn| {
                let mut insert = conn.prepare_cached(
                    "INSERT INTO messages (queue, body, priority, sent_at, visible_at, receive_count)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                )?;
                let mut ids = Vec::with_capacity(rows.len());
                for (body, priority, visible_at) in &rows {
                    insert.execute(params![q, body, priority, now, visible_at])?;
                    ids.push(conn.last_insert_rowid());
                }
                drop(insert);
                Ok((ids, rows))
            })
            .await
            .map_err(qerr)?;
        let notify = {
            let mut all = self.state.lock().unwrap();
            let q = all.entry(queue.to_string()).or_default();
            let at = now_micros();
            for (id, (_, priority, visible_at)) in ids.into_iter().zip(rows) {
                let message = Message {
                    visible_at,
                    priority,
                    receive_count: 0,
                };
                q.insert(id, message, at);
            }
            q.notify.clone()
        };
        notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl QueueConsumer for EmbeddedQueue {
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
            let (taken, moved, next_visible) = self.take(queue, max.max(1), visibility);
            if !taken.is_empty() || !moved.is_empty() {
                let dead_since = now_micros();
                // The update hands back what the consumer gets: no second trip for the bodies.
                // All the received in one statement (no savepoint needed around it, and none
                // copying the pages it touches) unless some move to their dead-letter queue.
                let one_statement = moved.is_empty();
                let write = move |conn: &rusqlite::Connection| {
                    for (id, dlq) in moved {
                        conn.prepare_cached(
                            "UPDATE messages SET queue = ?1, receive_count = 0, dead_since = ?3
                             WHERE id = ?2",
                        )?
                        .execute(params![dlq, id, dead_since])?;
                    }
                    let marks: Vec<(i64, i64, u32)> = taken
                        .iter()
                        .map(|t| (t.id, t.visible_at, t.receive_count))
                        .collect();
                    let marks =
                        serde_json::to_string(&marks).map_err(|e| DbError::Other(e.to_string()))?;
                    let mut rows: HashMap<i64, (String, i64)> = conn
                        .prepare_cached(
                            "UPDATE messages SET visible_at = m.value ->> 1, receive_count = m.value ->> 2
                             FROM json_each(?1) AS m WHERE messages.id = m.value ->> 0
                             RETURNING messages.id, messages.body, messages.sent_at",
                        )?
                        .query_map([marks], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                        .collect::<Result<_, _>>()?;
                    // (in the order they were taken: RETURNING's is unspecified)
                    Ok(taken
                        .iter()
                        .filter_map(|t| {
                            let (body, sent_at) = rows.remove(&t.id)?;
                            Some(ReceivedMessage {
                                message_id: t.id.to_string(),
                                receipt_handle: receipt_handle(t.id, t.receive_count),
                                body,
                                receive_count: t.receive_count,
                                sent_at: DateTime::from_timestamp_micros(sent_at)
                                    .unwrap_or_default(),
                            })
                        })
                        .collect::<Vec<_>>())
                };
                let received = if one_statement {
                    self.db.write_statement_then(write, |_| {}).await
                } else {
                    self.db.write(write).await
                }
                .map_err(qerr)?;
                if !received.is_empty() {
                    return Ok(received);
                }
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
                .filter(|(id, r)| q.messages.get(id).is_some_and(|m| m.receive_count == *r))
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
        // One statement for them all: no savepoint around it.
        let ids = serde_json::to_string(&ids).map_err(|e| QueueError(e.to_string()))?;
        self.db
            .write_statement_then(
                move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?1))",
                    )?
                    .execute([ids])?;
                    Ok(())
                },
                |_| {},
            )
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
            match q.messages.get(&id).copied() {
                Some(m) if m.receive_count == receipt => {
                    q.remove(id);
                    q.insert(id, Message { visible_at, ..m }, now);
                }
                Some(_) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_made_visible_after_a_receiver_read_the_clock_is_still_delivered() {
        // GIVEN a receiver that read the clock at 99, and a message sent meanwhile, visible at
        // 100 and put on the ready list before the receiver takes the lock
        let mut q = QueueState::default();
        let m = Message {
            visible_at: 100,
            priority: 0,
            receive_count: 0,
        };
        q.insert(7, m, 100);

        // WHEN the receiver promotes and pops with its older reading
        q.promote(99);
        let popped = q.pop_ready();

        // THEN it gets the message (it was once dropped as a stale hint, and lost for good)
        assert_eq!(popped, Some(7));
        // AND a hint for a message that went back to waiting is skipped, not delivered
        q.remove(7);
        q.insert(
            7,
            Message {
                visible_at: 500,
                ..m
            },
            100,
        );
        q.ready.entry(Reverse(0)).or_default().push_back(7);
        assert_eq!(q.pop_ready(), None);
        assert_eq!(q.messages.len(), 1, "still indexed, waiting");
    }
}
