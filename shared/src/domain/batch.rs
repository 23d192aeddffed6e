//! Batches: jobs submitted together as one object with live counts by status and callbacks
//! (`on_complete`, `on_success`) submitted exactly once when every member has ended.

use super::{JobId, JobStatus, JobType, Tenant};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A batch's id: a ULID, like a job's (time-ordered).
pub type BatchId = JobId;

/// A job a batch submits when it ends: its type, payload and options (as in a submit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    #[serde(rename = "type")]
    pub job_type: JobType,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// The idempotency key of a batch's callback: it is submitted once, however many times its
/// batch is seen ending (two last members at once, a retry, maintenance).
pub const BATCH_KEY_PREFIX: &str = "batch:";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub tenant: Tenant,
    /// Members ever added (a member may add more before it ends).
    pub total: u64,
    /// Members not ended.
    pub pending: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<CallbackSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<CallbackSpec>,
    /// The callback jobs submitted (`on_complete`, `on_success`): set when the batch ended.
    #[serde(default)]
    pub callbacks: BTreeMap<String, JobId>,
    pub created_at: DateTime<Utc>,
    /// When the batch was seen ending (its callbacks submitted).
    pub finished_at: Option<DateTime<Utc>>,
}

impl Batch {
    pub fn new(
        tenant: Tenant,
        on_complete: Option<CallbackSpec>,
        on_success: Option<CallbackSpec>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: BatchId::new(),
            tenant,
            total: 0,
            pending: 0,
            succeeded: 0,
            failed: 0,
            dead: 0,
            cancelled: 0,
            on_complete,
            on_success,
            callbacks: BTreeMap::new(),
            created_at: now,
            finished_at: None,
        }
    }

    /// Every member has ended (and at least one was added).
    pub fn is_complete(&self) -> bool {
        self.pending == 0 && self.total > 0
    }

    /// Share of members ended, 0–100.
    pub fn progress(&self) -> u8 {
        match self.total {
            0 => 0,
            t => ((t - self.pending) * 100 / t) as u8,
        }
    }

    /// The callbacks due now that the batch has ended, by name: `on_complete` always,
    /// `on_success` if every member succeeded.
    pub fn due_callbacks(&self) -> Vec<(&'static str, &CallbackSpec)> {
        let all_succeeded = self.succeeded == self.total;
        [
            ("on_complete", self.on_complete.as_ref()),
            (
                "on_success",
                self.on_success.as_ref().filter(|_| all_succeeded),
            ),
        ]
        .into_iter()
        .filter_map(|(name, spec)| spec.map(|s| (name, s)))
        .collect()
    }

    /// What a callback job is told of its batch (in its payload, as `batch`).
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "id": self.id, "total": self.total, "succeeded": self.succeeded,
            "failed": self.failed, "dead": self.dead, "cancelled": self.cancelled,
        })
    }
}

/// How a member's change of status moves its batch's counts: `(pending, status, count)` to add
/// (`pending` -1 and the end status +1 when it ends; the reverse when a retry brings it back).
pub fn batch_count_change(from: JobStatus, to: JobStatus) -> Option<(i64, JobStatus, i64)> {
    match (from.is_terminal(), to.is_terminal()) {
        (false, true) => Some((-1, to, 1)),
        (true, false) => Some((1, from, -1)),
        _ => None,
    }
}

/// Where a listing of a batch's members goes on. Members are listed in the order they joined:
/// group by group (the members written together, a group named by its first member's id),
/// each group in id order; `taken` of the group `group` were listed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPosition {
    pub group: JobId,
    pub taken: u32,
}

/// One page of a batch's members, and where the next one starts (`None`: no more).
#[derive(Debug, Clone, PartialEq)]
pub struct MembersPage {
    pub jobs: Vec<super::JobSummary>,
    pub next: Option<MemberPosition>,
}
