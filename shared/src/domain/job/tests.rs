//! The job state machine, one transition at a time.

use super::*;
use serde_json::json;

fn new_job(max_attempts: u32) -> Job {
    Job::create(
        NewJob {
            tenant: Tenant::parse("t").unwrap(),
            job_type: JobType::parse("noop").unwrap(),
            priority: 0,
            payload: json!({}),
            max_attempts,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(3600)),
            timeout: Duration::from_secs(30),
            retention: Duration::from_secs(60),
            idempotency_key: None,
            request_fingerprint: None,
            run_at: Utc::now(),
        },
        Utc::now(),
    )
}

#[test]
fn a_job_runs_once_and_succeeds() {
    let now = Utc::now();
    let job = new_job(3);
    assert_eq!(job.status, JobStatus::Queued);
    let running = job.start(now).unwrap();
    assert_eq!((running.attempt, running.version), (1, 2));
    assert!(
        running.start(now).is_err(),
        "a running job cannot start again"
    );
    let done = running
        .finish(Outcome::Succeeded(json!(1)), now, 0.5)
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.expires_at.unwrap() > now);
    assert!(done.finish(Outcome::Succeeded(json!(2)), now, 0.5).is_err());
}

#[test]
fn retryable_failures_requeue_with_growing_delay_then_die() {
    let now = Utc::now();
    let mut job = new_job(3);
    let mut ceilings = vec![];
    for attempt in 1..=3 {
        job = job.start(now).unwrap();
        assert_eq!(job.attempt, attempt);
        job = job
            .finish(Outcome::Failed(JobError::retryable("boom")), now, 0.999)
            .unwrap();
        if attempt < 3 {
            assert_eq!(job.status, JobStatus::Queued);
            ceilings.push((job.run_at - now).num_milliseconds());
        }
    }
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.error.unwrap().message, "boom");
    assert!(ceilings[0] < ceilings[1], "delays grow: {ceilings:?}");
}

#[test]
fn a_dead_lettered_job_ends_dead_with_attempts_left_and_only_once() {
    let now = Utc::now();
    let running = new_job(5).start(now).unwrap();
    let dead = running.dead_lettered(now).unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    let error = dead.error.clone().unwrap();
    assert_eq!(error.kind, "dead_letter");
    assert!(
        error.message.contains("dead-letter queue"),
        "{}",
        error.message
    );
    assert!(dead.expires_at.is_some());
    assert!(
        dead.dead_lettered(now).is_err(),
        "a finished job stays as it is"
    );
    assert_eq!(
        new_job(1).dead_lettered(now).unwrap().status,
        JobStatus::Dead
    );
}

#[test]
fn permanent_failure_ends_failed_and_cancel_wins_over_a_failure() {
    let now = Utc::now();
    let running = new_job(5).start(now).unwrap();
    let failed = running
        .finish(Outcome::Failed(JobError::permanent("bad input")), now, 0.0)
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);

    let asked = running.cancel(now).unwrap();
    assert!(asked.cancel_requested && asked.status == JobStatus::Running);
    let ended = asked
        .finish(
            Outcome::Failed(JobError::retryable("interrupted")),
            now,
            0.0,
        )
        .unwrap();
    assert_eq!(ended.status, JobStatus::Cancelled);
}

#[test]
fn long_retry_delays_become_scheduled() {
    let now = Utc::now();
    let mut job = new_job(5);
    job.backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(7200));
    let next = job
        .start(now)
        .unwrap()
        .finish(Outcome::Failed(JobError::retryable("later")), now, 0.9)
        .unwrap();
    assert_eq!(next.status, JobStatus::Scheduled);
    assert_eq!(next.dispatch_delay(now), None);
    let released = next.release(now).unwrap();
    assert!(released.dispatch_delay(now).unwrap() > MAX_QUEUE_DELAY);
}

#[test]
fn cancel_retry_and_stall_follow_the_lifecycle() {
    let now = Utc::now();
    let job = new_job(1);
    let cancelled = job.cancel(now).unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.cancel(now).is_err());
    let again = cancelled.retry(now).unwrap();
    assert_eq!((again.status, again.attempt), (JobStatus::Queued, 0));
    assert!(again.retry(now).is_err());
    let stalled = again.start(now).unwrap().stalled(now).unwrap();
    assert_eq!(stalled.status, JobStatus::Dead, "no attempts left");
    assert_eq!(stalled.error.unwrap().kind, "stalled");
}

#[test]
fn a_shutdown_interrupt_gives_the_attempt_back_unless_a_cancel_was_asked() {
    let now = Utc::now();
    let running = new_job(1).start(now).unwrap();
    let back = running.interrupt(now).unwrap();
    assert_eq!((back.status, back.attempt), (JobStatus::Queued, 0));
    assert_eq!(back.runs, 1, "runs never go back");
    assert_eq!(back.start(now).unwrap().runs, 2);
    let asked = running.cancel(now).unwrap();
    assert_eq!(asked.interrupt(now).unwrap().status, JobStatus::Cancelled);
    assert!(
        back.interrupt(now).is_err(),
        "only a running job is interrupted"
    );
}
