//! `webhook.deliver` against a local test server: signed delivery, and a 4xx that fails for good.
//! The signature is checked here with our own HMAC-SHA256, not with the product's `sign`.

use crate::helpers::{failed_attempts, spawn_app, status_is, TestServer, Then, WEBHOOK_SECRET};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

/// Check `t=<unix>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>"); the timestamp.
fn verify_signature(secret: &str, header: &str, body: &[u8]) -> Result<i64, String> {
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .ok_or_else(|| format!("not t=...,v1=...: {header:?}"))?;
    let timestamp: i64 = t.parse().map_err(|e| format!("t={t:?}: {e}"))?;
    let expected = hex::decode(v1).map_err(|e| format!("v1 is not hex: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| format!("signature does not match the body: {header:?}"))?;
    Ok(timestamp)
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

    // AND its signature is HMAC-SHA256 of "<t>.<body>" under the configured secret, t being now
    let signature = request
        .header("x-conveyor-signature")
        .expect("x-conveyor-signature header");
    let timestamp = verify_signature(WEBHOOK_SECRET, signature, &request.body)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (before - 1..=after + 1).contains(&timestamp),
        "t={timestamp} outside the test's run [{before}, {after}]"
    );
    assert!(
        verify_signature("another-secret", signature, &request.body).is_err(),
        "the signature depends on the secret"
    );
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
