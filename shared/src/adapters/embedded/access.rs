//! `KeyStore` and `AuditLog` on SQLite: keys as JSON documents (digest, never the secret) and
//! the audit trail as an append-only table, pruned by maintenance past each entry's expiry.

use super::db::{Db, DbError};
use crate::domain::{ApiKey, AuditEntry, Tenant};
use crate::ports::{AuditLog, AuditQuery, KeyStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    tenant TEXT NOT NULL, -- '' for callers who could not be identified
    id TEXT NOT NULL,
    at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_expiry ON audit (expires_at);
";

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn failed(e: DbError) -> StoreError {
    match e {
        DbError::Busy(_) => StoreError::Busy(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Rejected(format!("encode: {e}")))
}

/// Append an audit entry within the caller's write (a job's creation writes its entry in the
/// same transaction).
pub(super) fn insert_audit(conn: &rusqlite::Connection, row: &AuditRow) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO audit (tenant, id, at, expires_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![row.tenant, row.id, row.at, row.expires_at, row.doc])?;
    Ok(())
}

/// An audit entry as its row, built on the caller's thread.
pub(super) struct AuditRow {
    tenant: String,
    id: String,
    at: i64,
    expires_at: i64,
    doc: String,
}

impl AuditRow {
    pub(super) fn of(entry: &AuditEntry) -> Result<Self, StoreError> {
        Ok(Self {
            tenant: entry
                .tenant
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            id: entry.id.clone(),
            at: micros(entry.at),
            expires_at: micros(entry.expires_at),
            doc: encode(entry)?,
        })
    }
}

/// Delete audit entries past their expiry (up to `limit`); how many went.
pub(super) fn delete_expired_audit(
    conn: &rusqlite::Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<u64, DbError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM audit WHERE (tenant, id) IN
                 (SELECT tenant, id FROM audit WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![micros(now), limit as i64])?;
    Ok(n as u64)
}

pub struct EmbeddedAccess {
    db: Db,
}

impl EmbeddedAccess {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn decode_key(doc: &str) -> Result<ApiKey, DbError> {
    serde_json::from_str(doc).map_err(|e| DbError::Other(format!("an API key cannot be read: {e}")))
}

#[async_trait]
impl KeyStore for EmbeddedAccess {
    async fn put_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let (id, tenant, doc) = (key.id.clone(), key.tenant.to_string(), encode(key)?);
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO api_keys (id, tenant, revoked, doc) VALUES (?1, ?2, 0, ?3)",
                )?
                .execute(params![id, tenant, doc])?;
                Ok(())
            })
            .await
            .map_err(failed)
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_string();
        self.db
            .read_point(|conn| {
                conn.prepare_cached("SELECT doc FROM api_keys WHERE id = ?1")?
                    .query_row([&id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|doc| decode_key(&doc))
                    .transpose()
            })
            .await
            .map_err(failed)
    }

    async fn list_keys(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiKey>, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.db
            .read(move |conn| {
                let docs: Vec<String> = conn
                    .prepare_cached(
                        "SELECT doc FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC",
                    )?
                    .query_map([&tenant], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                docs.iter().map(|d| decode_key(d)).collect()
            })
            .await
            .map_err(failed)
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                let Some(doc) = conn
                    .prepare_cached("SELECT doc FROM api_keys WHERE id = ?1")?
                    .query_row([&id], |r| r.get::<_, String>(0))
                    .optional()?
                else {
                    return Ok(None);
                };
                let mut key = decode_key(&doc)?;
                if key.revoked_at.is_none() {
                    key.revoked_at = Some(at);
                    let doc = serde_json::to_string(&key)
                        .map_err(|e| DbError::Other(format!("encode key: {e}")))?;
                    conn.prepare_cached("UPDATE api_keys SET revoked = 1, doc = ?2 WHERE id = ?1")?
                        .execute(params![id, doc])?;
                }
                Ok(Some(key))
            })
            .await
            .map_err(failed)
    }

    async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_string();
        let at = serde_json::to_string(&at).map_err(|e| StoreError::Rejected(e.to_string()))?;
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE api_keys SET doc = json_set(doc, '$.last_used_at', json(?2)) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
                Ok(())
            })
            .await
            .map_err(failed)
    }

    async fn any_live_key(&self) -> Result<bool, StoreError> {
        self.db
            .read(|conn| {
                Ok(conn
                    .prepare_cached("SELECT 1 FROM api_keys WHERE revoked = 0 LIMIT 1")?
                    .exists([])?)
            })
            .await
            .map_err(failed)
    }
}

#[async_trait]
impl AuditLog for EmbeddedAccess {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let row = AuditRow::of(entry)?;
        self.db
            .write(move |conn| insert_audit(conn, &row))
            .await
            .map_err(failed)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let tenant = query
            .tenant
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let (since, limit) = (micros(query.since), query.limit as i64);
        let now = micros(Utc::now());
        self.db
            .read(move |conn| {
                let docs: Vec<String> = conn
                    .prepare_cached(
                        "SELECT doc FROM audit WHERE tenant = ?1 AND at >= ?2 AND expires_at > ?3
                         ORDER BY id LIMIT ?4",
                    )?
                    .query_map(params![tenant, since, now, limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                docs.iter()
                    .map(|d| {
                        serde_json::from_str(d).map_err(|e| {
                            DbError::Other(format!("an audit entry cannot be read: {e}"))
                        })
                    })
                    .collect()
            })
            .await
            .map_err(failed)
    }
}
