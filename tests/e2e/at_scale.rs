//! The AWS backend through crashes, at a size where a lost message would show: keyed jobs
//! submitted while the runtime is SIGKILLed again and again. Run on LocalStack by
//! `make test-aws-endpoint` (moto serves one request at a time: too slow for a thousand jobs).

use crate::helpers::{jobs_by_id, spawn_app_on_aws, TestServer};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const JOBS: usize = 1000;
const KILLS: [usize; 3] = [200, 450, 700];

#[tokio::test]
async fn a_thousand_keyed_jobs_submitted_across_three_sigkills_each_end_once_and_soon() {
    // GIVEN the runtime on the AWS backend, stalls recognised after 5 s, and a server that
    // answers every fetch
    let target = TestServer::ok().await;
    let mut app = spawn_app_on_aws(&[("CONVEYOR_STALL_AFTER", "5s")]).await;
    let address = Arc::new(RwLock::new(app.address.clone()));
    let accepted = Arc::new(AtomicUsize::new(0));

    // WHEN 1,000 http.fetch jobs, each with its own idempotency key, are submitted by eight
    // clients that send each one again (same key) until it is answered...
    let submitters: Vec<_> = (0..8)
        .map(|client| {
            let (address, accepted, http) = (address.clone(), accepted.clone(), app.client.clone());
            let url = target.url("/fetched");
            tokio::spawn(async move {
                let mut ids = BTreeMap::new();
                for i in (client..JOBS).step_by(8) {
                    let body = json!({
                        "type": "http.fetch",
                        "payload": { "url": url },
                        "idempotency_key": format!("key-{i}"),
                    });
                    loop {
                        let at = address.read().unwrap().clone();
                        let answer = http
                            .post(format!("{at}/v1/jobs"))
                            .json(&body)
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        if let Ok(response) = answer {
                            if response.status().is_success() {
                                let job: serde_json::Value = response.json().await.unwrap();
                                ids.insert(i, job["id"].as_str().unwrap().to_string());
                                accepted.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                ids
            })
        })
        .collect();
    // ...while the runtime is killed with SIGKILL three times along the way, and started again
    for kill_at in KILLS {
        while accepted.load(Ordering::SeqCst) < kill_at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        app.kill9().await;
        app.restart().await;
        *address.write().unwrap() = app.address.clone();
    }
    let last_kill = tokio::time::Instant::now();
    let mut by_key = BTreeMap::new();
    for submitter in submitters {
        by_key.extend(submitter.await.unwrap());
    }
    println!(
        "the last job was accepted {:.1?} after the last kill",
        last_kill.elapsed()
    );

    // THEN every key made one job, and every one of those jobs succeeds within two minutes of
    // the last kill: none lost, none stuck
    assert_eq!(by_key.len(), JOBS);
    let made: BTreeSet<&String> = by_key.values().collect();
    assert_eq!(made.len(), JOBS, "one job a key");
    let deadline = last_kill + Duration::from_secs(120);
    let jobs = loop {
        let jobs = jobs_by_id(&app, "limit=500").await;
        let ended = jobs
            .values()
            .filter(|j| {
                ["succeeded", "failed", "dead", "cancelled"]
                    .contains(&j["status"].as_str().unwrap_or(""))
            })
            .count();
        if jobs.len() >= JOBS && ended == jobs.len() {
            println!(
                "every job ended {:.1?} after the last kill",
                last_kill.elapsed()
            );
            break jobs;
        }
        if tokio::time::Instant::now() >= deadline {
            let open: Vec<_> = jobs
                .values()
                .filter(|j| {
                    !["succeeded", "failed", "dead", "cancelled"]
                        .contains(&j["status"].as_str().unwrap_or(""))
                })
                .map(|j| (&j["id"], &j["status"], &j["attempts"], &j["started_at"]))
                .collect();
            panic!(
                "{ended} of {} jobs ended two minutes after the last kill; not ended: {open:?}",
                jobs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let listed: BTreeSet<&String> = jobs.keys().collect();
    assert_eq!(listed, made, "the jobs are exactly the ones the keys made");
    let failed: Vec<_> = jobs
        .values()
        .filter(|j| j["status"] != "succeeded")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // AND each was fetched at least once
    assert!(
        target.request_count() >= JOBS,
        "{} fetches",
        target.request_count()
    );
    // (the table goes, with its stream: the emulator serves the tests after this one without a
    // thousand jobs' records to keep forwarding)
    let table = app.setting("CONVEYOR_TABLE").unwrap().to_string();
    drop(app);
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(shared::adapters::aws::http_client())
        .endpoint_url(crate::moto::endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("the table is deleted");
}
