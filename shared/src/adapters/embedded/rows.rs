//! How the embedded store keeps jobs and batches in rows: the codecs between a row and its
//! job or batch, and the writes that several of the store's paths share (a job's start, a batch
//! member counted, an unreadable row moved aside).

use super::db::DbError;
use crate::domain::{Batch, Job, JobStatus, Progress};
use crate::ports::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

/// Worker-owned times keep the domain's full precision (a read gives back what was written).
pub(super) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(super) fn encode(job: &Job) -> Result<String, DbError> {
    serde_json::to_string(job).map_err(|e| DbError::Other(format!("encode job: {e}")))
}

pub(super) fn encode_progress(p: &Progress) -> Result<String, DbError> {
    serde_json::to_string(p).map_err(|e| DbError::Other(format!("encode progress: {e}")))
}

pub(super) fn unavailable(e: DbError) -> StoreError {
    match e {
        DbError::Busy(_) => StoreError::Busy(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// The columns a job is read from, in `StoredJob::from_row`'s order.
pub(super) const JOB_COLUMNS: &str = "id, doc, heartbeat_at, progress, updated_at";

/// A job row as read, before decoding.
pub(super) struct StoredJob {
    pub(super) id: String,
    pub(super) doc: String,
    pub(super) heartbeat_at: Option<i64>,
    pub(super) progress: Option<String>,
    pub(super) updated_at: i64,
}

impl StoredJob {
    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
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
    pub(super) fn decode(&self) -> Result<Job, String> {
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
pub(super) struct Unreadable {
    pub(super) id: String,
    pub(super) reason: String,
}

/// Decode rows; the unreadable ones are set aside for quarantine, never dropped unseen.
pub(super) fn decode_rows(rows: Vec<StoredJob>) -> (Vec<Job>, Vec<Unreadable>) {
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

pub(super) fn get_stored(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<StoredJob>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], StoredJob::from_row)
        .optional()?)
}

/// Write a job's start (its row as `Row::of` the started job), on the writer, which has just
/// read it queued. The rows written.
pub(super) fn write_start(conn: &rusqlite::Connection, row: &Row) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET status = ?1, attempt = ?2, version = ?3, due_at = ?4, doc = ?5,
                 runs = ?6, heartbeat_at = ?7, progress = NULL, updated_at = ?9
             WHERE id = ?8",
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
        ])?)
}

/// Move an unreadable job row into `quarantine` (inside the writer's transaction): kept for an
/// operator, counted in stats, out of every listing and sweep. Logged here, once.
pub(super) fn quarantine_row(conn: &rusqlite::Connection, bad: &Unreadable) -> Result<(), DbError> {
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
pub(super) struct Row {
    pub(super) id: String,
    pub(super) tenant: String,
    pub(super) job_type: String,
    pub(super) status: &'static str,
    pub(super) attempt: u32,
    pub(super) runs: u32,
    pub(super) version: i64,
    pub(super) due_at: i64,
    pub(super) heartbeat_at: Option<i64>,
    pub(super) progress: Option<String>,
    pub(super) updated_at: i64,
    pub(super) doc: String,
    pub(super) batch: Option<String>,
}

/// How long a batch is kept after it was opened (its members are kept their types' retention).
pub(super) const BATCH_KEPT: chrono::Duration = chrono::Duration::days(30);

/// Count a change of one of `batch`'s members: `pending` and `total` added, and `count` to the
/// column of `status`; the batch's next look pushed back (a member ended, or was added). Its
/// pending count after.
pub(super) fn count_member(
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
    pub(super) fn of(job: &Job) -> Result<Self, StoreError> {
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

    pub(super) fn insert(&self, conn: &rusqlite::Connection) -> Result<(), DbError> {
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
            // (counted in its batch, and listed among its members, in the same write)
            count_member(conn, batch, 1, 1, None, Utc::now())?;
            conn.prepare_cached("INSERT INTO batch_members (batch, job_id) VALUES (?1, ?2)")?
                .execute([batch, &self.id])?;
        }
        Ok(())
    }
}

pub(super) const BATCH_COLUMNS: &str = "doc, total, pending, succeeded, failed, dead, cancelled";

type BatchRow = (String, [i64; 6]);

pub(super) fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
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
pub(super) fn decode_batch(
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

pub(super) enum Write<T> {
    Done(T),
    Conflict,
}
