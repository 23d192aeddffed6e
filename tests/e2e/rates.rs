//! A type's start rate holds across every worker: ten jobs of a type allowed one start a second,
//! run by eight workers at once, never start closer than a second apart, and none uses more
//! than its one attempt while held; the same with two runtimes sharing one table (AWS backend,
//! on moto).

use crate::helpers::{aws_env, spawn_app, spawn_app_with, status_is, TestApp};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Duration;

/// Wait until job `id` succeeded (an emulator under load may answer a poll with a 5xx: the
/// next poll asks again); the job then.
async fn succeeded(app: &TestApp, id: &str) -> serde_json::Value {
    let caller = crate::helpers::Caller {
        app,
        client: app.client.clone(),
    };
    succeeded_as(&caller, &format!("/v1/jobs/{id}")).await
}

/// `succeeded`, read by `caller` at `path`.
async fn succeeded_as(caller: &crate::helpers::Caller<'_>, path: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = caller.get(path).await;
        if status == reqwest::StatusCode::OK && job["status"] == "succeeded" {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} did not succeed: {status} {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submit `n` rated jobs through `submit_to`, wait until each succeeds (read from `read`); their
/// start times, in order.
async fn run_rated(submit_to: &TestApp, read: &TestApp, n: usize) -> Vec<DateTime<Utc>> {
    let mut ids = vec![];
    for i in 0..n {
        ids.push(
            submit_to
                .submit_new(&json!({ "type": "test.rated", "payload": { "i": i } }))
                .await,
        );
    }
    let mut starts = vec![];
    for id in &ids {
        let job = succeeded(read, id).await;
        assert_eq!(job["attempt"], 1, "held without using an attempt: {job}");
        starts.push(
            DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc),
        );
    }
    starts.sort();
    starts
}

fn assert_a_second_apart(starts: &[DateTime<Utc>]) {
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::seconds(1),
            "two starts closer than a second: {starts:?}"
        );
    }
}

#[tokio::test]
async fn ten_jobs_of_a_type_allowed_one_start_a_second_start_a_second_apart() {
    let app = spawn_app(&[]).await;
    let starts = run_rated(&app, &app, 10).await;
    assert_a_second_apart(&starts);
}

#[tokio::test]
async fn the_limits_hold_across_two_runtimes_sharing_one_table() {
    // GIVEN two runtimes on the AWS backend sharing a table and queues, on the suite's AWS
    // emulator (moto, deciding DynamoDB's conditional writes one at a time as DynamoDB does;
    // LocalStack in CI), with heartbeats and stall checks relaxed for an emulator that two
    // whole runtimes keep busy
    let mut env = aws_env();
    for (k, v) in [
        ("CONVEYOR_HEARTBEAT_INTERVAL", "2s"),
        ("CONVEYOR_STALL_AFTER", "60s"),
        ("CONVEYOR_ORPHAN_AFTER", "60s"),
    ] {
        env.push((k.into(), v.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = spawn_app_with(&env).await;
    let second = spawn_app_with(&env).await;
    // WHEN ten rated jobs are submitted to one of them
    let starts = run_rated(&first, &second, 10).await;
    // THEN they start a second apart, whichever runtime started each
    assert_a_second_apart(&starts);
    // AND a key's running limit holds across both
    run_keyed(&first, &second).await;
}

#[tokio::test]
async fn a_rate_per_key_spaces_each_keys_starts_and_lets_other_keys_through() {
    // GIVEN a type allowing one start a second per concurrency key, and five jobs for each of
    // two keys
    let app = spawn_app(&[]).await;
    crate::helpers::assert_error(
        &app.submit(&json!({ "type": "test.rated-per-key", "concurrency_key": "no spaces" }))
            .await,
        reqwest::StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("concurrency_key"),
    );
    let mut ids = vec![];
    for i in 0..10 {
        let key = if i % 2 == 0 {
            "example.com"
        } else {
            "example.org"
        };
        ids.push((
            key,
            app.submit_new(&json!({ "type": "test.rated-per-key", "concurrency_key": key }))
                .await,
        ));
    }
    let mut starts: std::collections::BTreeMap<&str, Vec<DateTime<Utc>>> = Default::default();
    for (key, id) in &ids {
        let job = app
            .wait_for_status(id, status_is("succeeded"), Duration::from_secs(60))
            .await;
        assert_eq!(job["attempt"], 1, "{job}");
        starts.entry(key).or_default().push(
            DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc),
        );
    }
    // THEN each key's starts are a second apart
    for s in starts.values_mut() {
        s.sort();
        assert_a_second_apart(s);
    }
    // AND the keys do not wait for each other: the second key's first start comes before the
    // first key's second one
    let (a, b) = (&starts["example.com"], &starts["example.org"]);
    assert!(
        a[0].min(b[0]) < a[1].min(b[1]) && a[0].max(b[0]) < a[1].min(b[1]),
        "{starts:?}"
    );
}

/// Twenty jobs of one key (at most two running at once) and one of another key, submitted to
/// `submit_to` and read from `read`: no more than two of the key ever ran at once (from the
/// recorded start and end times), and the other key's job did not wait for them.
async fn run_keyed(submit_to: &TestApp, read: &TestApp) {
    let mut ids = vec![];
    for _ in 0..20 {
        ids.push(
            submit_to
                .submit_new(
                    &json!({ "type": "test.keyed", "concurrency_key": "tenant-customer-7",
                                     "payload": { "ms": 150 } }),
                )
                .await,
        );
    }
    let other = submit_to
        .submit_new(&json!({ "type": "test.keyed", "concurrency_key": "customer-8", "payload": { "ms": 150 } }))
        .await;
    let mut runs = vec![];
    for id in &ids {
        let job = succeeded(read, id).await;
        assert_eq!(
            job["attempt"], 1,
            "waiting for a slot uses no attempt: {job}"
        );
        let at = |f: &str| {
            DateTime::parse_from_rfc3339(job[f].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        };
        runs.push((at("started_at"), at("finished_at")));
    }
    let other = succeeded(read, &other).await;
    for (start, _) in &runs {
        let running = runs.iter().filter(|(s, f)| s <= start && start < f).count();
        assert!(running <= 2, "{running} running at {start}: {runs:?}");
    }
    let last_end = runs.iter().map(|r| r.1).max().unwrap();
    let other_start = DateTime::parse_from_rfc3339(other["started_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(other_start < last_end, "{other_start} vs {last_end}");
}

#[tokio::test]
async fn jobs_of_one_key_never_run_more_than_its_limit_at_once() {
    // GIVEN a type that runs at most two jobs at once per concurrency key, on eight workers
    let app = spawn_app(&[]).await;
    run_keyed(&app, &app).await;
}

/// The start and end of each of `tenant`'s jobs `ids`, read (by an admin) when it succeeded,
/// each with its one attempt.
async fn runs_of(
    app: &TestApp,
    tenant: &str,
    ids: &[String],
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let admin = app.as_caller(Some(&crate::helpers::token("ops", &["operator"])));
    let mut runs = vec![];
    for id in ids {
        let job = succeeded_as(&admin, &format!("/v1/jobs/{id}?tenant={tenant}")).await;
        assert_eq!(job["attempt"], 1, "waiting uses no attempt: {job}");
        let at = |f: &str| {
            DateTime::parse_from_rfc3339(job[f].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        };
        runs.push((at("started_at"), at("finished_at")));
    }
    runs
}

#[tokio::test]
async fn jobs_waiting_for_a_keys_slot_start_in_submit_order() {
    // GIVEN both slots of a key held by two long jobs
    let app = spawn_app(&[]).await;
    let key = "customer-in-line";
    let keyed =
        |ms: u64| json!({ "type": "test.keyed", "concurrency_key": key, "payload": { "ms": ms } });
    let blockers = [
        app.submit_new(&keyed(3000)).await,
        app.submit_new(&keyed(3000)).await,
    ];
    for id in &blockers {
        app.wait_for_status(id, status_is("running"), Duration::from_secs(30))
            .await;
    }
    // WHEN ten more of the key are submitted behind them, in one request (their ids, and so
    // their places in line, in the order given; all asking for a slot from the same moment,
    // however slow the machine)
    let ids = app
        .submit_batch_new(&(0..10).map(|_| keyed(100)).collect::<Vec<_>>())
        .await;
    // THEN they start in the order they were submitted: the key's free slots go to the first
    // in line, so no job starts while two (the key's limit) submitted ahead of it still wait.
    // (Two free slots are for the first two in line; the second may start first when the first
    // is slow to ask again, but no job further back may.)
    let runs = runs_of(&app, "default", &ids).await;
    for (i, (start, _)) in runs.iter().enumerate() {
        let waiting_ahead: Vec<usize> = (0..i).filter(|&j| runs[j].0 > *start).collect();
        assert!(
            waiting_ahead.len() < 2,
            "job {i} started while jobs {waiting_ahead:?} ahead of it waited: {runs:?}"
        );
    }
}

#[tokio::test]
async fn a_tenants_running_limit_holds_across_its_types() {
    // GIVEN a deployment whose tenants may run two jobs at once, and tenant acme held to one by
    // an admin
    let app = spawn_app(&[("CONVEYOR_TENANT_MAX_RUNNING", "2")]).await;
    let admin = app.as_caller(Some(&crate::helpers::token("ops", &["operator"])));
    let (status, limits) = admin
        .send(
            admin
                .client
                .put(app.url("/v1/tenants/acme/limits"))
                .json(&json!({ "max_running": 1 })),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{limits}");
    assert_eq!(limits["effective"]["max_running"], 1, "{limits}");
    let (_, limits) = admin.get("/v1/tenants/default/limits").await;
    assert_eq!(limits["effective"]["max_running"], 2, "{limits}");
    // WHEN each submits jobs of two types (the types alone would run 16 and 8 at once)
    let acme = app.as_caller(Some(&crate::helpers::token("acme", &["submitter"])));
    let (mut ours, mut theirs) = (vec![], vec![]);
    for i in 0..12 {
        let job = if i % 2 == 0 {
            json!({ "type": "sleep", "payload": { "ms": 200 } })
        } else {
            json!({ "type": "test.keyed", "payload": { "ms": 200 } })
        };
        ours.push(app.submit_new(&job).await);
        if i < 4 {
            let (status, made) = acme.post_json("/v1/jobs", &job).await;
            assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{made}");
            theirs.push(made["id"].as_str().unwrap().to_string());
        }
    }
    // THEN no more than each one's limit ever ran at once, by the recorded start and end times
    for (runs, max) in [
        (runs_of(&app, "default", &ours).await, 2),
        (runs_of(&app, "acme", &theirs).await, 1),
    ] {
        for (start, _) in &runs {
            let running = runs.iter().filter(|(s, f)| s <= start && start < f).count();
            assert!(running <= max, "{running} running at {start}: {runs:?}");
        }
    }
}
