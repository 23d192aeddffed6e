//! Paused job types (`domain::Pauses`): stored by the backend, read by every worker.

use super::StoreError;
use crate::domain::{JobType, Pause, PauseScope, Pauses};
use async_trait::async_trait;

#[async_trait]
pub trait PauseStore: Send + Sync {
    /// Pause the type for the scope; a type already paused there keeps its first pause.
    /// Whether this call paused it.
    async fn pause(&self, pause: &Pause) -> Result<bool, StoreError>;
    /// Resume it for the scope; whether it was paused there.
    async fn resume(&self, scope: &PauseScope, job_type: &JobType) -> Result<bool, StoreError>;
    /// Every pause of the deployment, as stored now.
    async fn pauses(&self) -> Result<Pauses, StoreError>;
}
