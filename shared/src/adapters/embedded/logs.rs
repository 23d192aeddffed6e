//! A job's log lines and recorded steps in the embedded store.

use super::rows::*;
use super::store::EmbeddedStore;
use crate::domain::{JobId, Tenant};
use crate::live::{JobChange, Update};
use crate::ports::LOG_CAP;
use crate::ports::{LogLine, NewLogLine, StepRecord, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl EmbeddedStore {
    pub(super) async fn append_log_row(&self, new: NewLogLine<'_>) -> Result<(), StoreError> {
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

    pub(super) async fn log_rows(
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

    pub(super) async fn save_step_row(
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

    pub(super) async fn step_rows(&self, id: JobId) -> Result<Vec<StepRecord>, StoreError> {
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
}
