//! Per-tenant limits through the API: an admin sets them; past the active-job quota a submit is
//! a 429 `quota_exceeded` with `Retry-After` until a job finishes; a burst past the rate is a
//! 429 `rate_limited`; a payload over the tenant's size is a 413. Concurrent submitters (on the
//! AWS backend: through two runtimes sharing one table) never get past the quota together.

use crate::helpers::{aws_env, on_aws, spawn_app, token, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn set_limits(app: &TestApp, tenant: &str, limits: Value) -> Value {
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    let (status, body) = admin
        .send(
            admin
                .client
                .put(app.url(&format!("/v1/tenants/{tenant}/limits")))
                .json(&limits),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn waiting_job() -> Value {
    json!({ "type": "sleep", "payload": { "ms": 1 }, "delay_seconds": 600 })
}

#[tokio::test]
async fn past_the_active_quota_a_submit_waits_for_a_job_to_finish() {
    // GIVEN tenant acme limited to 2 unfinished jobs, with 2 waiting
    let app = spawn_app(&[]).await;
    let shown = set_limits(&app, "acme", json!({ "max_active": 2 })).await;
    assert_eq!(shown["effective"]["max_active"], 2, "{shown}");
    let acme = app.as_caller(Some(&token("acme", &["submitter"])));
    let mut ids = vec![];
    for _ in 0..2 {
        let (status, job) = acme.post_json("/v1/jobs", &waiting_job()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // WHEN a third is submitted
    let response = acme
        .client
        .post(app.url("/v1/jobs"))
        .json(&waiting_job())
        .send()
        .await
        .unwrap();
    // THEN it is a 429 quota_exceeded with Retry-After, and nothing is stored
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    let (_, page) = acme.get("/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    // AND another tenant is not held back
    let globex = app.as_caller(Some(&token("globex", &["submitter"])));
    assert_eq!(
        globex.post_json("/v1/jobs", &waiting_job()).await.0,
        StatusCode::ACCEPTED
    );

    // WHEN one of acme's jobs finishes (cancelled)
    let (status, _) = acme.post(&format!("/v1/jobs/{}/cancel", ids[0])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // THEN the next submit is accepted, and the one after refused again
    assert_eq!(
        acme.post_json("/v1/jobs", &waiting_job()).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        acme.post_json("/v1/jobs", &waiting_job()).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let shown = set_limits(&app, "acme", json!({ "max_active": 2 })).await;
    assert_eq!(shown["active_jobs"], 2, "{shown}");
}

#[tokio::test]
async fn concurrent_submitters_never_get_past_the_quota_together() {
    // GIVEN tenant acme limited to 5 unfinished jobs, and (on the AWS backend) a second
    // runtime on the same table
    let app = spawn_app(&[]).await;
    let second = if on_aws() {
        let shared_env: Vec<(String, String)> = aws_env()
            .into_iter()
            .map(|(k, _)| (k.clone(), app.setting(&k).unwrap_or_default().to_string()))
            .collect();
        let env: Vec<(&str, &str)> = shared_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Some(crate::helpers::spawn_app_with(&env).await)
    } else {
        None
    };
    set_limits(&app, "acme", json!({ "max_active": 5 })).await;
    let token = token("acme", &["submitter"]);

    // WHEN 40 submits race, spread over the runtimes
    let runs = (0..40).map(|i| {
        let target = match (&second, i % 2) {
            (Some(other), 1) => other,
            _ => &app,
        };
        let client = crate::helpers::client_for(Some(&token));
        let url = target.url("/v1/jobs");
        async move {
            client
                .post(url)
                .json(&waiting_job())
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(runs).await;

    // THEN exactly 5 are accepted, every other one refused with 429
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (5, 35), "{statuses:?}");
    let acme = app.as_caller(Some(&token));
    let (_, page) = acme.get("/v1/jobs?limit=100").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 5, "{page}");
}

#[tokio::test]
async fn a_burst_past_the_rate_is_refused_and_a_large_payload_is_a_413() {
    // GIVEN tenant acme allowed 3 submits a second and payloads of 100 bytes
    let app = spawn_app(&[]).await;
    set_limits(
        &app,
        "acme",
        json!({ "submits_per_second": 3, "max_payload_bytes": 100 }),
    )
    .await;
    let acme = app.as_caller(Some(&token("acme", &["submitter"])));
    // WHEN 12 submits come at once
    let started = std::time::Instant::now();
    let mut statuses = vec![];
    let mut retry_after = None;
    let sends = (0..12).map(|_| {
        acme.client
            .post(app.url("/v1/jobs"))
            .json(&json!({ "type": "noop" }))
            .send()
    });
    for response in futures::future::join_all(sends).await {
        let response = response.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            statuses.push(StatusCode::TOO_MANY_REQUESTS);
        } else {
            statuses.push(response.status());
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    // THEN no more than 3 a second started second were accepted, the rest refused with Retry-After
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count() as u64;
    assert!(
        accepted >= 3 && accepted <= 3 * (seconds + 1),
        "{accepted} in {seconds} s: {statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // AND a payload over the tenant's 100 bytes is a 413, naming the payload (asked again
    // after each Retry-After while the rate still refuses it)
    let big = json!({ "type": "noop", "payload": { "blob": "x".repeat(200) } });
    let mut answer = acme.post_json("/v1/jobs", &big).await;
    for _ in 0..20 {
        if answer.0 != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        answer = acme.post_json("/v1/jobs", &big).await;
    }
    crate::helpers::assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        Some("payload"),
    );
}

#[tokio::test]
async fn only_an_operator_sets_limits_and_bad_ones_are_named() {
    let app = spawn_app(&[]).await;
    // (the tenant's own admin may not raise its own limits: they are what the deployment
    // allows it)
    for roles in [&["submitter"][..], &["admin"][..]] {
        let caller = app.as_caller(Some(&token("acme", roles)));
        let (status, _) = caller
            .send(
                caller
                    .client
                    .put(app.url("/v1/tenants/acme/limits"))
                    .json(&json!({ "max_active": 1 })),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{roles:?}");
    }
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    for (body, field) in [
        (json!({ "max_active": 0 }), "max_active"),
        (json!({ "submits_per_second": -1 }), "submits_per_second"),
        (json!({ "burst": 3 }), "burst"),
    ] {
        let answer = admin
            .send(
                admin
                    .client
                    .put(app.url("/v1/tenants/acme/limits"))
                    .json(&body),
            )
            .await;
        crate::helpers::assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
}

#[tokio::test]
async fn jobs_submitted_from_a_job_are_held_to_the_tenants_quota() {
    // GIVEN a deployment whose tenants may have one unfinished job each (the default limit,
    // no limits stored), and a scan of this machine's address, which submits a fetch per path
    let app = spawn_app(&[
        ("CONVEYOR_TENANT_MAX_ACTIVE", "1"),
        ("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1/32"),
    ])
    .await;
    let acme = app.as_caller(Some(&token("acme", &["submitter", "reader"])));
    let (status, scan) = acme
        .post_json(
            "/v1/jobs",
            &json!({ "type": "scan.domain", "payload": {
                "domain": "127.0.0.1", "scheme": "http", "port": 9, "paths": ["/a", "/b"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scan}");
    let id = scan["id"].as_str().unwrap();
    // WHEN it runs, itself the tenant's one unfinished job
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let (_, job) = acme.get(&format!("/v1/jobs/{id}")).await;
        if job["error"]["message"].is_string() {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // THEN its submits are refused by the quota, as any submit past it is
    assert!(
        job["error"]["message"].as_str().unwrap().contains("quota"),
        "{job}"
    );
    // AND no job of the tenant was made past it
    let (_, page) = acme.get("/v1/jobs").await;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{page}");
}
