//! A type with a high-priority queue: jobs submitted with a priority above 0 go through it, and
//! its worker takes two batches from it for each one from the normal queue while both have
//! jobs (the type's stated ratio), on every backend (on AWS, two SQS queues).

use crate::helpers::{spawn_app, status_is};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn high_priority_jobs_go_first_two_to_one_without_starving_the_others() {
    // GIVEN a type with a high-priority queue (ratio 2) worked one job at a time, and a
    // backlog of twelve normal jobs
    let app = spawn_app(&[]).await;
    let (_, types) = app.get("/v1/types").await;
    let lanes = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "test.lanes")
        .cloned()
        .unwrap();
    assert_eq!(lanes["high_priority_ratio"], 2, "{lanes}");
    assert!(lanes["high_priority_queue"]
        .as_str()
        .is_some_and(|q| q.ends_with("test-lanes-high")));
    let job = |priority: i32| json!({ "type": "test.lanes", "priority": priority, "payload": { "ms": 250 } });
    let mut normal = vec![];
    for _ in 0..12 {
        normal.push(app.submit_new(&job(0)).await);
    }
    app.wait_for_status(&normal[0], status_is("running"), Duration::from_secs(30))
        .await;
    // WHEN six high-priority jobs are submitted behind them, in one request (so all six wait
    // from the same moment, however slow the machine)
    let highs: Vec<_> = (0..6).map(|_| job(5)).collect();
    let high = app.submit_batch_new(&highs).await;
    // THEN, from the first high job's start to the last one's, at most one normal job starts
    // for every two high ones, and at least one does (the normal queue is not starved)
    let mut starts: Vec<(DateTime<Utc>, bool)> = vec![];
    for (ids, is_high) in [(&normal, false), (&high, true)] {
        for id in ids {
            let job = app
                .wait_for_status(id, status_is("succeeded"), Duration::from_secs(60))
                .await;
            let at = DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
            starts.push((at, is_high));
        }
    }
    starts.sort();
    let first = starts.iter().position(|s| s.1).unwrap();
    let last = starts.iter().rposition(|s| s.1).unwrap();
    let between = starts[first..=last].iter().filter(|s| !s.1).count();
    let order: String = starts.iter().map(|s| if s.1 { 'H' } else { 'n' }).collect();
    assert!(
        (1..=3).contains(&between),
        "{between} normal jobs started among the six high ones: {order}"
    );
    // AND the high jobs did not wait for the backlog: they all started before the last
    // normal one
    assert!(starts.last().is_some_and(|s| !s.1), "{order}");
}
