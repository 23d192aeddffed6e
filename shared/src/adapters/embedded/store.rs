//! `JobStore` on SQLite: the job as a JSON document plus the columns that conditions and
//! indexes need (status, attempt, version, due time).

use super::db::{Db, DbError};
use crate::domain::{Expected, Job, JobId, JobStatus, Progress, Tenant};
use crate::ports::{Created, JobStore, ListQuery, Liveness, LogLine, StatsRow, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

/// Log lines kept per job; later lines are dropped (one marker line says so).
pub const LOG_CAP: u64 = 1000;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    version INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    doc TEXT NOT NULL
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
";

pub struct EmbeddedStore {
    db: Db,
}

impl EmbeddedStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn encode(job: &Job) -> Result<String, DbError> {
    serde_json::to_string(job).map_err(|e| DbError::Other(format!("encode job: {e}")))
}

fn decode(doc: &str) -> Result<Job, DbError> {
    serde_json::from_str(doc).map_err(|e| DbError::Other(format!("decode job: {e}")))
}

/// Decode rows for a scan, skipping (and logging) any that cannot be read: one bad row must
/// not stop a listing or a maintenance sweep.
fn decode_all(docs: &[String]) -> Vec<Job> {
    docs.iter()
        .filter_map(|d| match decode(d) {
            Ok(job) => Some(job),
            Err(e) => {
                tracing::error!(error = %e, "skipping a job row that cannot be read");
                None
            }
        })
        .collect()
}

fn unavailable(e: DbError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn get_job(conn: &rusqlite::Connection, id: &str) -> Result<Option<Job>, DbError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    doc.as_deref().map(decode).transpose()
}

/// A job as its row: built on the caller's thread, so the single writer only binds and writes.
struct Row {
    id: String,
    tenant: String,
    job_type: String,
    status: &'static str,
    attempt: u32,
    version: i64,
    due_at: i64,
    doc: String,
}

impl Row {
    fn of(job: &Job) -> Result<Self, StoreError> {
        Ok(Self {
            id: job.id.to_string(),
            tenant: job.tenant.to_string(),
            job_type: job.job_type.to_string(),
            status: job.status.as_str(),
            attempt: job.attempt,
            version: job.version as i64,
            due_at: micros(job.due_at()),
            doc: encode(job).map_err(unavailable)?,
        })
    }

    fn insert(&self, conn: &rusqlite::Connection) -> Result<(), DbError> {
        conn.prepare_cached(
            "INSERT INTO jobs (id, tenant, type, status, attempt, version, due_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        ])?;
        Ok(())
    }
}

enum Write<T> {
    Done(T),
    Conflict,
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create(&self, job: &Job) -> Result<Created, StoreError> {
        let row = Row::of(job)?;
        let key = job.idempotency_key.as_ref().map(|k| k.to_string());
        self.db
            .write(move |conn| {
                if let Some(key) = &key {
                    let existing: Option<String> = conn
                        .prepare_cached(
                            "SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2",
                        )?
                        .query_row([row.tenant.as_str(), key.as_str()], |r| r.get(0))
                        .optional()?;
                    if let Some(existing) = existing {
                        if let Some(found) = get_job(conn, &existing)? {
                            return Ok(Created::Existing(Box::new(found)));
                        }
                    }
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency (tenant, key, job_id) VALUES (?1, ?2, ?3)",
                    )?
                    .execute([row.tenant.as_str(), key.as_str(), row.id.as_str()])?;
                }
                row.insert(conn)?;
                Ok(Created::New)
            })
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.db
            .read_now(|conn| get_job(conn, &id.to_string()))
            .map_err(unavailable)
    }

    async fn transition(&self, expected: Expected, next: &Job) -> Result<(), StoreError> {
        let next = Row::of(next)?;
        let last_heartbeat = expected.last_heartbeat.map(micros);
        let written = self
            .db
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE jobs SET status = ?1, attempt = ?2, version = ?3, due_at = ?4, doc = ?5
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
                    ])?;
                Ok(if changed == 1 {
                    Write::Done(())
                } else {
                    Write::Conflict
                })
            })
            .await
            .map_err(unavailable)?;
        match written {
            Write::Done(()) => Ok(()),
            Write::Conflict => Err(StoreError::Conflict),
        }
    }

    async fn heartbeat(
        &self,
        id: JobId,
        run: u32,
        at: DateTime<Utc>,
        progress: Option<&Progress>,
    ) -> Result<Liveness, StoreError> {
        let progress = progress.cloned();
        let written = self
            .db
            .write(move |conn| {
                let id = id.to_string();
                let doc: Option<String> = conn
                    .prepare_cached("SELECT doc FROM jobs WHERE id = ?1 AND status = 'running'")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?;
                let Some(doc) = doc else {
                    return Ok(Write::Conflict);
                };
                let mut job = decode(&doc)?;
                if job.runs != run {
                    return Ok(Write::Conflict);
                }
                job.heartbeat_at = Some(at);
                if progress.is_some() {
                    job.progress = progress;
                }
                conn.prepare_cached("UPDATE jobs SET due_at = ?1, doc = ?2 WHERE id = ?3")?
                    .execute(params![micros(job.due_at()), encode(&job)?, id])?;
                Ok(Write::Done(Liveness {
                    cancel_requested: job.cancel_requested,
                }))
            })
            .await
            .map_err(unavailable)?;
        match written {
            Write::Done(l) => Ok(l),
            Write::Conflict => Err(StoreError::Conflict),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let q = query.clone();
        self.db
            .read(move |conn| {
                let mut sql = String::from("SELECT doc FROM jobs WHERE 1 = 1");
                let mut args: Vec<String> = vec![];
                let mut push = |clause: &str, v: String| {
                    args.push(v);
                    sql.push_str(&format!(" AND {clause} ?{}", args.len()));
                };
                if let Some(t) = &q.tenant {
                    push("tenant =", t.to_string());
                }
                if let Some(s) = q.status {
                    push("status =", s.as_str().to_string());
                }
                if let Some(t) = &q.job_type {
                    push("type =", t.to_string());
                }
                if let Some(b) = q.before {
                    push("id <", b.to_string());
                }
                sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit.max(1)));
                let mut stmt = conn.prepare_cached(&sql)?;
                let docs = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        r.get::<_, String>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(decode_all(&docs))
            })
            .await
            .map_err(unavailable)
    }

    async fn stats(&self, tenant: Option<&Tenant>) -> Result<Vec<StatsRow>, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.db
            .read(move |conn| {
                let (sql, args) = match &tenant {
                    Some(t) => (
                        "SELECT type, status, COUNT(*) FROM jobs WHERE tenant = ?1 GROUP BY type, status ORDER BY type, status",
                        vec![t.clone()],
                    ),
                    None => (
                        "SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status ORDER BY type, status",
                        vec![],
                    ),
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(job_type, status, count)| {
                        Some(StatsRow {
                            job_type,
                            status: JobStatus::parse(&status)?,
                            count: count as u64,
                        })
                    })
                    .collect())
            })
            .await
            .map_err(unavailable)
    }

    async fn append_log(
        &self,
        id: JobId,
        attempt: u32,
        at: DateTime<Utc>,
        line: &str,
    ) -> Result<(), StoreError> {
        let line = line.to_string();
        self.db
            .write(move |conn| {
                let id = id.to_string();
                let last: i64 = conn
                    .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = ?1")?
                    .query_row([&id], |r| r.get(0))?;
                let last = last as u64;
                if last > LOG_CAP {
                    return Ok(());
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
                Ok(())
            })
            .await
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

    async fn due(
        &self,
        status: JobStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT doc FROM jobs WHERE status = ?1 AND due_at < ?2 ORDER BY due_at LIMIT ?3",
                )?;
                let docs = stmt
                    .query_map(
                        params![status.as_str(), micros(before), limit as i64],
                        |r| r.get::<_, String>(0),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(decode_all(&docs))
            })
            .await
            .map_err(unavailable)
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
                        // Its key goes too (a row that cannot be read keeps its key: harmless).
                        if let Ok(job) = decode(&doc) {
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

    #[tokio::test]
    async fn a_row_that_cannot_be_read_does_not_stop_a_sweep() {
        // GIVEN a stalled running job and, beside it, a running row whose document is garbage
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
        let store = EmbeddedStore::new(db.clone());
        let long_ago = Utc::now() - chrono::Duration::seconds(600);
        let job = Job::create(
            NewJob {
                tenant: Tenant::parse("t").unwrap(),
                job_type: JobType::parse("noop").unwrap(),
                priority: 0,
                payload: serde_json::json!({}),
                max_attempts: 1,
                backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
                timeout: Duration::from_secs(1),
                retention: Duration::from_secs(1),
                idempotency_key: None,
                run_at: long_ago,
            },
            long_ago,
        );
        store.create(&job).await.unwrap();
        let running = job.start(long_ago).unwrap();
        store.transition(job.expected(), &running).await.unwrap();
        db.write(move |c| {
            c.execute(
                "INSERT INTO jobs (id, tenant, type, status, attempt, version, due_at, doc)
                 VALUES ('bad', 't', 'noop', 'running', 1, 1, ?1, 'not json')",
                [micros(long_ago) - 1],
            )?;
            Ok(())
        })
        .await
        .unwrap();

        // WHEN maintenance asks for stalled jobs
        let due = store.due(JobStatus::Running, Utc::now(), 10).await.unwrap();

        // THEN the readable job is found all the same
        assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), vec![job.id]);
    }
}
