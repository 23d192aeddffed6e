//! Batches in the embedded store: a batch's row, its counts as members end, its members (a
//! `batch_members` row each, written with the member: a group of one), and the sweep that finds
//! the batches due to end.

use super::rows::*;
use super::store::EmbeddedStore;
use crate::domain::{Batch, BatchId, JobId, JobSummary, MemberPosition, MembersPage};
use crate::ports::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl EmbeddedStore {
    pub(super) async fn open_batch_row(&self, batch: &Batch) -> Result<(), StoreError> {
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

    pub(super) async fn get_batch_row(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
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

    pub(super) async fn member_rows(
        &self,
        id: BatchId,
        from: Option<MemberPosition>,
        limit: usize,
    ) -> Result<MembersPage, StoreError> {
        use rusqlite::types::Value;
        // (each member is a group of its own: a position past it has taken it)
        let (after, inclusive) = match from {
            Some(p) => (p.group.to_string(), p.taken == 0),
            None => (String::new(), false),
        };
        let limit = limit.max(1);
        let ids: Vec<String> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT job_id FROM batch_members WHERE batch = ?1
                         AND (job_id > ?2 OR (?3 AND job_id = ?2)) ORDER BY job_id LIMIT ?4",
                    )?
                    .query_map(
                        params![id.to_string(), after, inclusive, limit as i64 + 1],
                        |r| r.get(0),
                    )?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(unavailable)?;
        // (one more read than taken: a next page only when there is one)
        let mut ids = ids;
        let next = match ids.len() > limit {
            true => {
                ids.truncate(limit);
                let last = ids.last().expect("limit is at least one");
                Some(MemberPosition {
                    group: JobId::parse(last).map_err(|e| StoreError::Unavailable(e.message))?,
                    taken: 1,
                })
            }
            false => None,
        };
        let jobs = if ids.is_empty() {
            vec![]
        } else {
            let marks = vec!["?"; ids.len()].join(", ");
            self.scan_jobs(
                format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({marks}) ORDER BY id"),
                ids.into_iter().map(Value::Text).collect(),
            )
            .await?
            .iter()
            .map(JobSummary::from)
            .collect()
        };
        Ok(MembersPage { jobs, next })
    }

    pub(super) async fn finish_batch_row(
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

    pub(super) async fn due_batch_rows(
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

    pub(super) async fn recheck_batch_row(
        &self,
        id: BatchId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
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
}
