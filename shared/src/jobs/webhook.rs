//! `webhook.deliver`: POST a JSON body to a URL, signed with HMAC-SHA256.
//! Payload: `{"url": "https://…", "body": {…}}`. Headers sent:
//! `X-Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `X-Conveyor-Job-Id` and `X-Conveyor-Attempt` (receivers de-duplicate on the job id).
//! 2xx succeeds; 408, 429, 5xx and network errors retry; other statuses fail permanently.

use super::http_fetch::refused;
use super::outbound::{refusal, Outbound};
use super::{field, payload_url, status_is_retryable, JobContext, JobHandler};
use crate::domain::{JobError, ValidationError};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the signing key comes from: a value given, or a secret store read on first use.
#[async_trait]
pub trait SigningKey: Send + Sync {
    /// The key; an error is why it could not be had (the delivery is retried).
    async fn key(&self) -> Result<String, String>;
}

#[async_trait]
impl SigningKey for String {
    async fn key(&self) -> Result<String, String> {
        Ok(self.clone())
    }
}

/// The signing key `webhook.deliver` uses, wherever it comes from.
#[derive(Clone)]
pub struct WebhookKey(pub Arc<dyn SigningKey>);

impl WebhookKey {
    pub fn value(key: String) -> Self {
        Self(Arc::new(key))
    }
}

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

pub struct WebhookDeliver {
    secret: Option<WebhookKey>,
    outbound: Arc<Outbound>,
}

impl WebhookDeliver {
    pub fn new(secret: Option<WebhookKey>, outbound: Arc<Outbound>) -> Self {
        Self { secret, outbound }
    }
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    sign_all(&[secret], timestamp, body)
}

/// The signature header with one `v1=` per secret (during a key rotation: the new key's first,
/// then the old one's), so a receiver holding either verifies it.
pub fn sign_all(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

/// A tenant's webhook signing secret of one generation: HMAC-SHA256 of the tenant and the
/// generation under the deployment's master key. Only the master key is kept anywhere; a
/// tenant's secret cannot be had from another tenant's.
pub fn tenant_secret(master: &str, tenant: &crate::domain::Tenant, generation: u32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(master.as_bytes()).expect("any key length");
    mac.update(b"conveyor-webhook\0");
    mac.update(tenant.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(generation.to_string().as_bytes());
    format!("whsec_{}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl JobHandler for WebhookDeliver {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        payload_url(payload)?;
        if field(payload, "body").is_none() {
            return Err(ValidationError::new(
                "payload.body",
                "is required (any JSON)",
            ));
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let key = self.secret.as_ref().ok_or_else(|| {
            JobError::permanent(
                "neither CONVEYOR_WEBHOOK_SECRET nor CONVEYOR_WEBHOOK_SECRET_ID is set: cannot sign deliveries",
            )
        })?;
        let master = key
            .0
            .key()
            .await
            .map_err(|e| JobError::retryable(format!("the signing key is unavailable: {e}")))?;
        // The tenant's own keys (each valid generation); a handler run alone signs with the
        // master key.
        let secrets: Vec<String> = match ctx.tenant() {
            Some((tenant, tenants)) => {
                let generations = tenants.webhook_generations(tenant).await.map_err(|e| {
                    JobError::retryable(format!("the tenant's webhook key is unavailable: {e}"))
                })?;
                generations
                    .valid(chrono::Utc::now())
                    .into_iter()
                    .map(|g| tenant_secret(&master, tenant, g))
                    .collect()
            }
            None => vec![master],
        };
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let url = payload_url(&payload).map_err(|e| JobError::permanent(e.to_string()))?;
        let body = serde_json::to_vec(field(&payload, "body").unwrap_or(&Value::Null))
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let started = Instant::now();
        self.outbound
            .policy()
            .check_url(&url)
            .map_err(|r| refused(&url, &r))?;
        let response = self
            .outbound
            .client()
            .post(url.clone())
            .timeout(Duration::from_secs(15))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-conveyor-signature", sign_all(&secrets, timestamp, &body))
            .header("x-conveyor-job-id", ctx.job_id().to_string())
            .header("x-conveyor-attempt", ctx.attempt().to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| match refusal(&e) {
                Some(r) => refused(&url, &r),
                None => JobError::retryable(format!("POST {url}: {e}")),
            })?;
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        ctx.log(format!("POST {url} -> {status} in {elapsed_ms} ms"))
            .await;
        match status {
            200..=299 => Ok(json!({ "status": status, "elapsed_ms": elapsed_ms })),
            s if status_is_retryable(s) => {
                Err(JobError::retryable(format!("POST {url}: HTTP {status}")))
            }
            _ => Err(JobError::permanent(format!("POST {url}: HTTP {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256(key="key", msg="1.{}"), computed with Python's hmac module.
        let sig = sign("key", 1, b"{}");
        assert_eq!(
            sig,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(sign("other", 1, b"{}"), sig);
        assert_ne!(sign("key", 2, b"{}"), sig);
    }
}
