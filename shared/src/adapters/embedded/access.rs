//! `KeyStore` and `AuditLog` on SQLite: keys as JSON documents (digest, never the secret) and
//! the audit trail as an append-only table, pruned by maintenance past each entry's expiry.

use super::db::{Db, DbError};
use crate::domain::{Admission, ApiKey, AuditEntry, Tenant, TenantLimits, WebhookGenerations};
use crate::ports::{AuditLog, AuditQuery, Created, KeyStore, StoreError, TenantStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

/// Within a job's creation: refuse it if the tenant is at its quota or used up this second's
/// submissions (then nothing is written), else count it. The single writer makes the check and
/// the count one step.
pub(super) fn admit(
    conn: &rusqlite::Connection,
    tenant: &str,
    admission: &Admission,
) -> Result<Option<Created>, DbError> {
    if let Some(max) = admission.max_active {
        let active: i64 = conn
            .prepare_cached("SELECT active FROM tenant_usage WHERE tenant = ?1")?
            .query_row([tenant], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if active >= max as i64 {
            return Ok(Some(Created::OverQuota { max }));
        }
    }
    if let Some(per_second) = admission.per_second {
        let used: i64 = conn
            .prepare_cached("SELECT n FROM submit_windows WHERE tenant = ?1 AND second = ?2")?
            .query_row(params![tenant, admission.window], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if used >= per_second as i64 {
            return Ok(Some(Created::RateLimited { per_second }));
        }
        conn.prepare_cached(
            "INSERT INTO submit_windows (tenant, second, n) VALUES (?1, ?2, 1)
             ON CONFLICT (tenant, second) DO UPDATE SET n = n + 1",
        )?
        .execute(params![tenant, admission.window])?;
        conn.prepare_cached("DELETE FROM submit_windows WHERE tenant = ?1 AND second < ?2")?
            .execute(params![tenant, admission.window - 2])?;
    }
    if admission.max_active.is_some() {
        move_slot(conn, tenant, 1)?;
    }
    Ok(None)
}

/// Take (`+1`) or give back (`-1`) an active-job slot of `tenant`.
pub(super) fn move_slot(
    conn: &rusqlite::Connection,
    tenant: &str,
    delta: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO tenant_usage (tenant, active) VALUES (?1, MAX(?2, 0))
         ON CONFLICT (tenant) DO UPDATE SET active = MAX(active + ?2, 0)",
    )?
    .execute(params![tenant, delta])?;
    Ok(())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn failed(e: DbError) -> StoreError {
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
        "INSERT OR IGNORE INTO audit (id, tenant, at, expires_at, doc) VALUES (?2, ?1, ?3, ?4, ?5)",
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

/// Delete audit entries past their expiry among the oldest `limit` (entries expire in about
/// the order they were written, so a sweep looks at the oldest only and stops there); how
/// many went.
pub(super) fn delete_expired_audit(
    conn: &rusqlite::Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<u64, DbError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM audit WHERE id IN
                 (SELECT id FROM audit ORDER BY id LIMIT ?2) AND expires_at <= ?1",
        )?
        .execute(params![micros(now), limit as i64])?;
    Ok(n as u64)
}

pub struct EmbeddedAccess {
    pub(super) db: Db,
    /// The paused types as stored, once read: this process is the data directory's one owner,
    /// so every pause and resume goes through here (`pauses.rs`).
    pub(super) pauses: std::sync::Mutex<Option<crate::domain::Pauses>>,
}

impl EmbeddedAccess {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            pauses: Default::default(),
        }
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

#[async_trait]
impl TenantStore for EmbeddedAccess {
    async fn count_submit(
        &self,
        tenant: &Tenant,
        per_second: u32,
        window: i64,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.to_string();
        self.db
            .write(move |conn| {
                let admission = Admission {
                    max_active: None,
                    per_second: Some(per_second),
                    window,
                };
                Ok(admit(conn, &tenant, &admission)?.is_none())
            })
            .await
            .map_err(failed)
    }

    async fn limits(&self, tenant: &Tenant) -> Result<TenantLimits, StoreError> {
        let tenant = tenant.to_string();
        self.db
            .read_point(|conn| {
                let doc: Option<String> = conn
                    .prepare_cached("SELECT doc FROM tenant_limits WHERE tenant = ?1")?
                    .query_row([&tenant], |r| r.get(0))
                    .optional()?;
                doc.map(|d| {
                    serde_json::from_str(&d)
                        .map_err(|e| DbError::Other(format!("tenant limits cannot be read: {e}")))
                })
                .transpose()
                .map(Option::unwrap_or_default)
            })
            .await
            .map_err(failed)
    }

    async fn set_limits(&self, tenant: &Tenant, limits: &TenantLimits) -> Result<(), StoreError> {
        let (tenant, doc) = (tenant.to_string(), encode(limits)?);
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO tenant_limits (tenant, doc) VALUES (?1, ?2)
                     ON CONFLICT (tenant) DO UPDATE SET doc = ?2",
                )?
                .execute(params![tenant, doc])?;
                Ok(())
            })
            .await
            .map_err(failed)
    }

    async fn webhook_generations(&self, tenant: &Tenant) -> Result<WebhookGenerations, StoreError> {
        let tenant = tenant.to_string();
        let found = self
            .db
            .read_point(|conn| {
                conn.prepare_cached("SELECT doc FROM webhook_keys WHERE tenant = ?1")?
                    .query_row([&tenant], |r| r.get::<_, String>(0))
                    .optional()
                    .map_err(DbError::from)
            })
            .await
            .map_err(failed)?;
        if let Some(doc) = found {
            return serde_json::from_str(&doc).map_err(|e| StoreError::Unavailable(e.to_string()));
        }
        let first = WebhookGenerations::default();
        let doc = encode(&first)?;
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO webhook_keys (tenant, doc) VALUES (?1, ?2)",
                )?
                .execute(params![tenant, doc])?;
                let doc: String = conn
                    .prepare_cached("SELECT doc FROM webhook_keys WHERE tenant = ?1")?
                    .query_row([&tenant], |r| r.get(0))?;
                serde_json::from_str(&doc).map_err(|e| DbError::Other(e.to_string()))
            })
            .await
            .map_err(failed)
    }

    async fn rotate_webhook_key(
        &self,
        tenant: &Tenant,
        overlap_until: DateTime<Utc>,
    ) -> Result<WebhookGenerations, StoreError> {
        let tenant = tenant.to_string();
        self.db
            .write(move |conn| {
                let doc: Option<String> = conn
                    .prepare_cached("SELECT doc FROM webhook_keys WHERE tenant = ?1")?
                    .query_row([&tenant], |r| r.get(0))
                    .optional()?;
                let now: WebhookGenerations = match doc {
                    Some(d) => {
                        serde_json::from_str(&d).map_err(|e| DbError::Other(e.to_string()))?
                    }
                    None => WebhookGenerations::default(),
                };
                let next = now.rotated(overlap_until);
                let doc =
                    serde_json::to_string(&next).map_err(|e| DbError::Other(e.to_string()))?;
                conn.prepare_cached(
                    "INSERT INTO webhook_keys (tenant, doc) VALUES (?1, ?2)
                     ON CONFLICT (tenant) DO UPDATE SET doc = ?2",
                )?
                .execute(params![tenant, doc])?;
                Ok(next)
            })
            .await
            .map_err(failed)
    }

    async fn active_jobs(&self, tenant: &Tenant) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.db
            .read_point(|conn| {
                Ok(conn
                    .prepare_cached("SELECT active FROM tenant_usage WHERE tenant = ?1")?
                    .query_row([&tenant], |r| r.get::<_, i64>(0))
                    .optional()?
                    .unwrap_or(0)
                    .max(0) as u64)
            })
            .await
            .map_err(failed)
    }
}
