//! What ended per type and minute (`domain::TypeMinute`): the console's charts.

use super::StoreError;
use crate::domain::{Job, Tenant, TypeMinute};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
pub trait TypeHistory: Send + Sync {
    /// A job that ended, told by the lifecycle's one path. A backend that counts ends from its
    /// change stream (AWS) does nothing here.
    fn ended(&self, job: &Job);
    /// `tenant`'s minutes from `since` on: `(minute, type, what ended)`, oldest first.
    async fn minutes(
        &self,
        tenant: &Tenant,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, String, TypeMinute)>, StoreError>;
}
