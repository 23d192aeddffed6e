//! `ScheduleStore` on SQLite: one row per schedule, its definition and history as JSON, written
//! only if its `version` is the one expected. Also `StartRates`: a row per rate, its GCRA
//! arrival time read and written in one step of the single writer; and `Debounces`, a row per
//! key, claimed in one step (rows past their time are deleted as keys are claimed). Running
//! slots are kept in memory (`slots.rs`).

use super::access::{failed, EmbeddedAccess};
use super::db::DbError;
use crate::domain::{Schedule, ScheduleName, Tenant};
use crate::ports::{Debounces, RateDecision, ScheduleStore, StartRates, StoreError};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

fn decode(doc: &str) -> Result<Schedule, DbError> {
    serde_json::from_str(doc).map_err(|e| DbError::Other(format!("a schedule cannot be read: {e}")))
}

/// The schedules of `docs` that can be read: one that cannot is left out, said, and does not
/// hide the others.
fn readable(docs: &[String]) -> Vec<Schedule> {
    docs.iter()
        .filter_map(|d| {
            decode(d)
                .map_err(
                    |e| tracing::error!(error = %e, "a stored schedule cannot be read; left out"),
                )
                .ok()
        })
        .collect()
}

#[async_trait]
impl ScheduleStore for EmbeddedAccess {
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(schedule)
            .map_err(|e| StoreError::Rejected(format!("encode: {e}")))?;
        let (tenant, name, version) = (
            schedule.tenant.to_string(),
            schedule.name.to_string(),
            schedule.version as i64,
        );
        // (never due: the largest time a row can hold)
        let due_at = schedule
            .due_from()
            .map_or(i64::MAX, |t| t.timestamp_micros());
        let written = self
            .db
            .write(move |conn| {
                let n = match expected {
                    None => conn
                        .prepare_cached(
                            "INSERT OR IGNORE INTO schedules (tenant, name, version, doc, due_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![tenant, name, version, doc, due_at])?,
                    Some(v) => conn
                        .prepare_cached(
                            "UPDATE schedules SET version = ?3, doc = ?4, due_at = ?6
                             WHERE tenant = ?1 AND name = ?2 AND version = ?5",
                        )?
                        .execute(params![tenant, name, version, doc, v as i64, due_at])?,
                };
                Ok(n == 1)
            })
            .await
            .map_err(failed)?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<Option<Schedule>, StoreError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.db
            .read_point(move |conn| {
                conn.prepare_cached("SELECT doc FROM schedules WHERE tenant = ?1 AND name = ?2")?
                    .query_row([&tenant, &name], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|doc| decode(&doc))
                    .transpose()
            })
            .await
            .map_err(failed)
    }

    async fn schedules(&self, tenant: Option<&Tenant>) -> Result<Vec<Schedule>, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.db
            .read(move |conn| {
                let docs: Vec<String> = conn
                    .prepare_cached(
                        "SELECT doc FROM schedules WHERE ?1 IS NULL OR tenant = ?1
                         ORDER BY tenant, name",
                    )?
                    .query_map([&tenant], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(readable(&docs))
            })
            .await
            .map_err(failed)
    }

    async fn due_schedules(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Schedule>, StoreError> {
        // Only the rows due by now (or not known): the scheduler's pass every second decodes
        // those, not every schedule of every tenant.
        let now = now.timestamp_micros();
        self.db
            .read(move |conn| {
                let docs: Vec<String> = conn
                    .prepare_cached(
                        "SELECT doc FROM schedules WHERE due_at IS NULL OR due_at <= ?1
                         ORDER BY tenant, name",
                    )?
                    .query_map([now], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(readable(&docs))
            })
            .await
            .map_err(failed)
    }

    async fn delete_schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<bool, StoreError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.db
            .write(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM schedules WHERE tenant = ?1 AND name = ?2")?
                    .execute([&tenant, &name])?;
                Ok(n > 0)
            })
            .await
            .map_err(failed)
    }
}

#[async_trait]
impl StartRates for EmbeddedAccess {
    async fn admit(
        &self,
        key: &str,
        interval: std::time::Duration,
        burst: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RateDecision, StoreError> {
        let key = key.to_string();
        self.db
            .write(move |conn| {
                let stored: Option<i64> = conn
                    .prepare_cached("SELECT tat FROM start_rates WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?;
                match crate::domain::gcra(stored, now, interval, burst) {
                    Ok(tat) => {
                        conn.prepare_cached(
                            "INSERT INTO start_rates (key, tat) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET tat = ?2",
                        )?
                        .execute(params![key, tat])?;
                        Ok(RateDecision::Admitted)
                    }
                    Err(at) => Ok(RateDecision::WaitUntil(at)),
                }
            })
            .await
            .map_err(failed)
    }
}

#[async_trait]
impl Debounces for EmbeddedAccess {
    async fn debounced(&self, key: &str) -> Result<Option<crate::domain::JobId>, StoreError> {
        let key = key.to_string();
        let id: Option<String> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT job_id FROM debounces WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?)
            })
            .await
            .map_err(failed)?;
        Ok(id.and_then(|id| crate::domain::JobId::parse(&id).ok()))
    }

    async fn hold(
        &self,
        key: &str,
        job: crate::domain::JobId,
        replacing: Option<crate::domain::JobId>,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let (key, job) = (key.to_string(), job.to_string());
        let replacing = replacing.map(|r| r.to_string());
        let (expires, now) = (
            expires.timestamp_micros(),
            chrono::Utc::now().timestamp_micros(),
        );
        let held = self
            .db
            .write(move |conn| {
                let current: Option<String> = conn
                    .prepare_cached("SELECT job_id FROM debounces WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?;
                if current != replacing {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO debounces (key, job_id, expires) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET job_id = ?2, expires = ?3",
                )?
                .execute(params![key, job, expires])?;
                // (A few forgotten keys go each time, so the table holds only live ones.)
                conn.prepare_cached(
                    "DELETE FROM debounces WHERE key IN
                     (SELECT key FROM debounces WHERE expires < ?1 LIMIT 8)",
                )?
                .execute([now])?;
                Ok(true)
            })
            .await
            .map_err(failed)?;
        if held {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn forget(&self, key: &str, job: crate::domain::JobId) -> Result<(), StoreError> {
        let (key, job) = (key.to_string(), job.to_string());
        self.db
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM debounces WHERE key = ?1 AND job_id = ?2")?
                    .execute([&key, &job])?;
                Ok(())
            })
            .await
            .map_err(failed)
    }
}
