//! Maintenance: the sweeps that make sure no job stays non-terminal forever and finished jobs
//! go away. Run on a schedule (EventBridge rule on AWS, a timer in `local/`).

use crate::domain::JobMessage;
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
    pub dead_lettered: u64,
    /// Waiting jobs decided here (their dependencies' ends were not heard, e.g. after a crash).
    pub settled: u64,
    /// Batches whose end was not seen (a crash after the last member's end), finished here.
    pub batches_finished: u64,
    /// Schedule ticks the scheduler function failed after its retries, fired again (AWS).
    pub ticks_refired: u64,
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
        ..Change::of(job, next).with_log(log)
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
    // A paused type's jobs are not orphans: their messages go round until it is resumed.
    let pauses = ports.pauses.pauses().await?;
    for _ in 0..MAX_PAGES {
        let orphans = ports
            .store
            .due(JobStatus::Queued, before(now, orphan_after), PAGE)
            .await?;
        let page = orphans.len();
        let held = orphans
            .iter()
            .filter(|job| pauses.holds(&job.tenant, job.job_type.as_str()))
            .count();
        for job in &orphans {
            if pauses.holds(&job.tenant, job.job_type.as_str()) {
                continue;
            }
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
        // (a page of held jobs only comes back the same next time: the rest waits for the
        // next sweep)
        if page < PAGE || held == page {
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

/// Waiting jobs due a look (`Job::due_at`): each is decided from its dependencies as they
/// stand (the net under a notification lost to a crash between a dependency's end and its
/// waiters' decision); one still waiting is looked at again after as long as it has waited.
pub async fn settle_waiting_jobs(
    ports: &Ports,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let lifecycle = Lifecycle::new(ports, registry);
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let due = ports.store.due(JobStatus::Waiting, now, PAGE).await?;
        let page = due.len();
        for job in &due {
            lifecycle.settle_waiting(vec![job.id], None, now).await;
            match ports.store.get(job.id).await? {
                Some(still) if still.status == JobStatus::Waiting => {
                    if let Ok(next) = still.recheck_later(now) {
                        match lifecycle.apply(&Change::of(&still, next), now).await {
                            Ok(_) | Err(StoreError::Conflict) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Some(_) => n += 1,
                None => {}
            }
        }
        if page < PAGE {
            break;
        }
    }
    Ok(n)
}

/// Batches none of whose members ended for a while: one that has no unfinished member is
/// finished here (its callbacks submitted, once); one that has is looked at again after as long
/// as it has been open.
pub async fn finish_ended_batches(
    ports: &Ports,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let lifecycle = Lifecycle::new(ports, registry);
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let due = ports.store.due_batches(now, PAGE).await?;
        let page = due.len();
        for batch in &due {
            if batch.pending == 0 {
                lifecycle.finish_batch(batch.id, now).await;
                n += 1;
            } else {
                let open = (now - batch.created_at).max(crate::ports::BATCH_LOOK_AFTER);
                ports.store.recheck_batch(batch.id, now + open).await?;
            }
        }
        if page < PAGE {
            break;
        }
    }
    Ok(n)
}

/// How long a dead letter this sweep could not settle (not a job message, or its job moved
/// meanwhile) stays hidden before a later sweep looks at it again.
const DEAD_LETTER_RECHECK: Duration = Duration::from_secs(300);

/// Times a dead letter whose job never started goes back to its queue before the job ends dead.
pub const UNSTARTED_RESENDS: u32 = 3;

/// Messages that reached a type's dead-letter queue: each delivery ended without an outcome.
/// A job that ran (the run took its worker down or timed out every time, or the message could
/// not be worked) ends `dead` with that reason, if still unfinished, whatever attempts it had
/// left (a poison job stops), and the message is deleted: the dead job is the record to inspect
/// and `retry`. A job that never started did not fail: its receives were throttled (Lambda
/// counts a receive it could not hand to a function toward the queue's `maxReceiveCount`) or
/// held for a running slot or a rate. Its message goes back to its queue, up to
/// `UNSTARTED_RESENDS` times (so `maxReceiveCount` × 4 receives in all); after that it ends
/// `dead`, saying it never started. A body that is not a job message stays in the queue for
/// inspection until the queue's retention ends.
pub async fn settle_dead_letters(
    ports: &Ports,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for registration in registry.iter() {
        let dlq = registry.dead_letter_queue_name(&registration.job_type);
        for _ in 0..MAX_PAGES {
            let letters = ports
                .dead_letters
                .receive(&dlq, 10, DEAD_LETTER_RECHECK, Duration::ZERO)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if letters.is_empty() {
                break;
            }
            let mut settled = vec![];
            for letter in &letters {
                let Ok(message) = serde_json::from_str::<JobMessage>(&letter.body) else {
                    tracing::warn!(queue = %dlq, message_id = %letter.message_id, "a dead letter that is not a job message; kept for inspection");
                    continue;
                };
                let Some(job) = ports.store.get(message.job_id).await? else {
                    settled.push(letter.receipt_handle.clone());
                    continue;
                };
                let unstarted = job.status == JobStatus::Queued && job.runs == 0;
                if unstarted && message.resent < UNSTARTED_RESENDS {
                    let again = JobMessage {
                        resent: message.resent + 1,
                        ..message
                    };
                    let queue = registry.queue_for(&job.job_type, job.priority);
                    ports
                        .queue
                        .send(&queue, &again.to_body(), Duration::ZERO, job.priority)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    tracing::info!(job_id = %job.id, queue = %dlq, resent = again.resent, "a dead letter of a job that never started; sent back to its queue");
                    settled.push(letter.receipt_handle.clone());
                    continue;
                }
                let next = if unstarted {
                    job.dead_lettered_unstarted(now, UNSTARTED_RESENDS + 1)
                } else {
                    job.dead_lettered(now)
                };
                let Ok(next) = next else {
                    settled.push(letter.receipt_handle.clone()); // finished meanwhile
                    continue;
                };
                let log = next.error.as_ref().map(|e| next.failure_log_line(e, now));
                let change = Change::of(&job, next).with_log(log);
                match Lifecycle::new(ports, registry).apply(&change, now).await {
                    Ok(_) => {
                        tracing::warn!(job_id = %job.id, queue = %dlq, "job's message dead-lettered; job ends dead");
                        n += 1;
                        settled.push(letter.receipt_handle.clone());
                    }
                    Err(StoreError::Conflict) => {} // looked at again later
                    Err(e) => return Err(e),
                }
            }
            if !settled.is_empty() {
                ports
                    .dead_letters
                    .delete(&dlq, &settled)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
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
        settle_dead_letters(ports, registry, now).await,
        &mut report.dead_lettered,
    );
    keep(
        settle_waiting_jobs(ports, registry, now).await,
        &mut report.settled,
    );
    keep(
        finish_ended_batches(ports, registry, now).await,
        &mut report.batches_finished,
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
