//! `JobStore` on SQLite: the job as a JSON document plus the columns that conditions and
//! indexes need (status, attempt, version, due time), and the worker-owned fields
//! (`heartbeat_at`, `progress`) in columns of their own, so a transition's write cannot touch
//! them (see `JobStore`'s rule). A row whose document cannot be read is moved to `quarantine`.

use super::access::{admit, delete_expired_audit, insert_audit, move_slot, AuditRow};
use super::db::{Db, DbError};
use crate::domain::{
    batch_count_change, slot_change, AuditEntry, Batch, BatchId, Expected, Job, JobId, JobStatus,
    JobSummary, Progress, Tenant,
};
use crate::live::{ChangeFeed, JobChange, Update};
use crate::ports::{
    CreateWith, Created, JobStore, ListQuery, Liveness, LogLine, NewLogLine, Started, StatsRow,
    StepRecord, StoreError, StoreStats, Transitioned,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

pub use crate::ports::LOG_CAP;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    version INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    doc TEXT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    heartbeat_at INTEGER, -- nanoseconds
    progress TEXT,
    updated_at INTEGER NOT NULL DEFAULT 0 -- microseconds
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (tenant, status, id);
CREATE INDEX IF NOT EXISTS jobs_by_type ON jobs (tenant, type, id);
CREATE INDEX IF NOT EXISTS jobs_stats ON jobs (tenant, type, status);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, due_at);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_steps (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    at INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_waiters (
    parent TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (parent, waiter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL, -- the batch as opened, then with its callbacks (counts: the columns)
    look_at INTEGER, -- microseconds; NULL once finished
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_due ON batches (look_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quarantine_by_tenant ON quarantine (tenant);
";

/// Bring a database made by an earlier version up to `SCHEMA`: the worker-owned fields and the
/// run counter get columns of their own, filled from the documents.
pub(super) fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has = |column: &str| {
        conn.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")?
            .exists([column])
    };
    if !has("updated_at")? {
        // When each job last changed, for `updated_since`: taken from the document where it
        // has the time, else its creation (the document's `created_at` is always there).
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
             UPDATE jobs SET updated_at = COALESCE(
                 CAST(strftime('%s', json_extract(doc, '$.updated_at')) AS INTEGER) * 1000000,
                 CAST(strftime('%s', json_extract(doc, '$.created_at')) AS INTEGER) * 1000000, 0)
             WHERE json_valid(doc);",
        )?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (tenant, updated_at);")?;
    if has("runs")? {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN heartbeat_at INTEGER;
         ALTER TABLE jobs ADD COLUMN progress TEXT;
         UPDATE jobs SET
             runs = COALESCE(json_extract(doc, '$.runs'), 0),
             heartbeat_at = CASE WHEN status = 'running' THEN due_at * 1000 END,
             progress = json_extract(doc, '$.progress')
         WHERE json_valid(doc);",
    )
}

pub struct EmbeddedStore {
    db: Db,
    /// Where committed changes are announced, in commit order (live updates).
    feed: Option<Arc<ChangeFeed>>,
    waiters: WaitersSeen,
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
    /// A start worked out from a reader's copy of the job, written only if the row is still
    /// that version and queued: `None` when it is not (or the reader cannot tell), for the
    /// writer to decide on its own read.
    async fn start_as_read(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<Option<Started>, StoreError> {
        let key = id.to_string();
        let stored = self
            .db
            .read_point(|conn| get_stored(conn, &key))
            .await
            .map_err(unavailable)?;
        let Some(Ok(job)) = stored.map(|s| s.decode()) else {
            return Ok(None);
        };
        if job.status != JobStatus::Queued || job.run_at > due_by {
            return Ok(None);
        }
        let read_version = job.version as i64;
        let Ok(next) = job.start(now) else {
            return Ok(None);
        };
        let row = Row::of(&next)?;
        let feed = self.feed.clone().filter(|f| f.watched());
        let summary = feed.as_ref().map(|_| JobSummary::from(&next));
        let written = self
            .db
            .write_statement_then(
                move |conn| Ok(write_start(conn, &row, Some(read_version))? == 1),
                move |written: &bool| {
                    if let (true, Some(feed), Some(summary)) = (*written, feed, summary) {
                        feed.publish(JobChange::job(summary));
                    }
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(written.then(|| Started::Running(Box::new(next))))
    }
    pub fn new(db: Db) -> Self {
        Self {
            db,
            feed: None,
            waiters: WaitersSeen::default(),
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

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

/// Worker-owned times keep the domain's full precision (a read gives back what was written).
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn encode(job: &Job) -> Result<String, DbError> {
    serde_json::to_string(job).map_err(|e| DbError::Other(format!("encode job: {e}")))
}

fn encode_progress(p: &Progress) -> Result<String, DbError> {
    serde_json::to_string(p).map_err(|e| DbError::Other(format!("encode progress: {e}")))
}

fn unavailable(e: DbError) -> StoreError {
    match e {
        DbError::Busy(_) => StoreError::Busy(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// The columns a job is read from, in `StoredJob::from_row`'s order.
const JOB_COLUMNS: &str = "id, doc, heartbeat_at, progress, updated_at";

/// A job row as read, before decoding.
struct StoredJob {
    id: String,
    doc: String,
    heartbeat_at: Option<i64>,
    progress: Option<String>,
    updated_at: i64,
}

impl StoredJob {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            doc: r.get(1)?,
            heartbeat_at: r.get(2)?,
            progress: r.get(3)?,
            updated_at: r.get(4)?,
        })
    }

    /// The job: its document, with the worker-owned fields from their own columns (the
    /// document's copies of them are not kept up to date and are ignored).
    fn decode(&self) -> Result<Job, String> {
        let mut job: Job = serde_json::from_str(&self.doc).map_err(|e| format!("document: {e}"))?;
        job.heartbeat_at = self.heartbeat_at.map(DateTime::from_timestamp_nanos);
        job.progress = self
            .progress
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("progress: {e}"))?;
        // Progress moves it without touching the document.
        job.updated_at = job.updated_at.max(from_micros(self.updated_at));
        Ok(job)
    }
}

/// A row that could not be read, and why.
struct Unreadable {
    id: String,
    reason: String,
}

/// Decode rows; the unreadable ones are set aside for quarantine, never dropped unseen.
fn decode_rows(rows: Vec<StoredJob>) -> (Vec<Job>, Vec<Unreadable>) {
    let mut jobs = Vec::with_capacity(rows.len());
    let mut bad = vec![];
    for row in rows {
        match row.decode() {
            Ok(job) => jobs.push(job),
            Err(reason) => bad.push(Unreadable { id: row.id, reason }),
        }
    }
    (jobs, bad)
}

fn get_stored(conn: &rusqlite::Connection, id: &str) -> Result<Option<StoredJob>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], StoredJob::from_row)
        .optional()?)
}

/// Write a job's start (its row as `Row::of` the started job), on condition that it is still
/// queued at `read_version` when one is given. The rows written.
fn write_start(
    conn: &rusqlite::Connection,
    row: &Row,
    read_version: Option<i64>,
) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET status = ?1, attempt = ?2, version = ?3, due_at = ?4, doc = ?5,
                 runs = ?6, heartbeat_at = ?7, progress = NULL, updated_at = ?9
             WHERE id = ?8 AND (?10 IS NULL OR (version = ?10 AND status = 'queued'))",
        )?
        .execute(params![
            row.status,
            row.attempt,
            row.version,
            row.due_at,
            row.doc,
            row.runs,
            row.heartbeat_at,
            row.id,
            row.updated_at,
            read_version,
        ])?)
}

/// Move an unreadable job row into `quarantine` (inside the writer's transaction): kept for an
/// operator, counted in stats, out of every listing and sweep. Logged here, once.
fn quarantine_row(conn: &rusqlite::Connection, bad: &Unreadable) -> Result<(), DbError> {
    let moved = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO quarantine (id, tenant, type, status, doc, reason, at)
             SELECT id, tenant, type, status, doc, ?2, ?3 FROM jobs WHERE id = ?1",
        )?
        .execute(params![bad.id, bad.reason, micros(Utc::now())])?;
    conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
        .execute([&bad.id])?;
    if moved > 0 {
        tracing::error!(job_id = %bad.id, reason = %bad.reason, "a job row cannot be read; moved to quarantine");
    }
    Ok(())
}

/// A job as its row: built on the caller's thread, so the single writer only binds and writes.
struct Row {
    id: String,
    tenant: String,
    job_type: String,
    status: &'static str,
    attempt: u32,
    runs: u32,
    version: i64,
    due_at: i64,
    heartbeat_at: Option<i64>,
    progress: Option<String>,
    updated_at: i64,
    doc: String,
    batch: Option<String>,
}

/// How long a batch is kept after it was opened (its members are kept their types' retention).
const BATCH_KEPT: chrono::Duration = chrono::Duration::days(30);

/// Count a change of one of `batch`'s members: `pending` and `total` added, and `count` to the
/// column of `status`; the batch's next look pushed back (a member ended, or was added). Its
/// pending count after.
fn count_member(
    conn: &rusqlite::Connection,
    batch: &str,
    pending: i64,
    total: i64,
    count: Option<(JobStatus, i64)>,
    at: DateTime<Utc>,
) -> Result<Option<i64>, DbError> {
    let (column, n) = match count {
        Some((JobStatus::Succeeded, n)) => ("succeeded", n),
        Some((JobStatus::Failed, n)) => ("failed", n),
        Some((JobStatus::Dead, n)) => ("dead", n),
        Some((JobStatus::Cancelled, n)) => ("cancelled", n),
        _ => ("succeeded", 0),
    };
    let sql = format!(
        "UPDATE batches SET pending = pending + ?2, total = total + ?3, {column} = {column} + ?4,
             look_at = CASE WHEN look_at IS NULL THEN NULL ELSE ?5 END
         WHERE id = ?1 RETURNING pending"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(
            params![
                batch,
                pending,
                total,
                n,
                micros(at + crate::ports::BATCH_LOOK_AFTER)
            ],
            |r| r.get(0),
        )
        .optional()?)
}

impl Row {
    fn of(job: &Job) -> Result<Self, StoreError> {
        Ok(Self {
            id: job.id.to_string(),
            tenant: job.tenant.to_string(),
            job_type: job.job_type.to_string(),
            status: job.status.as_str(),
            attempt: job.attempt,
            runs: job.runs,
            version: job.version as i64,
            due_at: micros(job.due_at()),
            heartbeat_at: job.heartbeat_at.map(nanos),
            progress: job
                .progress
                .as_ref()
                .map(encode_progress)
                .transpose()
                .map_err(unavailable)?,
            updated_at: micros(job.updated_at),
            doc: encode(job).map_err(unavailable)?,
            batch: job.batch_id.map(|b| b.to_string()),
        })
    }

    fn insert(&self, conn: &rusqlite::Connection) -> Result<(), DbError> {
        conn.prepare_cached(
            "INSERT INTO jobs (id, tenant, type, status, attempt, version, due_at, doc, runs, heartbeat_at, progress, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            self.id,
            self.tenant,
            self.job_type,
            self.status,
            self.attempt,
            self.version,
            self.due_at,
            self.doc,
            self.runs,
            self.heartbeat_at,
            self.progress,
            self.updated_at,
        ])?;
        if let Some(batch) = &self.batch {
            // (counted in its batch in the same write)
            count_member(conn, batch, 1, 1, None, Utc::now())?;
        }
        Ok(())
    }
}

const BATCH_COLUMNS: &str = "doc, total, pending, succeeded, failed, dead, cancelled";

type BatchRow = (String, [i64; 6]);

fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    Ok((
        r.get(0)?,
        [
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ],
    ))
}

/// A batch from its document, with the counts from their columns.
fn decode_batch(
    (doc, [total, pending, succeeded, failed, dead, cancelled]): BatchRow,
) -> Result<Batch, StoreError> {
    let mut b: Batch =
        serde_json::from_str(&doc).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let n = |v: i64| v.max(0) as u64;
    (
        b.total,
        b.pending,
        b.succeeded,
        b.failed,
        b.dead,
        b.cancelled,
    ) = (
        n(total),
        n(pending),
        n(succeeded),
        n(failed),
        n(dead),
        n(cancelled),
    );
    Ok(b)
}

enum Write<T> {
    Done(T),
    Conflict,
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
    async fn scan_jobs(
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

impl EmbeddedStore {
    /// Counts for one tenant, or (`None`) for all of them.
    pub async fn stats_of(&self, tenant: Option<&Tenant>) -> Result<StoreStats, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.db
            .read(move |conn| {
                let (sql, quarantine_sql, args) = match &tenant {
                    Some(t) => (
                        "SELECT type, status, COUNT(*) FROM jobs WHERE tenant = ?1 GROUP BY type, status ORDER BY type, status",
                        "SELECT COUNT(*) FROM quarantine WHERE tenant = ?1",
                        vec![t.clone()],
                    ),
                    None => (
                        "SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status ORDER BY type, status",
                        "SELECT COUNT(*) FROM quarantine",
                        vec![],
                    ),
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let quarantined: i64 = conn
                    .prepare_cached(quarantine_sql)?
                    .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
                Ok(StoreStats {
                    rows: rows
                        .into_iter()
                        .filter_map(|(job_type, status, count)| {
                            Some(StatsRow {
                                job_type,
                                status: JobStatus::parse(&status)?,
                                count: count as u64,
                            })
                        })
                        .collect(),
                    quarantined: quarantined as u64,
                })
            })
            .await
            .map_err(unavailable)
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
        self.db
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
                            Ok(found) => return Ok(Created::Existing(Box::new(found))),
                            // The key's job cannot be read: it is kept aside, the key is free.
                            Err(reason) => quarantine_row(conn, &Unreadable { id: stored.id, reason })?,
                        }
                    }
                }
                if let Some(refused) = admit(conn, &row.tenant, &admission)? {
                    return Ok(refused);
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
                Ok(Created::New)
            }, move |created| {
                if let (Created::New, Some((feed, change))) = (created, announce) {
                    feed.publish(change);
                }
            })
            .await
            .map_err(unavailable)
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
        // Most starts find the job queued as a reader sees it: read, decode and encode here
        // (not on the single writer), and have the writer only write, on condition that the
        // row is still the version read. A job changed since falls back to the path below.
        if let Some(started) = self.start_as_read(id, now, due_by).await? {
            return Ok(started);
        }
        // Read, decide and write on the writer's connection: one hop, and nothing can come
        // between the read and the write (the writer is the only one).
        let feed = self.feed.clone().filter(|f| f.watched());
        self.db
            .write_then(
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
                    write_start(conn, &row, None)?;
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
        // (kept until the job is deleted, with it)
        let (id, attempt, at, line) = (new.job_id, new.attempt, new.at, new.line.to_string());
        let feed = self.feed.clone().filter(|f| f.watched());
        let announce = feed.is_some();
        self.db
            .write_then(move |conn| {
                let job_id = id;
                let id = id.to_string();
                let last: i64 = conn
                    .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = ?1")?
                    .query_row([&id], |r| r.get(0))?;
                let last = last as u64;
                if last > LOG_CAP {
                    return Ok(None);
                }
                let line = if last == LOG_CAP {
                    format!("log truncated: more than {LOG_CAP} lines")
                } else {
                    line
                };
                conn.prepare_cached(
                    "INSERT INTO job_logs (job_id, seq, at, attempt, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, (last + 1) as i64, micros(at), attempt, line])?;
                if !announce {
                    return Ok(None);
                }
                let tenant: Option<String> = conn
                    .prepare_cached("SELECT tenant FROM jobs WHERE id = ?1")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                Ok(tenant.and_then(|t| Tenant::parse(t).ok()).map(|tenant| JobChange {
                    tenant,
                    job_id,
                    update: Update::Log {
                        job_id,
                        seq: last + 1,
                        at,
                        attempt,
                        line,
                    },
                }))
            }, move |change| {
                if let (Some(change), Some(feed)) = (change, feed) {
                    feed.publish(change.clone());
                }
            })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn logs(
        &self,
        id: JobId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, at, attempt, line FROM job_logs WHERE job_id = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map(
                        params![id.to_string(), after_seq as i64, limit as i64],
                        |r| {
                            Ok(LogLine {
                                seq: r.get::<_, i64>(0)? as u64,
                                at: from_micros(r.get(1)?),
                                attempt: r.get(2)?,
                                line: r.get(3)?,
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .map_err(unavailable)
    }

    async fn open_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let doc = serde_json::to_string(batch).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let (id, tenant) = (batch.id.to_string(), batch.tenant.to_string());
        let look = micros(batch.created_at + crate::ports::BATCH_LOOK_AFTER);
        let expires = micros(batch.created_at + BATCH_KEPT);
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO batches (id, tenant, doc, look_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, tenant, doc, look, expires])?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        let row = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"
                    ))?
                    .query_row([id.to_string()], batch_row)
                    .optional()?)
            })
            .await
            .map_err(unavailable)?;
        row.map(decode_batch).transpose()
    }

    async fn finish_batch(
        &self,
        id: BatchId,
        callbacks: &std::collections::BTreeMap<String, JobId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let callbacks =
            serde_json::to_string(callbacks).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let at = serde_json::to_string(&at).map_err(|e| StoreError::Rejected(e.to_string()))?;
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE batches SET look_at = NULL,
                         doc = json_set(doc, '$.callbacks', json(?2), '$.finished_at', json(?3))
                     WHERE id = ?1 AND look_at IS NOT NULL",
                )?
                .execute(params![id.to_string(), callbacks, at])?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }

    async fn due_batches(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        let rows = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {BATCH_COLUMNS} FROM batches WHERE look_at < ?1 ORDER BY look_at LIMIT ?2"
                    ))?
                    .query_map(params![micros(before), limit as i64], batch_row)?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(unavailable)?;
        rows.into_iter().map(decode_batch).collect()
    }

    async fn recheck_batch(&self, id: BatchId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE batches SET look_at = ?2 WHERE id = ?1 AND look_at IS NOT NULL",
                )?
                .execute(params![id.to_string(), micros(at)])?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }

    async fn save_step(
        &self,
        id: JobId,
        name: &str,
        result: &serde_json::Value,
        at: DateTime<Utc>,
        _keep_until: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError> {
        // (Kept as long as the job: `delete_expired` deletes a job's steps with it.)
        let (name, text) = (name.to_string(), result.to_string());
        let stored: String = self
            .db
            .write(move |conn| {
                let id = id.to_string();
                conn.prepare_cached(
                    "INSERT INTO job_steps (job_id, name, at, result) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (job_id, name) DO NOTHING",
                )?
                .execute(params![id, name, micros(at), text])?;
                Ok(conn
                    .prepare_cached("SELECT result FROM job_steps WHERE job_id = ?1 AND name = ?2")?
                    .query_row(params![id, name], |r| r.get(0))?)
            })
            .await
            .map_err(unavailable)?;
        serde_json::from_str(&stored).map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn steps(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, at, result FROM job_steps WHERE job_id = ?1 ORDER BY at, name",
                )?;
                let rows = stmt
                    .query_map([id.to_string()], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|(name, at, result)| {
                Ok(StepRecord {
                    name,
                    at: from_micros(at),
                    result: serde_json::from_str(&result)
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                })
            })
            .collect()
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
mod tests {
    use super::*;
    use crate::domain::{Backoff, JobType, NewJob};
    use std::time::Duration;

    fn job_at(tenant: &str, at: DateTime<Utc>) -> Job {
        Job::create(
            NewJob {
                tenant: Tenant::parse(tenant).unwrap(),
                job_type: JobType::parse("noop").unwrap(),
                priority: 0,
                payload: serde_json::json!({}),
                max_attempts: 1,
                backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
                timeout: Duration::from_secs(1),
                retention: Duration::from_secs(1),
                idempotency_key: None,
                request_fingerprint: None,
                run_at: at,
            },
            at,
        )
    }

    fn store() -> (tempfile::TempDir, Db, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
        let store = EmbeddedStore::new(db.clone());
        (dir, db, store)
    }

    /// Write `n` rows that cannot be read, for `tenant`, with ids `<prefix><n>`, in `status`,
    /// due at `due_at`.
    async fn insert_unreadable(
        db: &Db,
        tenant: &str,
        prefix: &str,
        n: usize,
        status: &str,
        due_at: i64,
    ) {
        let (tenant, prefix, status) = (tenant.to_string(), prefix.to_string(), status.to_string());
        db.write(move |c| {
            for i in 0..n {
                c.execute(
                    "INSERT INTO jobs (id, tenant, type, status, attempt, version, due_at, doc)
                     VALUES (?1, ?2, 'noop', ?3, 1, 1, ?4, 'not json')",
                    params![format!("{prefix}{i:05}"), tenant, status, due_at],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn unreadable_rows_never_end_a_sweep_early() {
        // GIVEN 3 stalled running jobs, due after more unreadable running rows than a sweep's
        // page (the old sweep stopped at the first short page and never reached them)
        let (_dir, db, store) = store();
        let long_ago = Utc::now() - chrono::Duration::seconds(600);
        let mut stalled = vec![];
        for _ in 0..3 {
            let job = job_at("t", long_ago);
            store.create(&job).await.unwrap();
            let running = job.start(long_ago).unwrap();
            store.transition(job.expected(), &running).await.unwrap();
            stalled.push(job.id);
        }
        insert_unreadable(&db, "t", "bad", 600, "running", micros(long_ago) - 1).await;

        // WHEN maintenance asks for stalled jobs a page of 500 at a time
        let due = store
            .due(JobStatus::Running, Utc::now(), 500)
            .await
            .unwrap();

        // THEN the page holds every readable stalled job
        let mut found: Vec<_> = due.iter().map(|j| j.id).collect();
        found.sort();
        stalled.sort();
        assert_eq!(found, stalled);
    }

    #[tokio::test]
    async fn unreadable_rows_are_quarantined_counted_and_kept() {
        // GIVEN two readable jobs and, between them in listing order, 5 unreadable rows
        let (_dir, db, store) = store();
        let now = Utc::now();
        let older = job_at("t", now);
        store.create(&older).await.unwrap();
        // (`<older id>~…` sorts right after `older`, and before any later id)
        let prefix = format!("{}~", older.id);
        insert_unreadable(&db, "t", &prefix, 5, "queued", micros(now)).await;
        insert_unreadable(&db, "u", "other", 1, "queued", micros(now)).await;
        let newer = job_at("t", now);
        store.create(&newer).await.unwrap();

        // WHEN the tenant's jobs are listed two to a page
        let query = |before| ListQuery {
            tenant: Tenant::parse("t").unwrap(),
            status: None,
            job_type: None,
            before,
            limit: 2,
        };
        let page = store.list(&query(None)).await.unwrap();

        // THEN the page is full: both readable jobs, none of the unreadable rows
        assert_eq!(
            page.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![newer.id, older.id]
        );
        // AND the unreadable rows are kept in quarantine, counted in the tenant's stats
        let stats = store.stats(&Tenant::parse("t").unwrap()).await.unwrap();
        assert_eq!(stats.quarantined, 5);
        assert_eq!(stats.rows.iter().map(|r| r.count).sum::<u64>(), 2);
        let kept: i64 = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM quarantine WHERE doc = 'not json'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(kept, 5);
        // AND another tenant's unreadable row, never read, is neither moved nor counted for `t`
        assert_eq!(store.stats_of(None).await.unwrap().quarantined, 5);
        let all = store
            .list(&ListQuery {
                limit: 10,
                ..query(None)
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }

    #[tokio::test]
    async fn get_of_an_unreadable_row_quarantines_it() {
        // GIVEN a job whose document was damaged
        let (_dir, db, store) = store();
        let job = job_at("t", Utc::now());
        store.create(&job).await.unwrap();
        let id = job.id.to_string();
        db.write(move |c| {
            c.execute("UPDATE jobs SET doc = '{\"id\": 1' WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
        .unwrap();

        // WHEN it is read
        let got = store.get(job.id).await.unwrap();

        // THEN it is not returned, and it is counted as quarantined, not lost
        assert!(got.is_none());
        let stats = store.stats(&job.tenant).await.unwrap();
        assert_eq!((stats.quarantined, stats.rows.len()), (1, 0));
    }
}
