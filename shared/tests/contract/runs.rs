//! A job's runs on every backend: heartbeats and stalls across runs, steps recorded once,
//! jobs waiting for others handed over when those end, and batches counting and listing their
//! members.

use crate::helpers::{job, Under};
use chrono::Utc;
use shared::domain::{IdempotencyKey, JobStatus, Outcome, Progress, Tenant};
use shared::ports::{Created, StoreError};

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
        admission: Admission {
            max_active: Some(10),
            per_second: None,
            window: 0,
        },
        ..Default::default()
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

pub async fn a_batch_lists_its_members_in_the_order_they_joined_page_by_page(b: Under) {
    use shared::domain::{Batch, MemberPosition};
    let tenant = format!("m{}", crate::helpers::unique());
    let s = &b.ports.store;
    let now = Utc::now();
    // GIVEN two open batches, and members of the first written every way there is (a plain
    // batch write with a keyed member, an atomic one, and two alone), a job of the second among
    // them, and a job of no batch
    let (batch, other) = (
        Batch::new(Tenant::parse(&tenant).unwrap(), None, None, now),
        Batch::new(Tenant::parse(&tenant).unwrap(), None, None, now),
    );
    s.open_batch(&batch).await.unwrap();
    s.open_batch(&other).await.unwrap();
    let member_of = |batch: &Batch| {
        let mut j = job(&tenant, "noop");
        j.batch_id = Some(batch.id);
        j
    };
    let mut plain: Vec<_> = (0..7).map(|_| member_of(&batch)).collect();
    let mut keyed = member_of(&batch);
    keyed.idempotency_key = Some(IdempotencyKey::parse("member").unwrap());
    plain.push(keyed);
    s.create_batch(&plain, None, false).await.unwrap();
    let outsider = member_of(&other);
    s.create(&outsider).await.unwrap();
    let atomic: Vec<_> = (0..3).map(|_| member_of(&batch)).collect();
    s.create_batch(&atomic, None, true).await.unwrap();
    let alone: Vec<_> = (0..2).map(|_| member_of(&batch)).collect();
    for j in &alone {
        s.create(j).await.unwrap();
    }
    s.create(&job(&tenant, "noop")).await.unwrap();
    // (ids made in turn increase: the order they were written in)
    let joined: Vec<_> = plain
        .iter()
        .chain(&atomic)
        .chain(&alone)
        .map(|j| j.id)
        .collect();

    // WHEN they are listed three at a time
    let mut listed = vec![];
    let mut from: Option<MemberPosition> = None;
    let mut pages = 0;
    loop {
        let page = s.batch_members(batch.id, from, 3).await.unwrap();
        pages += 1;
        assert!(page.jobs.len() <= 3, "{} on a page", page.jobs.len());
        listed.extend(page.jobs.iter().map(|j| (j.id, j.status)));
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
        assert!(pages < 10, "the pages never end");
    }

    // THEN each member comes once, in the order they joined, as it is now, and nothing else
    let ids: Vec<_> = listed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, joined);
    assert!(listed.iter().all(|(_, st)| *st == JobStatus::Queued));
    assert_eq!(pages, 5, "12 members, 3 a page");
    // AND one that ended shows it, the other batch lists its own, and a batch with none, none
    let first = &plain[0];
    let running = first.start(now).unwrap();
    s.transition(first.expected(), &running).await.unwrap();
    let done = running
        .finish(Outcome::Succeeded(serde_json::json!(1)), now, 0.0)
        .unwrap();
    s.transition(running.expected(), &done).await.unwrap();
    let page = s.batch_members(batch.id, None, 1).await.unwrap();
    assert_eq!(
        page.jobs
            .iter()
            .map(|j| (j.id, j.status))
            .collect::<Vec<_>>(),
        vec![(first.id, JobStatus::Succeeded)]
    );
    assert!(page.next.is_some());
    let theirs = s.batch_members(other.id, None, 10).await.unwrap();
    assert_eq!(
        theirs.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![outsider.id]
    );
    assert_eq!(theirs.next, None);
    let empty = Batch::new(Tenant::parse(&tenant).unwrap(), None, None, now);
    s.open_batch(&empty).await.unwrap();
    let none = s.batch_members(empty.id, None, 10).await.unwrap();
    assert!(none.jobs.is_empty() && none.next.is_none());
}
