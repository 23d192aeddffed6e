//! `TypeStore` on SQLite: a row a declaration, its JSON beside its scope and name.

use super::access::{failed, EmbeddedAccess};
use crate::domain::{ExternalType, JobType, PauseScope, Tenant};
use crate::ports::{StoreError, TypeStore};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

fn decode(doc: &str) -> Option<ExternalType> {
    match serde_json::from_str(doc) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "a stored external type cannot be read; left out");
            None
        }
    }
}

#[async_trait]
impl TypeStore for EmbeddedAccess {
    async fn put_type(&self, declared: &ExternalType) -> Result<bool, StoreError> {
        let (scope, name) = (declared.scope.clone(), declared.name.to_string());
        let mut declared = declared.clone();
        self.db
            .write(move |conn| {
                let before: Option<String> = conn
                    .prepare_cached(
                        "SELECT doc FROM external_types WHERE scope = ?1 AND name = ?2",
                    )?
                    .query_row(params![scope, name], |r| r.get(0))
                    .optional()?;
                if let Some(before) = before.as_deref().and_then(decode) {
                    declared.created_at = before.created_at;
                }
                let doc = serde_json::to_string(&declared).expect("a declaration serializes");
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO external_types (scope, name, doc) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![scope, name, doc])?;
                Ok(before.is_none())
            })
            .await
            .map_err(failed)
    }

    async fn type_for(
        &self,
        tenant: &Tenant,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        let doc: Option<String> = self
            .db
            .read(move |conn| {
                // (the tenant's own first: '*' sorts before every tenant name)
                Ok(conn
                    .prepare_cached(
                        "SELECT doc FROM external_types WHERE name = ?2 AND scope IN (?1, '*')
                         ORDER BY scope DESC LIMIT 1",
                    )?
                    .query_row(params![tenant, name], |r| r.get(0))
                    .optional()?)
            })
            .await
            .map_err(failed)?;
        Ok(doc.as_deref().and_then(decode))
    }

    async fn get_type(
        &self,
        scope: &PauseScope,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError> {
        let (scope, name) = (scope.key().to_string(), name.to_string());
        let doc: Option<String> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT doc FROM external_types WHERE scope = ?1 AND name = ?2",
                    )?
                    .query_row(params![scope, name], |r| r.get(0))
                    .optional()?)
            })
            .await
            .map_err(failed)?;
        Ok(doc.as_deref().and_then(decode))
    }

    async fn delete_type(&self, scope: &PauseScope, name: &JobType) -> Result<bool, StoreError> {
        let (scope, name) = (scope.key().to_string(), name.to_string());
        self.db
            .write(move |conn| {
                let n = conn
                    .prepare_cached("DELETE FROM external_types WHERE scope = ?1 AND name = ?2")?
                    .execute(params![scope, name])?;
                Ok(n == 1)
            })
            .await
            .map_err(failed)
    }

    async fn types(&self, scope: &PauseScope) -> Result<Vec<ExternalType>, StoreError> {
        let scope = scope.key().to_string();
        let docs: Vec<String> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT doc FROM external_types WHERE scope = ?1 ORDER BY name",
                    )?
                    .query_map([scope], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(failed)?;
        Ok(docs.iter().filter_map(|d| decode(d)).collect())
    }
}
