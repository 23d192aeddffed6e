//! Maintenance: the sweeps that make sure no job stays non-terminal forever and finished jobs
//! go away. Run on a schedule (EventBridge rule on AWS, a timer in `local/`).

use crate::domain::{Job, JobStatus, MAX_QUEUE_DELAY};
use crate::jobs::Registry;
use crate::lifecycle::{Change, Followed, Lifecycle};
use crate::ports::{Ports, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

const PAGE: usize = 500;
/// Pages one sweep takes at most, so a sweep always ends; the next one goes on.
const MAX_PAGES: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct MaintenanceSettings {
    /// A running job silent this long is stalled.
    pub stall_after: Duration,
    /// A queued job not started this long after its message was due is re-dispatched.
    pub orphan_after: Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub stalled: u64,
    pub redispatched: u64,
    pub released: u64,
    pub expired: u64,
}

fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One stalled job: its attempt counts as failed; it is re-queued at once, or ends `dead` (or
/// `cancelled`, if that was asked). Conflict means someone else moved it first: nothing to do.
pub async fn recover_stalled(
    ports: &Ports,
    registry: &Registry,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Ok(next) = job.stalled(now) else {
        return Ok(false);
    };
    // Only if no heartbeat came since the read: a late heartbeat means the run is alive.
    let log = next.error.as_ref().map(|e| next.failure_log_line(e, now));
    let change = Change {
        expected: job.expected_silent(),
        next,
        log,
    };
    match Lifecycle::new(ports, registry).apply(&change, now).await {
        Ok(_) => {
            tracing::warn!(job_id = %job.id, attempt = job.attempt, status = %change.next.status, "stalled job recovered");
            Ok(true)
        }
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Running jobs whose heartbeat is older than `stall_after`.
pub async fn reap_stalled_jobs(
    ports: &Ports,
    registry: &Registry,
    stall_after: Duration,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let stalled = ports
            .store
            .due(JobStatus::Running, before(now, stall_after), PAGE)
            .await?;
        let page = stalled.len();
        for job in &stalled {
            n += recover_stalled(ports, registry, job, now).await? as u64;
        }
        if page < PAGE {
            break;
        }
    }
    Ok(n)
}

/// Queued jobs whose message should have been taken long ago: the process may have died
/// between storing the job and sending its message (outbox rule). A duplicate message is
/// harmless: starting is conditional.
pub async fn redispatch_orphans(
    ports: &Ports,
    registry: &Registry,
    orphan_after: Duration,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let orphans = ports
            .store
            .due(JobStatus::Queued, before(now, orphan_after), PAGE)
            .await?;
        let page = orphans.len();
        for job in &orphans {
            let Ok(next) = job.redispatch(now) else {
                continue;
            };
            match Lifecycle::new(ports, registry)
                .apply(&Change::of(job, next), now)
                .await
            {
                Ok(Followed::Complete) => n += 1,
                Ok(Followed::NotDispatched) => {}
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        if page < PAGE {
            break;
        }
    }
    Ok(n)
}

/// Scheduled jobs whose run time is now within the queue's delay limit become queued.
pub async fn release_scheduled_jobs(
    ports: &Ports,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let horizon = now + chrono::Duration::from_std(MAX_QUEUE_DELAY).expect("fits");
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let due = ports.store.due(JobStatus::Scheduled, horizon, PAGE).await?;
        let page = due.len();
        for job in &due {
            let Ok(next) = job.release(now) else { continue };
            match Lifecycle::new(ports, registry)
                .apply(&Change::of(job, next), now)
                .await
            {
                Ok(_) => n += 1,
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        if page < PAGE {
            break;
        }
    }
    Ok(n)
}

/// Every sweep, in order. Each runs even if an earlier one failed; the first error is returned.
pub async fn sweep(
    ports: &Ports,
    registry: &Registry,
    settings: MaintenanceSettings,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let mut first_error = None;
    let mut keep = |r: Result<u64, StoreError>, slot: &mut u64| match r {
        Ok(n) => *slot = n,
        Err(e) => {
            tracing::error!(error = %e, "maintenance sweep failed");
            first_error.get_or_insert(e);
        }
    };
    keep(
        reap_stalled_jobs(ports, registry, settings.stall_after, now).await,
        &mut report.stalled,
    );
    keep(
        release_scheduled_jobs(ports, registry, now).await,
        &mut report.released,
    );
    keep(
        redispatch_orphans(ports, registry, settings.orphan_after, now).await,
        &mut report.redispatched,
    );
    keep(
        ports.store.delete_expired(now, 10_000).await,
        &mut report.expired,
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
