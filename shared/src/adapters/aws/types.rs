//! `TypeStore` on the jobs table: a partition a scope (`XT#<tenant>`, `XT#*` for every tenant),
//! an item a declaration (`doc`, its JSON). Few, small, read at submit (the API keeps them a
//! few seconds) and by the workers that run them.

use super::access::DynamoAccess;
use super::attrs::{get_s, s, Item};
use super::write::classify;
use crate::domain::{ExternalType, JobType, PauseScope, Tenant};
use crate::ports::{StoreError, TypeStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;

fn pk(scope: &PauseScope) -> String {
    format!("XT#{}", scope.key())
}

fn decode(item: &Item) -> Option<ExternalType> {
    match serde_json::from_str(get_s(item, "doc")?) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "a stored external type cannot be read; left out");
            None
        }
    }
}

#[async_trait]
impl TypeStore for DynamoAccess {
    async fn put_type(&self, declared: &ExternalType) -> Result<bool, StoreError> {
        let scope = declared
            .scope()
            .ok_or_else(|| StoreError::Rejected(format!("no scope '{}'", declared.scope)))?;
        let before = self.get_type(&scope, &declared.name).await?;
        let mut declared = declared.clone();
        if let Some(before) = &before {
            declared.created_at = before.created_at;
        }
        let doc = serde_json::to_string(&declared).expect("a declaration serializes");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk(&scope)))
            .item("sk", s(declared.name.to_string()))
            .item("doc", s(doc))
            .send()
            .await
            .map_err(classify)?;
        Ok(before.is_none())
    }

    async fn type_for(
        &self,
        tenant: &Tenant,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError> {
        if let Some(own) = self
            .get_type(&PauseScope::Tenant(tenant.clone()), name)
            .await?
        {
            return Ok(Some(own));
        }
        self.get_type(&PauseScope::All, name).await
    }

    async fn get_type(
        &self,
        scope: &PauseScope,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk(scope)))
            .key("sk", s(name.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item.as_ref().and_then(decode))
    }

    async fn delete_type(&self, scope: &PauseScope, name: &JobType) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk(scope)))
            .key("sk", s(name.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn types(&self, scope: &PauseScope) -> Result<Vec<ExternalType>, StoreError> {
        let items = super::table::query_all(&self.client, &self.table, pk(scope), None).await?;
        Ok(items.iter().filter_map(decode).collect())
    }
}
