use crate::helpers::{embedded, job, reopen, Under};
use chrono::Utc;
use shared::domain::{IdempotencyKey, JobStatus, Outcome, Progress, Tenant};
use shared::ports::{Created, ListQuery, Started, StoreError};
use std::time::Duration;

pub async fn a_transition_is_written_only_from_the_expected_state(b: Under) {
    // GIVEN a stored queued job
    let queued = job("t", "noop");
    b.ports.store.create(&queued).await.unwrap();

    // WHEN two workers both try to start it from the same read
    let first = queued.start(Utc::now()).unwrap();
    let second = queued.start(Utc::now()).unwrap();
    let r1 = b.ports.store.transition(queued.expected(), &first).await;
    let r2 = b.ports.store.transition(queued.expected(), &second).await;

    // THEN exactly one wins and the stored job is the winner's
    assert!(r1.is_ok());
    assert!(matches!(r2, Err(StoreError::Conflict)));
    let stored = b.ports.store.get(queued.id).await.unwrap().unwrap();
    assert_eq!(stored, first);

    // AND a late write from an old version cannot overwrite a newer state
    let done = first
        .finish(Outcome::Succeeded(serde_json::json!(1)), Utc::now(), 0.0)
        .unwrap();
    b.ports
        .store
        .transition(first.expected(), &done)
        .await
        .unwrap();
    let late = first
        .finish(Outcome::Succeeded(serde_json::json!(2)), Utc::now(), 0.0)
        .unwrap();
    assert!(matches!(
        b.ports.store.transition(first.expected(), &late).await,
        Err(StoreError::Conflict)
    ));
    let stored = b.ports.store.get(queued.id).await.unwrap().unwrap();
    assert_eq!(stored.result, Some(serde_json::json!(1)));
}

pub async fn start_is_one_write_that_returns_the_started_job_or_the_job_as_it_is(b: Under) {
    // GIVEN a queued job, due now
    let queued = job("t", "noop");
    b.ports.store.create(&queued).await.unwrap();
    let now = Utc::now();

    // WHEN two workers start it from the same message, at once
    let (r1, r2) = tokio::join!(
        b.ports.store.start(queued.id, now, now),
        b.ports.store.start(queued.id, now, now)
    );

    // THEN exactly one gets it running, as the domain's start makes it and as stored
    let (won, refused) = match (r1.unwrap(), r2.unwrap()) {
        (Started::Running(w), Started::Refused(r)) | (Started::Refused(r), Started::Running(w)) => {
            (*w, *r)
        }
        other => panic!("expected one start and one refusal, got {other:?}"),
    };
    assert_eq!(won, queued.start(now).unwrap());
    assert_eq!(b.ports.store.get(queued.id).await.unwrap().unwrap(), won);
    // AND the other is told what the job is now, without a read of its own
    assert_eq!(refused, won);

    // AND a finished job is refused as it is, and an unknown id is missing
    let done = won
        .finish(Outcome::Succeeded(serde_json::json!(1)), now, 0.0)
        .unwrap();
    b.ports
        .store
        .transition(won.expected(), &done)
        .await
        .unwrap();
    assert!(matches!(
        b.ports.store.start(queued.id, now, now).await.unwrap(),
        Started::Refused(j) if *j == done
    ));
    assert!(matches!(
        b.ports
            .store
            .start(shared::domain::JobId::new(), now, now)
            .await
            .unwrap(),
        Started::Missing
    ));
}

pub async fn start_refuses_a_job_queued_for_later_than_due_by(b: Under) {
    // GIVEN a job queued to run in a minute
    let mut later = job("t", "noop");
    later.run_at = Utc::now() + chrono::Duration::seconds(60);
    b.ports.store.create(&later).await.unwrap();

    // WHEN a worker tries to start it now (an early message)
    let now = Utc::now();
    let r = b.ports.store.start(later.id, now, now).await.unwrap();

    // THEN it is refused and left queued, unchanged; by its run time it starts
    assert!(matches!(r, Started::Refused(j) if *j == later));
    assert_eq!(b.ports.store.get(later.id).await.unwrap().unwrap(), later);
    let r = b
        .ports
        .store
        .start(later.id, now, later.run_at)
        .await
        .unwrap();
    assert!(matches!(r, Started::Running(j) if j.attempt == 1 && j.status == JobStatus::Running));
}

pub async fn an_idempotency_key_yields_the_first_job(b: Under) {
    // GIVEN a job created with a key
    let key = IdempotencyKey::parse("order-42").unwrap();
    let mut first = job("t", "noop");
    first.idempotency_key = Some(key.clone());
    assert!(matches!(
        b.ports.store.create(&first).await.unwrap(),
        Created::New
    ));

    // WHEN another job is created with the same key, and one with it in another tenant
    let mut again = job("t", "noop");
    again.idempotency_key = Some(key.clone());
    let mut other_tenant = job("u", "noop");
    other_tenant.idempotency_key = Some(key);

    // THEN the first job comes back and no second job exists; tenants do not share keys
    match b.ports.store.create(&again).await.unwrap() {
        Created::Existing(existing) => assert_eq!(existing.id, first.id),
        other => panic!("a second job was created, or refused: {other:?}"),
    }
    assert!(b.ports.store.get(again.id).await.unwrap().is_none());
    assert!(matches!(
        b.ports.store.create(&other_tenant).await.unwrap(),
        Created::New
    ));
}

pub async fn heartbeats_reach_only_the_running_attempt_and_report_cancel_requests(b: Under) {
    // GIVEN a running job
    let queued = job("t", "sleep");
    b.ports.store.create(&queued).await.unwrap();
    let running = queued.start(Utc::now()).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &running)
        .await
        .unwrap();

    // WHEN its attempt reports progress
    let progress = Progress {
        percent: 40,
        message: Some("working".into()),
    };
    let live = b
        .ports
        .store
        .heartbeat(running.id, 1, Utc::now(), Some(&progress))
        .await
        .unwrap();
    // THEN the progress is stored and no cancel is pending
    assert!(!live.cancel_requested);
    let stored = b.ports.store.get(running.id).await.unwrap().unwrap();
    assert_eq!(stored.progress, Some(progress));

    // WHEN a cancel is requested
    let asked = stored.cancel(Utc::now()).unwrap();
    b.ports
        .store
        .transition(stored.expected(), &asked)
        .await
        .unwrap();
    // THEN the next heartbeat learns it, and a heartbeat for another attempt is refused
    let live = b
        .ports
        .store
        .heartbeat(running.id, 1, Utc::now(), None)
        .await
        .unwrap();
    assert!(live.cancel_requested);
    assert!(matches!(
        b.ports
            .store
            .heartbeat(running.id, 2, Utc::now(), None)
            .await,
        Err(StoreError::Conflict)
    ));
}

pub async fn listing_is_newest_first_filtered_and_scoped_to_the_tenant(b: Under) {
    // GIVEN jobs of two types in two tenants
    let mut ids = vec![];
    for i in 0..5 {
        let j = job("t", if i % 2 == 0 { "noop" } else { "sleep" });
        b.ports.store.create(&j).await.unwrap();
        ids.push(j.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.ports.store.create(&job("u", "noop")).await.unwrap();
    let tenant = Tenant::parse("t").unwrap();

    // WHEN listing the tenant's noop jobs, two at a time
    let query = |before| ListQuery {
        tenant: tenant.clone(),
        status: Some(JobStatus::Queued),
        job_type: Some(shared::domain::JobType::parse("noop").unwrap()),
        before,
        limit: 2,
    };
    let page1 = b.ports.store.list(&query(None)).await.unwrap();
    let page2 = b.ports.store.list(&query(Some(page1[1].id))).await.unwrap();

    // THEN newest first, only that tenant and type
    let got: Vec<_> = page1.iter().chain(page2.iter()).map(|j| j.id).collect();
    assert_eq!(got, vec![ids[4], ids[2], ids[0]]);
    // AND each index pages the same way: the tenant's jobs, and one type's, two at a time
    for (job_type, want) in [
        (None, vec![ids[4], ids[3], ids[2], ids[1], ids[0]]),
        (Some("sleep"), vec![ids[3], ids[1]]),
    ] {
        let mut got = vec![];
        let mut before = None;
        loop {
            let page = b
                .ports
                .store
                .list(&ListQuery {
                    tenant: tenant.clone(),
                    status: None,
                    job_type: job_type.map(|t| shared::domain::JobType::parse(t).unwrap()),
                    before,
                    limit: 2,
                })
                .await
                .unwrap();
            got.extend(page.iter().map(|j| j.id));
            match page.last() {
                Some(last) if page.len() == 2 => before = Some(last.id),
                _ => break,
            }
        }
        assert_eq!(got, want, "{job_type:?}");
    }
    b.settle_counts().await;
    let stats = b.ports.store.stats(&tenant).await.unwrap();
    let total: u64 = stats.rows.iter().map(|r| r.count).sum();
    assert_eq!(total, 5);
}

pub async fn paging_across_shards_returns_every_job_once_in_order_with_each_filter(b: Under) {
    // GIVEN 60 jobs of one tenant, of two types, a third of them started (on DynamoDB they
    // spread over every shard of the tenant), and jobs of another tenant
    let tenant = Tenant::parse("p").unwrap();
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    let mut jobs = vec![];
    for i in 0..60 {
        let j = job("p", if i % 3 == 0 { "sleep" } else { "noop" });
        b.ports.store.create(&j).await.unwrap();
        let j = if i % 3 == 1 {
            let running = j.start(Utc::now()).unwrap();
            b.ports
                .store
                .transition(j.expected(), &running)
                .await
                .unwrap();
            running
        } else {
            j
        };
        jobs.push(j);
    }
    for _ in 0..10 {
        b.ports.store.create(&job("q", "noop")).await.unwrap();
    }
    let noop = shared::domain::JobType::parse("noop").unwrap();
    let sleep = shared::domain::JobType::parse("sleep").unwrap();

    // WHEN each filter is paged through seven at a time
    for (status, job_type) in [
        (None, None),
        (Some(JobStatus::Running), None),
        (Some(JobStatus::Queued), None),
        (None, Some(noop.clone())),
        (Some(JobStatus::Queued), Some(sleep.clone())),
    ] {
        let mut got = vec![];
        let mut before = None;
        loop {
            let page = b
                .ports
                .store
                .list(&ListQuery {
                    tenant: tenant.clone(),
                    status,
                    job_type: job_type.clone(),
                    before,
                    limit: 7,
                })
                .await
                .unwrap();
            got.extend(page.iter().map(|j| j.id));
            match page.last() {
                Some(last) if page.len() == 7 => before = Some(last.id),
                _ => break,
            }
        }
        // THEN every matching job comes once, newest first, and no other
        let mut want: Vec<_> = jobs
            .iter()
            .filter(|j| status.is_none_or(|s| j.status == s))
            .filter(|j| job_type.as_ref().is_none_or(|t| &j.job_type == t))
            .map(|j| j.id)
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        assert_eq!(got, want, "{status:?} {job_type:?}");
    }

    // AND polling for changes from before them, seven at a time (each poll from the last one's
    // change, a repeat told by its version), gives every job once in the order of its change
    let mut seen: Vec<(shared::domain::JobId, u64)> = vec![];
    let mut since = t0;
    loop {
        let page = b
            .ports
            .store
            .updated_since(&tenant, since, 7)
            .await
            .unwrap();
        assert!(
            page.windows(2)
                .all(|w| (w[0].updated_at, w[0].id) <= (w[1].updated_at, w[1].id)),
            "{page:?}"
        );
        let new: Vec<_> = page
            .iter()
            .filter(|j| !seen.contains(&(j.id, j.version)))
            .collect();
        if new.is_empty() {
            break;
        }
        seen.extend(new.iter().map(|j| (j.id, j.version)));
        since = page.last().unwrap().updated_at;
    }
    let mut want: Vec<_> = jobs.iter().map(|j| (j.id, j.version)).collect();
    let mut got = seen.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

pub async fn a_payload_and_a_result_come_back_exactly_as_given(b: Under) {
    // GIVEN a job whose payload holds what a DynamoDB number could not (past its range, more
    // than 38 digits) and empty maps and lists
    let mut queued = job("t", "noop");
    queued.payload = serde_json::json!({
        "huge": 1e200, "long": 12345678901234567890123456789012345678901.5,
        "empty": {}, "none": [], "nested": {"a": [{}, []]}
    });
    b.ports.store.create(&queued).await.unwrap();
    let running = queued.start(Utc::now()).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &running)
        .await
        .unwrap();
    let result = serde_json::json!({ "tiny": 1e-200, "empty": {} });
    let done = running
        .finish(Outcome::Succeeded(result.clone()), Utc::now(), 0.0)
        .unwrap();
    b.ports
        .store
        .transition(running.expected(), &done)
        .await
        .unwrap();

    // WHEN it is read back
    let stored = b.ports.store.get(queued.id).await.unwrap().unwrap();

    // THEN both are as given
    assert_eq!(stored.payload, queued.payload);
    assert_eq!(stored.result, Some(result));
}

/// The counts `stats` gives, as (type, status, count), sorted.
async fn counts(b: &Under, tenant: &str) -> Vec<(String, String, u64)> {
    let stats = b
        .ports
        .store
        .stats(&Tenant::parse(tenant).unwrap())
        .await
        .unwrap();
    let mut rows: Vec<_> = stats
        .rows
        .iter()
        .map(|r| (r.job_type.clone(), r.status.as_str().to_string(), r.count))
        .collect();
    rows.sort();
    rows
}

fn rows(want: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    want.iter()
        .map(|(t, s, n)| (t.to_string(), s.to_string(), *n))
        .collect()
}

pub async fn stats_count_a_tenants_jobs_by_type_and_status_as_they_move(b: Under) {
    // GIVEN two queued jobs and a finished one of a tenant, and a job of another tenant
    let (a, c, d) = (
        job("acme", "noop"),
        job("acme", "noop"),
        job("acme", "sleep"),
    );
    for j in [&a, &c, &d, &job("globex", "noop")] {
        b.ports.store.create(j).await.unwrap();
    }
    let now = Utc::now();
    let started = a.start(now).unwrap();
    b.ports
        .store
        .transition(a.expected(), &started)
        .await
        .unwrap();
    let done = started
        .finish(Outcome::Succeeded(serde_json::json!({})), now, 0.0)
        .unwrap();
    b.ports
        .store
        .transition(started.expected(), &done)
        .await
        .unwrap();

    // WHEN the counts catch up
    b.settle_counts().await;

    // THEN each job counts once, under its type and its status now; nothing reads as zero
    assert_eq!(
        counts(&b, "acme").await,
        rows(&[
            ("noop", "queued", 1),
            ("noop", "succeeded", 1),
            ("sleep", "queued", 1)
        ])
    );
    assert_eq!(counts(&b, "globex").await, rows(&[("noop", "queued", 1)]));
    assert!(counts(&b, "initech").await.is_empty());

    // AND a heartbeat (no status change) moves nothing; a start moves one
    let running = c.start(Utc::now()).unwrap();
    b.ports
        .store
        .transition(c.expected(), &running)
        .await
        .unwrap();
    b.ports
        .store
        .heartbeat(c.id, running.attempt, Utc::now(), None)
        .await
        .unwrap();
    // a reader started afresh (a restart) goes on from where the last one stopped
    if let Some(reader) = b.another_counts_reader() {
        reader.catch_up().await.unwrap();
        reader.catch_up().await.unwrap();
    } else {
        b.settle_counts().await;
    }
    b.settle_counts().await;
    assert_eq!(
        counts(&b, "acme").await,
        rows(&[
            ("noop", "running", 1),
            ("noop", "succeeded", 1),
            ("sleep", "queued", 1)
        ])
    );
}

pub async fn due_finds_stalled_jobs_and_expired_jobs_are_deleted_with_their_logs(b: Under) {
    // GIVEN a running job whose heartbeat is old, and a finished job already expired
    let long_ago = Utc::now() - chrono::Duration::seconds(120);
    let stalled = job("t", "sleep");
    b.ports.store.create(&stalled).await.unwrap();
    let running = stalled.start(long_ago).unwrap();
    b.ports
        .store
        .transition(stalled.expected(), &running)
        .await
        .unwrap();

    let mut finished = job("t", "noop");
    finished.retention_secs = 0;
    b.ports.store.create(&finished).await.unwrap();
    let started = finished.start(long_ago).unwrap();
    b.ports
        .store
        .transition(finished.expected(), &started)
        .await
        .unwrap();
    let done = started
        .finish(Outcome::Succeeded(serde_json::json!(null)), long_ago, 0.0)
        .unwrap();
    b.ports
        .store
        .transition(started.expected(), &done)
        .await
        .unwrap();
    b.ports
        .store
        .append_log(shared::ports::NewLogLine {
            tenant: &done.tenant,
            job_id: done.id,
            attempt: 1,
            at: long_ago,
            line: "hello",
            keep_until: done.expires_at.unwrap(),
        })
        .await
        .unwrap();

    // WHEN maintenance asks what is due
    let now = Utc::now();
    let due = b
        .ports
        .store
        .due(JobStatus::Running, now - chrono::Duration::seconds(60), 10)
        .await
        .unwrap();
    let deleted = b.ports.store.delete_expired(now, 10).await.unwrap();

    // THEN the stalled job is found and the expired one is gone, logs included (deleted by
    // the embedded backend; on DynamoDB TTL deletes it later, and reads leave it out until then)
    let found = due.iter().map(|j| j.id).collect::<Vec<_>>();
    if b.indexes_unfinished {
        assert_eq!(found, vec![stalled.id]);
    } else {
        assert!(found.is_empty(), "{found:?}");
    }
    assert_eq!(deleted, u64::from(b.deletes_expired));
    assert!(b.ports.store.get(done.id).await.unwrap().is_none());
    assert!(b.ports.store.logs(done.id, 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn logs_are_ordered_and_capped() {
    // GIVEN a job with more log lines than the cap
    let b = embedded();
    let j = job("t", "noop");
    b.ports.store.create(&j).await.unwrap();
    let cap = shared::ports::LOG_CAP as usize;
    for i in 0..cap + 5 {
        b.ports
            .store
            .append_log(shared::ports::NewLogLine {
                tenant: &j.tenant,
                job_id: j.id,
                attempt: 1,
                at: Utc::now(),
                line: &format!("line {i}"),
                keep_until: Utc::now() + chrono::Duration::days(7),
            })
            .await
            .unwrap();
    }
    // WHEN reading them all
    let logs = b.ports.store.logs(j.id, 0, cap + 10).await.unwrap();
    // THEN they are in order, capped, and the last says it was truncated
    assert_eq!(logs.len(), cap + 1);
    assert_eq!(logs[0].line, "line 0");
    assert!(logs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(logs.last().unwrap().line.contains("truncated"));
}

#[tokio::test]
async fn everything_written_survives_a_reopen() {
    // GIVEN a job written and acknowledged
    let b = embedded();
    let j = job("t", "noop");
    b.ports.store.create(&j).await.unwrap();
    // WHEN the backend is closed and opened again on the same directory
    let b = reopen(b);
    // THEN the job is there
    assert_eq!(b.ports.store.get(j.id).await.unwrap(), Some(j));
}

pub async fn a_stall_is_not_recorded_over_a_heartbeat_that_came_after_the_read(b: Under) {
    // GIVEN a running job, read by maintenance while its heartbeat looked old
    let queued = job("t", "sleep");
    b.ports.store.create(&queued).await.unwrap();
    let long_ago = Utc::now() - chrono::Duration::seconds(120);
    let running = queued.start(long_ago).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &running)
        .await
        .unwrap();
    let seen = b.ports.store.get(running.id).await.unwrap().unwrap();

    // WHEN the run's heartbeat lands before maintenance writes its verdict
    b.ports
        .store
        .heartbeat(running.id, running.runs, Utc::now(), None)
        .await
        .unwrap();
    let stalled = seen.stalled(Utc::now()).unwrap();

    // THEN the stall write is refused (the run is alive), though a plain write would pass
    assert!(matches!(
        b.ports
            .store
            .transition(seen.expected_silent(), &stalled)
            .await,
        Err(StoreError::Conflict)
    ));
    let fresh = b.ports.store.get(running.id).await.unwrap().unwrap();
    assert_eq!(fresh.status, JobStatus::Running);
    let stalled = fresh.stalled(Utc::now()).unwrap();
    b.ports
        .store
        .transition(fresh.expected_silent(), &stalled)
        .await
        .unwrap();
}

pub async fn an_old_run_cannot_heartbeat_into_a_newer_run_after_a_manual_retry(b: Under) {
    // GIVEN a job whose first run was given up (dead) and which was retried by hand and started
    let mut queued = job("t", "sleep");
    queued.max_attempts = 1;
    b.ports.store.create(&queued).await.unwrap();
    let first = queued.start(Utc::now()).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &first)
        .await
        .unwrap();
    let dead = first.stalled(Utc::now()).unwrap();
    b.ports
        .store
        .transition(first.expected(), &dead)
        .await
        .unwrap();
    let again = dead.retry(Utc::now()).unwrap();
    b.ports
        .store
        .transition(dead.expected(), &again)
        .await
        .unwrap();
    let second = again.start(Utc::now()).unwrap();
    b.ports
        .store
        .transition(again.expected(), &second)
        .await
        .unwrap();
    // (both runs are "attempt 1": the attempt count started over)
    assert_eq!((first.attempt, second.attempt), (1, 1));

    // WHEN the first run, still alive somewhere, sends a heartbeat
    let old = b
        .ports
        .store
        .heartbeat(first.id, first.runs, Utc::now(), None)
        .await;

    // THEN it is told it lost the job, while the second run's heartbeat is taken
    assert!(matches!(old, Err(StoreError::Conflict)));
    b.ports
        .store
        .heartbeat(second.id, second.runs, Utc::now(), None)
        .await
        .unwrap();
}

/// A running job as a canceller or a finishing worker read it, then a heartbeat with progress
/// that landed after that read.
async fn running_job_with_a_heartbeat_after_the_read(
    b: &Under,
) -> (shared::domain::Job, chrono::DateTime<Utc>, Progress) {
    let queued = job("t", "sleep");
    b.ports.store.create(&queued).await.unwrap();
    let started = Utc::now() - chrono::Duration::seconds(30);
    let running = queued.start(started).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &running)
        .await
        .unwrap();
    let read = b.ports.store.get(running.id).await.unwrap().unwrap();
    let beat = Utc::now();
    let progress = Progress {
        percent: 60,
        message: Some("later".into()),
    };
    b.ports
        .store
        .heartbeat(read.id, read.runs, beat, Some(&progress))
        .await
        .unwrap();
    (read, beat, progress)
}

pub async fn a_transition_from_an_older_read_keeps_a_newer_heartbeat_and_progress(b: Under) {
    // GIVEN a running job read by a canceller, and a heartbeat with progress 60 after that read
    let (read, beat, progress) = running_job_with_a_heartbeat_after_the_read(&b).await;

    // WHEN the cancel request computed from the older read is written
    let asked = read.cancel(Utc::now()).unwrap();
    b.ports
        .store
        .transition(read.expected(), &asked)
        .await
        .unwrap();

    // THEN the stored job asks for the cancel AND still has the newer heartbeat and progress
    let stored = b.ports.store.get(read.id).await.unwrap().unwrap();
    assert!(stored.cancel_requested);
    assert_eq!(stored.progress, Some(progress.clone()));
    assert_eq!(
        stored.heartbeat_at.map(|t| t.timestamp_micros()),
        Some(beat.timestamp_micros())
    );
    // AND it is not taken for stalled: its last sign of life is the heartbeat, not the start
    let stalled_before = beat - chrono::Duration::seconds(1);
    let due = b
        .ports
        .store
        .due(JobStatus::Running, stalled_before, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");

    // WHEN the run then finishes from its own (older) copy
    let done = asked
        .finish(Outcome::Succeeded(serde_json::json!(1)), Utc::now(), 0.0)
        .unwrap();
    b.ports
        .store
        .transition(asked.expected(), &done)
        .await
        .unwrap();

    // THEN the finished job keeps the last progress its run reported
    let stored = b.ports.store.get(read.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(stored.progress, Some(progress));
}

pub async fn a_new_run_starts_with_its_own_heartbeat_and_no_progress(b: Under) {
    // GIVEN a job whose first run reported progress, then was retried by hand
    let (read, _, _) = running_job_with_a_heartbeat_after_the_read(&b).await;
    let now = Utc::now();
    let failed = read
        .finish(
            Outcome::Failed(shared::domain::JobError::permanent("no")),
            now,
            0.0,
        )
        .unwrap();
    b.ports
        .store
        .transition(read.expected(), &failed)
        .await
        .unwrap();
    let failed = b.ports.store.get(read.id).await.unwrap().unwrap();
    let queued = failed.retry(now).unwrap();
    b.ports
        .store
        .transition(failed.expected(), &queued)
        .await
        .unwrap();

    // WHEN it starts again
    let start = Utc::now();
    let running = queued.start(start).unwrap();
    b.ports
        .store
        .transition(queued.expected(), &running)
        .await
        .unwrap();

    // THEN the new run has no progress yet and its start as its heartbeat
    let stored = b.ports.store.get(read.id).await.unwrap().unwrap();
    assert_eq!(stored.progress, None);
    assert_eq!(
        stored.heartbeat_at.map(|t| t.timestamp_micros()),
        Some(start.timestamp_micros())
    );
}

pub async fn a_batch_is_written_together_each_job_new_or_its_keys_earlier_one(b: Under) {
    let tenant = format!("t{}", crate::helpers::unique());
    let keyed = |key: &str| {
        let mut j = job(&tenant, "noop");
        j.idempotency_key = Some(IdempotencyKey::parse(key).unwrap());
        j
    };
    // GIVEN a job made earlier with key "a"
    let earlier = keyed("a");
    assert!(matches!(
        b.ports.store.create(&earlier).await.unwrap(),
        Created::New
    ));
    // WHEN a batch holds a job without a key, one with key "a", two with key "b", and 230
    // without keys (more than one batch write; on DynamoDB, three transactions of at most 100)
    let mut batch = vec![job(&tenant, "noop"), keyed("a"), keyed("b"), keyed("b")];
    batch.extend((0..230).map(|_| job(&tenant, "noop")));
    let created = b
        .ports
        .store
        .create_batch(&batch, None, false)
        .await
        .unwrap();
    // THEN the keyless ones are new; "a" answers the earlier job; "b" makes one job
    assert_eq!(created.len(), batch.len());
    assert!(matches!(created[0], Created::New));
    match &created[1] {
        Created::Existing(found) => assert_eq!(found.id, earlier.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(created[2], Created::New));
    match &created[3] {
        Created::Existing(found) => assert_eq!(found.id, batch[2].id),
        other => panic!("{other:?}"),
    }
    for (i, c) in created.iter().enumerate() {
        let stored = b.ports.store.get(batch[i].id).await.unwrap();
        assert_eq!(
            stored.is_some(),
            matches!(c, Created::New),
            "job {i} stored only if new"
        );
    }
    // AND an atomic batch is written whole, a key used before answering its job
    let whole = vec![keyed("c"), keyed("a"), job(&tenant, "noop")];
    let created = b
        .ports
        .store
        .create_batch(&whole, None, true)
        .await
        .unwrap();
    assert!(matches!(created[0], Created::New) && matches!(created[2], Created::New));
    assert!(matches!(&created[1], Created::Existing(f) if f.id == earlier.id));
    for j in [&whole[0], &whole[2]] {
        assert!(b.ports.store.get(j.id).await.unwrap().is_some());
    }
}

pub async fn a_steps_first_record_stays_and_every_run_reads_the_steps_back_in_order(b: Under) {
    use serde_json::json;
    // GIVEN a job with no steps yet
    let j = job("t", "noop");
    b.ports.store.create(&j).await.unwrap();
    assert!(b.ports.store.steps(j.id).await.unwrap().is_empty());
    let t0 = Utc::now();
    let keep = t0 + chrono::Duration::days(1);
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);

    // WHEN it records three steps, and a second run records the second one again with another
    // result
    let big = json!({ "pages": ["/", "/robots.txt"], "n": 12345678901234567890u64 });
    let s = &b.ports.store;
    assert_eq!(
        s.save_step(j.id, "resolve", &json!(["10.0.0.1"]), at(0), keep)
            .await
            .unwrap(),
        json!(["10.0.0.1"])
    );
    assert_eq!(
        s.save_step(j.id, "fetch", &big, at(1), keep).await.unwrap(),
        big
    );
    s.save_step(j.id, "summarise", &json!(null), at(2), keep)
        .await
        .unwrap();
    let again = s
        .save_step(j.id, "fetch", &json!("other"), at(3), keep)
        .await
        .unwrap();

    // THEN the first record stands and is what the second run gets back
    assert_eq!(again, big);
    // AND the steps read back in the order they were recorded, results exactly as given
    let steps = s.steps(j.id).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["resolve", "fetch", "summarise"]);
    assert_eq!(steps[1].result, big);
    assert_eq!(steps[2].result, json!(null));
    // AND another job's steps are its own
    let other = job("t", "noop");
    b.ports.store.create(&other).await.unwrap();
    assert!(s.steps(other.id).await.unwrap().is_empty());
}

pub async fn the_write_that_ends_a_job_hands_over_the_jobs_waiting_for_it_once(b: Under) {
    use shared::domain::{Admission, DependencyFailure, JobId};
    use shared::ports::CreateWith;
    let tenant = format!("w{}", crate::helpers::unique());
    let t = Tenant::parse(&tenant).unwrap();
    let s = &b.ports.store;
    let now = Utc::now();
    // GIVEN a queued job, and one (of a tenant with a quota: its end is a transaction) that
    // both have a job waiting for them
    let plain = job(&tenant, "noop");
    let mut quota = job(&tenant, "noop");
    quota.holds_slot = true;
    s.create(&plain).await.unwrap();
    let with = CreateWith {
        audit: None,
        admission: Admission {
            max_active: Some(10),
            per_second: None,
            window: 0,
        },
    };
    assert!(matches!(
        s.create_with(&quota, &with).await.unwrap(),
        Created::New
    ));
    let child =
        job(&tenant, "noop").waiting_for(vec![plain.id, quota.id], DependencyFailure::Cancel);
    s.create(&child).await.unwrap();
    assert_eq!(
        s.get(child.id).await.unwrap().unwrap().status,
        JobStatus::Waiting
    );

    // WHEN the waiting job is noted on both (and on a job of another tenant, and on none)
    assert_eq!(
        s.add_waiter(plain.id, &t, child.id).await.unwrap(),
        Some(JobStatus::Queued)
    );
    assert_eq!(
        s.add_waiter(quota.id, &t, child.id).await.unwrap(),
        Some(JobStatus::Queued)
    );
    let other = Tenant::parse("someone-else").unwrap();
    assert_eq!(
        s.add_waiter(plain.id, &other, child.id).await.unwrap(),
        None
    );
    assert_eq!(
        s.add_waiter(JobId::new(), &t, child.id).await.unwrap(),
        None
    );

    for parent in [&plain, &quota] {
        // THEN a change that does not end the job hands over nothing
        let running = parent.start(now).unwrap();
        let started = s.transition(parent.expected(), &running).await.unwrap();
        assert!(started.waiters.is_empty());
        // AND the one that ends it hands over the waiting job, once
        let done = running
            .finish(
                Outcome::Failed(shared::domain::JobError::permanent("no")),
                now,
                0.0,
            )
            .unwrap();
        let ended = s.transition(running.expected(), &done).await.unwrap();
        assert_eq!(
            ended.waiters,
            vec![child.id],
            "{} holds_slot {}",
            parent.id,
            parent.holds_slot
        );
        let again = done.retry(now).unwrap();
        assert!(s
            .transition(done.expected(), &again)
            .await
            .unwrap()
            .waiters
            .is_empty());
        let cancelled = again.cancel(now).unwrap();
        assert!(s
            .transition(again.expected(), &cancelled)
            .await
            .unwrap()
            .waiters
            .is_empty());
        // AND a job that has ended is noted on no more: its status says so
        assert_eq!(
            s.add_waiter(parent.id, &t, JobId::new()).await.unwrap(),
            Some(JobStatus::Cancelled)
        );
    }
}

pub async fn maintenance_decides_a_waiting_job_whose_dependencies_ended_unheard(b: Under) {
    use shared::domain::DependencyFailure;
    use shared::jobs::{BuiltinSettings, Registry};
    let tenant = format!("m{}", crate::helpers::unique());
    let s = &b.ports.store;
    let now = Utc::now();
    let registry = Registry::builtin("waiting-", &BuiltinSettings::default());
    // GIVEN a job that ended without telling the job waiting for it (as after a crash), and a
    // job waiting for one that has not ended
    let parent = job(&tenant, "noop");
    s.create(&parent).await.unwrap();
    let running = parent.start(now).unwrap();
    s.transition(parent.expected(), &running).await.unwrap();
    let done = running
        .finish(Outcome::Succeeded(serde_json::json!(1)), now, 0.0)
        .unwrap();
    s.transition(running.expected(), &done).await.unwrap();
    let unheard = job(&tenant, "noop").waiting_for(vec![parent.id], DependencyFailure::Cancel);
    s.create(&unheard).await.unwrap();
    let unfinished = job(&tenant, "noop");
    s.create(&unfinished).await.unwrap();
    let still = job(&tenant, "noop").waiting_for(vec![unfinished.id], DependencyFailure::Cancel);
    s.create(&still).await.unwrap();

    // WHEN maintenance looks, before and after they are due a look
    shared::maintenance::settle_waiting_jobs(&b.ports, &registry, now)
        .await
        .unwrap();
    let untouched = s.get(unheard.id).await.unwrap().unwrap();
    let later = now + chrono::Duration::seconds(11);
    let settled = shared::maintenance::settle_waiting_jobs(&b.ports, &registry, later)
        .await
        .unwrap();

    // THEN only then is the first released to the queue; the second keeps waiting, looked at
    // again later
    assert_eq!(untouched.status, JobStatus::Waiting);
    assert_eq!(settled, 1);
    assert_eq!(
        s.get(unheard.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let waiting = s.get(still.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Waiting);
    assert!(waiting.run_at > later, "{:?}", waiting.run_at);
}

pub async fn a_batch_counts_its_members_as_written_and_as_they_end(b: Under) {
    use shared::domain::Batch;
    let tenant = format!("b{}", crate::helpers::unique());
    let s = &b.ports.store;
    let now = Utc::now();
    // GIVEN an open batch, and three members: two written together, one alone
    let batch = Batch::new(Tenant::parse(&tenant).unwrap(), None, None, now);
    s.open_batch(&batch).await.unwrap();
    let member = || {
        let mut j = job(&tenant, "noop");
        j.batch_id = Some(batch.id);
        j
    };
    let (a, c) = (member(), member());
    let mut keyed = member();
    keyed.idempotency_key = Some(IdempotencyKey::parse("k").unwrap());
    s.create_batch(&[a.clone(), keyed.clone()], None, false)
        .await
        .unwrap();
    s.create(&c).await.unwrap();
    // THEN it counts three, all pending
    let counted = s.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!((counted.total, counted.pending), (3, 3));

    // WHEN they end, one failing
    let end = |j: &shared::domain::Job, outcome: Outcome| {
        let running = j.start(now).unwrap();
        let done = running.finish(outcome, now, 0.0).unwrap();
        (running, done)
    };
    let mut ended = vec![];
    for (j, outcome) in [
        (&a, Outcome::Succeeded(serde_json::json!(1))),
        (
            &keyed,
            Outcome::Failed(shared::domain::JobError::permanent("no")),
        ),
        (&c, Outcome::Succeeded(serde_json::json!(3))),
    ] {
        let (running, done) = end(j, outcome);
        s.transition(j.expected(), &running).await.unwrap();
        ended.push(
            s.transition(running.expected(), &done)
                .await
                .unwrap()
                .batch_ended,
        );
    }
    // THEN only the last one's write says the batch ended, and it counts each end
    assert_eq!(ended, vec![None, None, Some(batch.id)]);
    let counted = s.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!(
        (counted.pending, counted.succeeded, counted.failed),
        (0, 2, 1)
    );
    // AND until it is recorded finished, maintenance finds it once it has been quiet
    let later = now + chrono::Duration::minutes(5);
    assert!(s
        .due_batches(now, 10)
        .await
        .unwrap()
        .iter()
        .all(|d| d.id != batch.id));
    assert!(s
        .due_batches(later, 100)
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == batch.id));
    s.recheck_batch(batch.id, later + chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert!(s
        .due_batches(later, 100)
        .await
        .unwrap()
        .iter()
        .all(|d| d.id != batch.id));
    let callbacks = std::collections::BTreeMap::from([("on_complete".to_string(), c.id)]);
    s.finish_batch(batch.id, &callbacks, later).await.unwrap();
    let finished = s.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!(finished.callbacks, callbacks);
    assert!(finished.finished_at.is_some());
    let much_later = later + chrono::Duration::hours(1);
    assert!(s
        .due_batches(much_later, 100)
        .await
        .unwrap()
        .iter()
        .all(|d| d.id != batch.id));
}
