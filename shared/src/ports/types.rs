//! Declared external job types (`domain::ExternalType`): stored by the backend, read by the API
//! at submit and by every worker that runs them.

use super::StoreError;
use crate::domain::{ExternalType, JobType, PauseScope, Tenant};
use async_trait::async_trait;

#[async_trait]
pub trait TypeStore: Send + Sync {
    /// Declare the type for its scope, or replace the declaration there (its `created_at`
    /// kept). Whether it was new.
    async fn put_type(&self, declared: &ExternalType) -> Result<bool, StoreError>;
    /// The declaration `tenant`'s jobs of `name` follow: the tenant's own, else the one for
    /// every tenant.
    async fn type_for(
        &self,
        tenant: &Tenant,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError>;
    /// The declaration in exactly this scope.
    async fn get_type(
        &self,
        scope: &PauseScope,
        name: &JobType,
    ) -> Result<Option<ExternalType>, StoreError>;
    /// Remove the declaration in this scope; whether there was one.
    async fn delete_type(&self, scope: &PauseScope, name: &JobType) -> Result<bool, StoreError>;
    /// The declarations of this scope (for a tenant: its own, not those for every tenant), by
    /// name.
    async fn types(&self, scope: &PauseScope) -> Result<Vec<ExternalType>, StoreError>;
}
