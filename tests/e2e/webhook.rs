//! `webhook.deliver` against a local test server: signed delivery with the tenant's own secret
//! (another tenant's does not verify it; during a rotation both signatures come), and a 4xx that
//! fails for good. The signature is checked here with our own HMAC-SHA256, not with the
//! product's `sign`.

use crate::helpers::{
    failed_attempts, spawn_app, status_is, token, RecordedRequest, TestApp, TestServer, Then,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

/// Check a delivery's `X-Conveyor-Signature: t=<unix>,v2=<hex>[,v2=<hex>…]`: one of the `v2`
/// must be HMAC-SHA256(secret, "<t>.<job id>.<attempt>.<body>"), with the job id and attempt
/// its headers carry; the timestamp.
fn verify_signature(secret: &str, request: &RecordedRequest) -> Result<i64, String> {
    let header = request
        .header("x-conveyor-signature")
        .ok_or("no x-conveyor-signature header")?;
    let job_id = request.header("x-conveyor-job-id").ok_or("no job id")?;
    let attempt = request.header("x-conveyor-attempt").ok_or("no attempt")?;
    let mut parts = header.split(',');
    let t = parts
        .next()
        .and_then(|t| t.strip_prefix("t="))
        .ok_or_else(|| format!("not t=...,v2=...: {header:?}"))?;
    let timestamp: i64 = t.parse().map_err(|e| format!("t={t:?}: {e}"))?;
    let signatures: Vec<&str> = parts.filter_map(|p| p.strip_prefix("v2=")).collect();
    if signatures.is_empty() {
        return Err(format!("no v2=: {header:?}"));
    }
    let matches = signatures.iter().any(|v2| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{timestamp}.{job_id}.{attempt}.").as_bytes());
        mac.update(&request.body);
        hex::decode(v2).is_ok_and(|expected| mac.verify_slice(&expected).is_ok())
    });
    if !matches {
        return Err(format!(
            "no signature matches the delivery under this secret: {header:?}"
        ));
    }
    Ok(timestamp)
}

/// The tenant's current webhook secrets, as `GET /v1/webhook-secret` shows them.
async fn secrets_of(app: &TestApp, tenant: &str) -> Vec<String> {
    let (status, body) = app
        .as_caller(Some(&token(tenant, &["submitter"])))
        .get("/v1/webhook-secret")
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secret"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn webhook_is_delivered_once_signed_with_the_secret() {
    // GIVEN a receiver answering 200
    let server = TestServer::ok().await;
    let app = spawn_app(&[]).await;
    let body = json!({ "event": "order.paid", "order": 42, "note": "crème brûlée" });
    let before = chrono::Utc::now().timestamp();

    // WHEN a webhook.deliver job is submitted
    let id = app
        .submit_new(&json!({
            "type": "webhook.deliver",
            "payload": { "url": server.url("/hooks/orders"), "body": body },
        }))
        .await;

    // THEN the job succeeds with the receiver's status
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    let after = chrono::Utc::now().timestamp();
    assert_eq!(job["result"]["status"], 200, "{job}");
    assert_eq!(job["attempt"], 1);

    // AND the receiver got one POST of the body, as JSON, naming the job and the attempt
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/orders");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-conveyor-job-id"), Some(id.as_str()));
    assert_eq!(request.header("x-conveyor-attempt"), Some("1"));
    let received: Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(received, body);

    // AND its signature is HMAC-SHA256 of "<t>.<job id>.<attempt>.<body>" under the tenant's
    // secret, t being now
    let secrets = secrets_of(&app, crate::helpers::TENANT).await;
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let timestamp = verify_signature(&secrets[0], request).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (before - 1..=after + 1).contains(&timestamp),
        "t={timestamp} outside the test's run [{before}, {after}]"
    );
    assert!(
        verify_signature("another-secret", request).is_err(),
        "the signature depends on the secret"
    );
    // AND another tenant's secret does not verify it
    let other = secrets_of(&app, "globex").await;
    assert_ne!(other, secrets);
    assert!(verify_signature(&other[0], request).is_err());
    assert!(verify_signature(crate::helpers::WEBHOOK_SECRET, request).is_err());
    // AND the same delivery replayed under another job id, or another attempt, does not verify
    for (header, value) in [
        ("x-conveyor-job-id", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("x-conveyor-attempt", "2"),
    ] {
        let mut replayed = request.clone();
        replayed.headers.insert(header.into(), value.into());
        assert!(
            verify_signature(&secrets[0], &replayed).is_err(),
            "replayed with {header}: {value}"
        );
    }
}

#[tokio::test]
async fn during_a_rotation_deliveries_carry_both_signatures() {
    // GIVEN a receiver, and acme's secret before a rotation
    let server = TestServer::ok().await;
    let app = spawn_app(&[]).await;
    let old = secrets_of(&app, "acme").await;
    // WHEN an operator rotates acme's secret with an hour's overlap
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    let (status, rotated) = admin
        .post_json(
            "/v1/webhook-secret/rotate?tenant=acme",
            &json!({ "overlap_seconds": 3600 }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{rotated}");
    let now = secrets_of(&app, "acme").await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[1], old[0], "the old secret is still listed");
    assert!(
        rotated["secrets"][1]["valid_until"].is_string(),
        "{rotated}"
    );
    // AND acme sends a webhook
    let acme = app.as_caller(Some(&token("acme", &["submitter"])));
    let (status, job) = acme
        .post_json(
            "/v1/jobs",
            &json!({ "type": "webhook.deliver", "payload": { "url": server.url("/h"), "body": { "n": 1 } } }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, job) = acme.get(&format!("/v1/jobs/{id}")).await;
        if job["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // THEN the delivery carries two signatures: the new secret and the old one each verify it
    let request = &server.requests()[0];
    let signature = request.header("x-conveyor-signature").unwrap();
    assert_eq!(signature.matches("v2=").count(), 2, "{signature}");
    verify_signature(&now[0], request).unwrap();
    verify_signature(&old[0], request).unwrap();
    // AND only an admin may rotate
    let (status, _) = acme
        .post_json("/v1/webhook-secret/rotate", &json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_client_error_answer_fails_the_job_after_one_attempt() {
    // GIVEN a receiver answering 400 Bad Request
    let server = TestServer::answering(&[], 400).await;
    let app = spawn_app(&[]).await;

    // WHEN a webhook.deliver job (five attempts allowed) is submitted
    let id = app
        .submit_new(&json!({
            "type": "webhook.deliver",
            "payload": { "url": server.url("/hook"), "body": { "n": 1 } },
            "max_attempts": 5,
            "backoff": { "base_ms": 10, "cap_ms": 10 },
        }))
        .await;

    // THEN it ends failed (not dead) on its first attempt with a permanent error naming the 400
    let job = app
        .wait_for_status(&id, status_is("failed"), Duration::from_secs(10))
        .await;
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["error"]["kind"], "permanent", "{job}");
    assert_eq!(job["error"]["retryable"], false, "{job}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("400"),
        "{job}"
    );
    assert!(job["finished_at"].is_string(), "{job}");
    assert_eq!(server.request_count(), 1);

    // AND its log says the attempt failed and the job ended
    let failed = failed_attempts(&app, &id).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].kind, "permanent");
    assert_eq!(failed[0].then, Then::Ended("failed".into()));
}
