//! `webhook.deliver`: POST a JSON body to a URL, signed with HMAC-SHA256.
//! Payload: `{"url": "https://…", "body": {…}}`. Headers sent:
//! `X-Conveyor-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret,
//! "<t>.<job id>.<attempt>.<body>")>`, `X-Conveyor-Job-Id` and `X-Conveyor-Attempt` (receivers
//! de-duplicate on the job id; the signature covers both headers).
//! 2xx succeeds; 408, 429, 5xx and network errors retry; other statuses fail permanently.

use super::http_fetch::refused;
use super::{field, payload_url, status_is_retryable, JobContext, JobHandler};
use crate::domain::{JobError, ValidationError};
use crate::outbound::{refusal, Outbound};
pub use crate::ports::SigningKey;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What a delivery's signature covers: its time, the job it delivers and that job's attempt
/// (the `X-Conveyor-Job-Id` and `X-Conveyor-Attempt` headers), and the body. A captured delivery
/// replayed under another job id or attempt no longer verifies.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: i64,
    pub job_id: &'a str,
    pub attempt: u32,
    pub body: &'a [u8],
}

/// The signature header's value for `delivery` under `secret`:
/// `t=<t>,v2=<hex HMAC-SHA256(secret, "<t>.<job id>.<attempt>.<body>")>`.
pub fn sign(secret: &str, delivery: Signed<'_>) -> String {
    sign_all(&[secret], delivery)
}

/// The signature header with one `v2=` per secret (during a key rotation: the new key's first,
/// then the old one's), so a receiver holding either verifies it.
pub fn sign_all(secrets: &[&str], delivery: Signed<'_>) -> String {
    let mut header = format!("t={}", delivery.timestamp);
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(
            format!(
                "{}.{}.{}.",
                delivery.timestamp, delivery.job_id, delivery.attempt
            )
            .as_bytes(),
        );
        mac.update(delivery.body);
        header.push_str(",v2=");
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
        let (_, secrets) = signing_keys(self.secret.as_ref(), &ctx, "deliveries").await?;
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let url = payload_url(&payload).map_err(|e| JobError::permanent(e.to_string()))?;
        let body = serde_json::to_vec(field(&payload, "body").unwrap_or(&Value::Null))
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let started = Instant::now();
        let job_id = ctx.job_id().to_string();
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
            .header(
                "x-conveyor-signature",
                sign_all(
                    &secrets,
                    Signed {
                        timestamp,
                        job_id: &job_id,
                        attempt: ctx.attempt(),
                        body: &body,
                    },
                ),
            )
            .header("x-conveyor-job-id", &job_id)
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

/// The master key, and the keys a call for `ctx`'s job is signed with: its tenant's own (each
/// valid generation), or for a handler run alone the master key. `what` names what is signed
/// in the error when no key is configured.
pub(crate) async fn signing_keys(
    key: Option<&WebhookKey>,
    ctx: &JobContext,
    what: &str,
) -> Result<(String, Vec<String>), JobError> {
    let key = key.ok_or_else(|| {
        JobError::permanent(format!(
            "neither CONVEYOR_WEBHOOK_SECRET nor CONVEYOR_WEBHOOK_SECRET_ID is set: cannot sign {what}"
        ))
    })?;
    let master = key
        .0
        .key()
        .await
        .map_err(|e| JobError::retryable(format!("the signing key is unavailable: {e}")))?;
    let Some((tenant, tenants)) = ctx.tenant() else {
        return Ok((master.clone(), vec![master]));
    };
    let generations = tenants.webhook_generations(tenant).await.map_err(|e| {
        JobError::retryable(format!("the tenant's webhook key is unavailable: {e}"))
    })?;
    let secrets = generations
        .valid(chrono::Utc::now())
        .into_iter()
        .map(|g| tenant_secret(&master, tenant, g))
        .collect();
    Ok((master, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_time_the_job_its_attempt_and_the_body() {
        // HMAC-SHA256(key="key", msg="1.01ARZ3NDEKTSV4RRFFQ69G5FAV.2.{}"), computed with
        // Python's hmac module.
        let delivery = Signed {
            timestamp: 1,
            job_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            attempt: 2,
            body: b"{}",
        };
        let sig = sign("key", delivery);
        assert_eq!(
            sig,
            "t=1,v2=d9984d8faef736cf1febb2555679f44e671ee46482e42909bfe74ff1dfd255c1"
        );
        // (any part changed, the signature is another)
        assert_ne!(sign("other", delivery), sig);
        for changed in [
            Signed {
                timestamp: 2,
                ..delivery
            },
            Signed {
                job_id: "01ARZ3NDEKTSV4RRFFQ69G5FAW",
                ..delivery
            },
            Signed {
                attempt: 3,
                ..delivery
            },
            Signed {
                body: b"{ }",
                ..delivery
            },
        ] {
            assert_ne!(sign("key", changed), sig, "{changed:?}");
        }
    }
}
