//! `PauseStore` on SQLite, with the pauses kept in memory once read: a worker asks before every
//! job, and only this process writes them.

use super::access::{failed, EmbeddedAccess};
use crate::domain::{JobType, Pause, PauseScope, Pauses};
use crate::ports::{PauseStore, StoreError};
use async_trait::async_trait;
use chrono::DateTime;
use rusqlite::params;

fn read_all(conn: &rusqlite::Connection) -> Result<Pauses, super::DbError> {
    let mut stmt = conn.prepare_cached("SELECT scope, type, since, by FROM paused_types")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut pauses = vec![];
    for row in rows {
        let (scope, job_type, since, by) = row?;
        pauses.extend(Pause::stored(
            &scope,
            &job_type,
            DateTime::from_timestamp_micros(since),
            &by,
        ));
    }
    Ok(Pauses(pauses))
}

impl EmbeddedAccess {
    /// Write with `f`, then keep what the table holds after it.
    async fn change_pauses<F>(&self, f: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<bool, super::DbError> + Send + 'static,
    {
        let (changed, now) = self
            .db
            .write(move |conn| Ok((f(conn)?, read_all(conn)?)))
            .await
            .map_err(failed)?;
        *self.pauses.lock().unwrap() = Some(now);
        Ok(changed)
    }
}

#[async_trait]
impl PauseStore for EmbeddedAccess {
    async fn pause(&self, pause: &Pause) -> Result<bool, StoreError> {
        let (scope, job_type) = (pause.scope.key().to_string(), pause.job_type.to_string());
        let (since, by) = (pause.since.timestamp_micros(), pause.by.clone());
        self.change_pauses(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO paused_types (scope, type, since, by) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![scope, job_type, since, by])?;
            Ok(n == 1)
        })
        .await
    }

    async fn resume(&self, scope: &PauseScope, job_type: &JobType) -> Result<bool, StoreError> {
        let (scope, job_type) = (scope.key().to_string(), job_type.to_string());
        self.change_pauses(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM paused_types WHERE scope = ?1 AND type = ?2")?
                .execute(params![scope, job_type])?;
            Ok(n == 1)
        })
        .await
    }

    async fn pauses(&self) -> Result<Pauses, StoreError> {
        if let Some(known) = self.pauses.lock().unwrap().clone() {
            return Ok(known);
        }
        let read = self.db.read(read_all).await.map_err(failed)?;
        let mut known = self.pauses.lock().unwrap();
        // (a change that landed meanwhile set it: that one is newer)
        Ok(known.get_or_insert(read).clone())
    }
}
