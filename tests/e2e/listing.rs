//! Listing: newest first, filters by type and status, cursor pagination, and the stats that
//! count the same jobs.

use crate::helpers::{spawn_app, status_is, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect()
}

/// Submit one after another, as fast as the API answers (ids are monotonic, so "newest first"
/// holds even within one millisecond).
async fn submit_in_order(app: &TestApp, bodies: &[Value]) -> Vec<String> {
    let mut out = vec![];
    for body in bodies {
        out.push(app.submit_new(body).await);
    }
    out
}

/// Follow `next_cursor` from the first page of `query`; the pages' ids.
async fn pages(app: &TestApp, query: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut page = app.list(query).await;
    loop {
        out.push(ids(page["jobs"].as_array().expect("jobs")));
        let Some(cursor) = page["next_cursor"].as_str() else {
            return out;
        };
        assert!(out.len() < 20, "pagination does not end: {out:?}");
        page = app.list(&format!("{query}&cursor={cursor}")).await;
    }
}

#[tokio::test]
async fn jobs_list_newest_first_filter_and_paginate() {
    // GIVEN three noop jobs that succeeded and four sleep jobs waiting for ten minutes, submitted
    // alternately
    let app = spawn_app(&[]).await;
    let noop = json!({ "type": "noop" });
    let sleep = json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 });
    let submitted = submit_in_order(
        &app,
        &[
            sleep.clone(),
            noop.clone(),
            sleep.clone(),
            noop.clone(),
            sleep.clone(),
            noop,
            sleep,
        ],
    )
    .await;
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    let noops: Vec<String> = newest_first.iter().skip(1).step_by(2).cloned().collect();
    let sleeps: Vec<String> = newest_first.iter().step_by(2).cloned().collect();
    for id in &noops {
        app.wait_for_status(id, status_is("succeeded"), Duration::from_secs(10))
            .await;
    }

    // WHEN the list is read without filters
    let all = app.list("").await;

    // THEN it holds every job, newest first, on one page
    assert_eq!(ids(all["jobs"].as_array().unwrap()), newest_first);
    assert_eq!(all["next_cursor"], json!(null));

    // AND filters by type and status select exactly the matching jobs, still newest first
    let listed = |page: Value| ids(page["jobs"].as_array().unwrap());
    assert_eq!(listed(app.list("type=noop").await), noops);
    assert_eq!(listed(app.list("type=sleep").await), sleeps);
    assert_eq!(listed(app.list("status=succeeded").await), noops);
    assert_eq!(listed(app.list("status=queued").await), sleeps);
    assert_eq!(listed(app.list("type=sleep&status=queued").await), sleeps);
    assert_eq!(
        listed(app.list("type=sleep&status=succeeded").await),
        Vec::<String>::new()
    );
    assert_eq!(
        listed(app.list("status=running").await),
        Vec::<String>::new()
    );

    // WHEN the list is read two at a time, following next_cursor until it is null
    let by_two = pages(&app, "limit=2").await;

    // THEN the pages hold 2, 2, 2 and 1 jobs, together every job once, in the same order
    let sizes: Vec<usize> = by_two.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 2, 1], "{by_two:?}");
    let seen: Vec<String> = by_two.concat();
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "{seen:?}"
    );
    assert_eq!(seen, newest_first);

    // AND a filtered list that fills its last page exactly ends there, with no empty page
    assert_eq!(
        pages(&app, "type=sleep&limit=2").await,
        vec![sleeps[..2].to_vec(), sleeps[2..].to_vec()]
    );

    // AND the stats count the same jobs
    let stats = app.settled_stats().await;
    assert_eq!(stats["total"], 7, "{stats}");
    assert_eq!(
        stats["by_type"]["noop"],
        json!({ "succeeded": 3 }),
        "{stats}"
    );
    assert_eq!(stats["by_type"]["sleep"], json!({ "queued": 4 }), "{stats}");
    assert_eq!(stats["by_status"]["succeeded"], 3, "{stats}");
    assert_eq!(stats["by_status"]["queued"], 4, "{stats}");
    assert_eq!(stats["by_status"]["failed"], 0, "{stats}");
}

#[tokio::test]
async fn a_job_submitted_during_pagination_does_not_disturb_later_pages() {
    // GIVEN five waiting jobs and the first page of two
    let app = spawn_app(&[]).await;
    let sleep = json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 });
    let submitted = submit_in_order(&app, &vec![sleep.clone(); 5]).await;
    let first = app.list("limit=2").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();

    // WHEN another job is submitted before the next pages are read, following next_cursor
    let late = app.submit_new(&sleep).await;
    let mut seen = ids(first["jobs"].as_array().unwrap());
    let mut cursor = Some(cursor);
    while let Some(c) = cursor {
        let page = app.list(&format!("limit=2&cursor={c}")).await;
        seen.extend(ids(page["jobs"].as_array().unwrap()));
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }

    // THEN the pages hold exactly the five older jobs, each once, newest first
    assert!(!seen.contains(&late), "{seen:?}");
    assert_eq!(seen, submitted.into_iter().rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn jobs_submitted_within_one_millisecond_still_list_newest_first() {
    // GIVEN 50 jobs submitted one after another as fast as possible (each answered before the
    // next is sent, so their order is well defined)
    let app = spawn_app(&[]).await;
    let mut submitted = vec![];
    for _ in 0..50 {
        submitted.push(
            app.submit_new(
                &json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 }),
            )
            .await,
        );
    }

    // WHEN the list is read
    let listed = ids(app.list("limit=500").await["jobs"].as_array().unwrap());

    // THEN it is newest first
    submitted.reverse();
    assert_eq!(listed, submitted);
}
