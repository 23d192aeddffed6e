//! The webhook signing key from AWS Secrets Manager: read once, on the first delivery that
//! needs it (nothing at start), then kept for the life of the process. A failed read is not
//! kept: the delivery is retried and the next one reads again.

use crate::jobs::{SigningKey, WebhookKey};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct SecretsManagerKey {
    client: aws_sdk_secretsmanager::Client,
    id: String,
    key: OnceCell<String>,
}

impl SecretsManagerKey {
    pub fn new(client: aws_sdk_secretsmanager::Client, id: impl Into<String>) -> Self {
        Self {
            client,
            id: id.into(),
            key: OnceCell::new(),
        }
    }
}

/// The signing key in the secret `id` (a name or an ARN), as the shipped types take it.
pub fn webhook_key(sdk: &aws_config::SdkConfig, id: &str) -> WebhookKey {
    WebhookKey(Arc::new(SecretsManagerKey::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        id,
    )))
}

#[async_trait]
impl SigningKey for SecretsManagerKey {
    async fn key(&self) -> Result<String, String> {
        self.key
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_secret_value()
                    .secret_id(&self.id)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "reading secret {}: {}",
                            self.id,
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                        )
                    })?;
                match out.secret_string() {
                    Some(s) if !s.is_empty() => Ok(s.to_string()),
                    _ => Err(format!("secret {} has no string value", self.id)),
                }
            })
            .await
            .cloned()
    }
}
