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
