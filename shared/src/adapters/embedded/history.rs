//! `TypeHistory` on SQLite: ends are counted in memory as they happen and written a few seconds
//! later, all the minutes of that while in one write (a job's own commit is not made longer for
//! its charts); a read writes what is pending first. A crash loses at most those seconds of
//! charts, never a job.

use super::access::failed;
use super::db::Db;
use crate::domain::{job_ended, Job, Tenant, TypeMinute, HISTORY_KEPT, RUN_BUCKETS};
use crate::ports::{StoreError, TypeHistory};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How long ends wait in memory before they are written.
const WRITE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends not yet written: by (tenant, minute in seconds, type).
type Pending = BTreeMap<(String, i64, String), TypeMinute>;

#[derive(Clone)]
pub struct EmbeddedHistory {
    db: Db,
    pending: Arc<Mutex<Pending>>,
    /// A write of the pending ends is on its way.
    scheduled: Arc<AtomicBool>,
}

impl EmbeddedHistory {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            pending: Default::default(),
            scheduled: Default::default(),
        }
    }

    /// Write the pending ends, adding to the stored minutes, and forget minutes past
    /// `HISTORY_KEPT`.
    async fn write_pending(&self) -> Result<(), StoreError> {
        self.scheduled.store(false, Ordering::SeqCst);
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if pending.is_empty() {
            return Ok(());
        }
        let oldest = (Utc::now() - HISTORY_KEPT).timestamp();
        let kept = pending.clone();
        let written = self
            .db
            .write(move |conn| {
                for ((tenant, minute, job_type), add) in &pending {
                    let stored: Option<(i64, i64, String)> = conn
                        .prepare_cached(
                            "SELECT succeeded, failed, runs FROM type_minutes
                             WHERE tenant = ?1 AND minute = ?2 AND type = ?3",
                        )?
                        .query_row(params![tenant, minute, job_type], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .ok();
                    let mut total = add.clone();
                    if let Some((succeeded, failed, runs)) = stored {
                        let runs: Vec<u64> = serde_json::from_str(&runs).unwrap_or_default();
                        let mut before = TypeMinute {
                            succeeded: succeeded as u64,
                            failed: failed as u64,
                            ..Default::default()
                        };
                        for (slot, n) in before.runs.iter_mut().zip(runs) {
                            *slot = n;
                        }
                        total.add(&before);
                    }
                    let runs = serde_json::to_string(&total.runs.to_vec()).unwrap_or_default();
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO type_minutes (tenant, minute, type, succeeded, failed, runs)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        tenant,
                        minute,
                        job_type,
                        total.succeeded as i64,
                        total.failed as i64,
                        runs
                    ])?;
                }
                conn.prepare_cached("DELETE FROM type_minutes WHERE minute < ?1")?
                    .execute(params![oldest])?;
                Ok(())
            })
            .await
            .map_err(failed);
        if written.is_err() {
            // (kept for the next write)
            let mut pending = self.pending.lock().unwrap();
            for (key, minute) in kept {
                pending.entry(key).or_default().add(&minute);
            }
        }
        written
    }
}

#[async_trait]
impl TypeHistory for EmbeddedHistory {
    fn ended(&self, job: &Job) {
        let Some((minute, succeeded, ran)) = job_ended(job) else {
            return;
        };
        self.pending
            .lock()
            .unwrap()
            .entry((
                job.tenant.to_string(),
                minute.timestamp(),
                job.job_type.to_string(),
            ))
            .or_default()
            .note(succeeded, ran);
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let me = self.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(WRITE_AFTER).await;
                    if let Err(e) = me.write_pending().await {
                        tracing::warn!(error = %e, "the charts' minutes not written; kept for the next write");
                    }
                });
            }
        }
    }

    async fn minutes(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, String, TypeMinute)>, StoreError> {
        self.write_pending().await?;
        let (tenant, since) = (tenant.to_string(), since.timestamp());
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT minute, type, succeeded, failed, runs FROM type_minutes
                     WHERE tenant = ?1 AND minute >= ?2 ORDER BY minute, type",
                )?;
                let rows = stmt.query_map(params![tenant, since], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?;
                let mut out = vec![];
                for row in rows {
                    let (minute, job_type, succeeded, failed, runs) = row?;
                    let mut m = TypeMinute {
                        succeeded: succeeded as u64,
                        failed: failed as u64,
                        runs: [0; RUN_BUCKETS],
                    };
                    let runs: Vec<u64> = serde_json::from_str(&runs).unwrap_or_default();
                    for (slot, n) in m.runs.iter_mut().zip(runs) {
                        *slot = n;
                    }
                    if let Some(at) = DateTime::from_timestamp(minute, 0) {
                        out.push((at, job_type, m));
                    }
                }
                Ok(out)
            })
            .await
            .map_err(failed)
    }
}
