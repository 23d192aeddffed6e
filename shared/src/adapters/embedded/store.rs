//! `JobStore` on SQLite: the job as a JSON document plus the columns that conditions and
//! indexes need (status, attempt, version, due time), and the worker-owned fields
//! (`heartbeat_at`, `progress`) in columns of their own, so a transition's write cannot touch
//! them (see `JobStore`'s rule). A row whose document cannot be read is moved to `quarantine`.
//! The rows' codecs are in `rows`; batches and logs and steps have files of their own.

use super::access::{admit, delete_expired_audit, insert_audit, move_slot, AuditRow};
use super::db::{Db, DbError};
use super::queue::{EmbeddedQueue, NewMessage};
use super::rows::*;
use crate::domain::{
    batch_count_change, slot_change, AuditEntry, Batch, BatchId, Expected, Job, JobId, JobStatus,
    JobSummary, MemberPosition, MembersPage, Progress, Tenant,
};
use crate::live::{ChangeFeed, JobChange};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, NewLogLine, Started, StepRecord,
    StoreError, StoreStats, Transitioned,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

pub use crate::ports::LOG_CAP;

pub struct EmbeddedStore {
    pub(super) db: Db,
    /// Where committed changes are announced, in commit order (live updates).
    pub(super) feed: Option<Arc<ChangeFeed>>,
    waiters: WaitersSeen,
    /// The queue whose messages a new job's write carries (`writes_messages`), if any.
    queue: Option<Arc<EmbeddedQueue>>,
}

/// Whether `job_waiters` may hold a row: unknown until the writer first looks, then kept by the
/// writer (the only one that adds rows). While no job has ever waited for another, a job's end
/// need not look for the jobs waiting for it.
#[derive(Clone, Default)]
struct WaitersSeen(Arc<std::sync::atomic::AtomicU8>);

impl WaitersSeen {
    // 0 (the default): not looked yet.
    const NONE: u8 = 1;
    const SOME: u8 = 2;

    /// On the writer: whether a job may be waiting for another.
    fn any(&self, conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.0.load(Relaxed) {
            Self::NONE => Ok(false),
            Self::SOME => Ok(true),
            _ => {
                let any: bool = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM job_waiters)")?
                    .query_row([], |r| r.get(0))?;
                self.0
                    .store(if any { Self::SOME } else { Self::NONE }, Relaxed);
                Ok(any)
            }
        }
    }

    /// Known (by the writer) that no job waits for another.
    fn known_none(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == Self::NONE
    }

    /// On the writer, as a job starts to wait for another.
    fn added(&self) {
        self.0
            .store(Self::SOME, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EmbeddedStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            feed: None,
            waiters: WaitersSeen::default(),
            queue: None,
        }
    }

    /// Write a new job's message in the job's own commit, into `queue` (which must be on the
    /// same database).
    pub fn with_queue(self, queue: Arc<EmbeddedQueue>) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// Announce every committed change of a job on `feed`.
    pub fn with_feed(self, feed: Arc<ChangeFeed>) -> Self {
        Self {
            feed: Some(feed),
            ..self
        }
    }

    /// What to announce once `job`'s write commits (nothing without a feed).
    fn announce(&self, job: &Job) -> Option<(Arc<ChangeFeed>, JobChange)> {
        self.feed
            .as_ref()
            .filter(|f| f.watched())
            .map(|f| (f.clone(), JobChange::job(JobSummary::from(job))))
    }
}

impl EmbeddedStore {
    /// Move unreadable rows to quarantine (one write for all of them).
    async fn quarantine(&self, bad: Vec<Unreadable>) -> Result<(), StoreError> {
        self.db
            .write(move |conn| bad.iter().try_for_each(|b| quarantine_row(conn, b)))
            .await
            .map_err(unavailable)
    }

    /// A scan that returns job rows: unreadable rows are quarantined and the scan run again, so
    /// a page is never short because of them while readable rows remain (a sweep that stops at
    /// a short page would otherwise end early). Each pass removes at least one row, so it ends.
    pub(super) async fn scan_jobs(
        &self,
        sql: String,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<Job>, StoreError> {
        loop {
            let (sql, args) = (sql.clone(), args.clone());
            let rows = self
                .db
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(args.iter()), StoredJob::from_row)?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await
                .map_err(unavailable)?;
            let (jobs, bad) = decode_rows(rows);
            if bad.is_empty() {
                return Ok(jobs);
            }
            self.quarantine(bad).await?;
        }
    }
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create_with(&self, job: &Job, with: &CreateWith) -> Result<Created, StoreError> {
        let row = Row::of(job)?;
        let audit = with.audit.as_ref().map(AuditRow::of).transpose()?;
        let admission = with.admission;
        let key = job.idempotency_key.as_ref().map(|k| k.to_string());
        let announce = self.announce(job);
        let message = self
            .queue
            .as_ref()
            .zip(with.message.as_ref())
            .map(|(_, m)| Arc::new(NewMessage::of(&m.queue, &m.body, m.delay, m.priority)));
        let message_row = message.clone();
        let (created, sent) = self
            .db
            .write_new_then(move |conn| {
                if let Some(key) = &key {
                    let existing: Option<String> = conn
                        .prepare_cached(
                            "SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2",
                        )?
                        .query_row([row.tenant.as_str(), key.as_str()], |r| r.get(0))
                        .optional()?;
                    if let Some(stored) = existing.map(|id| get_stored(conn, &id)).transpose()?.flatten() {
                        match stored.decode() {
                            Ok(found) => return Ok((Created::Existing(Box::new(found)), None)),
                            // The key's job cannot be read: it is kept aside, the key is free.
                            Err(reason) => quarantine_row(conn, &Unreadable { id: stored.id, reason })?,
                        }
                    }
                }
                if let Some(refused) = admit(conn, &row.tenant, &admission)? {
                    return Ok((refused, None));
                }
                if let Some(key) = &key {
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency (tenant, key, job_id) VALUES (?1, ?2, ?3)",
                    )?
                    .execute([row.tenant.as_str(), key.as_str(), row.id.as_str()])?;
                }
                row.insert(conn)?;
                if let Some(entry) = &audit {
                    insert_audit(conn, entry)?;
                }
                let sent = message_row.map(|m| m.insert(conn)).transpose()?;
                Ok((Created::New, sent))
            }, move |(created, _)| {
                if let (Created::New, Some((feed, change))) = (created, announce) {
                    feed.publish(change);
                }
            })
            .await
            .map_err(unavailable)?;
        if let (Some(queue), Some(message), Some(id)) = (&self.queue, &message, sent) {
            queue.noted(message, id);
        }
        Ok(created)
    }

    fn writes_messages(&self) -> bool {
        self.queue.is_some()
    }

    async fn create_batch(
        &self,
        jobs: &[Job],
        audit: Option<&AuditEntry>,
        _atomic: bool,
    ) -> Result<Vec<Created>, StoreError> {
        // One write, one commit: atomic whether asked or not (nothing in it can be refused).
        let rows = jobs
            .iter()
            .map(|job| {
                Ok((
                    Row::of(job)?,
                    job.idempotency_key.as_ref().map(|k| k.to_string()),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let audit = audit.map(AuditRow::of).transpose()?;
        let announce: Vec<_> = jobs.iter().filter_map(|j| self.announce(j)).collect();
        self.db
            .write_new_then(
                move |conn| {
                    let mut created = Vec::with_capacity(rows.len());
                    for (row, key) in &rows {
                        if let Some(key) = key {
                            let existing: Option<String> = conn
                                .prepare_cached(
                                    "SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2",
                                )?
                                .query_row([row.tenant.as_str(), key.as_str()], |r| r.get(0))
                                .optional()?;
                            if let Some(stored) =
                                existing.map(|id| get_stored(conn, &id)).transpose()?.flatten()
                            {
                                match stored.decode() {
                                    Ok(found) => {
                                        created.push(Created::Existing(Box::new(found)));
                                        continue;
                                    }
                                    Err(reason) => quarantine_row(
                                        conn,
                                        &Unreadable {
                                            id: stored.id,
                                            reason,
                                        },
                                    )?,
                                }
                            }
                            conn.prepare_cached(
                                "INSERT OR REPLACE INTO idempotency (tenant, key, job_id) VALUES (?1, ?2, ?3)",
                            )?
                            .execute([row.tenant.as_str(), key.as_str(), row.id.as_str()])?;
                        }
                        row.insert(conn)?;
                        created.push(Created::New);
                    }
                    if let Some(entry) = &audit {
                        insert_audit(conn, entry)?;
                    }
                    Ok(created)
                },
                move |created| {
                    // (Announced: the new ones; an existing one's change was announced when
                    // it was made.)
                    let mut new = created.iter().map(|c| matches!(c, Created::New));
                    for (feed, change) in announce {
                        if new.next().unwrap_or(false) {
                            feed.publish(change);
                        }
                    }
                },
            )
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let stored = self
            .db
            .read_point(|conn| get_stored(conn, &id.to_string()))
            .await
            .map_err(unavailable)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        match stored.decode() {
            Ok(job) => Ok(Some(job)),
            Err(reason) => {
                self.quarantine(vec![Unreadable {
                    id: stored.id,
                    reason,
                }])
                .await?;
                Ok(None)
            }
        }
    }

    async fn start(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<Started, StoreError> {
        // Read, decide and write on the writer's connection: one hop, the row's pages already in
        // its cache (the job was written moments ago), and nothing can come between the read and
        // the write (the writer is the only one). A reader's copy would cost a read whose cache
        // the WAL has just emptied, and a second write whenever the job moved meanwhile.
        // No savepoint around it: its one write is a single statement, undone by SQLite on its
        // own if it fails; the quarantine path's two leave nothing wrong if cut between them
        // (the copy is made again at the next read).
        let feed = self.feed.clone().filter(|f| f.watched());
        self.db
            .write_statement_then(
                move |conn| {
                    let Some(stored) = get_stored(conn, &id.to_string())? else {
                        return Ok(Started::Missing);
                    };
                    let job = match stored.decode() {
                        Ok(job) => job,
                        Err(reason) => {
                            quarantine_row(
                                conn,
                                &Unreadable {
                                    id: stored.id,
                                    reason,
                                },
                            )?;
                            return Ok(Started::Missing);
                        }
                    };
                    if job.status != JobStatus::Queued || job.run_at > due_by {
                        return Ok(Started::Refused(Box::new(job)));
                    }
                    let next = job.start(now).expect("a queued job can start");
                    let row = Row::of(&next).map_err(|e| DbError::Other(e.to_string()))?;
                    write_start(conn, &row)?;
                    Ok(Started::Running(Box::new(next)))
                },
                move |started| {
                    if let (Started::Running(job), Some(feed)) = (started, feed) {
                        feed.publish(JobChange::job(JobSummary::from(job.as_ref())));
                    }
                },
            )
            .await
            .map_err(unavailable)
    }

    async fn transition(&self, expected: Expected, next: &Job) -> Result<Transitioned, StoreError> {
        let slot = slot_change(expected.status, next);
        let ends = next.status.is_terminal();
        let batch_change = next
            .batch_id
            .and_then(|b| Some((b, batch_count_change(expected.status, next.status)?)));
        let now = next.updated_at;
        let next_job = next;
        let next = Row::of(next)?;
        let last_heartbeat = expected.last_heartbeat.map(micros);
        // Worker-owned fields: a running job's belong to its run (heartbeats may land after this
        // change was computed), so they are kept; from any other status nobody else writes them,
        // so the change sets them (a start gives the new run its first heartbeat).
        let sets_worker_fields = expected.status != JobStatus::Running;
        let announce = self.announce(next_job);
        let waiters_seen = self.waiters.clone();
        // One statement (the job's own row) needs no savepoint around it.
        let one_statement =
            slot == 0 && batch_change.is_none() && (!ends || self.waiters.known_none());
        let write = move |conn: &rusqlite::Connection| {
            let changed = conn
                .prepare_cached(
                    "UPDATE jobs SET status = ?1, attempt = ?2, version = ?3, doc = ?5, runs = ?11,
                             updated_at = ?15,
                             heartbeat_at = CASE WHEN ?12 THEN ?13 ELSE heartbeat_at END,
                             progress = CASE WHEN ?12 THEN ?14 ELSE progress END,
                             due_at = CASE WHEN ?1 = 'running' AND NOT ?12 THEN due_at ELSE ?4 END
                         WHERE id = ?6 AND status = ?7 AND attempt = ?8 AND version = ?9
                           AND (?10 IS NULL OR due_at = ?10)",
                )?
                .execute(params![
                    next.status,
                    next.attempt,
                    next.version,
                    next.due_at,
                    next.doc,
                    next.id,
                    expected.status.as_str(),
                    expected.attempt,
                    expected.version as i64,
                    last_heartbeat,
                    next.runs,
                    sets_worker_fields,
                    next.heartbeat_at,
                    next.progress,
                    next.updated_at,
                ])?;
            if changed == 1 && slot != 0 {
                move_slot(conn, &next.tenant, slot)?;
            }
            if changed != 1 {
                return Ok(Write::Conflict);
            }
            // Its batch's counts move in the same write.
            let mut batch_ended = None;
            if let Some((batch, (pending, status, count))) = batch_change {
                let left = count_member(
                    conn,
                    &batch.to_string(),
                    pending,
                    0,
                    Some((status, count)),
                    now,
                )?;
                if pending < 0 && left == Some(0) {
                    batch_ended = Some(batch);
                }
            }
            // The jobs waiting for this one, told once: taken off it as it ends.
            let waiters = if ends && waiters_seen.any(conn)? {
                conn.prepare_cached("DELETE FROM job_waiters WHERE parent = ?1 RETURNING waiter")?
                    .query_map([&next.id], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![]
            };
            Ok(Write::Done((waiters, batch_ended)))
        };
        let announce = move |written: &Write<(Vec<String>, Option<BatchId>)>| {
            if let (Write::Done(_), Some((feed, change))) = (written, announce) {
                feed.publish(change);
            }
        };
        let written = if one_statement {
            self.db.write_statement_then(write, announce).await
        } else {
            self.db.write_then(write, announce).await
        }
        .map_err(unavailable)?;
        match written {
            Write::Done((waiters, batch_ended)) => Ok(Transitioned {
                waiters: waiters
                    .iter()
                    .filter_map(|w| JobId::parse(w).ok())
                    .collect(),
                batch_ended,
            }),
            Write::Conflict => Err(StoreError::Conflict),
        }
    }

    async fn add_waiter(
        &self,
        parent: JobId,
        tenant: &Tenant,
        waiter: JobId,
    ) -> Result<Option<JobStatus>, StoreError> {
        let tenant = tenant.as_str().to_string();
        let seen = self.waiters.clone();
        let status: Option<String> = self
            .db
            .write(move |conn| {
                let parent = parent.to_string();
                let status: Option<String> = conn
                    .prepare_cached("SELECT status FROM jobs WHERE id = ?1 AND tenant = ?2")?
                    .query_row([&parent, &tenant], |r| r.get(0))
                    .optional()?;
                let ended = status
                    .as_deref()
                    .and_then(JobStatus::parse)
                    .is_none_or(JobStatus::is_terminal);
                if !ended {
                    conn.prepare_cached(
                        "INSERT OR IGNORE INTO job_waiters (parent, waiter) VALUES (?1, ?2)",
                    )?
                    .execute([&parent, &waiter.to_string()])?;
                    seen.added();
                }
                Ok(status)
            })
            .await
            .map_err(unavailable)?;
        Ok(status.as_deref().and_then(JobStatus::parse))
    }

    async fn heartbeat(
        &self,
        id: JobId,
        run: u32,
        at: DateTime<Utc>,
        progress: Option<&Progress>,
    ) -> Result<Liveness, StoreError> {
        let progress = progress
            .map(encode_progress)
            .transpose()
            .map_err(unavailable)?;
        // A change of progress is announced with the job as it now is.
        let feed = self
            .feed
            .clone()
            .filter(|f| progress.is_some() && f.watched());
        let announce = feed.is_some();
        let (cancel_requested, _) = self
            .db
            .write_then(move |conn| {
                let cancel_requested = conn
                    .prepare_cached(
                        "UPDATE jobs SET heartbeat_at = ?5, due_at = ?1, progress = COALESCE(?2, progress),
                             updated_at = CASE WHEN ?2 IS NULL THEN updated_at ELSE ?1 END
                         WHERE id = ?3 AND status = 'running' AND runs = ?4
                         RETURNING json_extract(doc, '$.cancel_requested')",
                    )?
                    .query_row(params![micros(at), progress, id.to_string(), run, nanos(at)], |r| {
                        r.get::<_, Option<bool>>(0)
                    })
                    .optional()?;
                let changed = match (announce, cancel_requested) {
                    (true, Some(_)) => get_stored(conn, &id.to_string())?
                        .and_then(|stored| stored.decode().ok()),
                    _ => None,
                };
                Ok((cancel_requested, changed))
            }, move |(_, changed)| {
                if let (Some(job), Some(feed)) = (changed, feed) {
                    feed.publish(JobChange::job(JobSummary::from(job)));
                }
            })
            .await
            .map_err(unavailable)?;
        match cancel_requested {
            Some(cancel_requested) => Ok(Liveness {
                cancel_requested: cancel_requested.unwrap_or(false),
            }),
            None => Err(StoreError::Conflict),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError> {
        use rusqlite::types::Value;
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        let mut args: Vec<Value> = vec![];
        let mut push = |clause: &str, v: String| {
            args.push(Value::Text(v));
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        push("tenant =", query.tenant.to_string());
        if let Some(s) = query.status {
            push("status =", s.as_str().to_string());
        }
        if let Some(t) = &query.job_type {
            push("type =", t.to_string());
        }
        if let Some(b) = query.before {
            push("id <", b.to_string());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", query.limit.max(1)));
        Ok(self
            .scan_jobs(sql, args)
            .await?
            .iter()
            .map(JobSummary::from)
            .collect())
    }

    async fn updated_since(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, StoreError> {
        use rusqlite::types::Value;
        Ok(self
            .scan_jobs(
                format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = ?1 AND updated_at >= ?2
                     ORDER BY updated_at LIMIT ?3"
                ),
                vec![
                    Value::Text(tenant.to_string()),
                    Value::Integer(micros(since)),
                    Value::Integer(limit.max(1) as i64),
                ],
            )
            .await?
            .iter()
            .map(JobSummary::from)
            .collect())
    }

    async fn stats(&self, tenant: &Tenant) -> Result<StoreStats, StoreError> {
        self.stats_of(Some(tenant)).await
    }

    async fn append_log(&self, new: NewLogLine<'_>) -> Result<(), StoreError> {
        self.append_log_row(new).await
    }

    async fn logs(
        &self,
        id: JobId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.log_rows(id, after_seq, limit).await
    }

    async fn open_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        self.open_batch_row(batch).await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        self.get_batch_row(id).await
    }

    async fn batch_members(
        &self,
        id: BatchId,
        from: Option<MemberPosition>,
        limit: usize,
    ) -> Result<MembersPage, StoreError> {
        self.member_rows(id, from, limit).await
    }

    async fn finish_batch(
        &self,
        id: BatchId,
        callbacks: &std::collections::BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.finish_batch_row(id, callbacks, at).await
    }

    async fn due_batches(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        self.due_batch_rows(before, limit).await
    }

    async fn recheck_batch(&self, id: BatchId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.recheck_batch_row(id, at).await
    }

    async fn save_step(
        &self,
        id: JobId,
        name: &str,
        result: &serde_json::Value,
        at: DateTime<Utc>,
        _keep_until: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError> {
        self.save_step_row(id, name, result, at, _keep_until).await
    }

    async fn steps(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError> {
        self.step_rows(id).await
    }

    async fn due(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        use rusqlite::types::Value;
        self.scan_jobs(
            format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ?1 AND due_at < ?2 ORDER BY due_at LIMIT ?3"
            ),
            vec![
                Value::Text(status.as_str().to_string()),
                Value::Integer(micros(before)),
                Value::Integer(limit as i64),
            ],
        )
        .await
    }

    async fn delete_expired(&self, now: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        self.db
            .write(move |conn| {
                let mut deleted = 0u64;
                for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
                    let remaining = limit as i64 - deleted as i64;
                    if remaining <= 0 {
                        break;
                    }
                    let expired = conn
                        .prepare_cached(
                            "SELECT id, doc FROM jobs WHERE status = ?1 AND due_at < ?2 LIMIT ?3",
                        )?
                        .query_map(params![status.as_str(), micros(now), remaining], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (id, doc) in expired {
                        conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                            .execute([&id])?;
                        conn.prepare_cached("DELETE FROM job_logs WHERE job_id = ?1")?
                            .execute([&id])?;
                        conn.prepare_cached("DELETE FROM job_steps WHERE job_id = ?1")?
                            .execute([&id])?;
                        conn.prepare_cached("DELETE FROM job_waiters WHERE parent = ?1")?
                            .execute([&id])?;
                        // Its key goes too (a row that cannot be read keeps its key: harmless).
                        if let Ok(job) = serde_json::from_str::<Job>(&doc) {
                            if let Some(key) = &job.idempotency_key {
                                conn.prepare_cached(
                                    "DELETE FROM idempotency WHERE tenant = ?1 AND key = ?2 AND job_id = ?3",
                                )?
                                .execute([job.tenant.as_str(), key.as_str(), &id])?;
                            }
                        }
                        deleted += 1;
                    }
                }
                conn.prepare_cached(
                    "DELETE FROM batch_members WHERE batch IN (SELECT id FROM batches WHERE expires_at < ?1)",
                )?
                .execute([micros(now)])?;
                conn.prepare_cached("DELETE FROM batches WHERE expires_at < ?1")?
                    .execute([micros(now)])?;
                // The audit trail's expired entries go in the same sweep (not counted as jobs).
                delete_expired_audit(conn, now, limit)?;
                Ok(deleted)
            })
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests;
