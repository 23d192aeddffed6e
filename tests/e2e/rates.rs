//! A type's start rate holds across every worker: ten jobs of a type allowed one start a second,
//! run by eight workers at once, never start closer than a second apart, and none uses more
//! than its one attempt while held; the same with two runtimes sharing one table (AWS backend,
//! on moto).

use crate::helpers::{aws_env, spawn_app, spawn_app_with, status_is, TestApp};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Duration;

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
        let job = read
            .wait_for_status(id, status_is("succeeded"), Duration::from_secs(90))
            .await;
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
async fn the_rate_holds_across_two_runtimes_sharing_one_table() {
    // GIVEN two runtimes on the AWS backend (moto) sharing a table and queues
    let env = aws_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = spawn_app_with(&env).await;
    let second = spawn_app_with(&env).await;
    // WHEN ten rated jobs are submitted to one of them
    let starts = run_rated(&first, &second, 10).await;
    // THEN they start a second apart, whichever runtime started each
    assert_a_second_apart(&starts);
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
