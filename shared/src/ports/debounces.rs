//! Debounce keys (`debounce` on submit).

use super::StoreError;
use crate::domain::JobId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Debounce keys: each names the one waiting job later submits with the key replace (see
/// `JobService::submit`). A key is claimed before its job is written, so two submits never
/// both make a job for it.
#[async_trait]
pub trait Debounces: Send + Sync {
    /// The job `key` holds, if any (the job itself may have started, ended or expired since).
    async fn debounced(&self, key: &str) -> Result<Option<JobId>, StoreError>;
    /// Make `key` hold `job` if it still holds `replacing` (`None`: nothing); else `Conflict`.
    /// The key may be forgotten after `expires`.
    async fn hold(
        &self,
        key: &str,
        job: JobId,
        replacing: Option<JobId>,
        expires: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forget `key` if it holds `job` (a submit that claimed it and then made no job).
    async fn forget(&self, key: &str, job: JobId) -> Result<(), StoreError>;
}
