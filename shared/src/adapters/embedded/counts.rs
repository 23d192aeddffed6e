//! Jobs counted per tenant, type and status for `stats`: read from `job_counts`, which
//! triggers keep in each change's own commit (see `schema`).

use super::rows::unavailable;
use super::store::EmbeddedStore;
use crate::domain::{JobStatus, Tenant};
use crate::ports::{StatsRow, StoreError, StoreStats};

impl EmbeddedStore {
    /// Counts for one tenant, or (`None`) for all of them.
    pub async fn stats_of(&self, tenant: Option<&Tenant>) -> Result<StoreStats, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.db
            .read(move |conn| {
                let (sql, quarantine_sql, args) = match &tenant {
                    Some(t) => (
                        "SELECT type, status, n FROM job_counts WHERE tenant = ?1 AND n > 0 ORDER BY type, status",
                        "SELECT COUNT(*) FROM quarantine WHERE tenant = ?1",
                        vec![t.clone()],
                    ),
                    None => (
                        "SELECT type, status, SUM(n) FROM job_counts GROUP BY type, status HAVING SUM(n) > 0 ORDER BY type, status",
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
